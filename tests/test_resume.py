"""Resume: real processes killed with SIGKILL, resumed in the same MLflow run; sweeps resumed;
unique job folders; splits that do not move with the training seed."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import keras
import numpy as np
import pytest

from runner.core.errors import RunnerError
from runner.data.base import ArraySplit
from runner.data.pipeline import training_batches
from runner.training.resume import requested_target
from tests.conftest import epochs_done, job_config, wait_until
from tests.test_e2e import only_run

DIGITS = [
    "experiment=digits_lenet",
    "optimizer=adam",
    "optimizer.lr=0.002",
    "trainer.epochs=4",
    "trainer.batch_size=64",
    "callbacks.early_stopping.patience=10",
    "callbacks.model_checkpoint.keep=best_and_last",
    "logger.experiment=tests",
    "logger.log_model=false",
    # ReduceLROnPlateau halving after two epochs without improvement (none after the first
    # counts as better): its counters must survive a kill too, or the resumed rates drift.
    "callbacks.reduce_lr_on_plateau.enabled=true",
    "callbacks.reduce_lr_on_plateau.monitor=loss",
    "callbacks.reduce_lr_on_plateau.patience=2",
    "callbacks.reduce_lr_on_plateau.factor=0.5",
    "callbacks.reduce_lr_on_plateau.min_delta=10",
]


def steps(client, run_id: str, metric: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def test_training_batches_depend_on_seed_and_epoch_only():
    split = ArraySplit(np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2, 1), np.arange(50) % 5)
    full, steps_per_epoch = training_batches(split, batch_size=8, seed=3, epochs=range(0, 3))
    tail, _ = training_batches(split, batch_size=8, seed=3, epochs=range(1, 3))
    full_batches = [x for x, _ in full.as_numpy_iterator()]
    assert steps_per_epoch == 7 and len(full_batches) == 21
    for a, b in zip(full_batches[7:], [x for x, _ in tail.as_numpy_iterator()], strict=True):
        np.testing.assert_array_equal(a, b)
    first, second = (np.concatenate(full_batches[i * 7 : (i + 1) * 7]) for i in (0, 1))
    assert sorted(first.ravel()) == sorted(second.ravel()) and not np.array_equal(first, second)


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(workspace):
    killed_dir = workspace.root / "outputs" / "killed"
    process = workspace.start(*DIGITS, f"hydra.run.dir={killed_dir}", merge_output=True)
    # The same config without interruption, started at the same moment in the default job
    # folder: two runs started together keep their own folders.
    straight = workspace.start(*DIGITS, "logger.experiment=straight", merge_output=True)
    wait_until(lambda: epochs_done(killed_dir) >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    client = workspace.client()
    run = only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "RUNNING"  # SIGKILL: nobody could mark it

    # The dead run is recognised, listed with its resume command, and marked KILLED.
    runs = workspace.module("runner.runs", "--mark-killed")
    assert runs.returncode == 0, runs.stderr
    assert run_id in runs.stdout and "dead" in runs.stdout and "marked KILLED" in runs.stdout
    assert f"trainer.resume={run_id}" in runs.stdout
    assert client.get_run(run_id).info.status == "KILLED"
    listed = workspace.module("runner.runs", "--all")  # the unfinished runs that ended, too
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert f"{run_id}  KILLED" in listed.stdout and f"trainer.resume={run_id}" in listed.stdout

    # Another config is refused, with the differing key named (in process: the lookup the CLI
    # makes before TensorFlow; its one-line exit is checked for the finished run below).
    other = job_config(
        [
            *DIGITS,
            "optimizer.lr=0.5",
            f"trainer.resume={run_id}",
            f"logger.tracking_uri={workspace.tracking_uri}",
        ]
    )
    with pytest.raises(RunnerError, match="optimizer.lr"):
        requested_target(other)

    resumed = workspace.run(*DIGITS, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_id}" in resumed.stdout + resumed.stderr
    run = only_run(client)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert "error" not in run.data.tags  # the old ending is history, not its state
    assert run.data.tags["resumed_after"].startswith("killed")
    for metric in ("loss", "val_loss", "val_accuracy"):
        assert steps(client, run_id, metric) == [0, 1, 2, 3], metric
    assert not (killed_dir / "resume").exists()  # state removed once finished
    # Finished, it is not "resumed" with another config either: refused, the key named.
    refused = workspace.run(*DIGITS, "optimizer.lr=0.5", f"trainer.resume={run_id}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "FINISHED with another config" in refused.stderr
    assert "optimizer.lr: '0.002' -> '0.5'" in refused.stderr

    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    reference = only_run(client, "straight")
    straight_dir = Path(reference.data.tags["output_dir"])
    assert straight_dir.parent == workspace.root / "outputs" / "runs"
    import mlflow

    resolved = mlflow.artifacts.load_text(f"{reference.info.artifact_uri}/config/resolved.yaml")
    assert str(straight_dir) in resolved and "experiment: straight" in resolved
    for metric in ("loss", "val_loss", "learning_rate"):
        ours = [
            m.value for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        ]
        theirs = [
            m.value
            for m in sorted(
                client.get_metric_history(reference.info.run_id, metric), key=lambda m: m.step
            )
        ]
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
        if metric == "learning_rate":  # halved at the end of epoch 3 (after the kill)
            np.testing.assert_allclose(theirs, [2e-3, 2e-3, 1e-3, 1e-3], rtol=1e-5)
    # keep=best_and_last: exactly these two checkpoints, equal to the uninterrupted run's.
    for folder in (killed_dir, straight_dir):
        kept = sorted(p.name for p in (folder / "checkpoints").glob("*.keras"))
        assert kept == ["best.keras", "last.keras"]
    for name in ("last.keras", "best.keras"):
        a = keras.saving.load_model(killed_dir / "checkpoints" / name, compile=False)
        b = keras.saving.load_model(straight_dir / "checkpoints" / name, compile=False)
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        run.data.metrics["test_accuracy"], reference.data.metrics["test_accuracy"], atol=1e-6
    )


def test_a_killed_sweep_resumes_only_what_is_left_and_then_runs_nothing_again(workspace):
    sweep = [
        "-m",
        "experiment=digits_lenet",
        "trainer.epochs=1",
        "trainer.seed=1,2,3",
        "logger.experiment=sweeps",
        "logger.log_model=false",
    ]
    process = workspace.start(*sweep, merge_output=True)
    client = workspace.client()

    def finished_children() -> list:
        try:
            experiment = client.get_experiment_by_name("sweeps")
            if experiment is None:
                return []
            runs = client.search_runs([experiment.experiment_id])
        except Exception:  # the store is being created
            return []
        return [
            r for r in runs if r.data.tags.get("sweep") != "parent" and r.info.status == "FINISHED"
        ]

    wait_until(lambda: len(finished_children()) >= 1, process, every=0.25)  # each look: a query
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = {r.info.run_id: r.info.end_time for r in finished_children()}
    assert 1 <= len(first) < 3  # something is left to resume

    result = workspace.run(*sweep, "trainer.resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["1", "2", "3"]
    for run in children:  # the jobs that had finished were left alone
        if run.info.run_id in first:
            assert run.info.end_time == first[run.info.run_id]
    assert parents[0].data.metrics["jobs"] == 3 and parents[0].data.metrics["jobs_finished"] == 3
    assert "sweep done: 3 of 3 jobs finished" in result.stdout

    # Finished: the same command again runs nothing and opens no new run.
    before = {r.info.run_id: r.info.end_time for r in runs}
    again = workspace.run(*sweep, "trainer.resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already FINISHED") == 3
    runs = client.search_runs([experiment])
    assert {r.info.run_id for r in runs} == set(before)  # no new run, the parent reused
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert all(before[r.info.run_id] == r.info.end_time for r in children)
    assert "sweep done: 3 of 3 jobs finished" in again.stdout


def test_the_launcher_is_not_part_of_what_identifies_a_sweep_or_its_jobs():
    """A sweep started one way resumes another (say, killed in one process, resumed by joblib
    workers or on Slurm): the sweep's key and its jobs' config digests ignore the launcher."""
    from hydra.core.hydra_config import HydraConfig

    from runner.sweeps.identity import sweep_key
    from runner.training.resume import comparable_config, config_digest

    job = ["experiment=digits_lenet", "trainer.seed=2"]
    keys = set()
    for launcher in (
        [],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local"],
    ):
        cfg = job_config([*job, *launcher, "trainer.resume=true"])  # what a job is given
        hydra = HydraConfig.get()  # Hydra's own part, as a job reads it
        assert hydra.launcher._target_.endswith("Launcher")
        keys.add((sweep_key(list(hydra.overrides.task)), config_digest(comparable_config(cfg))))
    assert len(keys) == 1


def test_a_seed_sweep_on_an_image_folder_shares_one_test_split(trained):
    """The two seeds of the sweep in `trained` (tests/conftest.py) split the folder alike."""
    workspace = trained.workspace
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert {r.data.params["data.split_seed"] for r in children} == {"42"}
    assert len({r.data.tags["data.test_digest"] for r in children}) == 1
    assert len({r.data.tags["data.train_digest"] for r in children}) == 1
    losses = {round(r.data.metrics["val_loss"], 6) for r in children}
    assert len(losses) == 2  # the seeds still change initialisation and order


def test_a_damaged_weights_file_resumes_from_the_state_before_it(workspace):
    """A killed run whose last weights file was cut (a disk, a copy) stays resumable: it goes
    on from the epoch before, says so, and finishes."""
    job = workspace.root / "outputs" / "damaged"
    process = workspace.start(*DIGITS, f"hydra.run.dir={job}", merge_output=True)
    wait_until(lambda: epochs_done(job) >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = job / "resume"
    latest = json.loads((state / "state.json").read_text())
    previous = json.loads((state / "previous-state.json").read_text())
    assert previous["epochs_done"] == latest["epochs_done"] - 1
    weights = state / latest["weights"]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    resumed = workspace.run(*DIGITS, f"trainer.resume={job}")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "the last saved state is damaged" in output
    assert f"after epoch {previous['epochs_done']}" in output
    assert f"at epoch {previous['epochs_done'] + 1}" in output  # the resume line
    assert only_run(workspace.client()).info.status == "FINISHED"


def test_a_resume_state_with_no_good_generation_is_one_line(tmp_path):
    from runner.training.resume import load_progress

    state = tmp_path / "resume"
    state.mkdir()
    (state / "epoch-0002.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut short")
    (state / "state.json").write_text(
        json.dumps({"run_id": "r", "epochs_done": 2, "weights": "epoch-0002.weights.h5"})
    )
    (state / "previous-state.json").write_text('{"run_id": "r", "epochs_done": ')
    with pytest.raises(RunnerError, match=r"resume state in .* is damaged \(state.json: .*; previ"):
        load_progress(tmp_path)
