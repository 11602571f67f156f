"""Configs of `hydra/sweeper=optuna` and its samplers and pruners, registered with Hydra.

The keys of Hydra's own Optuna sweeper (hydra-optuna-sweeper 1.3, which pins Optuna < 3) keep
their meaning; `storage`, `study_name` and `n_trials` now describe a persistent study (see
README, "Optuna searches"), and `pruner` is new. Samplers and pruners are Optuna's own classes
(`_target_`), so any of their arguments can be added on the command line with `+`.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    # minimize | maximize, or a list of them for several objectives.
    direction: Any = "minimize"
    # An SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...); null: `optuna.db` beside the
    # MLflow store. A study there survives the sweep: the same command resumes it.
    storage: str | None = None
    # null: named from the sweep's command line, so the same command finds the same study.
    study_name: str | None = None
    # Trials the study should hold in the end (over every run of the command and every worker).
    n_trials: int = 20
    # Trials launched together (in parallel with a parallel launcher).
    n_jobs: int = 1
    # Stop asking for trials once more than this share of this sweep's trials failed.
    max_failure_rate: float = 0.0
    # Search space: `key: choice(...) | range(...) | interval(...) | tag(log, interval(...))`.
    params: dict[str, str] | None = None
    # A callable(cfg, trial) that suggests more values (`_target_`-style dotted path).
    custom_search_space: str | None = None


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None},
    # The grid comes from `params` when the sweep starts.
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
}
PRUNERS = {
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
        "n_min_trials": 1,
    },
    "percentile": {
        "_target_": "optuna.pruners.PercentilePruner",
        "percentile": 25.0,
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
        "n_min_trials": 1,
    },
    "successive_halving": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": "auto",
        "reduction_factor": 4,
        "min_early_stopping_rate": 0,
    },
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
    # Stops a trial whose value leaves [lower, upper], e.g. lower=0.2 on val_accuracy.
    "threshold": {
        "_target_": "optuna.pruners.ThresholdPruner",
        "lower": None,
        "upper": None,
        "n_warmup_steps": 0,
        "interval_steps": 1,
    },
    "none": {"_target_": "optuna.pruners.NopPruner"},
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="runner")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="runner")
for name, node in PRUNERS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="runner")
