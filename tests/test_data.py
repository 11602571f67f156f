"""Readers on real-format files and the download path against the loopback mirror."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.config.schema import DownloadedDataConfig, FileSpec
from runner.core.errors import DataError
from runner.data import LoadContext, load
from runner.data.cifar10 import read_archive, read_binary_archive
from runner.data.digits import DigitsDataConfig
from runner.data.download import fetch
from runner.data.fashion_mnist import read_idx
from runner.data.mnist import read_npz
from tests import fixtures
from tests.conftest import compose_config


def test_mnist_npz_reader(tmp_path):
    raw = read_npz(fixtures.write_mnist_npz(tmp_path / "mnist.npz", n_train=50, n_test=20))
    assert raw.x_train.shape == (50, 28, 28) and raw.x_train.dtype == np.uint8
    assert raw.y_test.shape == (20,)
    assert raw.class_names == tuple("0123456789")


def test_mnist_npz_missing_array_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"arrays \['y_train', 'x_test', 'y_test'\] are missing"):
        read_npz(path)


def test_idx_reader_reads_images_and_labels(tmp_path):
    paths = fixtures.write_fashion_mnist(tmp_path, n_train=30, n_test=10)
    images = read_idx(paths["train-images-idx3-ubyte.gz"])
    labels = read_idx(paths["train-labels-idx1-ubyte.gz"])
    assert images.shape == (30, 28, 28) and labels.shape == (30,)
    # The bright block of each image sits in its label's grid cell.
    expected = fixtures.class_images(labels, 28, seed=3)
    np.testing.assert_array_equal(images, expected)


def test_idx_reader_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as stream:
        stream.write(b"\x00\x00\x08\x05" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic number 2053"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as stream:
        stream.write(fixtures.idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_archive_reader_is_channels_last(tmp_path, protocol):
    path = fixtures.write_cifar10(tmp_path / "c.tar.gz", per_batch=10, n_test=10, protocol=protocol)
    raw = read_archive(path)
    assert raw.x_train.shape == (50, 32, 32, 3) and raw.x_test.shape == (10, 32, 32, 3)
    assert raw.class_names[0] == "airplane" and len(raw.class_names) == 10
    with tarfile.open(path) as archive:
        batch = pickle.load(archive.extractfile("cifar-10-batches-py/test_batch"), encoding="bytes")
    first = batch[b"data"][0]
    # Row layout: 1024 red, 1024 green, 1024 blue values.
    np.testing.assert_array_equal(raw.x_test[0, :, :, 0].ravel(), first[:1024])
    np.testing.assert_array_equal(raw.x_test[0, :, :, 2].ravel(), first[2048:])


def test_cifar_binary_archive_reads_as_the_python_one(tmp_path):
    """data=cifar10_bin: the same images, labels, order and class names as the pickles."""
    python = read_archive(fixtures.write_cifar10(tmp_path / "py.tar.gz", per_batch=10, n_test=12))
    binary = read_binary_archive(
        fixtures.write_cifar10_binary(tmp_path / "bin.tar.gz", per_batch=10, n_test=12)
    )
    assert binary.x_train.shape == (50, 32, 32, 3) and binary.x_test.shape == (12, 32, 32, 3)
    for split in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(binary, split), getattr(python, split))
    assert binary.class_names == python.class_names and len(binary.class_names) == 10


def _binary_archive(path: Path, members: dict[str, bytes]) -> Path:
    return fixtures.write_tar_gz(path, "cifar-10-batches-bin", members)


def test_cifar_binary_reader_names_what_is_wrong(tmp_path):
    meta = {"batches.meta.txt": b"cat\ndog\n"}
    record = bytes([1]) + bytes(3072)
    with pytest.raises(DataError, match="has no cifar-10-batches-bin/data_batch_1.bin: is it"):
        read_binary_archive(_binary_archive(tmp_path / "a.tar.gz", meta))
    short = {**meta, "data_batch_1.bin": record * 2 + record[:100]}
    with pytest.raises(DataError, match="6246 bytes, not a whole number of 3073-byte records"):
        read_binary_archive(_binary_archive(tmp_path / "b.tar.gz", short))
    label = {**meta, "data_batch_1.bin": bytes([7]) + bytes(3072)}
    with pytest.raises(DataError, match="has label 7, but batches.meta.txt names 2 classes"):
        read_binary_archive(_binary_archive(tmp_path / "c.tar.gz", label))
    with pytest.raises(DataError, match="is not a readable tar archive"):
        read_binary_archive(fixtures.write_mnist_npz(tmp_path / "mnist.npz"))


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    payload = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=4)
    path = fixtures.write_tar_gz(
        tmp_path / "evil.tar.gz", "cifar-10-batches-py", {"data_batch_1": payload}
    )
    with pytest.raises(DataError, match="builtins.print is not allowed"):
        read_archive(path)


def test_fetch_downloads_once_then_uses_the_cache(tmp_path, mirror):
    spec = FileSpec(name="mnist.npz", sha256=mirror.sha("mnist.npz"))
    before = len(mirror.requests)
    for _ in range(2):
        path = fetch(
            spec,
            role="archive",
            mirror=mirror.url,
            cache_dir=tmp_path / "mnist",
            verify_checksum=True,
        )
    assert path == tmp_path / "mnist" / "mnist.npz"
    assert path.read_bytes() == (mirror.folder / "mnist.npz").read_bytes()
    assert mirror.requests[before:] == ["/mnist.npz"]


def test_fetch_404_is_a_clear_error(tmp_path, mirror):
    spec = FileSpec(name="nope.npz", sha256=None)
    with pytest.raises(DataError) as error:
        fetch(spec, role="a", mirror=mirror.url + "/", cache_dir=tmp_path, verify_checksum=True)
    message = str(error.value)
    assert f"the download from {mirror.url}/nope.npz failed (404 File not found)" in message
    assert "RUNNER_DATA_MIRROR" in message


def test_splits_are_stratified_seeded_and_keep_the_official_test_set(tmp_path, mirror):
    cfg = DownloadedDataConfig(
        name="mnist",
        mirror=mirror.url,
        files={"archive": FileSpec(name="mnist.npz", sha256=mirror.sha("mnist.npz"))},
    )

    def context(seed: int) -> LoadContext:
        return LoadContext(tmp_path, seed, validation_split=0.2, image_size=(1, 1), channels=1)

    first, again, other = load(cfg, context(7)), load(cfg, context(7)), load(cfg, context(8))
    assert first.sizes() == {"train": 240, "val": 60, "test": 100}
    assert np.bincount(first.val.y).tolist() == [6] * 10  # stratified
    np.testing.assert_array_equal(first.val.x, again.val.x)
    assert not np.array_equal(first.val.x, other.val.x)
    assert first.train.x.shape[1:] == (28, 28, 1)
    assert first.info.input_shape == (28, 28, 1)


@pytest.mark.parametrize(
    ("data", "archive"),
    [("cifar10", "cifar-10-python.tar.gz"), ("cifar10_bin", "cifar-10-binary.tar.gz")],
)
def test_cifar10_comes_through_the_mirror_channels_last_with_its_class_names(
    tmp_path, mirror, data, archive
):
    """The loaders `data=cifar10` and `data=cifar10_bin` run: the archive fetched from the
    mirror, checked, read."""
    sha256 = mirror.sha(archive)
    cfg = OmegaConf.merge(
        compose_config([f"data={data}"]).data,
        {
            "mirror": mirror.url,
            "files": {"archive": {"sha256": sha256}},
        },
    )
    context = LoadContext(tmp_path, 0, validation_split=0.2, image_size=(1, 1), channels=3)
    splits = load(cfg, context)
    assert splits.sizes() == {"train": 240, "val": 60, "test": 100}
    assert splits.info.input_shape == (32, 32, 3) and splits.train.x.dtype == np.uint8
    assert splits.train.y.shape == (240,)  # the archive's (N, 1) labels, flattened
    assert splits.info.class_names[:2] == ("airplane", "automobile")
    assert (tmp_path / data / archive).is_file()


def test_digits_ships_with_scikit_learn(tmp_path):
    context = LoadContext(tmp_path, 0, validation_split=0.2, image_size=(1, 1), channels=1)
    splits = load(DigitsDataConfig(name="digits"), context)
    assert splits.train.x.shape[1:] == (28, 28, 1) and splits.train.x.dtype == np.uint8
    assert sum(splits.sizes().values()) == 1797
    assert splits.train.x.max() > 200  # 0-16 scaled to 0-255


def test_figure_samples_cover_every_class_of_a_class_ordered_split():
    from runner.data.base import ArraySplit, spread_indices

    y = np.array([0] * 6 + [1] * 6 + [2] * 2)  # ordered by class, like cats vs dogs
    picked = spread_indices(y, 7)
    assert y[picked].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert len(set(picked.tolist())) == 7
    split = ArraySplit(np.arange(14, dtype=np.uint8).reshape(14, 1, 1, 1), y)
    assert split.sample(3).reshape(-1).tolist() == [0, 6, 12]
    multilabel = np.zeros((10, 20))
    assert spread_indices(multilabel, 4).tolist() == [0, 3, 6, 9]


# Download failures, in process: each DataError names the file, the URL or folder, and the key
# that fixes it. The CLI prints the message as its one line (tests/test_errors.py).


def mnist_spec(mirror, sha256: str | None = None) -> FileSpec:
    return FileSpec(name="mnist.npz", sha256=sha256 or mirror.sha("mnist.npz"))


def test_a_damaged_cached_file_is_reported_and_kept(tmp_path, mirror):
    cached = tmp_path / "mnist" / "mnist.npz"
    cached.parent.mkdir()
    cached.write_bytes((mirror.folder / "mnist.npz").read_bytes()[:-10])  # a damaged copy
    with pytest.raises(DataError) as error:
        fetch(
            mnist_spec(mirror),
            role="archive",
            mirror=mirror.url,
            cache_dir=cached.parent,
            verify_checksum=True,
        )
    assert "Checksum mismatch for mnist.npz" in str(error.value)
    assert "data.verify_checksum=false" in str(error.value)
    assert cached.exists(), "a user's file must never be deleted"


def test_a_download_with_another_checksum_names_the_expected_hash(tmp_path, mirror):
    wrong = "0" * 64
    with pytest.raises(DataError) as error:
        fetch(
            mnist_spec(mirror, wrong),
            role="archive",
            mirror=mirror.url,
            cache_dir=tmp_path / "mnist",
            verify_checksum=True,
        )
    assert f"expected {wrong}" in str(error.value)
    assert f"downloaded from {mirror.url}/mnist.npz" in str(error.value)
    assert not (tmp_path / "mnist" / "mnist.npz").exists()


def test_verify_checksum_false_accepts_a_repacked_copy_and_says_so(tmp_path, mirror, caplog):
    path = fetch(
        mnist_spec(mirror, "f" * 64),
        role="archive",
        mirror=mirror.url,
        cache_dir=tmp_path / "mnist",
        verify_checksum=False,
    )
    assert path.read_bytes() == (mirror.folder / "mnist.npz").read_bytes()
    assert "data.verify_checksum=false" in caplog.text


def test_a_mirror_that_never_answers_times_out(tmp_path):
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never says a word
    started = time.monotonic()
    try:
        with pytest.raises(DataError) as error:
            fetch(
                FileSpec(name="mnist.npz", sha256=None),
                role="archive",
                mirror=f"http://127.0.0.1:{silent.getsockname()[1]}",
                cache_dir=tmp_path / "mnist",
                verify_checksum=True,
                timeout=0.5,
            )
    finally:
        silent.close()
    assert time.monotonic() - started < 60
    assert "no answer for 0.5 s" in str(error.value) and "data.timeout" in str(error.value)
    assert not (tmp_path / "mnist" / "mnist.npz").exists()


def test_an_unreadable_cached_file_says_delete_it(tmp_path, mirror):
    cached = tmp_path / "mnist" / "mnist.npz"
    cached.parent.mkdir()
    cached.write_bytes(b"PK\x03\x04 this is no longer a zip")
    cfg = OmegaConf.structured(
        DownloadedDataConfig(
            name="mnist",
            mirror=mirror.url,
            verify_checksum=False,
            files={"archive": mnist_spec(mirror)},
        )
    )
    context = LoadContext(tmp_path, 0, validation_split=0.2, image_size=(1, 1), channels=1)
    with pytest.raises(DataError) as error:
        load(cfg, context)
    assert str(cached) in str(error.value) and "delete it to download it again" in str(error.value)
    assert "allow_pickle" not in str(error.value)


def _recompressed(source, target) -> bytes:
    """`source` (gzip) compressed again, as Debian and `gzip -9` do: the same data, other
    bytes. Returns the data."""
    data = gzip.decompress(source.read_bytes())
    target.write_bytes(gzip.compress(data, compresslevel=1, mtime=12345))
    assert target.read_bytes() != source.read_bytes()
    return data


def test_a_copy_compressed_again_passes_through_its_content_sha256(tmp_path, mirror):
    name = "train-labels-idx1-ubyte.gz"
    cache = tmp_path / "fashion_mnist"
    cache.mkdir()
    data = _recompressed(mirror.folder / name, cache / name)
    spec = FileSpec(
        name=name, sha256=mirror.sha(name), content_sha256=hashlib.sha256(data).hexdigest()
    )
    before = len(mirror.requests)
    for _ in range(2):  # the second time from the stamp the first one wrote
        path = fetch(
            spec, role="train_labels", mirror=mirror.url, cache_dir=cache, verify_checksum=True
        )
        assert read_idx(path).tolist() == read_idx(mirror.folder / name).tolist()
    assert mirror.requests[before:] == []  # the user's copy was kept, not downloaded again
    assert (
        json.loads((cache / f".{name}.checked").read_text())["content_sha256"]
        == spec.content_sha256
    )

    wrong = FileSpec(name=name, sha256=mirror.sha(name), content_sha256="0" * 64)
    with pytest.raises(DataError) as error:
        fetch(wrong, role="train_labels", mirror=mirror.url, cache_dir=cache, verify_checksum=True)
    assert "its decompressed bytes are not those of data.files.train_labels.content_sha256" in str(
        error.value
    )
    assert (cache / name).exists()  # a user's copy is never deleted


def test_a_mirror_serving_a_copy_compressed_again_passes_through_its_content_sha256(
    tmp_path, mirror
):
    name = "recompressed-t10k-labels-idx1-ubyte.gz"
    data = _recompressed(mirror.folder / "t10k-labels-idx1-ubyte.gz", mirror.folder / name)
    spec = FileSpec(name=name, sha256="1" * 64, content_sha256=hashlib.sha256(data).hexdigest())
    path = fetch(
        spec, role="test_labels", mirror=mirror.url, cache_dir=tmp_path, verify_checksum=True
    )
    assert gzip.decompress(path.read_bytes()) == data
    not_gzip = FileSpec(name="mnist.npz", sha256="1" * 64, content_sha256="2" * 64)
    with pytest.raises(DataError, match="The download was removed"):
        fetch(not_gzip, role="archive", mirror=mirror.url, cache_dir=tmp_path, verify_checksum=True)


def test_fashion_mnist_ships_the_content_sha256_of_each_file():
    files = compose_config(["data=fashion_mnist"]).data.files
    assert set(files) == {"train_images", "train_labels", "test_images", "test_labels"}
    for spec in files.values():
        assert len(spec.content_sha256) == 64 and spec.content_sha256 != spec.sha256
