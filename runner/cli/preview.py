"""`python -m runner.preview data=... augmentation=...`: a grid of augmented training images.

Same config as a training run (any override works); writes the PNG into the job's output
folder and prints its path. Nothing is trained or logged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runner.cli.app import CONF_DIR
from runner.cli.quick_exit import skip_final_collection
from runner.config.migrate import migrate_argv
from runner.config.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from runner import models
    from runner.augmentation import transforms as augment
    from runner.config.checks import check_group
    from runner.data import load, load_context
    from runner.reports import plots

    check_group(cfg, "augmentation")
    splits = load(cfg.data, load_context(cfg, lambda: models.input_size(cfg.model)))
    augment.warn_if_mirroring(cfg.augmentation, splits.info.name)
    originals, augmented = augment.preview(
        splits.train.sample(8), cfg.augmentation, seed=cfg.trainer.seed, count=8, variants=7
    )
    figure = plots.augmentation_grid(
        originals, augmented, f"augmentation={cfg.augmentation.name} on {splits.info.name}"
    )
    path = Path(cfg.paths.output_dir) / f"augmentation_{cfg.augmentation.name}.png"
    figure.savefig(path, dpi=110)
    plots.close(figure)
    print(f"[runner.preview] wrote {path.resolve()}")


def entry() -> None:
    skip_final_collection()
    # Named apart from training jobs: a preview sweep (-m) opens no MLflow parent run.
    migrate_argv()
    sys.argv.append("hydra.job.name=preview")
    main()
