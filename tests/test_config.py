"""Every group option composes against its schema, without training anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from runner.config import register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@pytest.mark.parametrize("group", ["data", "model", "optimizer", "augmentation", "experiment"])
def test_every_option_composes(hydra_conf, group):
    for option in options(group):
        cfg = compose("config", overrides=[f"{group}={option}"])
        if group != "experiment":
            assert cfg[group].name == option
        OmegaConf.to_container(cfg.trainer, resolve=True)


def test_default_is_lenet_on_mnist(hydra_conf):
    cfg = compose("config")
    assert (cfg.data.name, cfg.model.name, cfg.optimizer.name) == ("mnist", "lenet", "sgd")


def compose_with_hydra(overrides: list[str]):
    """Compose as a run would, so `${hydra:...}` interpolations resolve."""
    cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_default_tracking_store_is_sqlite_in_mlruns(hydra_conf, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RUNNER_ROOT", "/srv/project")
    cfg = compose_with_hydra([])
    assert cfg.logger.tracking_uri == "sqlite:////srv/project/mlruns/mlflow.db"
    # Unset: beside the SQLite store (mlruns/artifacts), or the server's choice over http.
    assert cfg.logger.artifact_location is None


def test_environment_overrides_mirror_data_dir_and_tracking_uri(hydra_conf, monkeypatch):
    monkeypatch.setenv("RUNNER_DATA_MIRROR", "http://127.0.0.1:1/m")
    monkeypatch.setenv("RUNNER_DATA_DIR", "/tmp/cache-here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    cfg = compose_with_hydra(["data=cifar10"])
    assert cfg.data.mirror == "http://127.0.0.1:1/m"
    assert cfg.paths.data_dir == "/tmp/cache-here"
    assert cfg.logger.tracking_uri == "http://127.0.0.1:5000"
    # The command line still wins over the environment.
    cfg = compose("config", overrides=["data.mirror=http://127.0.0.1:2/x"])
    assert cfg.data.mirror == "http://127.0.0.1:2/x"


def test_experiment_presets_stay_overridable(hydra_conf):
    cfg = compose("config", overrides=["experiment=cifar10_cnn", "trainer.epochs=7"])
    assert cfg.model.name == "cifar_cnn" and cfg.optimizer.name == "adam"
    assert cfg.trainer.epochs == 7 and cfg.trainer.batch_size == 32


def test_schema_rejects_wrong_types_and_unknown_keys(hydra_conf):
    with pytest.raises(ConfigCompositionException) as error:
        compose("config", overrides=["trainer.batch_size=big"])
    assert isinstance(error.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.depth'"):
        compose("config", overrides=["model.depth=3"])
    with pytest.raises(ConfigCompositionException):
        compose("config", overrides=["optimizer.schedule=cosine"])  # not a Schedule


def test_model_keys_belong_to_their_model(hydra_conf):
    cfg = compose("config", overrides=["model=mlp", "model.hidden_units=[64]"])
    assert list(cfg.model.hidden_units) == [64]
    with pytest.raises(ConfigCompositionException):
        compose("config", overrides=["model=lenet", "model.hidden_units=[64]"])
