"""Fetch dataset files into the cache with `keras.utils.get_file`, verified by sha256.

The URL of every file is `<mirror>/<file name>`, so a private or local mirror only has to serve
the original files side by side. A file already in the cache is checked here, before Keras sees
it: Keras would silently re-download (and on failure delete) a cached file whose hash differs,
which would destroy a user's own copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

from runner.config.schema import DownloadedDataConfig, FileSpec
from runner.core.errors import DataError
from runner.core.locks import file_lock

log = logging.getLogger(__name__)


def digest_of(
    path: Path, algorithm: str = "sha256", chunk_size: int = 1 << 20, *, decompress: bool = False
) -> str:
    """The file's digest; with `decompress`, that of the bytes inside the gzip file."""
    digest = hashlib.new(algorithm)
    with gzip.open(path, "rb") if decompress else path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest_of(path: Path) -> str | None:
    """sha256 of a gzip file's decompressed bytes (None: not a whole gzip file)."""
    try:
        return digest_of(path, decompress=True)
    except (OSError, EOFError, zlib.error):  # not gzip, or cut off
        return None


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
    timeout: float = 60.0,
) -> Path:
    """Return the local path of `spec`, downloading it into `cache_dir` when it is not there.

    Process-safe: a lock per file makes parallel jobs on a cold cache download it once; the
    download goes to a hidden temporary name and is renamed only once complete and checked, so
    an interrupted download never passes for a cached file. `timeout`: seconds without a byte
    before giving up. `spec.name` may hold folders (`vgg16/file.h5`): they are part of the URL
    on the mirror; the cache keeps the bare file name.
    """
    target = cache_dir / Path(spec.name).name
    url = f"{mirror.rstrip('/')}/{spec.name}"
    algorithm = "sha256" if spec.sha256 or not spec.md5 else "md5"
    expected = (spec.sha256 or spec.md5) if verify_checksum else None
    content = spec.content_sha256  # only looked at where `expected` is checked
    if not verify_checksum:
        log.warning("%s: using %s without checking its checksum.", keys.verify, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{target.name}.lock"):
        if target.exists():
            _check(target, expected, algorithm, content, role=role, downloaded=False, keys=keys)
            return target
        partial = cache_dir / f".{target.name}.part"
        partial.unlink(missing_ok=True)  # left by a download that was cut off
        _download(url, partial, timeout=timeout, spec=spec, cache_dir=cache_dir, keys=keys)
        matched = _check(
            partial, expected, algorithm, content, role=role, downloaded=True, url=url, keys=keys
        )
        os.replace(partial, target)
        _write_stamp(target, *matched)
    return target


def _download(
    url: str, path: Path, *, timeout: float, spec: FileSpec, cache_dir: Path, keys: ConfigKeys
) -> None:
    import keras  # deferred: importing TensorFlow costs seconds

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urllib under get_file: no bytes for `timeout` s fails
    try:
        keras.utils.get_file(
            fname=path.name,
            origin=url,
            cache_dir=str(cache_dir.parent),
            cache_subdir=cache_dir.name,
        )
    except Exception as error:
        path.unlink(missing_ok=True)
        reason = (
            f"no answer for {timeout:g} s (data.timeout)"
            if _timed_out(error)
            else _reason(error, url)
        )
        raise DataError(
            f"Could not get {spec.name}: it is not in {cache_dir}/ and the download from {url} "
            f"failed ({reason}). Put the file into {cache_dir}/, or point "
            f"{keys.mirror} (or the {keys.mirror_env} environment variable) at a server that "
            "has it."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _timed_out(error: BaseException | None) -> bool:
    while isinstance(error, BaseException):
        if isinstance(error, TimeoutError | socket.timeout) or "timed out" in str(error):
            return True
        reason = getattr(error, "reason", None)  # URLError wraps the socket's error
        error = (
            reason if isinstance(reason, BaseException) else error.__cause__ or error.__context__
        )
    return False


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.checked")


def _write_stamp(path: Path, digest: str | None, algorithm: str) -> None:
    """Size, mtime and checksum of a verified file: the next run trusts it without re-hashing
    (a 2 GB VOC tar takes seconds to hash), until the file changes."""
    if digest is None:
        return
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, algorithm: digest.lower()}
    _stamp_path(path).write_text(json.dumps(stamp))


def _stamped(path: Path, digest: str, algorithm: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return False
    stat = path.stat()
    return (
        stamp.get("size") == stat.st_size
        and stamp.get("mtime_ns") == stat.st_mtime_ns
        and stamp.get(algorithm) == digest.lower()
    )


def _check(
    path: Path,
    expected: str | None,
    algorithm: str,
    content: str | None = None,
    *,
    role: str,
    downloaded: bool,
    url: str = "",
    keys: ConfigKeys = ConfigKeys(),
) -> tuple[str | None, str]:
    """Raise unless `path` has the `expected` digest, or a gzip file holds the bytes whose
    sha256 is `content`; returns what it matched: (digest, algorithm) for its stamp."""
    if expected is None:
        return None, algorithm
    if not downloaded:
        for digest, kind in ((expected, algorithm), (content, "content_sha256")):
            if digest and _stamped(path, digest, kind):
                return digest, kind
    actual = digest_of(path, algorithm)
    matched = (expected, algorithm) if actual == expected.lower() else None
    if matched is None and content and content_digest_of(path) == content.lower():
        matched = content, "content_sha256"  # the same data, compressed again
    if matched:
        if not downloaded:
            _write_stamp(path, *matched)
        return matched
    where = f"downloaded from {url}" if downloaded else "in the cache"
    if downloaded:
        path.unlink()  # a bad download is worth nothing; the next run retries
    content_key = keys.checksum.format(role=role, algorithm="content_sha256")
    also = f" and its decompressed bytes are not those of {content_key}" if content else ""
    raise DataError(
        f"Checksum mismatch for {path.name} ({where}, {path.parent}/): {algorithm} is {actual}, "
        f"expected {expected} ({keys.checksum.format(role=role, algorithm=algorithm)}){also}. "
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
            timeout=cfg.timeout,
        )
        for role, spec in cfg.files.items()
    }
