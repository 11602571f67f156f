"""How one run's records reach MLflow: at once for a store on this machine; for a tracking
server (http), through the run's outbox (outbox.py) while the server does not answer, replayed
in order once it does. A server that goes away never stops the training."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

from runner.tracking.experiments import is_unreachable
from runner.tracking.outbox import Outbox

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0  # while the server is away, try it again at most this often


def artifact_record(staged: Path, artifact_file: str) -> dict[str, Any]:
    """An outbox record: the staged file, to be logged as `artifact_file`."""
    folder = str(Path(artifact_file).parent)
    return {
        "op": "artifact",
        "file": str(staged),
        "artifact_path": None if folder == "." else folder,
    }


class Delivery:
    """One run's connection to its store. `outbox` is None for a store on this machine, whose
    errors are real errors."""

    def __init__(self, run_id: str, outbox: Outbox | None = None) -> None:
        self.run_id, self.outbox = run_id, outbox
        self.offline_since: float | None = None
        self.last_try = 0.0

    def send(self, send: Callable[[], Any], keep: Callable[[], dict[str, Any]]) -> None:
        """`send()` now; when the tracking server is away, `keep()` a record in the outbox
        instead (replayed, in order, once the server answers again)."""
        if self.outbox is None:
            send()
            return
        if self.offline_since is not None and not self.reconnect():
            self.outbox.add(keep())
            return
        try:
            send()
        except Exception as error:
            if not is_unreachable(error):
                raise
            self.offline_since = self.last_try = time.monotonic()
            log.warning(
                "the tracking server %s does not answer; training goes on, and what it misses "
                "is kept in %s until it does",
                mlflow.get_tracking_uri(),
                self.outbox.folder,
            )
            self.outbox.add(keep())

    def reconnect(self, force: bool = False) -> bool:
        """Try the server again (at most every RETRY_SECONDS unless `force`); when it answers,
        send what it missed."""
        if not force and time.monotonic() - self.last_try < RETRY_SECONDS:
            return False
        self.last_try = time.monotonic()
        client = mlflow.MlflowClient()
        try:
            client.get_run(self.run_id)
            sent = self.outbox.send(client, self.run_id)
        except Exception as error:
            if not is_unreachable(error):
                raise
            return False
        self.offline_since = None
        log.warning("the tracking server answers again: sent the %d record(s) it had missed", sent)
        return True

    def stage_file(self, path: Path, artifact_file: str) -> dict[str, Any]:
        """A copy of `path` in the outbox, to be logged as `artifact_file`."""
        return artifact_record(self.outbox.stage(path), artifact_file)

    def stage_new(self, artifact_file: str, write: Callable[[Path], Any]) -> dict[str, Any]:
        """A file `write(path)` creates in the outbox, to be logged as `artifact_file`."""
        staged = self.outbox.folder / "files" / f"{time.time_ns()}" / Path(artifact_file).name
        staged.parent.mkdir(parents=True, exist_ok=True)
        write(staged)
        return artifact_record(staged, artifact_file)

    def end(self, status: str) -> None:
        """End the active run; if the server is away, its status waits in the outbox."""
        record = {"op": "status", "status": status}
        if self.outbox is not None and self.offline_since is not None and not self.reconnect():
            self.outbox.add(record)
            mlflow.tracking.fluent._active_run_stack.get().clear()  # ended here, sent later
            return
        self.send(lambda: mlflow.end_run(status), lambda: record)  # end_run pops the run first

    def close(self, tracking_uri: str) -> None:
        """At the end of a run: send what is pending if the server is back, and say where it
        is kept otherwise."""
        outbox = self.outbox
        if outbox is None:
            return
        if not outbox.pending():
            shutil.rmtree(outbox.folder, ignore_errors=True)
            return
        if self.reconnect(force=True):
            print(f"[runner] the tracking server {tracking_uri} is back: everything was sent.")
            return
        print(
            f"[runner] the tracking server {tracking_uri} did not answer: {outbox.pending()} "
            f"record(s) of run {self.run_id} are kept in {outbox.folder}; send them with "
            f"`python -m runner.sync {outbox.folder.parent}` once it is back.",
            flush=True,
        )
