"""What a run could not send to its tracking server, kept in its job folder until it can.

A server that goes away in the middle of a run must not stop the training. While it is away,
each metric, tag, artifact, logged model and the final status is appended to
`<job folder>/mlflow_outbox/journal.jsonl` (artifacts are staged as files beside it), and
replayed in order, with their steps and timestamps, when the server answers again: at the next
epoch, at the end of the run, or later with `python -m runner.sync <job folder>`. The number of
records already replayed is kept in `sent`, so an interrupted replay never sends one twice.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

OUTBOX = "mlflow_outbox"
JOURNAL = "journal.jsonl"
SENT = "sent"


class Outbox:
    def __init__(self, output_dir: Path) -> None:
        self.folder = output_dir / OUTBOX

    def open(self, run_id: str, tracking_uri: str) -> None:
        """Record which run and server the journal belongs to (for `runner.sync`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"run_id": run_id, "tracking_uri": tracking_uri}
        (self.folder / "run.json").write_text(json.dumps(meta))

    def meta(self) -> dict[str, str]:
        return json.loads((self.folder / "run.json").read_text())

    # ---------------------------------------------------------------------------- writing

    def add(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record.setdefault("timestamp", int(time.time() * 1000))
        with (self.folder / JOURNAL).open("a") as journal:
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def stage(self, source: Path, name: str | None = None) -> Path:
        """A copy of a file to send later, inside the outbox (the original may change)."""
        staged = self.folder / "files" / f"{len(self.records())}-{name or source.name}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, staged)
        else:
            shutil.copy2(source, staged)
        return staged

    # ---------------------------------------------------------------------------- reading

    def records(self) -> list[dict[str, Any]]:
        path = self.folder / JOURNAL
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def pending(self) -> int:
        return len(self.records()) - self._sent()

    def _sent(self) -> int:
        try:
            return int((self.folder / SENT).read_text())
        except (OSError, ValueError):
            return 0

    # ---------------------------------------------------------------------------- sending

    def send(self, client: Any, run_id: str) -> int:
        """Replay what is pending in order; returns how many records went. Raises (keeping the
        rest) when the server fails again; removes the outbox once everything is sent."""
        records, done = self.records(), self._sent()
        for index in range(done, len(records)):
            _replay(client, run_id, records[index])
            (self.folder / SENT).write_text(str(index + 1))
        if records:
            shutil.rmtree(self.folder, ignore_errors=True)
        return len(records) - done


def _replay(client: Any, run_id: str, record: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    op = record["op"]
    if op == "metrics":
        step = record.get("step") or 0
        # A value whose request reached the server just as it went away may be there already:
        # replaying is idempotent per (metric, step).
        metrics = [
            Metric(key, float(value), record["timestamp"], step)
            for key, value in record["values"].items()
            if step not in {m.step for m in client.get_metric_history(run_id, key)}
        ]
        if metrics:
            client.log_batch(run_id, metrics=metrics)
    elif op == "params":
        from mlflow.entities import Param

        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in record["values"].items()])
    elif op == "tags":
        for key, value in record["values"].items():
            client.set_tag(run_id, key, value)
    elif op == "artifact":
        path = Path(record["file"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "model":
        _log_model(client, run_id, record)
    elif op == "status":
        client.set_terminated(run_id, record["status"], end_time=record["timestamp"])
    else:
        raise ValueError(f"unknown outbox record {op!r}")


def _log_model(client: Any, run_id: str, record: dict[str, Any]) -> None:
    """A model the run could not log: loaded back (safe mode) and logged to its run."""
    import keras
    import mlflow
    import numpy as np

    from runner.tracking.logged_model import log_keras_model

    model = keras.saving.load_model(record["file"], safe_mode=True, compile=False)
    sample = np.load(record["sample"], allow_pickle=False)
    mlflow.set_tracking_uri(client.tracking_uri)
    # The model attaches to the active run; the status record that follows in the journal
    # sets the run's real end status afterwards.
    with mlflow.start_run(run_id=run_id):
        log_keras_model(model, sample, record["class_names"])
