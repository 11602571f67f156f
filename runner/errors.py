"""Errors a user can act on: printed as one clear message, never as a TensorFlow traceback."""


class RunnerError(Exception):
    """A problem with the user's config, data or environment, worded for the user."""


class DataError(RunnerError):
    """A dataset file is missing, corrupt or in an unexpected format."""
