"""The store and experiment a run goes to: checked to answer before any work, created once
even when parallel jobs ask for it at the same moment.

MLflow is imported on first use: `check_tracking_server` runs before it (and TensorFlow) is.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from runner.core.errors import RunnerError
from runner.tracking.store import is_remote, sqlite_file, sqlite_lock

SERVER_PATIENCE = {  # for a remote tracking server: fail in seconds, not minutes
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def unreachable_server(tracking_uri: str) -> RunnerError:
    return RunnerError(
        f"The MLflow tracking server {tracking_uri} does not answer: start it (make server) or "
        "point logger.tracking_uri / MLFLOW_TRACKING_URI at one that runs."
    )


def check_tracking_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """A tracking server nobody listens on is reported before TensorFlow is even imported (a
    TCP connection, no MLflow); one that listens but fails is caught when the run starts. A
    file store (./mlruns, file:), which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE=true,
    is one line too."""
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    if urlsplit(tracking_uri).scheme in ("", "file") and not allowed:
        raise RunnerError(
            f"logger.tracking_uri={tracking_uri} is a file store, which MLflow 3 refuses: use "
            "sqlite:///<folder>/mlflow.db (the default; `mlflow migrate-filestore` moves an old "
            "store) or set MLFLOW_ALLOW_FILE_STORE=true."
        )
    if not is_remote(tracking_uri):
        return
    address = urlsplit(tracking_uri)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise unreachable_server(tracking_uri) from error


def is_unreachable(error: BaseException) -> bool:
    """A server that does not answer (as opposed to one that refuses a request)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and (
        "Max retries exceeded" in text or "Connection" in text or "timed out" in text
    )


def use_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """Point MLflow at the store and return the experiment id, creating the experiment once.

    A tracking server that does not answer is reported in seconds, before any work: MLflow's
    own retries (about 4 minutes per call) are shortened unless the environment sets them.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if is_remote(tracking_uri):
        for key, value in SERVER_PATIENCE.items():
            os.environ.setdefault(key, value)
        artifact_location = None  # the server decides where artifacts go (its proxy)
    elif artifact_location is None and (database := sqlite_file(tracking_uri)) is not None:
        artifact_location = str(database.parent / "artifacts")  # beside the database
    try:
        # MLflow's schema migration fails when two processes create one new SQLite database at
        # the same moment: a file lock beside it while it may be created.
        with sqlite_lock(tracking_uri):
            return _use_experiment(name, artifact_location)
    except RunnerError:
        raise
    except Exception as error:
        if is_remote(tracking_uri) and is_unreachable(error):
            raise unreachable_server(tracking_uri) from error
        if "unable to open database file" in str(error) or isinstance(error, OSError):
            raise RunnerError(
                f"Cannot open the MLflow store {tracking_uri} ({type(error).__name__}): its "
                "folder must be a writable directory. Set logger.tracking_uri, "
                "MLFLOW_TRACKING_URI or RUNNER_ROOT to another place."
            ) from error
        raise


def _use_experiment(name: str, artifact_location: str | None) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if artifact_location:
        location = (
            artifact_location
            if "://" in artifact_location
            else Path(artifact_location).absolute().as_uri()
        )
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job of a parallel sweep created it first.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
