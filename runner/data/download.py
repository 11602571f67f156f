"""Fetch dataset files into the cache with `keras.utils.get_file`, verified by sha256.

The URL of every file is `<mirror>/<file name>`, so a private or local mirror only has to serve
the original files side by side. A file already in the cache is checked here, before Keras sees
it: Keras would silently re-download (and on failure delete) a cached file whose hash differs,
which would destroy a user's own copy.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from runner.config import DownloadedDataConfig, FileSpec
from runner.errors import DataError

log = logging.getLogger(__name__)


def digest_of(path: Path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    spec: FileSpec, *, role: str, mirror: str, cache_dir: Path, verify_checksum: bool
) -> Path:
    """Return the local path of `spec`, downloading it into `cache_dir` when it is not there."""
    target = cache_dir / spec.name
    url = f"{mirror.rstrip('/')}/{spec.name}"
    algorithm = "sha256" if spec.sha256 or not spec.md5 else "md5"
    expected = (spec.sha256 or spec.md5) if verify_checksum else None
    if not verify_checksum:
        log.warning("data.verify_checksum=false: using %s without checking its sha256.", target)
    if target.exists():
        _check(target, expected, algorithm, role=role, downloaded=False)
        return target

    import keras  # deferred: importing TensorFlow costs seconds

    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        keras.utils.get_file(
            fname=spec.name,
            origin=url,
            cache_dir=str(cache_dir.parent),
            cache_subdir=cache_dir.name,
        )
    except Exception as error:
        raise DataError(
            f"Could not get {spec.name}: it is not in {cache_dir}/ and the download from {url} "
            f"failed ({_reason(error, url)}). Put the file into {cache_dir}/, or point data.mirror "
            f"(or the RUNNER_DATA_MIRROR environment variable) at a server that has it."
        ) from None
    _check(target, expected, algorithm, role=role, downloaded=True, url=url)
    return target


def _check(
    path: Path,
    expected: str | None,
    algorithm: str,
    *,
    role: str,
    downloaded: bool,
    url: str = "",
) -> None:
    if expected is None:
        return
    actual = digest_of(path, algorithm)
    if actual == expected.lower():
        return
    where = f"downloaded from {url}" if downloaded else "in the cache"
    if downloaded:
        path.unlink()  # a bad download is worth nothing; the next run retries
    raise DataError(
        f"Checksum mismatch for {path.name} ({where}, {path.parent}/): {algorithm} is {actual}, "
        f"expected {expected} (data.files.{role}.{algorithm}). "
        + (
            "The download was removed; check data.mirror."
            if downloaded
            else "Delete the file to download it again, or set data.verify_checksum=false "
            "to use your own copy as it is."
        )
    )


def _reason(error: BaseException, url: str) -> str:
    """Keras words it "URL fetch failure on <url>: <code> -- <reason>"; the URL is said already."""
    text = str(error).strip() or type(error).__name__
    text = text.removeprefix(f"URL fetch failure on {url}: ").removeprefix("None -- ")
    return text.replace(" -- ", " ", 1)


def fetch_all(cfg: DownloadedDataConfig, data_dir: Path) -> dict[str, Path]:
    """Fetch every file of a dataset config into `data_dir/<name>/`; returns role -> path."""
    return {
        role: fetch(
            spec,
            role=role,
            mirror=cfg.mirror,
            cache_dir=data_dir / cfg.name,
            verify_checksum=cfg.verify_checksum,
        )
        for role, spec in cfg.files.items()
    }
