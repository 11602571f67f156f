"""Exclusive file locks between processes on one machine (fcntl): parallel jobs that download
the same file, create the same SQLite store, or ask the same Optuna study for trials."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.store import sqlite_file


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
