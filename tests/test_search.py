"""The Optuna sweeper's pieces, in process: overrides to Optuna distributions, values passed
to jobs, where a study lives, and a job's outcome across processes. (Searches through the CLI:
tests/test_sweeps.py.)"""

from __future__ import annotations

import pickle

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.runner_optuna_sweeper._impl import grid, quoted, search_space
from runner.sweeps.trials import JobOutcome, default_storage, failed, outcome


def test_sweep_overrides_become_optuna_distributions():
    space, fixed = search_space(
        [
            "a=choice(sgd, adam)",
            "b=range(1, 10, 3)",
            "c=interval(0.1, 1.0)",
            "d=tag(log, interval(0.0001, 0.1))",
            "e=int(interval(1, 8))",
            "f=7",
        ]
    )
    assert space["a"] == CategoricalDistribution(["sgd", "adam"])
    assert space["b"] == IntDistribution(1, 7, step=3)  # Python's range: 10 is excluded
    assert space["c"] == FloatDistribution(0.1, 1.0)
    assert space["d"] == FloatDistribution(0.0001, 0.1, log=True)
    assert space["e"] == IntDistribution(1, 8)
    assert fixed == {"f": "7"}


def test_the_grid_takes_discrete_values_only():
    space, _ = search_space(["a=choice(1, 2)", "b=range(0.5, 2.0, 0.5)"])
    assert grid(space) == {"a": [1, 2], "b": [0.5, 1.0, 1.5]}
    with pytest.raises(ValueError, match="c is a continuous interval"):
        grid(search_space(["c=interval(0, 1)"])[0])


@pytest.mark.parametrize(
    "value",
    ["postgresql+psycopg://u:p@db:5432/optuna?sslmode=require", "it's", "a\\b", "c\\'d", "e\\"],
)
def test_values_passed_to_jobs_parse_back_unchanged(value):
    override = OverridesParser.create().parse_override(f"++hydra.job.env_set.X={quoted(value)}")
    assert override.value() == value


def test_a_study_lives_beside_the_mlflow_store(monkeypatch, tmp_path):
    assert (
        default_storage("sqlite:////srv/p/mlruns/mlflow.db") == "sqlite:////srv/p/mlruns/optuna.db"
    )
    monkeypatch.setenv("RUNNER_ROOT", str(tmp_path))
    assert default_storage("http://team:5000") == f"sqlite:///{tmp_path}/mlruns/optuna.db"


def test_a_jobs_outcome_is_a_number_that_says_how_the_job_ended():
    class Stopped:  # what runner/sweeps/trials.py's reporter holds after the pruner stopped a job
        pruned_after, why = 3, "after epoch 3 by MedianPruner: val_accuracy=0.25"

    pruned = pickle.loads(pickle.dumps(outcome(0.25, Stopped())))
    assert float(pruned) == 0.25 and pruned.state == "PRUNED"
    assert pruned.reason == "pruned after epoch 3 by MedianPruner: val_accuracy=0.25"
    gone = pickle.loads(pickle.dumps(failed(float("-inf"), "Training diverged")))
    assert gone == float("-inf") and (gone.state, gone.reason) == ("FAIL", "Training diverged")
    done = outcome(0.5)
    assert isinstance(done, JobOutcome) and done.state == "COMPLETE" and done == 0.5
