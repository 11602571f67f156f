"""Which MLflow tracking store a command uses, decided in one place.

`MLFLOW_TRACKING_URI` when set; else the SQLite store `mlruns/mlflow.db` under `RUNNER_ROOT`, or
under the current folder: the same rule as the `logger.tracking_uri` default of training.
"""

from __future__ import annotations

import os
from pathlib import Path


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
