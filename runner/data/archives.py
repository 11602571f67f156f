"""Extracting a downloaded or given archive (zip, tar, tar.gz) into the cache, once and safely.

- Once per content: the folder's `.extracted` stamp records which archives (path, size,
  modification time) it was made from; another archive of the same name is extracted anew.
- Bounded: the sizes an archive declares are checked before a byte is written, against
  `data.max_extract_mb` in all and `data.max_extract_ratio` times the archive's own size (an
  archive bomb declares gigabytes from a megabyte).
- All or nothing: it extracts into a hidden sibling folder that becomes the cache folder only when
  complete, so a refused, broken or interrupted extraction leaves no partial folder behind.
- Contained: a member that would land outside the folder (`..`, an absolute path, a link out)
  is refused; tar members go through Python's `data` filter (no devices, no links out).
Parallel jobs wait for the one extracting (a file lock).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.core.errors import DataError
from runner.core.locks import file_lock

STAMP = ".extracted"
MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What an extraction may write: bytes in all, and bytes per byte of archive."""

    max_bytes: float
    max_ratio: float

    @classmethod
    def of(cls, cfg: object) -> Limits:
        return cls(cfg.max_extract_mb * MB, cfg.max_extract_ratio)  # type: ignore[attr-defined]


def fingerprint(archives: Sequence[Path]) -> str:
    lines = []
    for archive in archives:
        stat = archive.stat()
        lines.append(f"{archive.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return "\n".join(lines) + "\n"


def extract_once(archives: Sequence[Path], destination: Path, limits: Limits) -> Path:
    """`destination`, holding the extracted `archives` (extracted now unless already there)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(destination.parent / f".{destination.name}.lock"):
        key = fingerprint(archives)
        stamp = destination / STAMP
        if stamp.is_file() and stamp.read_text() == key:
            return destination
        partial = destination.with_name(f".{destination.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            budget = Budget(limits)
            for archive in archives:
                if zipfile.is_zipfile(archive):
                    extract_zip(archive, partial, budget)
                else:
                    extract_tar(archive, partial, budget)
            (partial / STAMP).write_text(key)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(destination, ignore_errors=True)  # another archive's: replaced
        partial.rename(destination)
    return destination


class Budget:
    """The bytes written so far against the limits, checked before each member is written."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.written = 0

    def take(self, archive: Path, declared: int) -> None:
        """`declared`: what this archive declares so far, the next member included."""
        total = self.written + declared
        if total > self.limits.max_bytes:
            raise DataError(
                f"{archive} would extract more than data.max_extract_mb="
                f"{self.limits.max_bytes / MB:g} MB: nothing was kept. Raise data.max_extract_mb "
                "if you trust this archive and have the disk for it."
            )
        size = max(archive.stat().st_size, 1)
        ratio = declared / size
        if ratio > self.limits.max_ratio:
            raise DataError(
                f"{archive} declares {declared / MB:.0f} MB from {size / MB:.1f} "
                f"MB ({ratio:.0f}x, over data.max_extract_ratio={self.limits.max_ratio:g}): an "
                "archive bomb? Nothing was kept. Raise data.max_extract_ratio if you trust it."
            )

    def done(self, declared: int) -> None:
        self.written += declared


def extract_zip(archive: Path, folder: Path, budget: Budget) -> None:
    root = folder.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            declared = 0
            for member in members:  # all checked before anything is written
                target = (root / member.filename).resolve()
                if not target.is_relative_to(root):
                    raise DataError(f"{archive}: member {member.filename!r} escapes the folder.")
                declared += member.file_size
                budget.take(archive, declared)
            zipped.extractall(root)  # zipfile writes no more than each member declares
            budget.done(declared)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{archive} is not a readable zip file ({error}).") from None


def extract_tar(archive: Path, folder: Path, budget: Budget) -> None:
    try:
        with tarfile.open(archive) as tar:
            declared = 0
            for member in tar:  # streamed: each member's size is checked before it is written
                declared += member.size
                budget.take(archive, declared)
                tar.extract(member, folder, filter="data")  # refuses paths outside, links out
            budget.done(declared)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"Cannot extract {archive} ({error}).") from None
