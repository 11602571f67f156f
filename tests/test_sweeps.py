"""Multirun sweeps through the real CLI: grid, Optuna, joblib-parallel, a poisoned trial, and
the comparison report over what they logged. All on the offline digits data."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

FAST = ["experiment=digits_lenet", "trainer.epochs=1", "logger.experiment=sweeps"]


def sweep_runs(workspace):
    client = workspace.client()
    experiment_id = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1, "one parent run per sweep"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "every job is a child of the sweep"
    return client, parent, children


def test_grid_sweep_gives_one_child_run_per_combination_and_a_report(workspace):
    result = workspace.run(
        "-m", *FAST, "model=lenet,mlp", "optimizer=sgd,adam", "logger.log_model=false"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = sweep_runs(workspace)
    assert parent.info.status == "FINISHED"
    combos = {(r.data.params["model.name"], r.data.params["optimizer.name"]) for r in children}
    assert combos == {("lenet", "sgd"), ("lenet", "adam"), ("mlp", "sgd"), ("mlp", "adam")}
    assert all(r.info.status == "FINISHED" for r in children)
    assert parent.data.metrics["jobs_finished"] == 4
    assert "model=lenet,mlp" in parent.data.tags["sweep_overrides"]
    assert parent.data.tags["sweep_dir"].startswith(str(workspace.root / "outputs" / "sweeps"))
    best = max(children, key=lambda r: r.data.metrics["best_val_accuracy"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert "sweep done: 4 of 4 jobs finished" in result.stdout
    # Runs tell apart by what was swept; the closing line names the best run and links it.
    names = {r.info.run_name for r in children}
    assert "lenet-digits model=lenet optimizer=adam" in names and len(names) == 4
    assert parent.info.run_name.startswith("sweep model=lenet,mlp optimizer=sgd,adam (")
    assert f"run {best.info.run_id} (" in result.stdout
    assert f"#/experiments/{parent.info.experiment_id}/runs/{best.info.run_id}" in result.stdout

    report = subprocess.run(
        [sys.executable, "-m", "runner.report", "--experiment", "sweeps", "--sweep", "latest",
         "--tracking-uri", workspace.tracking_uri, "--out", str(workspace.root / "experiments")],
        capture_output=True, text=True, env=workspace.env(), timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    folder = workspace.root / "experiments" / "sweeps" / f"sweep-{parent.info.run_id[:8]}"
    table = pd.read_csv(folder / "runs.csv")
    assert set(table["run_id"]) == {r.info.run_id for r in children}
    assert {"model.name", "optimizer.name"} <= set(table.columns)  # the params that differ
    assert "trainer.epochs" not in table.columns  # the same everywhere
    scores = table["best_val_accuracy"].tolist()
    assert scores == sorted(scores, reverse=True)
    markdown = (folder / "runs.md").read_text()
    assert all(r.info.run_id in markdown for r in children)
    for figure in ("validation_curves.png", "objective_vs_params.png"):
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_poisoned_trial_fails_alone_and_the_sweep_goes_on(workspace):
    # A minimized objective: the failed job must rank last (its value is +inf, not -inf).
    result = workspace.run(
        "-m", *FAST, "optimizer.lr=0.05,100000", "logger.log_model=false",
        "objective.metric=val_loss", "objective.mode=min",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_runs(workspace)
    by_lr = {r.data.params["optimizer.lr"]: r for r in children}
    healthy = by_lr["0.05"]
    assert healthy.info.status == "FINISHED"
    poisoned = by_lr["100000.0"]
    assert poisoned.info.status == "FAILED"
    assert "Training diverged" in poisoned.data.tags["error"]
    assert parent.info.status == "FINISHED"
    assert (parent.data.metrics["jobs_finished"], parent.data.metrics["jobs_failed"]) == (1, 1)
    assert healthy.data.metrics["best_val_loss"] == healthy.data.metrics["val_loss"]
    assert parent.data.tags["best_run_id"] == healthy.info.run_id
    assert parent.data.metrics["best_val_loss"] == healthy.data.metrics["best_val_loss"]


def test_optuna_search_logs_the_best_trial_on_the_parent(workspace):
    result = workspace.run(
        "hparams_search=digits_lenet", "hydra.sweeper.n_trials=3", "trainer.epochs=1",
        "logger.experiment=sweeps", "logger.log_model=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_runs(workspace)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    values = [r.data.metrics["best_val_accuracy"] for r in children]
    assert parent.data.metrics["best_value"] == max(values)
    assert parent.data.tags["sweeper"] == "OptunaSweeper"
    best = max(children, key=lambda r: r.data.metrics["best_val_accuracy"])
    assert float(parent.data.params["best.optimizer.lr"]) == float(best.data.params["optimizer.lr"])
    assert {"best.optimizer.momentum", "best.model.dropout"} <= set(parent.data.params)


@pytest.mark.fresh_store
def test_four_parallel_joblib_jobs_all_arrive_complete(workspace):
    result = workspace.run(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *FAST, "trainer.seed=1,2,3,4",
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = sweep_runs(workspace)
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["1", "2", "3", "4"]
    assert parent.data.tags["launcher"] == "JoblibLauncher"
    for run in children:
        assert run.info.status == "FINISHED"
        # 4 jobs share the cores: each got its share of TensorFlow's thread pool.
        assert run.data.tags["device"] == f"CPU ({max(1, (os.cpu_count() or 1) // 4)} threads)"
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 1
        assert {"test_accuracy", "test_loss", "best_val_accuracy"} <= set(run.data.metrics)
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"class_names.json", "config", "plots", "reports"} <= files
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'model'",
        )
        assert len(models) == 1


def test_the_best_job_of_a_sweep_becomes_the_champion_and_predicts(workspace, tmp_path):
    result = workspace.run("-m", *FAST, "trainer.seed=1,2", "logger.register_model=digits-lenet")
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = sweep_runs(workspace)
    versions = client.search_model_versions("name = 'digits-lenet'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in children)
    champion = client.get_model_version_by_alias("digits-lenet", "champion")
    assert champion.run_id == parent.data.tags["best_run_id"]
    assert "models:/digits-lenet@champion is version" in result.stdout

    from PIL import Image

    image = tmp_path / "seven.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 255).astype("uint8")).save(image)
    predicted = subprocess.run(
        [sys.executable, "-m", "runner.predict", "--model", "models:/digits-lenet@champion",
         str(image), "--tracking-uri", workspace.tracking_uri, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=workspace.env(), timeout=180,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert f"{image}: " in predicted.stdout


def test_submitit_local_runs_a_two_job_sweep_to_completion(workspace):
    """Hydra's submitit launcher, local flavour: each job a process of its own, as on Slurm."""
    result = workspace.run(
        "-m", "hydra/launcher=submitit_local", *FAST, "optimizer.lr=0.05,0.01",
        "logger.log_model=false", timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_runs(workspace)
    assert parent.data.tags["launcher"] == "LocalLauncher"
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.01", "0.05"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["runner.pid"] for r in children}) == 2  # two processes
    assert "sweep done: 2 of 2 jobs finished" in result.stdout
