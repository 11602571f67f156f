"""Faults: signals, races, broken files and slow or silent mirrors, with real processes and a
real HTTP server on loopback. Each failure is one line on the console, an honest status in
MLflow, and nothing lost."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runner.config.schema import FileSpec
from runner.core.errors import RunnerError
from tests import fixtures
from tests.conftest import (
    FAST,
    epochs_done,
    new_workspace,
    one_line_error,
    sha256,
    train_in_process,
    wait_until,
)
from tests.test_e2e import only_run

LONG = [
    "experiment=digits_lenet",
    "logger.experiment=tests",
    "trainer.epochs=200",
    "callbacks.early_stopping.enabled=false",
]


def epochs_saved(workspace) -> int:
    """The most epochs any job of the workspace has finished."""
    jobs = workspace.root.glob("outputs/runs/*")
    return max((epochs_done(job) for job in jobs), default=0)


def assert_interrupted(stderr: str, client, run, name: str) -> None:
    """One line on the console saying how to resume; the run KILLED with the signal's name; its
    best checkpoint logged and its job folder resumable; the details in the job's log."""
    assert "Traceback" not in stderr
    [line] = [x for x in stderr.splitlines() if "interrupted" in x]
    assert f"interrupted by {name} at epoch" in line and "/200" in line
    assert "trainer.resume=" in line and "best.keras" in line
    job_dir = Path(run.data.tags["output_dir"])
    details = (job_dir / "runner.log").read_text()
    assert run.info.status == "KILLED", details[-4000:]
    assert name in run.data.tags["error"]
    logged = [item.path for item in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert logged == ["checkpoints/best.keras"]
    assert (job_dir / "resume" / "state.json").is_file()  # resumable
    assert "Traceback" in details  # the details, for a bug report


def test_ctrl_c_is_one_line_a_killed_run_and_kept_checkpoints(workspace):
    process = workspace.start(*LONG)
    wait_until(lambda: epochs_saved(workspace) >= 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    client = workspace.client()
    assert_interrupted(stderr, client, only_run(client), "SIGINT")


def test_sigterm_to_a_sweep_leaves_no_running_run(workspace):
    """What a service manager or a batch system sends: the job in progress ends as a single
    run would (SIGTERM's line, its checkpoints), and the sweep's parent run too."""
    process = workspace.start("-m", *LONG, "trainer.seed=1,2")
    client = workspace.client()

    def child_running() -> bool:
        try:
            experiment = client.get_experiment_by_name("tests")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
        except Exception:
            return False
        return any(r.data.tags.get("sweep") != "parent" for r in runs) and bool(
            list(workspace.root.glob("outputs/sweeps/*/*/resume/state.json"))
        )

    wait_until(child_running, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # parent and job
    [job] = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert_interrupted(stderr, client, job, "SIGTERM")


@pytest.mark.fresh_store  # (-1 and other values: tests/test_errors.py, in process)
def test_a_nan_learning_rate_is_refused_before_any_data_or_run(workspace):
    result = workspace.run(
        "data=mnist", "data.mirror=http://127.0.0.1:9", *FAST, "optimizer.lr=nan"
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: optimizer.lr should be a positive number")
    assert not (workspace.root / "mlruns").exists()


# ------------------------------------------------------------------------------ downloads


class CountingMirror:
    """A real HTTP server on loopback with a switch for slow answers, counting requests."""

    def __init__(self, folder: Path, delay: float = 0.0) -> None:
        self.requests: list[str] = []
        self.delay = delay
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                mirror.requests.append(self.path)
                if not mirror.delay:
                    return super().do_GET()
                data = (folder / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for offset in range(0, len(data), 4096):  # a slow link: 4 KB at a time
                        self.wfile.write(data[offset : offset + 4096])
                        self.wfile.flush()
                        time.sleep(mirror.delay)
                except ConnectionError:  # the client was killed half way: what is tested
                    pass

        handler = functools.partial(Handler, directory=folder)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def counting_mirror(tmp_path):
    folder = tmp_path / "mirror_files"
    folder.mkdir()
    fixtures.write_mnist_npz(folder / "mnist.npz")
    mirror = CountingMirror(folder)
    yield mirror, sha256(folder / "mnist.npz")
    mirror.close()


@pytest.mark.fresh_store  # the jobs also race to create the MLflow store
def test_parallel_jobs_on_a_cold_cache_download_once_and_all_arrive(workspace, counting_mirror):
    mirror, digest = counting_mirror
    result = workspace.run(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "data=mnist",
        f"data.mirror={mirror.url}",
        f"data.files.archive.sha256={digest}",
        "model=mlp",
        "trainer.seed=1,2",
        *FAST,
        "logger.log_model=true",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert mirror.requests == ["/mnist.npz"]
    assert "2 of 2 jobs finished" in result.stdout
    cached = workspace.data_dir / "mnist" / "mnist.npz"
    assert sha256(cached) == digest
    assert sorted(p.name for p in cached.parent.iterdir() if not p.name.startswith(".")) == [
        "mnist.npz"
    ]
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1 == 2
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["1", "2"]
    assert parent.data.tags["launcher"] == "JoblibLauncher"
    for run in children:
        assert run.info.status == "FINISHED"
        # The jobs share the cores: each got its share of TensorFlow's thread pool.
        assert run.data.tags["device"] == f"CPU ({max(1, (os.cpu_count() or 1) // 2)} threads)"
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 1
        assert {"test_accuracy", "test_loss", "best_val_accuracy"} <= set(run.data.metrics)
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"class_names.json", "config", "plots", "reports"} <= files
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'model'",
        )
        assert len(models) == 1


def test_a_download_killed_half_way_leaves_no_cached_file(workspace, counting_mirror):
    mirror, digest = counting_mirror
    mirror.delay = 0.05  # about 80 KB/s: the fixture takes seconds to arrive
    args = [
        "data=mnist",
        f"data.mirror={mirror.url}",
        f"data.files.archive.sha256={digest}",
        "model=mlp",
        *FAST,
        "logger.log_model=false",
    ]
    process = workspace.start(*args)
    cache = workspace.data_dir / "mnist"
    wait_until(
        lambda: any(p.stat().st_size > 8192 for p in cache.glob("*")) if cache.exists() else False,
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cache / "mnist.npz").exists()
    mirror.delay = 0.0
    # The next fetch (here in process, as the next run would) downloads the file whole.
    from runner.data.download import fetch

    spec = FileSpec(name="mnist.npz", sha256=digest)
    fetch(spec, role="archive", mirror=mirror.url, cache_dir=cache, verify_checksum=True)
    assert sha256(cache / "mnist.npz") == digest
    assert mirror.requests == ["/mnist.npz", "/mnist.npz"]


# --------------------------------------------------------------------------- checkpoints


def test_a_diverged_job_logs_no_nan_checkpoint(tmp_path, store_template):
    """In process: what the run logs is the point (a diverged job in a sweep, through the CLI,
    is in test_sweeps.py; a RunnerError's one-line exit 2, in test_errors.py)."""
    workspace = new_workspace(tmp_path, store_template)
    with pytest.raises(RunnerError, match="diverged"):
        train_in_process(
            workspace,
            [
                "experiment=digits_lenet",
                *FAST,
                "trainer.epochs=3",
                "optimizer.lr=1e12",
                "trainer.evaluate=last",
                "callbacks.model_checkpoint.monitor=loss",
            ],
        )
    client = workspace.client()
    run = only_run(client)
    assert run.info.status == "FAILED"
    assert client.list_artifacts(run.info.run_id, "checkpoints") == []
    assert "not finite" in run.data.tags["checkpoint"]


@contextlib.contextmanager
def small_disk(folder: Path, size: str, *, read_only: bool = False):
    """A real file system of `size` (tmpfs) at `folder`, read-only if asked: what a full or
    read-only disk does to a job, without filling the machine's."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


DIGITS_JOB = ["experiment=digits_lenet", *FAST, "trainer.epochs=2"]


def test_a_read_only_artifact_store_and_a_full_outputs_disk_are_one_line_and_failed(
    workspace, tmp_path
):
    with small_disk(tmp_path / "readonly", "1m", read_only=True) as readonly:
        result = workspace.run(*DIGITS_JOB, f"logger.artifact_location=file://{readonly}/artifacts")
        one_line_error(result, f"cannot write {readonly}/artifacts", "read-only")
    [run] = workspace.client().search_runs(
        [workspace.client().get_experiment_by_name("tests").experiment_id]
    )
    assert run.info.status == "FAILED" and "Read-only file system" in run.data.tags["error"]

    with small_disk(tmp_path / "full", "1m") as full:  # a LeNet checkpoint is 5 MB
        result = workspace.run(*DIGITS_JOB, "logger.experiment=full", f"hydra.run.dir={full}/job")
        one_line_error(result, "no space left on its disk", "hydra.run.dir")
    run = only_run(workspace.client(), "full")
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]


def test_a_full_disk_under_outputs_and_the_store_says_how_to_mark_the_run(workspace, tmp_path):
    """The store cannot record the failure either: the line says so and how to mark it later,
    which works once there is space."""
    with small_disk(tmp_path / "full", "2m") as full:
        store = f"sqlite:///{full}/mlflow.db"
        result = workspace.run(
            *DIGITS_JOB, f"hydra.run.dir={full}/job", f"logger.tracking_uri={store}"
        )
        line = one_line_error(result, "no space left on its disk", "could not be marked FAILED")
        assert result.stderr.count("Traceback") == 0
        run_id = line.split("Run ")[1].split()[0]
        subprocess.run(["mount", "-o", "remount,size=64m", str(full)], check=True)  # space again
        marked = workspace.module("runner.runs", "--mark-killed", "--tracking-uri", store)
        assert marked.returncode == 0 and "marked KILLED" in marked.stdout, marked.stderr
        from mlflow import MlflowClient

        assert MlflowClient(tracking_uri=store).get_run(run_id).info.status == "KILLED"


def test_an_interrupt_after_training_says_so_not_a_next_epoch(tmp_path):
    from runner.training.resume import Progress
    from runner.training.summary import interrupted

    def line(**progress) -> str:
        state = Progress(run_id="r", **progress)
        stop = interrupted(
            KeyboardInterrupt(), run_id=None, progress=state, total_epochs=20, output_dir=tmp_path
        )
        return stop.message

    assert "after training ended (epoch 20/20)" in line(epochs_done=20, phase_complete=True)
    assert "after training ended (epoch 7/20)" in line(epochs_done=7, phase_complete=True)
    assert "at epoch 8/20" in line(epochs_done=7)  # mid-training: the epoch it was in
