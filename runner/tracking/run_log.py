"""What a run logs (params, per-epoch metrics, tags, artifacts, figures, its model), each record
through the run's delivery: nothing is lost while a tracking server is away."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from runner.tracking.delivery import Delivery
from runner.tracking.logged_model import log_keras_model, log_serving_model
from runner.tracking.params import MAX_PARAM_LENGTH

log = logging.getLogger(__name__)


class RunLog:
    """One open MLflow run (`open_run` in run.py makes it), and everything logged to it."""

    def __init__(self, run: mlflow.ActiveRun, delivery: Delivery) -> None:
        self.run, self.delivery = run, delivery

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def info(self) -> Any:
        return self.run.info

    # ------------------------------------------------------------------- values

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()}
        self.delivery.send(
            lambda: mlflow.log_params(values), lambda: {"op": "params", "values": values}
        )

    def set_tag(self, key: str, value: str) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        values = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in tags.items()}
        self.delivery.send(
            lambda: mlflow.set_tags(values), lambda: {"op": "tags", "values": values}
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {name: float(value) for name, value in metrics.items()}
        record: dict[str, Any] = {"op": "metrics", "values": values}
        if step is not None:
            record["step"] = step
        self.delivery.send(lambda: mlflow.log_metrics(values, step=step), lambda: record)

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.log_metrics(metrics, step=epoch)

    def log_missing_epochs(self, history: Mapping[str, Sequence[float]]) -> int:
        """Send the epochs a killed run saved but did not get to log; returns how many."""
        client = mlflow.MlflowClient()
        sent = 0
        for name, values in history.items():
            logged = {m.step for m in client.get_metric_history(self.run_id, name)}
            for step, value in enumerate(values):
                if step not in logged:
                    mlflow.log_metric(name, float(value), step=step)
                    sent += 1
        return sent

    # ---------------------------------------------------------------- artifacts

    def log_json(self, data: Any, artifact_file: str) -> None:
        text = json.dumps(data, indent=2)
        self.delivery.send(
            lambda: mlflow.log_dict(data, artifact_file),
            lambda: self.delivery.stage_new(artifact_file, lambda path: path.write_text(text)),
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.delivery.send(
            lambda: mlflow.log_text(text, artifact_file),
            lambda: self.delivery.stage_new(artifact_file, lambda path: path.write_text(text)),
        )

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.delivery.send(
            lambda: mlflow.log_figure(figure, artifact_file),
            lambda: self.delivery.stage_new(artifact_file, figure.savefig),
        )

    def log_files(self, path: Path, artifact_path: str = "") -> None:
        """A file, or every file under a folder (sub-folders kept), as artifacts under
        `artifact_path` ("": the run's root)."""
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            where = Path(artifact_path) / file.parent.relative_to(path) if path.is_dir() else None
            folder = str(where) if where is not None else artifact_path
            folder = "" if folder == "." else folder
            self.delivery.send(
                lambda f=file, d=folder: mlflow.log_artifact(str(f), d or None),
                lambda f=file, d=folder: self.delivery.stage_file(
                    f, f"{d}/{f.name}" if d else f.name
                ),
            )

    def log_config(self, cfg: DictConfig, hydra_dir: Path) -> None:
        """Hydra's own files (composed config, overrides) and the fully resolved config."""
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            if (hydra_dir / name).exists():
                self.log_files(hydra_dir / name, "config")
        self.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")

    # ---------------------------------------------------------------------- data

    def log_dataset(
        self,
        class_names: Sequence[str],
        input_shape: tuple,
        task: str,
        sizes: Mapping[str, int],
        digests: Mapping[str, str],
    ) -> None:
        """What the data turned out to be: sizes, shape, classes (as params and
        class_names.json), and a fingerprint of each split (tags `data.<split>_digest`: equal
        digests, equal splits)."""
        self.set_tags({"task": task, **{f"data.{split}_digest": v for split, v in digests.items()}})
        self.log_params(
            {
                **{f"data.size.{split}": size for split, size in sizes.items()},
                "data.input_shape": input_shape,
                "data.num_classes": len(class_names),
            }
        )
        self.log_json(list(class_names), "class_names.json")

    def log_inputs(
        self, name: str, source: str, digests: Mapping[str, str], sizes: Mapping[str, int]
    ) -> None:
        """The splits as MLflow dataset inputs (name, digest, source, size): the runs table's
        Dataset column, and runs comparable by the data they saw."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            origin = resolve_dataset_source(source)
        contexts = {"train": "training", "val": "validation", "test": "testing"}
        datasets = [MetaDataset(origin, name=name, digest=digests[split]) for split in contexts]
        tags = [{"split": split, "size": str(sizes[split])} for split in contexts]
        try:
            mlflow.log_inputs(datasets, contexts=list(contexts.values()), tags_list=tags)
        except Exception as error:  # a description of the run, not worth failing it for
            if self.delivery.outbox is None:
                raise
            log.warning("dataset inputs not logged (%s)", str(error).splitlines()[0][:120])

    def log_skipped(self, skipped: Sequence[Any]) -> None:
        """How many files were left out of the data, and which ones with the reason."""
        self.log_metrics({"skipped_files": len(skipped)})
        if skipped:
            self.log_json(
                [{"path": item.path, "reason": item.reason} for item in skipped],
                "data/skipped_files.json",
            )

    # --------------------------------------------------------------------- model

    def log_model(
        self,
        model: Any,
        sample: Any,
        class_names: list[str],
        register_as: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        serving: bool = False,
    ) -> None:
        """The run's model (registered as a new version of `register_as`, if set); kept as a
        `.keras` file (and sample) while the server is away."""

        def send() -> None:
            info = log_keras_model(model, sample, class_names, metadata)
            if serving:
                log_serving_model(model, class_names, metadata)
            if register_as:
                version = mlflow.register_model(info.model_uri, register_as)
                mlflow.set_tag("registered_model", f"{register_as} version {version.version}")

        def keep() -> dict[str, Any]:
            import numpy as np

            folder = self.delivery.outbox.folder / "files" / "model"
            folder.mkdir(parents=True, exist_ok=True)
            model.save(folder / "model.keras")
            np.save(folder / "sample.npy", np.asarray(sample))
            return {
                "op": "model",
                "file": str(folder / "model.keras"),
                "sample": str(folder / "sample.npy"),
                "class_names": list(class_names),
            }

        self.delivery.send(send, keep)

    def upload_checkpoints(self, checkpoint_dir: Path) -> None:
        """The checkpoints that load and hold finite weights, as artifacts (after the run
        ended: by the client, with the run's id)."""
        from runner.models.checkpoints import check_checkpoint

        client = mlflow.MlflowClient()
        found = sorted(checkpoint_dir.glob("[!.]*.keras")) if checkpoint_dir.is_dir() else []
        for path in found:  # not a partial save (hidden name)
            problem = check_checkpoint(path)
            if problem:
                note = {"checkpoint": f"{path.name} not logged: {problem}"}
                self.delivery.send(
                    lambda n=note: client.set_tag(self.run_id, *next(iter(n.items()))),
                    lambda n=note: {"op": "tags", "values": n},
                )
                log.warning("checkpoint %s not logged: %s", path, problem)
            else:
                self.delivery.send(
                    lambda p=path: client.log_artifact(self.run_id, str(p), "checkpoints"),
                    lambda p=path: self.delivery.stage_file(p, f"checkpoints/{p.name}"),
                )


class _Nowhere(Delivery):
    """A delivery that sends nothing and keeps nothing."""

    def __init__(self) -> None:
        super().__init__(run_id="")

    def send(self, send: Any, keep: Any) -> None:
        pass

    def end(self, status: str) -> None:
        pass

    def close(self, tracking_uri: str) -> None:
        pass


class QuietRunLog(RunLog):
    """The run log of processes 1..n-1 of a multi-process run: they train with process 0,
    which logs the run; what they would log goes nowhere (no MLflow run, no files)."""

    def __init__(self) -> None:
        super().__init__(None, _Nowhere())  # type: ignore[arg-type] - there is no run

    @property
    def run_id(self) -> str:
        return ""

    @property
    def info(self) -> Any:
        return None

    def log_missing_epochs(self, history: Mapping[str, Sequence[float]]) -> int:
        return 0

    def log_inputs(self, *args: Any, **kwargs: Any) -> None:
        pass
