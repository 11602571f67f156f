"""`python -m runner [group=option ...] [key=value ...]`: compose the config, run one job.

TensorFlow is imported only once Hydra has composed and validated the config, so a typo on the
command line is reported in a moment, not after seconds of imports.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.config import Mode, register_configs
from runner.errors import RunnerError

# Keep TensorFlow's C++ notices (no CUDA driver, oneDNN, ...) off the console; the runner
# itself reports the device it trains on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
register_configs()
log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from runner.train import run  # heavy: TensorFlow, Keras, MLflow

    for noisy in ("alembic", "mlflow", "absl"):  # after the import: MLflow sets its own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except Exception as error:
        if in_sweep:
            # The run is already FAILED in MLflow with the reason. The sweep goes on, and the
            # sweeper gets the worst possible value (Optuna 2 rejects NaN, and an exception
            # would end a basic sweep at its first failed job).
            log.error("job failed: %s", error, exc_info=not isinstance(error, RunnerError))
            return float("-inf") if Mode(cfg.objective.mode) is Mode.max else float("inf")
        if not isinstance(error, RunnerError):
            raise
        log.error("%s", error)
        print(f"\nerror: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
