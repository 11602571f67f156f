"""`python -m runner.sync <job folder> ...`: send what a run kept while its tracking server was
away (metrics, tags, artifacts, its model, its final status) now that the server answers.

A run whose server went away keeps training and records what it could not send in
`<job folder>/mlflow_outbox/`; the run sends it itself when the server comes back in time, and
otherwise says to run this. Safe to repeat: what was sent is never sent again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner.cli.app import run_command
from runner.tracking.outbox import OUTBOX, Outbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", type=Path, help="job folders (outputs/runs/...)")
    parser.add_argument("--tracking-uri", default=None, help="default: the one the run used")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    from runner.tracking.experiments import SERVER_PATIENCE

    for key, value in SERVER_PATIENCE.items():
        os.environ.setdefault(key, value)
    failed = 0
    for folder in args.folders:
        outbox = Outbox(folder)
        if not (folder / OUTBOX).is_dir():
            print(f"{folder}: nothing to send")
            continue
        meta = outbox.meta()
        uri = args.tracking_uri or meta["tracking_uri"]
        try:
            sent = outbox.send(MlflowClient(tracking_uri=uri), meta["run_id"])
        except Exception as error:
            failed += 1
            print(
                f"{folder}: {uri} still does not answer ({str(error).splitlines()[0][:160]}); "
                f"{outbox.pending()} record(s) kept",
                file=sys.stderr,
            )
            continue
        print(f"{folder}: sent {sent} record(s) of run {meta['run_id']} to {uri}")
    return 1 if failed else 0


def entry() -> None:
    run_command(main)
