"""Bad input fails with one clear message, before TensorFlow where it can, and leaves no
RUNNING run behind. (Messages of failed downloads: tests/test_data.py; signals:
tests/test_faults.py.)"""

from __future__ import annotations

import pytest

from tests.conftest import FAST, compose_config


def statuses(workspace) -> list[str]:
    client = workspace.client()
    experiment = client.get_experiment_by_name("tests")
    if experiment is None:
        return []
    return [run.info.status for run in client.search_runs([experiment.experiment_id])]


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


def test_a_preset_that_does_not_exist_is_one_line_listing_the_presets(workspace):
    for override, listed in (
        ("experiment=cifar10_cnnn", ("cifar10_cnn,", "cifar10_tuned,", "digits_lenet,")),
        ("hparams_search=digits_lenett", ("digits_lenet,", "fashion_mnist_lenet,")),
    ):
        result = workspace.run(override, *FAST)
        assert result.returncode == 2, result.stderr[-2000:]
        group, name = override.split("=")
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {group}={name} is not a preset. Presets (conf/{group}/):")
        for preset in listed:
            assert f" {preset}" in line, line
    assert statuses(workspace) == []


RANGE_ERRORS = [
    ("trainer.batch_size=0", "trainer.batch_size should be >= 1. Received: 0"),
    ("trainer.epochs=0", "trainer.epochs should be >= 1. Received: 0"),
    ("trainer.seed=-1", "trainer.seed should be in [0, 4294967296). Received: -1"),
    ("data.split_seed=4294967296", "data.split_seed should be in [0, 4294967296)"),
    ("+foo=1", "foo is not a config key (added with +?): nothing reads it"),
    (
        "logger.run_name=${oc.env:RUNNER_TEST_UNSET}",
        "logger.run_name cannot be resolved: KeyError raised while resolving interpolation: "
        "\"Environment variable 'RUNNER_TEST_UNSET' not found\"",
    ),
    ("trainer.epochs=${trainer.nope}", "trainer.epochs cannot be resolved: Interpolation key"),
    ("logger.run_name=" + "x" * 251, "logger.run_name is 251 characters long; at most 250"),
    ("notes=" + "x" * 6001, "notes is 6,001 characters long; MLflow keeps at most 6,000"),
    ("+trainer.epoch=3", "trainer.epoch is not a config key (added with +?)"),
    ("trainer.validation_split=1.5", "trainer.validation_split should be in [0, 1)"),
    ("optimizer.lr=-1", "optimizer.lr should be a positive number"),
    ("optimizer=adam optimizer.weight_decay=-1", "optimizer.weight_decay should be >= 0 or null"),
    ("optimizer=adam optimizer.beta_1=1", "optimizer.beta_1 should be in [0, 1). Received: 1"),
    ("optimizer=sgd optimizer.momentum=-0.5", "optimizer.momentum should be in [0, 1)"),
    ("optimizer=rmsprop optimizer.epsilon=0", "optimizer.epsilon should be a positive number"),
    ("augmentation.zoom=1.5", "augmentation.zoom should be below 1. Received: 1.5"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience should be >= 0"),
    ("strategy.cpu_devices=-2", "strategy.cpu_devices should be >= 0. Received: -2"),
    (
        "strategy=data_parallel strategy.num_processes=2 strategy.process_id=1",
        "strategy.num_processes=2 needs strategy.coordinator (host:port of process 0",
    ),
    (
        "strategy=data_parallel strategy.coordinator=hostA",
        "strategy.coordinator should be host:port of process 0 (e.g. 10.0.0.1:23456). "
        "Received: hostA",
    ),
    ("strategy.join_timeout=0", "strategy.join_timeout should be >= 1. Received: 0"),
    (
        "model=pretrained model.dropout=1",
        "model.dropout should be in [0, 1). Received: 1",
    ),
    (
        "callbacks.model_checkpoint.enabled=false",
        "trainer.evaluate=best scores checkpoints/best.keras, which "
        "callbacks.model_checkpoint.enabled=false does not write",
    ),
    (
        "callbacks=reduce_lr optimizer.schedule=inverse_time",
        "callbacks.reduce_lr_on_plateau sets the learning rate itself; it cannot be combined "
        "with optimizer.schedule=inverse_time",
    ),
    (
        "callbacks.reduce_lr_on_plateau.factor=2",
        "callbacks.reduce_lr_on_plateau.factor should be between 0 and 1",
    ),
    (
        "strategy=mirrored trainer.steps_per_execution=2",
        "trainer.steps_per_execution=2 cannot be combined with strategy=mirrored",
    ),
]


@pytest.mark.parametrize(("override", "message"), RANGE_ERRORS)
def test_out_of_range_values_are_refused_by_the_config_check(override, message):
    """The check the CLI runs before TensorFlow, on the config it composes."""
    from runner.config.checks import check_config
    from runner.core.errors import RunnerError

    cfg = compose_config(["experiment=digits_lenet", *override.split()])
    with pytest.raises(RunnerError) as error:
        check_config(cfg)
    assert message in str(error.value)


def test_an_out_of_range_value_is_one_line_before_any_run(workspace):
    override, message = RANGE_ERRORS[0]
    result = workspace.run("experiment=digits_lenet", *FAST, override)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert statuses(workspace) == []


def test_a_file_store_is_one_line_pointing_to_sqlite(workspace):
    store = workspace.root / "old-mlruns"
    result = workspace.run("experiment=digits_lenet", *FAST, f"logger.tracking_uri=file:{store}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"logger.tracking_uri=file:{store} is a file store" in line
    assert "sqlite:///" in line and "MLFLOW_ALLOW_FILE_STORE=true" in line
    assert not store.exists()


def test_a_monitor_that_is_not_a_metric_is_refused_with_the_choices():
    """What a run checks once it knows its metrics (a RunnerError there fails the run with one
    line: test_missing_file_offline_names_file_url_and_folder)."""
    from runner.core.errors import RunnerError
    from runner.data.base import DataInfo
    from runner.models.heads import loss_and_metrics
    from runner.training import callbacks

    cfg = compose_config(["experiment=digits_lenet", "callbacks.early_stopping.monitor=val_acc"])
    _, metrics = loss_and_metrics(DataInfo("digits", (28, 28, 1), tuple("0123456789")))
    with pytest.raises(RunnerError) as error:
        callbacks.check(cfg, "val_accuracy", metrics, validated=True)
    assert "callbacks.early_stopping.monitor='val_acc' is not a metric" in str(error.value)
    assert "val_accuracy" in str(error.value)
