"""Scoring a trained model on other labelled data (`python -m runner.evaluate`): the data is
decoded to the model's input, its classes matched to the model's, and what a training run logs
about its test split is logged to a new MLflow run tagged with the model it scored.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner import models
from runner.config.checks import check_config
from runner.core.errors import RunnerError


def score(cfg: DictConfig, model_uri: str, split: str, *, trust: bool = False) -> None:
    if not model_uri:
        raise RunnerError("--model is required: runs:/<run id>/model, models:/<name>@<alias>, ...")
    if split not in ("all", "test"):
        raise RunnerError(f"--split should be all or test. Received: {split!r}")
    check_config(cfg)
    import mlflow
    import numpy as np

    from runner import data as data_sources
    from runner.data import load_context
    from runner.data.base import Splits, concat
    from runner.evaluation.classifiers import logged_classifier
    from runner.evaluation.test_split import evaluate
    from runner.models.heads import loss_and_metrics
    from runner.tracking.params import config_params
    from runner.tracking.run import open_run

    classifier = logged_classifier(model_uri, cfg.logger.tracking_uri, trust=trust)
    model_info = None if model_uri.endswith(".keras") else mlflow.models.get_model_info(model_uri)
    cfg = sized_for(cfg, classifier.input_shape)
    splits = data_sources.load(cfg.data, load_context(cfg, lambda: models.input_size(cfg.model)))
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
    params = {k: v for k, v in config_params(cfg).items() if k.startswith("data.")}
    with open_run(
        cfg,
        run_name=f"evaluate {model_uri} on {info.name}",
        tags={
            "evaluation": "true",
            "source_model": model_uri,
            "source_run_id": source_run or "",
            "evaluated_split": split,
            "overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
            "data": info.name,
        },
        params={**params, "data.size.scored": str(len(chosen))},
        output_dir=Path(cfg.paths.output_dir),
    ) as run_log:
        if model_info is not None and getattr(model_info, "model_id", None):
            from mlflow.entities import LoggedModelInput

            mlflow.log_input(model=LoggedModelInput(model_info.model_id))
        results = evaluate(
            model,
            scored,
            run_log,
            batch_size=cfg.trainer.batch_size,
            threshold=classifier.threshold,
            title=f"{model_uri} on {info.name}",
            tta=cfg.evaluate.tta,
        )
    shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(results.items()))
    print(
        f"\n[runner.evaluate] {len(chosen)} images of data={info.name} ({split}): {shown}\n"
        f"[runner.evaluate] MLflow run {run_log.run_id} (source run {source_run})"
    )


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
