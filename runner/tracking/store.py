"""Which MLflow tracking store a command uses, decided in one place.

`MLFLOW_TRACKING_URI` when set; else the SQLite store `mlruns/mlflow.db` under `RUNNER_ROOT`, or
under the current folder: the same rule as the `logger.tracking_uri` default of training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.core.locks import file_lock


def project_store_uri() -> str:
    """The project's own SQLite store: `mlruns/mlflow.db` under `RUNNER_ROOT`, or here."""
    root = Path(os.environ.get("RUNNER_ROOT") or Path.cwd()).expanduser().resolve()
    return f"sqlite:///{root}/mlruns/mlflow.db"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store_uri()


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL (an MLflow store, an Optuna storage); None for
    any other URL."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def is_remote(tracking_uri: str) -> bool:
    """A tracking server (as opposed to a store on this machine's disk)."""
    return tracking_uri.startswith(("http://", "https://"))


# MLflow 3's UI opens in its GenAI view (traces, judges, evaluation runs) unless told otherwise;
# its "Model training" view lists runs, logged models and the registry.
TRAINING_VIEW = "workflowType=machine_learning"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI, in its Model training view: on the tracking server, or
    where `make ui` serves a store on this machine."""
    base = tracking_uri.rstrip("/") if is_remote(tracking_uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


@contextmanager
def sqlite_lock(url: str) -> Iterator[None]:
    """A lock beside the database of a `sqlite:///` URL (`<file>.lock`); none for other URLs,
    whose servers order concurrent writers themselves."""
    database = sqlite_file(url)
    if database is None:
        yield
        return
    with file_lock(database.with_name(database.name + ".lock")):
        yield
