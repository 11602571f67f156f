"""Multirun sweeps through the real CLI: grid, Optuna, joblib-parallel, a poisoned trial, and
the comparison report over what they logged. All on the offline digits data."""

from __future__ import annotations

import signal

import numpy as np
import pandas as pd

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


def test_grid_sweep_gives_one_child_run_per_combination_a_champion_and_a_report(
    workspace, tmp_path, capsys
):
    result = workspace.run(
        "-m",
        *FAST,
        "model=lenet,mlp",
        "optimizer=sgd,adam",
        "logger.register_model=digits",
        "logger.log_serving_model=false",
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

    # Every job's model is a version of `digits`; the best job's is @champion, and predicts.
    versions = client.search_model_versions("name = 'digits'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in children)
    champion = client.get_model_version_by_alias("digits", "champion")
    assert champion.run_id == parent.data.tags["best_run_id"] == best.info.run_id
    assert "models:/digits@champion is version" in result.stdout
    from PIL import Image

    image = tmp_path / "seven.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 255).astype("uint8")).save(image)
    from runner.cli.predict import main as predict  # in process: the CLI is tested in test_predict

    predict(
        [
            "--model",
            "models:/digits@champion",
            str(image),
            "--tracking-uri",
            workspace.tracking_uri,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert f"{image}: " in capsys.readouterr().out

    # The comparison report, in process (the command itself: test_predict.py, from a folder
    # of its own).
    from runner.cli.report import main as report

    report(
        [
            "--experiment",
            "sweeps",
            "--sweep",
            "latest",
            "--tracking-uri",
            workspace.tracking_uri,
            "--out",
            str(workspace.root / "experiments"),
        ]
    )
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


def test_poisoned_and_refused_jobs_fail_alone_and_the_sweep_goes_on(poisoned_sweep):
    workspace, result = poisoned_sweep
    assert "1 of 3 jobs finished, 2 failed" in result.stdout
    _, parent, children = sweep_runs(workspace)
    by_lr = {r.data.params["optimizer.lr"]: r for r in children}
    healthy = by_lr["0.05"]
    assert healthy.info.status == "FINISHED"
    poisoned = by_lr["100000.0"]
    assert poisoned.info.status == "FAILED"
    assert "Training diverged" in poisoned.data.tags["error"]
    refused = by_lr["-1.0"]
    assert refused.info.status == "FAILED"
    assert "optimizer.lr should be a positive number" in refused.data.tags["error"]
    assert parent.info.status == "FINISHED"
    assert (parent.data.metrics["jobs_finished"], parent.data.metrics["jobs_failed"]) == (1, 2)
    assert healthy.data.metrics["best_val_loss"] == healthy.data.metrics["val_loss"]
    assert parent.data.tags["best_run_id"] == healthy.info.run_id
    assert parent.data.metrics["best_val_loss"] == healthy.data.metrics["best_val_loss"]
    # The parent is not a training run: `trainer.resume=<its id>` says how to resume a sweep.
    resumed = workspace.run(*FAST, f"trainer.resume={parent.info.run_id}")
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "is a sweep's parent run, not a training run" in resumed.stderr
    assert "-m <its overrides> trainer.resume=true" in resumed.stderr


def optuna_trials(workspace, study_name: str | None = None) -> list:
    """The trials of the study in the workspace's default storage (mlruns/optuna.db)."""
    import optuna

    storage = f"sqlite:///{workspace.root}/mlruns/optuna.db"
    if study_name is None:
        [summary] = optuna.get_all_study_summaries(storage)
        study_name = summary.study_name
    return optuna.load_study(study_name=study_name, storage=storage).get_trials()


def test_an_optuna_search_killed_midway_resumes_with_the_same_command(workspace):
    """The preset's search over a grid of four learning rates: one healthy, one that diverges
    (a FAIL trial with its reason), one too small to learn (PRUNED by a threshold after its
    first epoch), one more healthy. Killed with SIGKILL after two trials, the same command
    finishes the study: four trials, each value once, one parent run."""
    import optuna
    from optuna.trial import TrialState

    from tests.conftest import wait_until

    search = [
        "hparams_search=digits_lenet",
        "trainer.epochs=2",
        "logger.experiment=sweeps",
        "logger.log_model=false",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "optimizer.lr=choice(0.05, 100000, 0.00001, 0.02)",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=0.2",
        "hydra.sweeper.max_failure_rate=1",
    ]

    def told() -> int:
        try:
            return sum(t.state.is_finished() for t in optuna_trials(workspace))
        except Exception:  # no study yet
            return 0

    process = workspace.start(*search, merge_output=True)
    wait_until(lambda: told() >= 2, process, every=0.5)  # each look loads the study
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert told() < 4

    result = workspace.run(*search)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna_trials(workspace)
    interrupted = [
        t for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("interrupted")
    ]
    counted = [t for t in trials if t not in interrupted]
    described = [(t.number, t.state.name, t.params, t.user_attrs, t.system_attrs) for t in trials]
    assert len(counted) == 4 and len(interrupted) <= 1, described
    assert all("optimizer.lr" in t.params for t in counted), described
    by_lr = {t.params["optimizer.lr"]: t for t in counted}
    assert sorted(by_lr) == [0.00001, 0.02, 0.05, 100000]  # each value once: none lost
    assert by_lr[0.05].state == by_lr[0.02].state == TrialState.COMPLETE
    assert by_lr[100000].state == TrialState.FAIL
    assert "diverged" in by_lr[100000].user_attrs["fail_reason"]
    assert by_lr[0.00001].state == TrialState.PRUNED
    assert list(by_lr[0.00001].intermediate_values) == [0]  # stopped after its first epoch
    for gone in interrupted:  # the trial the kill cut short ran again (with its values, if any)
        [again] = [t for t in counted if t.user_attrs.get("retry_of") == gone.number]
        assert again.params.items() >= gone.params.items()

    client = workspace.client()
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]  # reused on resume
    assert parent.info.status == "FINISHED"
    study_name = parent.data.tags["optuna.study"]
    assert study_name.startswith("digits_lenet-")
    assert parent.data.tags["optuna.storage"] == f"sqlite:///{workspace.root}/mlruns/optuna.db"
    children = {r.info.run_id: r for r in runs if r is not parent}
    for trial in counted:  # every trial names its MLflow run, which names the trial back
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert run.data.tags["optuna.study"] == study_name
    pruned = children[by_lr[0.00001].user_attrs["mlflow_run_id"]]
    assert pruned.info.status == "FINISHED"
    assert pruned.data.tags["optuna.trial_state"] == "PRUNED"
    assert pruned.data.tags["pruned"].startswith("after epoch 1 by ThresholdPruner: val_accuracy=")
    assert len(client.get_metric_history(pruned.info.run_id, "val_accuracy")) == 1
    failed = children[by_lr[100000].user_attrs["mlflow_run_id"]]
    assert failed.info.status == "FAILED" and "diverged" in failed.data.tags["error"]
    best = optuna.load_study(
        study_name=study_name, storage=parent.data.tags["optuna.storage"]
    ).best_trial
    assert parent.data.metrics["best_value"] == best.value
    assert float(parent.data.tags["best.optimizer.lr"]) == best.params["optimizer.lr"]
    assert parent.data.metrics["jobs_pruned"] >= 1
    assert "pruned)" in result.stdout


def test_two_sweepers_share_one_study_without_losing_or_repeating_trials(workspace):
    """Two workers started with the same command share the study in SQLite storage: together
    they run n_trials trials, each once, each logged as one MLflow run."""
    search = [
        "hparams_search=digits_lenet",
        "trainer.epochs=1",
        "logger.experiment=sweeps",
        "logger.log_model=false",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
    ]
    workers = [workspace.start(*search, merge_output=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    trials = optuna_trials(workspace)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both worked
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    jobs = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert sorted(r.data.tags["optuna.trial"] for r in jobs) == ["0", "1", "2", "3"]
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in jobs}


def test_submitit_local_sweeps_over_backends_a_process_per_job(workspace):
    """Hydra's submitit launcher, local flavour: each job a process of its own, as on Slurm,
    which is what a sweep over Keras backends needs (Keras fixes its backend at import)."""
    result = workspace.run(
        "-m",
        "hydra/launcher=submitit_local",
        *FAST,
        "backend=tensorflow,jax",
        "logger.log_model=false",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_runs(workspace)
    assert parent.data.tags["launcher"] == "LocalLauncher"
    assert sorted(r.data.tags["backend"] for r in children) == ["jax", "tensorflow"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["runner.pid"] for r in children}) == 2  # two processes
    assert "sweep done: 2 of 2 jobs finished" in result.stdout


def test_an_optuna_search_on_a_local_ray_cluster(workspace):
    """Hydra's Ray launcher on a Ray cluster started on this machine, with the Optuna sweeper:
    two trials at once in Ray's worker processes, each reporting to its trial from there."""
    result = workspace.run(
        "hparams_search=digits_lenet",
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        "+hydra.launcher.ray.remote.num_cpus=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "trainer.epochs=1",
        "logger.experiment=sweeps",
        "logger.log_model=false",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_runs(workspace)
    assert parent.data.tags["launcher"] == "RayLauncher"
    assert all(r.info.status == "FINISHED" for r in children) and len(children) == 2
    assert len({r.data.tags["runner.pid"] for r in children}) == 2  # Ray's worker processes
    # Each job sized TensorFlow's thread pool to the CPU Ray reserved for it.
    assert {r.data.tags["device"] for r in children} == {"CPU (1 threads)"}
    trials = optuna_trials(workspace)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:  # each job reached its trial from its Ray worker
        assert list(trial.intermediate_values) == [0]
        assert trial.user_attrs["mlflow_run_id"] in {r.info.run_id for r in children}
