"""Commands end without the interpreter's last full garbage collections (runner/cli/quick_exit.py),
and lose nothing by it: every other exit handler runs first with the collector on, the exit
code and the output are the process's own."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT

PROGRAM = """
import atexit, gc, sys
# Registered before the command's own: runs after it, as the interpreter's teardown would.
atexit.register(lambda: print("teardown: collector on", gc.isenabled(),
                              "frozen", gc.get_freeze_count() > 0, flush=True))
from runner.cli.quick_exit import skip_final_collection
skip_final_collection()
skip_final_collection()  # again, as a job in the same process does
atexit.register(lambda: print("handler: collector on", gc.isenabled(), flush=True))
with open(sys.argv[1], "w") as stream:
    stream.write("kept")
unflushed = open(sys.argv[1] + ".2", "w")  # left open: closed at exit, as always
unflushed.write("kept too")
print("done")
sys.exit(3)
"""


def test_a_command_skips_the_final_collection_after_every_other_exit_handler(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "out.txt")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == [
        "done",
        "handler: collector on True",
        "teardown: collector on False frozen True",
    ]
    assert (tmp_path / "out.txt").read_text() == "kept"
    assert (tmp_path / "out.txt.2").read_text() == "kept too"
