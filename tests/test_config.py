"""Every group option composes against its schema, without training anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from runner.config.registry import DATASETS, MODELS, OPTIMIZERS
from runner.config.schema import SCHEMAS, register_configs

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
        compose("config", overrides=["optimizer.schedule=exponential"])  # not a Schedule


def test_model_keys_belong_to_their_model(hydra_conf):
    cfg = compose("config", overrides=["model=mlp", "model.hidden_units=[64]"])
    assert list(cfg.model.hidden_units) == [64]
    with pytest.raises(ConfigCompositionException):
        compose("config", overrides=["model=lenet", "model.hidden_units=[64]"])


REGISTRIES = {registry.group: registry for registry in (DATASETS, MODELS, OPTIMIZERS)}


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_each_option_is_one_module_one_yaml_and_its_name(group):
    """conf/<group>/<name>.yaml <-> a registered option <name>, whose schema the YAML names."""
    registered = REGISTRIES[group].options()
    assert options(group) == sorted(registered)
    for name in registered:
        text = yaml.safe_load((CONF / group / f"{name}.yaml").read_text())
        assert text["defaults"][0] == f"/schema/{group}/{name}@_here_"
        assert "name" not in text  # the registered name is the only one


def _restated(values: dict, defaults: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            found += _restated(value, defaults[key], f"{prefix}{key}.")
        elif key in defaults and value == defaults[key]:
            found.append(f"{prefix}{key}")
    return found


def schema_of(group: str, name: str) -> type:
    return REGISTRIES[group][name].schema if group in REGISTRIES else SCHEMAS[group]


@pytest.mark.parametrize("group", sorted([*REGISTRIES, *SCHEMAS]))
def test_yaml_options_hold_no_copy_of_a_schema_default(group):
    """A default lives in one place: the schema (beside its code, or in runner/config/schema.py)."""
    for name in options(group):
        values = yaml.safe_load((CONF / group / f"{name}.yaml").read_text())
        values.pop("defaults")
        values.pop("name", None)  # an option's identity, not a default
        schema = OmegaConf.structured(schema_of(group, name))
        defaults = OmegaConf.to_container(schema, enum_to_str=True)
        assert _restated(values, defaults) == [], f"conf/{group}/{name}.yaml"


def test_composing_a_config_imports_neither_tensorflow_nor_scikit_learn():
    """The CLI rejects a bad override in a moment: nothing heavy is imported to compose."""
    code = (
        "import sys, types\n"
        "from hydra import compose, initialize_config_dir\n"
        "from runner.config.schema import register_configs\n"
        "register_configs()\n"
        f"with initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'):\n"
        "    compose('config', overrides=['model=pretrained', 'data=voc', 'optimizer=adam'])\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'sklearn', 'mlflow')\n"
        "          if type(sys.modules.get(m)) is types.ModuleType]\n"
        "print(','.join(loaded) or 'none')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


def test_help_lists_the_groups_a_user_picks_from_and_nothing_else():
    result = subprocess.run(
        [sys.executable, "-m", "runner", "--help"], capture_output=True, text=True, check=True
    )
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {
        line.split(":")[0]: line.split(": ")[1].split(", ")
        for line in groups.splitlines()
        if ": " in line
    }
    groups = [path.name for path in CONF.iterdir() if path.is_dir() and path.name != "hydra"]
    assert sorted(listed) == sorted(groups)
    assert listed["model"] == options("model") and "schema/model" not in result.stdout
    assert "README.md" in result.stdout and "../" not in result.stdout


def test_moved_keys_keep_working_with_a_one_line_note():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "--cfg",
            "job",
            "trainer.early_stopping.patience=3",
            "trainer.checkpoint.monitor=val_loss",
            "trainer.checkpoint.save_best_only=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cfg = OmegaConf.create(result.stdout)
    assert cfg.callbacks.early_stopping.patience == 3
    assert cfg.callbacks.model_checkpoint.monitor == "val_loss"
    assert cfg.trainer.evaluate == "last"
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: trainer.early_stopping.patience is now callbacks.early_stopping.patience",
        "note: trainer.checkpoint.monitor is now callbacks.model_checkpoint.monitor",
        "note: trainer.checkpoint.save_best_only=false is now trainer.evaluate=last "
        "(best.keras always holds the best epoch)",
    ]


def test_the_slurm_gpu_preset_composes_over_hydras_submitit_launcher(hydra_conf):
    cfg = compose("config", overrides=["hydra/launcher=slurm_gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)


def test_every_search_preset_composes_with_a_direction_matching_its_objective(hydra_conf):
    directions = {"max": "maximize", "min": "minimize"}
    for option in options("hparams_search"):
        cfg = compose("config", overrides=[f"hparams_search={option}"], return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.params, option
        assert sweeper.direction == directions[cfg.objective.mode.value], option
        for key in sweeper.params:  # every searched key is a key (or a group) of the config
            group = key.split(".")[0]
            assert OmegaConf.select(cfg, key) is not None or (CONF / group).is_dir(), (option, key)
