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
import os
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.checks import check_config
from runner.config import register_configs
from runner.errors import RunnerError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
register_configs()
log = logging.getLogger("runner.evaluate")
OPTIONS: dict[str, str] = {"--model": "", "--split": "all"}
CONF = Path(__file__).resolve().parents[1] / "conf"


def take_options(argv: list[str]) -> list[str]:
    """`--model X` and `--split S` are ours; everything else is Hydra's."""
    rest, index = [], 0
    while index < len(argv):
        key, _, value = argv[index].partition("=")
        if key in OPTIONS:
            if not value:
                index += 1
                value = argv[index] if index < len(argv) else ""
            OPTIONS[key] = value
        else:
            rest.append(argv[index])
        index += 1
    return rest


# An absolute path: this module also runs as `python -m runner.evaluate`, from another module.
@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        score(cfg, OPTIONS["--model"], OPTIONS["--split"])
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def score(cfg: DictConfig, model_uri: str, split: str) -> None:
    if not model_uri:
        raise RunnerError("--model is required: runs:/<run id>/model, models:/<name>@<alias>, ...")
    if split not in ("all", "test"):
        raise RunnerError(f"--split should be all or test. Received: {split!r}")
    check_config(cfg)
    import mlflow
    import numpy as np

    from runner import data as data_sources
    from runner import tracking
    from runner.data.base import Splits, concat
    from runner.evaluate import evaluate
    from runner.models.heads import loss_and_metrics
    from runner.predict import logged_classifier
    from runner.train import load_context

    experiment_id = tracking.use_experiment(
        cfg.logger.tracking_uri, cfg.logger.experiment, cfg.logger.artifact_location
    )
    classifier = logged_classifier(model_uri, cfg.logger.tracking_uri)
    model_info = None if model_uri.endswith(".keras") else mlflow.models.get_model_info(model_uri)
    cfg = sized_for(cfg, classifier.input_shape)
    splits = data_sources.load(cfg.data, load_context(cfg))
    info = splits.info
    if tuple(info.input_shape) != tuple(classifier.input_shape):
        raise RunnerError(
            f"data={info.name} gives images of shape {tuple(info.input_shape)}; the model takes "
            f"{tuple(classifier.input_shape)}: score it on data of its kind (image files are "
            "decoded to the model's size and colour; MNIST, CIFAR-10 and digits' channels are "
            "their own)."
        )
    if sorted(info.class_names) != sorted(classifier.class_names):
        raise RunnerError(
            f"The data's classes {list(info.class_names)} are not the model's "
            f"{classifier.class_names}: score a model on data with the same classes."
        )
    chosen = concat([splits.train, splits.val, splits.test]) if split == "all" else splits.test
    if info.task != "multilabel":  # the model's class order
        order = np.asarray([classifier.class_names.index(name) for name in info.class_names])
        chosen = replace(chosen, y=order[chosen.y])
    info = replace(info, class_names=tuple(classifier.class_names))
    scored = Splits(train=chosen, val=chosen, test=chosen, info=info)
    model = classifier.model  # loaded once, by the same code as runner.predict
    loss, metrics = loss_and_metrics(info)
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    source_run = getattr(model_info, "run_id", None) if model_info else None
    hydra_cfg = HydraConfig.get()
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"evaluate {model_uri} on {info.name}",
        tags={
            "evaluation": "true",
            "source_model": model_uri,
            "source_run_id": source_run or "",
            "evaluated_split": split,
            "overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
            "data": info.name,
        },
    ) as run:
        params = tracking.config_params(cfg)
        mlflow.log_params({k: v for k, v in params.items() if k.startswith("data.")})
        if model_info is not None and getattr(model_info, "model_id", None):
            from mlflow.entities import LoggedModelInput

            mlflow.log_input(model=LoggedModelInput(model_info.model_id))
        mlflow.log_param("data.size.scored", len(chosen))
        results = evaluate(
            model,
            scored,
            batch_size=cfg.trainer.batch_size,
            threshold=classifier.threshold,
            title=f"{model_uri} on {info.name}",
        )
    shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(results.items()))
    print(f"\n[runner.evaluate] {len(chosen)} images of data={info.name} ({split}): {shown}\n"
          f"[runner.evaluate] MLflow run {run.info.run_id} (source run {source_run})")  # fmt: skip


def sized_for(cfg: DictConfig, input_shape: tuple[int, int, int]) -> DictConfig:
    """The config with its images decoded or resized to the model's input, whatever the data
    config says: image folders take [height, width] and a colour mode, digits one square side;
    arrays (MNIST, CIFAR-10) have a size of their own."""
    size = OmegaConf.select(cfg, "data.image_size", default="absent")
    if size == "absent":
        return cfg
    height, width, channels = input_shape
    resized: dict = {"image_size": height if isinstance(size, int) else [height, width]}
    if "color_mode" in cfg.data:
        resized["color_mode"] = "grayscale" if channels == 1 else "rgb"
    return OmegaConf.merge(cfg, {"data": resized})  # type: ignore[return-value]


def entry() -> None:
    sys.argv = [sys.argv[0], *take_options(sys.argv[1:])]
    if "hydra.job.name" not in " ".join(sys.argv):
        sys.argv.append("hydra.job.name=evaluate")
    main()


if __name__ == "__main__":
    entry()
