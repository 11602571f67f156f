"""One parent MLflow run per Hydra multirun, with every job of the sweep as its child.

Hydra calls this callback around a sweep (`python -m runner -m ...`). The parent's id reaches
the jobs through the environment, so it works for jobs in this process (basic launcher) and in
worker processes (joblib launcher) alike. At the end the parent gets the sweep's outcome: how
many jobs finished or failed, the best job by the objective, and Optuna's best trial.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.config.schema import Mode
from runner.sweeps import trials as search
from runner.sweeps.identity import (
    SWEPT_KEYS_ENV,
    parent_name,
    resuming,
    sweep_key,
    swept_keys,
)
from runner.tracking.run import PARENT_RUN_ENV
from runner.tracking.store import run_link

log = logging.getLogger(__name__)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.client: Any = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        if config.hydra.job.name == "preview":  # `runner.preview -m`: nothing is logged
            return

        from runner.tracking.experiments import use_experiment

        HydraConfig.instance().set_config(config)  # so ${hydra:...} in the config resolves
        logger = config.logger
        self.experiment_id = use_experiment(
            logger.tracking_uri, logger.experiment, logger.artifact_location
        )
        self.client = MlflowClient(tracking_uri=logger.tracking_uri)
        hydra = config.hydra
        overrides = list(hydra.overrides.task)
        sweeper = str(OmegaConf.select(hydra, "sweeper._target_", default="")).split(".")[-1]
        launcher = str(OmegaConf.select(hydra, "launcher._target_", default="")).split(".")[-1]
        key = sweep_key(overrides)
        swept = swept_keys(overrides, config)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept)  # jobs name their runs by these values
        study = search.study_location(config) if search.is_optuna_sweep(config) else None
        # An Optuna study continues whenever its command runs again; so does its parent run.
        previous = self._previous_parent(key) if resuming(config) or study else None
        if previous is not None:
            # The same sweep again with trainer.resume=true: its jobs find their runs under
            # this parent (finished ones are skipped, unfinished ones resumed).
            self.client.update_run(previous.info.run_id, status="RUNNING")
            self.parent_id = previous.info.run_id
            log.info("resuming the sweep of MLflow parent run %s", self.parent_id)
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=parent_name(overrides, swept),
                tags={
                    "sweep": "parent",
                    "sweep_key": key,
                    "sweep_overrides": " ".join(overrides) or "(none)",
                    "sweep_dir": str(Path(hydra.sweep.dir).resolve()),
                    "sweeper": sweeper,
                    "launcher": launcher,
                    "objective": f"{Mode(config.objective.mode).value} "
                    f"{config.objective.metric or 'val_accuracy | val_pr_auc (multi-label)'}",
                },
            )
            self.parent_id = run.info.run_id
        if study is not None:  # the parent links its study
            self.client.set_tag(self.parent_id, "optuna.study", study.name)
            self.client.set_tag(self.parent_id, "optuna.storage", study.display)
        os.environ[PARENT_RUN_ENV] = self.parent_id
        # A sweep that dies (Ctrl-C, a crashed sweeper) never reaches on_multirun_end.
        atexit.register(self._end, "KILLED")
        log.info("MLflow parent run of this sweep: %s", self.parent_id)

    def _previous_parent(self, key: str) -> Any:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.sweep = 'parent' and tags.sweep_key = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        try:
            self._summarize(config)
        finally:
            self._end("FINISHED")

    def _summarize(self, config: DictConfig) -> None:
        children = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=10000,
        )
        statuses = [child.info.status for child in children]
        pruned = [c for c in children if c.data.tags.get("optuna.trial_state") == "PRUNED"]
        metrics = {
            "jobs": len(children),
            "jobs_finished": statuses.count("FINISHED"),
            "jobs_failed": len(children) - statuses.count("FINISHED"),
            "jobs_pruned": len(pruned),
        }
        metric = config.objective.metric or next(
            (
                c.data.tags["objective_metric"]
                for c in children
                if "objective_metric" in c.data.tags
            ),
            "val_accuracy",
        )
        key = f"best_{metric}"
        scored = [
            c
            for c in children
            if c.info.status == "FINISHED" and key in c.data.metrics and c not in pruned
        ]
        if scored:
            pick = max if Mode(config.objective.mode) is Mode.max else min
            best = pick(scored, key=lambda child: child.data.metrics[key])
            metrics[key] = best.data.metrics[key]
            self.client.set_tag(self.parent_id, "best_run_id", best.info.run_id)
            self.client.set_tag(self.parent_id, "best_overrides", best.data.tags.get("overrides"))
            self._crown(config, best)
        for name, value in metrics.items():
            self.client.log_metric(self.parent_id, name, value)
        self._log_optuna_result(Path(config.hydra.sweep.dir) / "optimization_results.yaml")
        best_line = ""
        if scored:
            link = run_link(config.logger.tracking_uri, self.experiment_id, best.info.run_id)
            best_line = (
                f"\n[runner] best {metric}={metrics[key]:.4f}: run "
                f"{best.info.run_id} ({best.data.tags.get('overrides', '')}), {link}"
            )
        was_pruned = f" ({len(pruned)} pruned)" if pruned else ""
        print(
            f"\n[runner] sweep done: {metrics['jobs_finished']} of {metrics['jobs']} jobs "
            f"finished{was_pruned}, {metrics['jobs_failed']} failed. MLflow parent run "
            f"{self.parent_id}" + best_line,
            flush=True,
        )

    def _crown(self, config: DictConfig, best: Any) -> None:
        """The best job's model becomes `<logger.register_model>@champion`."""
        import mlflow

        name = config.logger.register_model
        if not name:
            return
        models = self.client.search_logged_models(
            [self.experiment_id],
            filter_string=f"source_run_id = '{best.info.run_id}' AND name = 'model'",
        )
        if not models:
            log.warning("the best job %s logged no model: no champion", best.info.run_id)
            return
        versions = self.client.search_model_versions(f"name = '{name}'")
        version = next(
            (
                v
                for v in versions
                if v.source == models[0].model_uri or v.run_id == best.info.run_id
            ),
            None,
        ) or mlflow.register_model(models[0].model_uri, name)
        self.client.set_registered_model_alias(name, "champion", version.version)
        self.client.set_tag(self.parent_id, "champion", f"models:/{name}@champion")
        print(
            f"[runner] models:/{name}@champion is version {version.version} (run "
            f"{best.info.run_id})",
            flush=True,
        )

    def _log_optuna_result(self, path: Path) -> None:
        """The study's best trial on the parent: tags `best.<param>` (tags, not params: a
        resumed or shared study's best may change), metrics `best_value`, `best_trial` and the
        study's trials by state, and the sweeper's `optimization_results.yaml`."""
        if not path.exists():
            return
        result = yaml.safe_load(path.read_text())
        for name, value in (result.get("best_params") or {}).items():
            self.client.set_tag(self.parent_id, f"best.{name}", str(value))
        for name in ("best_value", "best_trial"):
            if result.get(name) is not None:
                self.client.log_metric(self.parent_id, name, float(result[name]))
        for state, count in (result.get("trials") or {}).items():
            self.client.log_metric(self.parent_id, f"study_trials_{state.lower()}", count)
        self.client.log_artifact(self.parent_id, str(path))

    def _end(self, status: str) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_RUN_ENV, None)
        try:
            self.client.set_terminated(parent_id, status)
        except Exception:  # at exit the store may be gone; nothing more to do
            log.warning("Could not close the sweep's MLflow run %s", parent_id)
