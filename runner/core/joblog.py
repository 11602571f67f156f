"""Writing to the job's log file only (`runner.log` in its folder), not to the console: the
console gets one line per failure and Keras' own progress; the file keeps the details."""

from __future__ import annotations

import logging


def to_log_file(message: str, error: BaseException | None = None) -> None:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    level = logging.ERROR if error is not None else logging.INFO
    record = logging.LogRecord("runner", level, __file__, 0, message, None, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
