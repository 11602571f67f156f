"""Errors a user can act on: printed as one clear message, never as a TensorFlow traceback."""

from __future__ import annotations

import errno


class RunnerError(Exception):
    """A problem with the user's config, data or environment, worded for the user."""


class DataError(RunnerError):
    """A dataset file is missing, corrupt or in an unexpected format."""


class PeerLost(RunnerError):
    """Another process of a multi-process run stopped, so this one cannot go on. Its command
    ends at once after its line: JAX's own exit handler would wait at a barrier for the lost
    process (strategy.heartbeat_timeout), then abort with a stack trace."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the job: `message` says where and how to resume."""

    def __init__(self, signal_name: str, message: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.message = message

    @property
    def exit_code(self) -> int:
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.signal_name, 1)


# What the machine refused, not the runner: a full disk, a read-only or forbidden place.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on its disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "its file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def environment_problem(error: BaseException) -> str | None:
    """One line for a full disk or a place that cannot be written, found anywhere in the
    exception's chain (MLflow and SQLAlchemy wrap them); None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            what = f"cannot write {current.filename}" if current.filename else "a write failed"
            return (
                f"{what}: {ENVIRONMENT_ERRNOS[current.errno]}. Free space or fix "
                "its permissions, or point the job elsewhere (hydra.run.dir for outputs, "
                "logger.tracking_uri / logger.artifact_location for the store)."
            )
        text = str(current).lower()
        if "database or disk is full" in text or "readonly database" in text:
            return (
                "the MLflow store cannot be written (a full disk or a read-only database): "
                "free space or point logger.tracking_uri elsewhere."
            )
        current = current.__cause__ or current.__context__
    return None
