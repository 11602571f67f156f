"""Fetch dataset files into the cache with `keras.utils.get_file`, verified by sha256.

The URL of every file is `<mirror>/<file name>`, so a private or local mirror only has to serve
the original files side by side. A file already in the cache is checked here, before Keras sees
it: Keras would silently re-download (and on failure delete) a cached file whose hash differs,
which would destroy a user's own copy.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ConfigKeys:
    """The config keys a user changes to fix a failed fetch, named in its error messages."""

    mirror: str = "data.mirror"
    mirror_env: str = "RUNNER_DATA_MIRROR"
    checksum: str = "data.files.{role}.{algorithm}"
    verify: str = "data.verify_checksum=false"


def fetch(
    spec: FileSpec,
    *,
    role: str,
    mirror: str,
    cache_dir: Path,
    verify_checksum: bool,
    keys: ConfigKeys = ConfigKeys(),
) -> Path:
    """Return the local path of `spec`, downloading it into `cache_dir` when it is not there.

    `spec.name` may hold folders (`vgg16/file.h5`): they are part of the URL on the mirror; the
    cache keeps the bare file name.
    """
    target = cache_dir / Path(spec.name).name
    url = f"{mirror.rstrip('/')}/{spec.name}"
    algorithm = "sha256" if spec.sha256 or not spec.md5 else "md5"
    expected = (spec.sha256 or spec.md5) if verify_checksum else None
    if not verify_checksum:
        log.warning("%s: using %s without checking its checksum.", keys.verify, target)
    if target.exists():
        _check(target, expected, algorithm, role=role, downloaded=False, keys=keys)
        return target

    import keras  # deferred: importing TensorFlow costs seconds

    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        keras.utils.get_file(
            fname=target.name,
            origin=url,
            cache_dir=str(cache_dir.parent),
            cache_subdir=cache_dir.name,
        )
    except Exception as error:
        raise DataError(
            f"Could not get {spec.name}: it is not in {cache_dir}/ and the download from {url} "
            f"failed ({_reason(error, url)}). Put the file into {cache_dir}/, or point "
            f"{keys.mirror} (or the {keys.mirror_env} environment variable) at a server that "
            "has it."
        ) from None
    _check(target, expected, algorithm, role=role, downloaded=True, url=url, keys=keys)
    return target


def _check(
    path: Path,
    expected: str | None,
    algorithm: str,
    *,
    role: str,
    downloaded: bool,
    url: str = "",
    keys: ConfigKeys = ConfigKeys(),
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
        f"expected {expected} ({keys.checksum.format(role=role, algorithm=algorithm)}). "
        + (
            f"The download was removed; check {keys.mirror}."
            if downloaded
            else f"Delete the file to download it again, or set {keys.verify} "
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
