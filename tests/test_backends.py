"""Keras on JAX (runner/core/backend.py, runner/data/batches.py, runner/augmentation/
portable.py, runner/training/distribution.py). Marked `backends`: `make test` runs them in the
virtualenv without TensorFlow (`make test-jax`), where they prove the runner needs none; a
model crossing backends (trained on one, predicting on the other) is in tests/test_predict.py."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from runner.data.base import ArraySplit
from runner.data.batches import in_order, training_stream
from tests.conftest import epochs_done, mirrored_mask, wait_until

pytestmark = pytest.mark.backends


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TENSORFLOW = has_module("tensorflow")

JAX_DIGITS = [
    "backend=jax",
    "experiment=digits_lenet",
    "optimizer=adam",
    "optimizer.lr=0.002",
    "trainer.epochs=3",
    "trainer.batch_size=64",
    "trainer.label_smoothing=0.1",
    "augmentation=light",
    "augmentation.random_erasing=0.3",
    "augmentation.mixup=0.2",
    "callbacks.early_stopping.patience=10",
    "logger.experiment=tests",
]


def test_the_jax_virtualenv_has_no_tensorflow():
    """`make test-jax` runs these tests where TensorFlow is not installed at all."""
    expect_none = os.environ.get("RUNNER_EXPECT_NO_TENSORFLOW") == "1"
    assert HAS_TENSORFLOW is not expect_none
    imported = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True)
    assert (imported.returncode != 0) is expect_none


def _split(count: int = 50) -> ArraySplit:
    x = np.arange(count * 4 * 4, dtype=np.uint8).reshape(count, 4, 4, 1)
    return ArraySplit(x, np.arange(count) % 3)


def test_a_resumed_stream_sees_the_batches_of_an_uninterrupted_one():
    split = _split()

    def seen(epochs: range) -> list[tuple[np.ndarray, np.ndarray]]:
        stream, steps = training_stream(
            split,
            batch_size=16,
            seed=7,
            epochs=epochs,
            transform=lambda images, labels, seed: (images + seed[0] % 5, labels),
        )
        assert steps == 4  # the last batch is smaller, not dropped
        return [stream[i] for i in range(len(stream))]

    whole, resumed = seen(range(0, 3)), seen(range(1, 3))
    assert len(whole) == 12 and len(resumed) == 8
    for (a, la), (b, lb) in zip(whole[4:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    # Each epoch is a permutation of the whole split, a different one per epoch.
    epoch_labels = [np.concatenate([b[1] for b in whole[e * 4 : e * 4 + 4]]) for e in range(3)]
    assert all(sorted(labels) == sorted(split.y) for labels in epoch_labels)
    assert not np.array_equal(epoch_labels[0], epoch_labels[1])


def test_each_process_reads_its_part_of_the_global_batch_and_draws_its_own_augmentation():
    """Process i of n reads the i-th slice of each global batch; its augmentation seed is its
    own (two parts sharing one would give row k of each part the same transform)."""
    split = _split(48)

    def batches(shard: tuple[int, int] | None) -> list[tuple[np.ndarray, tuple[int, int]]]:
        stream, _ = training_stream(
            split,
            batch_size=16,
            seed=7,
            epochs=range(0, 2),
            transform=lambda images, labels, seed: (labels, (int(seed[0]), int(seed[1]))),
            shard=shard,
        )
        return [stream[i] for i in range(len(stream))]

    alone, parts = batches(None), [batches((i, 2)) for i in (0, 1)]
    expected = [(7 * 100_003 + epoch, step) for epoch in (0, 1) for step in (0, 1, 2)]
    assert [seed for _, seed in alone] == expected
    for whole, first, second in zip(alone, *parts, strict=True):
        np.testing.assert_array_equal(whole[0], np.concatenate([first[0], second[0]]))
        assert first[1] != second[1]
    seeds = [seed for part in parts for _, seed in part]
    assert len(set(seeds)) == len(seeds)  # no two batches of the two processes share one


def test_evaluation_batches_are_the_split_in_order():
    split = _split(37)
    batches = in_order(split, batch_size=16)
    assert len(batches) == 3
    images = np.concatenate([batches[i][0] for i in range(3)])
    np.testing.assert_array_equal(images, split.x)


@pytest.mark.parametrize("key", ["randaugment=2", "augmix=true"])
def test_randaugment_and_augmix_in_keras_ops_are_a_function_of_the_batch_seed(key):
    """portable.py's path (Keras ops, any backend): most images change, the same seed gives
    the same batch, another seed another one."""
    from runner.augmentation import portable
    from tests.conftest import compose_config

    cfg = compose_config([f"augmentation.{key}"]).augmentation
    images = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3)).astype("uint8")

    def augmented(seed: list[int]) -> np.ndarray:
        import keras

        batch = portable.augment_batch(images, portable.batch_generator(np.array(seed)), cfg)
        return keras.ops.convert_to_numpy(batch)

    first = augmented([1, 0])
    assert first.shape == images.shape and first.dtype == np.uint8
    assert (first != images).reshape(16, -1).any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(augmented([1, 0]), first)
    assert (augmented([1, 1]) != first).any()


def test_alternate_flips_on_the_portable_path_follow_the_epoch_of_the_batch_seed():
    """The JAX input pipeline's transform: an image mirrored in one epoch is not in the next."""
    from runner.data.base import DataInfo
    from runner.training.labels import training_transform
    from tests.conftest import compose_config

    cfg = compose_config(
        [
            "augmentation=none",
            "augmentation.horizontal_flip=true",
            "augmentation.alternate_flips=true",
        ]
    )
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3)).astype("uint8")
    transform = training_transform(cfg, DataInfo("x", (8, 8, 3), ("a", "b")))
    masks = []
    for epoch in (2, 3):
        out, _ = transform(images, np.zeros(64, np.int64), np.array([7 * 100_003 + epoch, 0]))
        masks.append(mirrored_mask(images, np.asarray(out)))
    assert (masks[0] != masks[1]).all() and 0.25 < masks[0].mean() < 0.75


def test_an_unknown_backend_is_one_line(workspace):
    result = workspace.run("backend=theano", "experiment=digits_lenet")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: backend should be one of auto, tensorflow, jax, torch")


def _history(client, run_id: str, metric: str) -> list[float]:
    return [
        m.value for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
    ]


@pytest.mark.e2e
def test_jax_trains_resumes_after_a_kill_like_an_uninterrupted_run_and_predicts(
    workspace, tmp_path
):
    trains_resumes_and_predicts(workspace, tmp_path, "jax")


def trains_resumes_and_predicts(workspace, tmp_path, backend: str) -> None:
    """On `backend`: a job killed after two epochs and resumed logs the losses of an
    uninterrupted one, and its model predicts on it and on each other backend installed.
    tests/test_torch.py runs it on torch."""
    job = [f"backend={backend}", *JAX_DIGITS[1:]]
    killed_dir = workspace.root / "outputs" / "killed"
    killed = workspace.start(*job, f"hydra.run.dir={killed_dir}", merge_output=True)
    straight = workspace.start(*job, "logger.experiment=straight", merge_output=True)
    wait_until(lambda: epochs_done(killed_dir) >= 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    output, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output[-3000:]
    assert "done on CPU" in output and f"with {backend}" in output
    resumed = workspace.run(*job, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    client = workspace.client()
    runs = {}
    for experiment in ("tests", "straight"):
        (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        runs[experiment] = run
        assert run.info.status == "FINISHED"
        assert run.data.params["backend"] == backend and run.data.tags["backend"] == backend
        # On a CPU there is no accelerator memory to report (the GPU bench reads it there).
        assert "device_peak_memory_mb" not in run.data.metrics
    for metric in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            _history(client, runs["tests"].info.run_id, metric),
            _history(client, runs["straight"].info.run_id, metric),
            rtol=1e-5,
            err_msg=metric,
        )
    requirements = client.download_artifacts(
        runs["straight"].info.run_id, "model/requirements.txt", str(tmp_path)
    )
    assert f"{backend}==" in open(requirements).read()

    # The model predicts on this environment's other backend too.
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    others = [name for name in ("tensorflow", "jax") if name != backend and has_module(name)]
    for predicting in (backend, *others):
        out = tmp_path / f"predictions-{predicting}"
        predicted = subprocess.run(
            [sys.executable, "-m", "runner.predict", "--model"]
            + [f"runs:/{runs['straight'].info.run_id}/model", "--out", str(out), str(image)]
            + ["--tracking-uri", workspace.tracking_uri],
            cwd=workspace.root,
            env=workspace.env(KERAS_BACKEND=predicting),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        (row,) = json.loads((out / "predictions.json").read_text())
        assert 0 < row["probabilities"][0] <= 1, predicting


@pytest.mark.e2e
def test_a_sweep_on_jax(workspace):
    result = workspace.run(
        "-m",
        *("backend=jax", "experiment=digits_lenet", "trainer.epochs=1"),
        "optimizer.lr=0.01,0.002",
        "logger.experiment=sweep",
        "logger.log_model=false",
        "evaluate.tta=flip_translate",  # its views on NumPy batches
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(workspace, "sweep")
    children = [run for run in runs if run.data.tags.get("sweep") != "parent"]
    assert sorted(run.data.params["optimizer.lr"] for run in children) == ["0.002", "0.01"]
    assert {run.data.tags["backend"] for run in children} == {"jax"}
    assert all(0 <= run.data.metrics["test_tta_accuracy"] <= 1 for run in children)
    assert all(run.info.status == "FINISHED" for run in runs) and len(runs) == 3


# The tests that start a coordinator on a port of their own run one after another (on one
# xdist worker): two coordination services can share a port (gRPC sets SO_REUSEPORT), so two
# such tests that happened on the same free port would meet each other's processes.
coordinator_port = pytest.mark.xdist_group("coordinator_port")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _runs(workspace, experiment: str) -> list:
    client = workspace.client()
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@coordinator_port
@pytest.mark.e2e
def test_two_processes_train_one_model_and_only_process_0_logs(workspace):
    """strategy=data_parallel over two CPU devices in one process, then over two processes
    on 127.0.0.1 (one device each, gloo): the same global batches, so the same model; process
    1 ends with process 0's weights, and logs and writes nothing."""
    job = [
        *("backend=jax", "experiment=digits_lenet", "optimizer=adam", "trainer.epochs=2"),
        *("strategy=data_parallel", "logger.log_model=false"),
    ]
    single = workspace.run(*job, "strategy.cpu_devices=2", "logger.experiment=single")
    assert single.returncode == 0, single.stderr[-3000:]
    (alone,) = _runs(workspace, "single")
    assert "2 replicas" in alone.data.tags["device"]

    port, folders = _free_port(), [workspace.root / "outputs" / f"process{i}" for i in (0, 1)]
    processes = [
        workspace.start(
            *job,
            "strategy.num_processes=2",
            f"strategy.process_id={i}",
            f"strategy.coordinator=127.0.0.1:{port}",
            f"hydra.run.dir={folders[i]}",
            "logger.experiment=pair",
            merge_output=True,
        )
        for i in (0, 1)
    ]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    (run,) = _runs(workspace, "pair")  # exactly one run: process 0's
    assert run.info.status == "FINISHED"
    assert "process 0 of 2" in run.data.tags["device"]
    digest = run.data.tags["weights_digest"]
    assert f"process 1 of 2 done: weights {digest}, the same as process 0's" in outputs[1]
    assert (folders[0] / "checkpoints" / "best.keras").is_file()
    assert not (folders[1] / "checkpoints").exists() and not (folders[1] / "resume").exists()
    for metric in ("test_accuracy", "test_loss", "val_accuracy"):
        assert np.isclose(run.data.metrics[metric], alone.data.metrics[metric], rtol=1e-4)

    resumed = workspace.run(
        *job,
        *("strategy.num_processes=2", "strategy.process_id=0"),
        *(f"strategy.coordinator=127.0.0.1:{port}", "trainer.resume=true"),
    )
    assert resumed.returncode == 2
    assert "cannot resume a multi-process run" in resumed.stderr.strip().splitlines()[-1]


@pytest.mark.e2e
def test_mixed_precision_and_jit_compile_on_jax(workspace):
    import keras

    for precision, jit in (("mixed_bfloat16", "true"), ("mixed_float16", "false")):
        folder = workspace.root / "outputs" / precision
        result = workspace.run(
            *("backend=jax", "experiment=digits_lenet", "trainer.epochs=1"),
            f"trainer.precision={precision}",
            f"trainer.jit_compile={jit}",
            f"hydra.run.dir={folder}",
            "logger.experiment=precision",
            "logger.log_model=false",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        model = keras.saving.load_model(folder / "checkpoints" / "best.keras", safe_mode=True)
        assert {layer.dtype_policy.name for layer in model.layers if layer.weights} >= {precision}
    runs = _runs(workspace, "precision")
    assert {run.data.params["trainer.precision"] for run in runs} == {
        "mixed_bfloat16",
        "mixed_float16",
    }
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all(0 <= run.data.metrics["test_accuracy"] <= 1 for run in runs)


def test_tensorflow_only_strategies_point_to_their_replacement(workspace):
    for override, expected in (
        ("strategy=mirrored", "strategy=mirrored is TensorFlow's"),
        ("strategy=multi_worker", "strategy=multi_worker was replaced by strategy=data_parallel"),
    ):
        result = workspace.run("backend=jax", "experiment=digits_lenet", override)
        assert result.returncode == 2, result.stderr[-2000:]
        assert expected in result.stderr.strip().splitlines()[-1]


@coordinator_port
def test_a_process_whose_peers_never_come_stops_after_the_join_timeout(workspace):
    """Process 1 with no process 0 at the coordinator: one line. Process 0 with no process 1:
    JAX ends it (a check failure, not a line of ours) once strategy.join_timeout is up, before
    any run exists, instead of after JAX's 5 minutes."""
    job = ["backend=jax", "experiment=digits_lenet", "strategy=data_parallel"]
    alone = [
        workspace.start(
            *job,
            *("strategy.num_processes=2", f"strategy.process_id={rank}"),
            *(f"strategy.coordinator=127.0.0.1:{_free_port()}", "strategy.join_timeout=3"),
            f"hydra.run.dir={workspace.root / 'outputs' / str(rank)}",
        )
        for rank in (0, 1)
    ]
    (out0, err0), (_, err1) = (process.communicate(timeout=120) for process in alone)
    assert alone[1].returncode == 2, err1[-3000:]
    [line] = err1.strip().splitlines()
    assert line.startswith("error: process 1 of 2: nothing answers at 127.0.0.1:"), line
    assert "strategy.join_timeout=3 s" in line
    assert alone[0].returncode != 0
    assert "process 0 of 2: joining the others at 127.0.0.1:" in out0
    assert "DEADLINE_EXCEEDED" in err0
    assert not _runs_anywhere(workspace)  # both stopped before any run started


def _runs_anywhere(workspace) -> list:
    client = workspace.client()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@coordinator_port
def test_process_0_refuses_a_coordinator_port_already_in_use(workspace):
    """Another program (here: this test) listens on the port: one line before JAX starts its
    service there, instead of two services on one port and an abort with a stack trace."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        result = workspace.run(
            *("backend=jax", "experiment=digits_lenet", "strategy=data_parallel"),
            *("strategy.num_processes=2", "strategy.process_id=0"),
            f"strategy.coordinator=127.0.0.1:{port}",
        )
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: process 0 of 2: the port of strategy.coordinator=127.0.0.1:{port} is already "
        "in use on this host (another run's coordinator, or another program): pick a free port "
        "for every process of this run, or stop what holds it."
    )
    assert not _runs_anywhere(workspace)


@coordinator_port
@pytest.mark.e2e
def test_when_a_process_dies_the_others_stop_in_one_line_and_the_run_is_failed(workspace):
    """Process 1 killed mid-run: process 0 ends at once with one line (not at JAX's exit
    barrier, a heartbeat timeout later, with a stack trace), its run FAILED with its
    checkpoint logged."""
    port, folders = _free_port(), [workspace.root / "outputs" / f"process{i}" for i in (0, 1)]
    processes = [
        workspace.start(
            *("backend=jax", "experiment=digits_lenet", "trainer.epochs=40"),
            *("strategy=data_parallel", "strategy.num_processes=2", f"strategy.process_id={i}"),
            *(f"strategy.coordinator=127.0.0.1:{port}", "strategy.heartbeat_timeout=60"),
            *("callbacks.early_stopping.enabled=false", "logger.experiment=lost"),
            f"hydra.run.dir={folders[i]}",
        )
        for i in (0, 1)
    ]
    wait_until(lambda: epochs_done(folders[0]) >= 2, processes[0])
    processes[1].kill()
    processes[1].wait()
    killed_at = time.monotonic()
    _, stderr = processes[0].communicate(timeout=120)
    waited = time.monotonic() - killed_at
    assert waited < 50, (waited, stderr[-3000:])  # well before the 60 s heartbeat timeout
    assert processes[0].returncode == 2, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: process 0 of 2: another process of this run stopped"), line
    assert "Traceback" not in stderr and "Check failure" not in stderr

    (run,) = _runs(workspace, "lost")
    assert run.info.status == "FAILED"
    logged = {f.path for f in workspace.client().list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/best.keras" in logged
