"""A Hydra sweeper on Optuna's own engine (Optuna >= 4).

Each batch of trials is asked from a study in RDB storage and launched as Hydra jobs by the
configured launcher; each job's outcome is told back. The study outlives the command: running
the same command again resumes it up to `n_trials` (a trial whose sweeper died is re-queued
with the same values), and N sweepers on N machines that reach the same storage share one
study. A failed job is a FAIL trial with its reason; a job stopped by the pruner is PRUNED
(the job reports each epoch's objective to its trial: `runner/sweeps/trials.py`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from runner.sweeps import trials as search
from runner.tracking.store import sqlite_file, sqlite_lock

log = logging.getLogger(__name__)
WORKER_ATTR = "worker"  # host:pid of the sweeper that asked for the trial
RETRY_ATTR = "retry_of"  # the number of the interrupted trial a queued one repeats


def distribution(override: Override) -> BaseDistribution | str:
    """Optuna's distribution for a sweep override; the value itself for a plain one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
        return CategoricalDistribution(list(override.sweep_iterator()))
    value = override.value()
    if override.is_range_sweep():  # Python's range: the stop is excluded
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=float(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"hydra/sweeper=optuna cannot search {override.input_line!r}")


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(overrides):
        found = distribution(override)
        if isinstance(found, BaseDistribution):
            space[override.get_key_element()] = found
        else:
            fixed[override.get_key_element()] = found
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    values = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = list(dist.choices)
        elif dist.step is not None and not getattr(dist, "log", False):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values[name] = [dist.low + i * dist.step for i in range(count)]
        else:
            raise ValueError(
                f"the grid sampler needs discrete values: {name} is a continuous interval "
                "(use choice(...) or range(...))"
            )
    return values


def quoted(value: Any) -> str:
    """A value as one quoted Hydra override value (URLs hold ':', '?', '=', '@'). Hydra's
    rule: a quote is escaped with a backslash, and only backslashes right before a quote (or
    the closing one) are doubled."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive_here(worker: str | None) -> bool | None:
    """Is the sweeper process `host:pid` alive? None when it ran on another machine."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(
                f"hydra.sweeper.max_failure_rate should be between 0 and 1. "
                f"Received: {max_failure_rate}"
            )
        if n_trials < 1 or n_jobs < 1:
            raise ValueError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs should be >= 1")
        self.sampler, self.pruner = sampler, pruner
        self.directions = (
            [str(d) for d in direction]
            if OmegaConf.is_list(direction) or isinstance(direction, list)
            else [str(direction)]
        )
        # `storage` and `study_name` are read from the config by runner.search.study_location,
        # which the sweep's MLflow callback uses too (to tag the parent run with the study).
        del storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.extend = (
            instantiate({"_target_": custom_search_space, "_partial_": True})
            if custom_search_space
            else None
        )
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # ------------------------------------------------------------------------------ the study

    def _study(self, space: dict[str, BaseDistribution]) -> optuna.Study:
        sampler = self.sampler
        if callable(sampler) and getattr(sampler, "func", None) is optuna.samplers.GridSampler:
            values = grid(space)
            sampler = sampler(values)
            size = math.prod(len(choices) for choices in values.values())
            if size < self.n_trials:
                log.info("the grid has %d points: n_trials %d -> %d", size, self.n_trials, size)
                self.n_trials = size
        location = search.study_location(self.config)
        self.storage_backend = search.open_storage(location.storage)
        study = optuna.create_study(
            study_name=location.name,
            storage=self.storage_backend,
            sampler=sampler,
            pruner=self.pruner,
            directions=self.directions,
            load_if_exists=True,
        )
        if list(study.directions) != [
            optuna.study.StudyDirection[d.upper()] for d in self.directions
        ]:
            raise ValueError(
                f"study {location.name!r} in {location.display} optimizes "
                f"{[d.name.lower() for d in study.directions]}, not {self.directions}: "
                "set hydra.sweeper.study_name to start another study"
            )
        self.location = location
        return study

    def _budget_lock(self):
        """For sweepers sharing a SQLite file (a file lock beside it), counting the study's
        trials, asking for more and giving them their values and worker is one step: N workers
        run exactly n_trials, and a RUNNING trial without a worker is one whose sweeper died
        inside that step. Over a server database two sweepers asking at the same instant may
        each start one trial more than n_trials."""
        return sqlite_lock(self.location.storage)

    def _requeue_interrupted(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a sweeper of this machine that is gone: FAIL, and queued again
        (as Optuna's own RetryFailedTrialCallback does). Call it under `_budget_lock`."""
        atomic = sqlite_file(self.location.storage) is not None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER_ATTR)
            if alive_here(worker) is False or (worker is None and atomic):
                self._interrupt(study, trial.number, "its sweeper process is gone")

    def _interrupt(self, study: optuna.Study, number: int, why: str) -> None:
        """FAIL the trial, and queue a copy with its values and its grid point, if it had them
        (a copy without values gets new ones from the sampler)."""
        storage = self.storage_backend
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        trial = storage.get_trial(trial_id)
        storage.set_trial_user_attr(trial_id, "fail_reason", f"interrupted: {why}")
        _tell(study, number, state=TrialState.FAIL)
        kept = {k: v for k, v in trial.system_attrs.items() if k in ("grid_id", "search_space")}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={RETRY_ATTR: number},
                system_attrs=kept,
            )
        )
        log.info("trial %d was interrupted (%s): queued again", number, why)

    @staticmethod
    def _counted(study: optuna.Study) -> int:
        """Trials that count toward n_trials: all but interrupted ones (queued again)."""
        return sum(
            1
            for t in study.get_trials(deepcopy=False)
            if not (
                t.state == TrialState.FAIL
                and str(t.user_attrs.get("fail_reason", "")).startswith("interrupted")
            )
        )

    # ------------------------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> None:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = search_space(params + list(arguments))
        for name in fixed:
            space.pop(name, None)
        study = self._study(space)
        with self._budget_lock():
            self._requeue_interrupted(study)
        told = failed = 0
        log.info(
            "Optuna study %r in %s: %d of %d trials there; sampler %s, pruner %s",
            self.location.name,
            self.location.display,
            self._counted(study),
            self.n_trials,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
        )
        while True:
            with self._budget_lock():
                batch = min(self.n_jobs, self.n_trials - self._counted(study))
                if batch <= 0:
                    if not told:
                        log.info(
                            "the study already holds its %d trials: nothing to run (raise "
                            "hydra.sweeper.n_trials to run more, or set hydra.sweeper.study_name "
                            "to start another study)",
                            self.n_trials,
                        )
                    break
                trials = [study.ask() for _ in range(batch)]
                for trial in trials:
                    trial.set_user_attr(WORKER_ATTR, worker_id())
                overrides = [self._overrides(trial, space, fixed) for trial in trials]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # Ctrl-C, SIGTERM: the trials run again on resume
                for trial in trials:
                    self._interrupt(study, trial.number, "the sweep was stopped")
                raise
            self.job_idx += len(returns)
            for trial, job in zip(trials, returns, strict=True):
                told += 1
                failed += not self._record(study, trial, job)
            if told and failed / told > self.max_failure_rate:
                log.error(
                    "stopping the search: %d of %d trials failed "
                    "(hydra.sweeper.max_failure_rate=%s)",
                    failed,
                    told,
                    self.max_failure_rate,
                )
                break
        self._save_results(study)

    def _overrides(
        self, trial: optuna.Trial, space: dict[str, BaseDistribution], fixed: dict[str, str]
    ) -> Sequence[str]:
        for name, dist in space.items():
            trial._suggest(name, dist)  # noqa: SLF001 - suggest from a ready distribution
        if self.extend is not None:
            self.extend(self.config, trial)
        overlap = set(trial.params) & set(fixed)
        if overlap:
            raise ValueError(f"searched and fixed at once: {sorted(overlap)}")
        values = {**trial.params, **fixed}
        env = {
            search.STORAGE_ENV: self.location.storage,
            search.STUDY_ENV: self.location.name,
            search.TRIAL_ENV: trial.number,
        }
        return (
            *(f"{name}={value}" for name, value in values.items()),
            *(f"++hydra.job.env_set.{key}={quoted(value)}" for key, value in env.items()),
        )

    def _record(self, study: optuna.Study, trial: optuna.Trial, job: Any) -> bool:
        """Tell the study how the job ended; False for a failed one."""
        try:
            value = job.return_value  # raises the job's exception
        except Exception as error:  # noqa: BLE001 - every failure becomes a FAIL trial
            value, state, reason = None, "FAIL", f"{type(error).__name__}: {error}"
        else:
            state = getattr(value, "state", "COMPLETE")
            reason = getattr(value, "reason", "")
        if state == "PRUNED":
            _tell(study, trial, state=TrialState.PRUNED)
            return True
        if state == "COMPLETE":
            try:
                values = [float(v) for v in value] if len(self.directions) > 1 else [float(value)]
            except (TypeError, ValueError):
                state, reason = "FAIL", f"the job returned {value!r}, not a number"
            else:
                _tell(study, trial, values=values)
                return True
        trial.set_user_attr("fail_reason", reason or "the job failed")
        _tell(study, trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason)
        return False

    def _save_results(self, study: optuna.Study) -> None:
        """`optimization_results.yaml` in the sweep folder, as Hydra's Optuna sweeper writes it;
        over the whole study (every resume and worker)."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": self.location.display,
        }
        if done and len(self.directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        elif done:
            results["solutions"] = [
                {"params": t.params, "values": t.values} for t in study.best_trials
            ]
        counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for t in study.get_trials(deepcopy=False):
            if t.state.name in counts:
                counts[t.state.name] += 1
        results["trials"] = counts
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")


def _tell(study: optuna.Study, trial: Any, **outcome: Any) -> None:
    """`study.tell`. The grid sampler calls `study.stop()` once the grid is done, which Optuna
    refuses outside `optimize` after the outcome is stored (in a `finally`): nothing is lost."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise
