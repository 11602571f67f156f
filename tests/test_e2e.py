"""The real CLI in a subprocess, then the run read back from the real MLflow store."""

from __future__ import annotations

import json

import keras
import mlflow
import numpy as np
import pytest

from tests.conftest import FAST, checksum_overrides

EXPECTED_ARTIFACTS = {
    "class_names.json",
    "config/config.yaml",
    "config/overrides.yaml",
    "config/resolved.yaml",
    "model_summary.txt",
    "plots/confusion_matrix.png",
    "plots/learning_curves.png",
    "plots/test_predictions.png",
    "reports/classification_report.json",
    "reports/classification_report.txt",
}


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def only_run(client, experiment: str = "tests"):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    assert len(runs) == 1, [r.info.status for r in runs]
    return runs[0]


@pytest.mark.fresh_store  # a first run on a new machine: the store is created too
def test_fashion_mnist_lenet_end_to_end(workspace, mirror):
    result = workspace.run(
        *checksum_overrides(mirror, "fashion_mnist"),
        "model=lenet",
        *FAST,
        "trainer.epochs=3",
        "callbacks.model_checkpoint.keep=best_and_last",
        "callbacks.csv_logger.enabled=true",
        "callbacks.tensorboard.enabled=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    run = only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    # The summary names the run and how to open the UI, on the run's page in its Model training
    # view (MLflow 3's UI opens in its GenAI view otherwise).
    assert f"MLflow run {run_id}" in result.stdout
    assert "mlflow ui --backend-store-uri" in result.stdout
    link = f"/#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    assert f"http://127.0.0.1:5000{link}" in result.stdout

    # Params: the flattened resolved config, plus what the data turned out to be.
    params = run.data.params
    assert params["model.name"] == "lenet"
    assert params["data.name"] == "fashion_mnist"
    assert params["trainer.epochs"] == "3"
    assert params["optimizer.lr"] == "0.01"
    assert params["data.mirror"] == mirror.url
    assert params["data.size.test"] == "100"
    assert int(params["data.size.train"]) + int(params["data.size.val"]) == 300
    assert params["data.input_shape"] == "(28, 28, 1)"

    # Tags: model, data, overrides, git commit.
    tags = run.data.tags
    assert tags["model"] == "lenet" and tags["data"] == "fashion_mnist"
    assert "trainer.epochs=3" in tags["overrides"]
    assert "git_commit" in tags

    # Per-epoch metrics under Keras' names with step = epoch; final ones prefixed test_.
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == [0, 1, 2], name
    assert client.get_metric_history(run_id, "learning_rate")[0].value == pytest.approx(0.01)

    artifacts = artifact_paths(client, run_id)
    assert EXPECTED_ARTIFACTS <= artifacts, EXPECTED_ARTIFACTS - artifacts
    class_names = json.loads(
        mlflow.artifacts.load_text(f"{run.info.artifact_uri}/class_names.json")
    )
    assert class_names[0] == "T-shirt/top" and len(class_names) == 10
    report = json.loads(
        mlflow.artifacts.load_text(f"{run.info.artifact_uri}/reports/classification_report.json")
    )
    assert set(class_names) <= set(report)
    # The test metrics and the report score the same predictions.
    assert run.data.metrics["test_accuracy"] == pytest.approx(report["accuracy"], abs=1e-6)
    overrides = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/overrides.yaml")
    assert "model=lenet" in overrides

    # The logged model loads (Keras safe mode underneath) and predicts on raw uint8 images.
    mlflow.set_tracking_uri(workspace.tracking_uri)
    logged = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [m.name for m in logged] == ["model"]  # FAST leaves the serving model out
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    [inputs] = model.metadata.get_input_schema().inputs
    [outputs] = model.metadata.get_output_schema().inputs
    assert (inputs.shape, str(inputs.type)) == ((-1, 28, 28, 1), "uint8")
    assert (outputs.shape, str(outputs.type)) == ((-1, 10), "float32")
    images = np.zeros((3, 28, 28, 1), dtype=np.uint8)
    predictions = np.asarray(model.predict(images))
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-4)
    keras_model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    assert keras_model.count_params() == 1_256_080

    # The evaluated and logged weights are the best epoch's by the objective (val_accuracy),
    # named in the run; the last epoch's weights are kept beside them (keep=best_and_last).
    val_accuracy = [
        m.value
        for m in sorted(client.get_metric_history(run_id, "val_accuracy"), key=lambda m: m.step)
    ]
    best_epoch = int(np.argmax(val_accuracy)) + 1
    assert run.data.metrics["evaluated_epoch"] == best_epoch
    assert tags["evaluated_weights"].startswith(f"best: best.keras, epoch {best_epoch} of 3")
    (checkpoints,) = (workspace.root / "outputs" / "runs").glob("*/checkpoints")
    best, last = (
        keras.saving.load_model(checkpoints / f"{name}.keras", safe_mode=True)
        for name in ("best", "last")
    )
    for logged_weights, best_weights in zip(
        keras_model.get_weights(), best.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(logged_weights, best_weights)
    if best_epoch != 3:
        assert not np.array_equal(keras_model.get_weights()[-1], last.get_weights()[-1])

    # Callbacks switched on from the config leave their files in the run.
    history_csv = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/history.csv")
    assert history_csv.splitlines()[0].startswith("epoch,") and len(history_csv.splitlines()) == 4
    assert any(path.startswith("tensorboard/train/events.out.tfevents") for path in artifacts)


def test_mnist_from_its_idx_files_end_to_end(workspace, mirror):
    """data=mnist_idx: MNIST's four gzip IDX files fetched from the mirror into the cache, read
    with the official test split and the digits' class names."""
    result = workspace.run(*checksum_overrides(mirror, "mnist_idx"), "model=lenet", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(workspace.client())
    assert run.info.status == "FINISHED"
    assert run.data.params["data.name"] == "mnist_idx"
    assert run.data.params["data.size.test"] == "100"
    class_names = json.loads(
        mlflow.artifacts.load_text(f"{run.info.artifact_uri}/class_names.json")
    )
    assert class_names == [str(digit) for digit in range(10)]
    cached = workspace.data_dir / "mnist_idx" / "train-labels-idx1-ubyte.gz"
    assert cached.read_bytes() == (mirror.folder / cached.name).read_bytes()


def test_cifar10_tuned_trains_on_the_binary_archive_end_to_end(workspace, mirror):
    """experiment=cifar10_tuned data=cifar10_bin: the pickle-free archive fetched from the
    mirror, its class names, the airbench net and its flip TTA, shrunk to one small epoch."""
    result = workspace.run(
        "experiment=cifar10_tuned",
        *checksum_overrides(mirror, "cifar10_bin"),
        "model.widths=[8,16,16]",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(workspace.client())
    assert run.info.status == "FINISHED"
    assert run.data.params["data.name"] == "cifar10_bin"
    assert run.data.params["model.name"] == "airbench"
    assert run.data.params["data.size.test"] == "100"
    assert {"test_accuracy", "test_tta_accuracy"} <= set(run.data.metrics)
    class_names = json.loads(
        mlflow.artifacts.load_text(f"{run.info.artifact_uri}/class_names.json")
    )
    assert class_names[:3] == ["airplane", "automobile", "bird"] and len(class_names) == 10
    cached = workspace.data_dir / "cifar10_bin" / "cifar-10-binary.tar.gz"
    assert cached.read_bytes() == (mirror.folder / cached.name).read_bytes()


def test_digits_offline_learns_on_two_cpu_replicas_with_the_accelerator_settings(workspace):
    """Offline data; tf.distribute through the CLI (two logical CPU devices, one replica each,
    one model, one run); and the other accelerator settings (on the CPU here): bfloat16 mixed
    precision, XLA off, and MLflow's system metrics."""
    result = workspace.run(
        "experiment=digits_lenet",
        "trainer.epochs=3",
        "logger.experiment=tests",
        "logger.log_model=false",
        "trainer.seed=1",
        "trainer.evaluate=last",
        "callbacks=reduce_lr",
        "callbacks.reduce_lr_on_plateau.patience=0",
        "callbacks.reduce_lr_on_plateau.min_delta=10",
        "callbacks.reduce_lr_on_plateau.factor=0.5",
        "strategy=mirrored",
        "strategy.cpu_devices=2",
        "trainer.precision=mixed_bfloat16",
        "trainer.jit_compile=false",
        "logger.system_metrics=true",
        "logger.system_metrics_interval=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["device"].startswith("CPU") and run.data.tags["device_names"]
    assert run.data.tags["device"].endswith(", 2 replicas")
    # trainer.batch_size is per replica: each step takes twice as many images.
    batch = int(run.data.params["trainer.batch_size"])
    steps = -(-int(run.data.params["data.size.train"]) // (2 * batch))
    assert f"{steps}/{steps}" in result.stdout
    throughput = client.get_metric_history(run.info.run_id, "images_per_second")
    assert len(throughput) == 3 and min(m.value for m in throughput) > 0
    assert "device_peak_memory_mb" not in run.data.metrics  # a CPU: no accelerator memory
    (last,) = (workspace.root / "outputs" / "runs").glob("*/checkpoints/last.keras")
    saved = keras.saving.load_model(last, safe_mode=True)
    policies = {layer.name: layer.dtype_policy.name for layer in saved.layers}
    assert policies["fc1"] == "mixed_bfloat16" and policies["predictions"] == "float32"
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert run.data.params["data.name"] == "digits"
    assert run.data.params["data.size.test"] == "360"  # 20% of 1,797, stratified
    assert run.data.metrics["test_accuracy"] > 0.3  # chance is 0.1
    # trainer.evaluate=last: the last epoch's weights, named in the run.
    assert run.data.metrics["evaluated_epoch"] == 3
    assert run.data.tags["evaluated_weights"] == "last: last.keras, epoch 3 of 3"
    # ReduceLROnPlateau: with min_delta 10 no epoch after the first counts as an improvement,
    # so (patience 0, factor 0.5) the rate halves at the end of epochs 2 and 3.
    rates = [
        m.value
        for m in sorted(
            workspace.client().get_metric_history(run.info.run_id, "learning_rate"),
            key=lambda m: m.step,
        )
    ]
    assert rates == pytest.approx([0.01, 0.005, 0.0025], rel=1e-5)
    # Nothing was downloaded: the cache folder was never created.
    assert not workspace.data_dir.exists()
    # The splits are the run's dataset inputs (the Dataset column of the MLflow UI).
    inputs = run.inputs.dataset_inputs
    contexts = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in inputs}
    assert set(contexts) == {"training", "validation", "testing"}
    assert contexts["testing"].digest == run.data.tags["data.test_digest"]
    assert contexts["training"].name == "digits"
    assert "load_digits" in contexts["training"].source
