"""How a job's MLflow run is named and tagged: what it trained, where, with which code."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.sweeps import trials
from runner.sweeps.identity import SWEPT_KEYS_ENV
from runner.tracking.params import git_tags
from runner.training import resume
from runner.training.runtime import Runtime, device_names

CODE_ROOT = Path(__file__).resolve().parents[2]


def run_name(cfg: DictConfig) -> str:
    """`logger.run_name`, else model-data; in a sweep with the values this job was given
    (`lenet-digits lr=0.01 batch_size=32`), else its job number.

    (MLflow's random names would repeat: they come from Python's `random`, seeded per job.)
    """
    if cfg.logger.run_name:
        return cfg.logger.run_name
    hydra = HydraConfig.get()
    name = f"{cfg.model.name}-{cfg.data.name}"
    if hydra.mode != RunMode.MULTIRUN:
        return name
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    values = dict(o.split("=", 1) for o in hydra.overrides.task if "=" in o)
    given = [f"{key.split('.')[-1]}={values[key]}" for key in swept if key in values]
    return " ".join([name, *given]) if given else f"{name} #{hydra.job.num}"


def job_tags(cfg: DictConfig, runtime: Runtime, output_dir: Path, digest: str) -> dict[str, str]:
    overrides = list(HydraConfig.get().overrides.task)
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "optimizer": cfg.optimizer.name,
        "augmentation": cfg.augmentation.name,
        "overrides": " ".join(overrides) if overrides else "(none)",
        "output_dir": str(output_dir.resolve()),
        "device": runtime.device,
        "backend": cfg.backend,
        "device_names": device_names(),
        # The commit of the runner code that ran (not of the folder the command ran in).
        **git_tags(CODE_ROOT),
        **trials.trial_tags(),  # an Optuna trial: its study and number
        "config_digest": digest,  # what trainer.resume compares
        **resume.process_tags(),  # pid and host: `runner.runs` tells a dead run from a live one
    }
