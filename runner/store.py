"""Which MLflow tracking store a command uses, decided in one place.

`MLFLOW_TRACKING_URI` when set; else the SQLite store `mlruns/mlflow.db` under `RUNNER_ROOT`, or
under the current folder: the same rule as the `logger.tracking_uri` default of training.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_tracking_uri() -> str:
    root = Path(os.environ.get("RUNNER_ROOT") or Path.cwd()).expanduser().resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root}/mlruns/mlflow.db"
