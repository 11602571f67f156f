"""`python -m runner.evaluate --model MODEL data=GROUP [data.path=...] [--split all|test]`

Scores a trained model on another dataset or folder of labelled images, and logs what a
training run logs about its test split (test metrics, classification report, confusion matrix
or per-class AP, prediction grid) to a new MLflow run, tagged with the model it scored
(`source_run_id`, `source_model`) and linked to that model as an input. `--split all` (the
default) scores every image of the data; `--split test` only its test split. The data's classes
must be the model's (same names; their order may differ).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from runner.cli.app import CONF_DIR, stop
from runner.cli.quick_exit import skip_final_collection
from runner.config.schema import register_configs
from runner.core.errors import RunnerError

register_configs()
log = logging.getLogger("runner.evaluate")
OPTIONS: dict[str, str] = {"--model": "", "--split": "all"}
FLAGS: dict[str, bool] = {"--trust-model": False}  # runner/evaluation/model_files.py


def take_options(argv: list[str]) -> list[str]:
    """`--model X`, `--split S` and `--trust-model` are ours; everything else is Hydra's."""
    rest, index = [], 0
    while index < len(argv):
        key, _, value = argv[index].partition("=")
        if key in FLAGS and not value:
            FLAGS[key] = True
        elif key in OPTIONS:
            if not value:
                index += 1
                value = argv[index] if index < len(argv) else ""
            OPTIONS[key] = value
        else:
            rest.append(argv[index])
        index += 1
    return rest


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from runner.evaluation.scoring import score  # heavy: MLflow, TensorFlow

    try:
        score(cfg, OPTIONS["--model"], OPTIONS["--split"], trust=FLAGS["--trust-model"])
    except RunnerError as error:
        stop(f"error: {error}", error)


def entry() -> None:
    skip_final_collection()
    sys.argv = [sys.argv[0], *take_options(sys.argv[1:])]
    if "hydra.job.name" not in " ".join(sys.argv):
        sys.argv.append("hydra.job.name=evaluate")
    main()


if __name__ == "__main__":
    entry()
