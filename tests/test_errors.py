"""Bad input fails with one clear message, before TensorFlow where it can, and leaves no
RUNNING run behind; an interrupted run is KILLED and keeps its checkpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST, checksum_overrides


def statuses(workspace) -> list[str]:
    client = workspace.client()
    experiment = client.get_experiment_by_name("tests")
    if experiment is None:
        return []
    return [run.info.status for run in client.search_runs([experiment.experiment_id])]


def test_checksum_mismatch_in_cache_is_reported_and_the_file_kept(workspace, mirror):
    cached = workspace.data_dir / "mnist" / "mnist.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((mirror.folder / "mnist.npz").read_bytes()[:-10])  # a damaged copy
    result = workspace.run(*checksum_overrides(mirror, "mnist"), *FAST)
    assert result.returncode == 2
    assert "Checksum mismatch for mnist.npz" in result.stderr
    assert "data.verify_checksum=false" in result.stderr
    assert "Traceback" not in result.stderr
    assert cached.exists(), "a user's file must never be deleted"
    assert statuses(workspace) == ["FAILED"]


def test_checksum_mismatch_on_download_names_the_expected_hash(workspace, mirror):
    wrong = "0" * 64
    result = workspace.run(
        "data=mnist", f"data.mirror={mirror.url}", f"data.files.archive.sha256={wrong}", *FAST
    )
    assert result.returncode == 2
    assert f"expected {wrong}" in result.stderr
    assert f"downloaded from {mirror.url}/mnist.npz" in result.stderr
    assert not (workspace.data_dir / "mnist" / "mnist.npz").exists()
    assert statuses(workspace) == ["FAILED"]


def test_verify_checksum_false_accepts_a_repacked_copy(workspace, mirror):
    result = workspace.run(
        "data=mnist", f"data.mirror={mirror.url}", "data.files.archive.sha256=" + "f" * 64,
        "data.verify_checksum=false", "model=mlp", *FAST, "logger.log_model=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data.verify_checksum=false" in result.stdout + result.stderr
    assert statuses(workspace) == ["FINISHED"]


def test_missing_file_offline_names_file_url_and_folder(workspace):
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    result = workspace.run("data=fashion_mnist", "data.mirror=http://127.0.0.1:9/datasets", *FAST)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Could not get train-images-idx3-ubyte.gz")
    assert "http://127.0.0.1:9/datasets/train-images-idx3-ubyte.gz" in message
    assert str(workspace.data_dir / "fashion_mnist") in message
    assert "Traceback" not in result.stderr
    assert statuses(workspace) == ["FAILED"]


def test_unknown_model_lists_the_options_without_starting_a_run(workspace):
    result = workspace.run("model=resnet9000", *FAST)
    assert result.returncode == 1
    assert "Could not find 'model/resnet9000'" in result.stderr
    assert "lenet" in result.stderr and "mlp" in result.stderr
    assert statuses(workspace) == []


def test_wrong_typed_override_is_rejected_by_the_schema(workspace):
    result = workspace.run("optimizer.lr=fast", *FAST)
    assert result.returncode == 1
    assert "Value 'fast' of type 'str' could not be converted to Float" in result.stderr
    assert "optimizer.lr" in result.stderr
    assert statuses(workspace) == []


def test_unknown_key_is_rejected(workspace):
    result = workspace.run("trainer.epoch=3")
    assert result.returncode == 1
    assert "Key 'epoch' not in 'TrainerConfig'" in result.stderr
    assert statuses(workspace) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [("trainer.batch_size=0", "trainer.batch_size should be >= 1. Received: 0"),
     ("trainer.epochs=0", "trainer.epochs should be >= 1. Received: 0"),
     ("trainer.validation_split=1.5", "trainer.validation_split should be between 0 and 1"),
     ("callbacks.model_checkpoint.enabled=false",
      "trainer.evaluate=best scores checkpoints/best.keras, which "
      "callbacks.model_checkpoint.enabled=false does not write"),
     ("callbacks=reduce_lr optimizer.schedule=inverse_time",
      "callbacks.reduce_lr_on_plateau sets the learning rate itself; it cannot be combined "
      "with optimizer.schedule=inverse_time"),
     ("callbacks.reduce_lr_on_plateau.factor=2",
      "callbacks.reduce_lr_on_plateau.factor should be between 0 and 1")],
)  # fmt: skip
def test_out_of_range_trainer_values_are_rejected_before_any_run(workspace, override, message):
    result = workspace.run("experiment=digits_lenet", *FAST, *override.split())
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert statuses(workspace) == []


def test_bad_monitor_fails_the_run_with_the_choices(workspace):
    result = workspace.run(
        "experiment=digits_lenet", *FAST, "callbacks.early_stopping.monitor=val_acc"
    )
    assert result.returncode == 2
    assert "callbacks.early_stopping.monitor='val_acc' is not a metric" in result.stderr
    assert "val_accuracy" in result.stderr
    assert statuses(workspace) == ["FAILED"]


def test_sigterm_marks_the_run_killed_and_keeps_checkpoints(workspace):
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "experiment=digits_lenet", "logger.experiment=tests",
         "trainer.epochs=200", "callbacks.early_stopping.enabled=false"],
        cwd=workspace.root, env=workspace.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(workspace.root.glob("outputs/runs/*/checkpoints/best.keras")):
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143
    client = workspace.client()
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "KILLED", output[-3000:]
    assert "SIGTERM" in run.data.tags["error"]
    logged = [item.path for item in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert logged == ["checkpoints/best.keras"]
