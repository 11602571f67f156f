"""What every command shares: a quiet environment, a quick exit, and one line per problem.

A problem the runner reports (a `RunnerError`: config, data, environment) is one line on
stderr and exit code 2, with the traceback in the job's log file when there is one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from runner.cli.quick_exit import skip_final_collection
from runner.core.errors import PeerLost, RunnerError, environment_problem
from runner.core.joblog import to_log_file

USER_ERROR = 2
# Hydra's config folder, as an absolute path: commands run as `python -m runner.<command>`.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def prepare_environment() -> None:
    # TensorFlow's C++ notices (no CUDA driver, oneDNN, ...) stay off the console: the runner
    # reports the device it trains on. MLflow's per-file progress bars while it logs a model
    # would come between the epoch lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def stop(message: str, error: BaseException | None = None, code: int = USER_ERROR) -> NoReturn:
    """End the command with one line on stderr (the details in the job's log file)."""
    to_log_file(message, error)
    print(message, file=sys.stderr, flush=True)
    if isinstance(error, PeerLost):  # the run is marked already; skip JAX's exit barrier
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


def run_command(main: Callable[[], int | None]) -> NoReturn:
    """A command's process: `main()`'s exit code, one line for a problem the runner reports."""
    skip_final_collection()
    try:
        code = main()
    except RunnerError as error:
        stop(f"error: {error}", error)
    except Exception as error:
        problem = environment_problem(error)  # a full disk, a read-only folder: one line too
        if problem is None:
            raise
        stop(f"error: {problem}", error)
    sys.exit(code or 0)
