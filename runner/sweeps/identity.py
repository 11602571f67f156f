"""What identifies a sweep and the keys it varies: the same command line finds the same sweep
again (its parent run, its Optuna study), and each job's run is named by the values it was given.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from omegaconf import DictConfig, OmegaConf

SWEPT_KEYS_ENV = "RUNNER_SWEPT_KEYS"


def swept_keys(overrides: list[str], config: DictConfig) -> list[str]:
    """The keys a sweep varies: sweep overrides (`a=1,2`, `range(...)`, ...) and an Optuna
    sweeper's search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    return keys + [k for k in params if k not in keys]


def parent_name(overrides: list[str], swept: list[str]) -> str:
    """`sweep model=lenet,mlp optimizer.lr=0.1,0.01 (11-26 09:30)`: two sweeps tell apart."""
    varied = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept] or ["(no sweep)"]
    return f"sweep {' '.join(varied)}"[:200] + datetime.now().strftime(" (%m-%d %H:%M)")


def resuming(config: DictConfig) -> bool:
    wanted = OmegaConf.select(config, "trainer.resume", default=None)
    return str(wanted).lower() in ("true", "latest")


def sweep_key(overrides: list[str]) -> str:
    """What identifies a sweep across re-runs: its overrides, minus trainer.resume."""
    kept = sorted(o for o in overrides if not o.startswith("trainer.resume="))
    return hashlib.sha256(" ".join(kept).encode()).hexdigest()[:16]
