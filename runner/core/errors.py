"""Errors a user can act on: printed as one clear message, never as a TensorFlow traceback."""


class RunnerError(Exception):
    """A problem with the user's config, data or environment, worded for the user."""


class DataError(RunnerError):
    """A dataset file is missing, corrupt or in an unexpected format."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the job: `message` says where and how to resume."""

    def __init__(self, signal_name: str, message: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.message = message

    @property
    def exit_code(self) -> int:
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.signal_name, 1)
