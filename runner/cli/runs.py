"""`python -m runner.runs`: runs left RUNNING whose process is gone, and how to resume them.

A run killed with SIGKILL (the OOM killer, a pre-empted node, a closed laptop) cannot mark
itself: MLflow shows it RUNNING forever. This lists the RUNNING runs of the store, tells the
live from the dead (the process id and host each run records), and with `--mark-killed` marks
the dead ones KILLED. For each it prints the command that resumes it in the same MLflow run.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from runner.cli.app import run_command
from runner.tracking.store import default_tracking_uri
from runner.training.resume import process_alive, saved_config


def resume_command(run) -> str:
    overrides = run.data.tags.get("overrides", "(none)")
    args = (
        ""
        if overrides == "(none)"
        else " " + " ".join(o for o in overrides.split() if not o.startswith("trainer.resume="))
    )
    return f"python -m runner{args} trainer.resume={run.info.run_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db",
    )
    parser.add_argument(
        "--mark-killed", action="store_true", help="mark the runs whose process is gone KILLED"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also list unfinished runs that ended FAILED or KILLED (resumable too)",
    )
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri or default_tracking_uri())
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    statuses = ["RUNNING", "FAILED", "KILLED"] if args.all else ["RUNNING"]
    # One search per status: MLflow's filters have no OR.
    runs = [
        run
        for status in statuses
        for run in client.search_runs(
            list(experiments), filter_string=f"attributes.status = '{status}'", max_results=5000
        )
        if run.data.tags.get("sweep") != "parent"
    ]
    if not runs:
        print("No unfinished runs." if args.all else "No RUNNING runs.")
        return 0
    states: list[str] = []  # checked once per run: a process may end while we look
    for run in runs:
        tags = run.data.tags
        alive = run.info.status == "RUNNING" and process_alive(tags)
        state = "alive" if alive else ("dead" if run.info.status == "RUNNING" else "ended")
        states.append(state)
        started = datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        output_dir = tags.get("output_dir", "?")
        resumable = saved_config(Path(output_dir)) is not None
        print(
            f"{run.info.run_id}  {run.info.status:<8} {state:<5}  {run.info.run_name}  "
            f"(experiment '{experiments[run.info.experiment_id]}', started {started} UTC, "
            f"pid {tags.get('runner.pid', '?')} on {tags.get('runner.host', '?')})"
        )
        print(f"    job folder: {output_dir}")
        if state == "dead" and args.mark_killed:
            client.set_tag(run.info.run_id, "error", "killed: its process is gone (SIGKILL?)")
            client.set_terminated(run.info.run_id, "KILLED")
            print("    marked KILLED")
        if not alive:
            if resumable:
                print(f"    resume: {resume_command(run)}")
            else:
                print("    no resume state in its job folder: it cannot be resumed")
    dead = sum(state == "dead" for state in states)
    if dead and not args.mark_killed:
        print(
            f"\n{dead} run(s) RUNNING with no process: `python -m runner.runs --mark-killed` "
            "marks them KILLED."
        )
    return 0


def entry() -> None:
    run_command(main)
