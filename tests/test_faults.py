"""Faults: signals, races, broken files and slow or silent mirrors, with real processes and a
real HTTP server on loopback. Each failure is one line on the console, an honest status in
MLflow, and nothing lost."""

from __future__ import annotations

import functools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from tests import fixtures
from tests import image_fixtures as fx
from tests.conftest import FAST, sha256
from tests.test_e2e import only_run

LONG = ["experiment=digits_lenet", "logger.experiment=tests", "trainer.epochs=200",
        "callbacks.early_stopping.enabled=false"]  # fmt: skip


def start(workspace, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=workspace.root, env=workspace.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def epochs_saved(workspace) -> int:
    done = 0
    for state in workspace.root.glob("outputs/runs/*/resume/state.json"):
        try:
            done = max(done, json.loads(state.read_text())["epochs_done"])
        except ValueError:
            pass
    return done


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_is_one_line_a_killed_run_and_kept_checkpoints(workspace, sent, code):
    process = start(workspace, *LONG)
    wait_until(lambda: epochs_saved(workspace) >= 2, process)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    name = signal.Signals(sent).name
    [line] = [x for x in stderr.splitlines() if "interrupted" in x]
    assert f"interrupted by {name} at epoch" in line and "/200" in line
    assert "trainer.resume=" in line and "best.keras" in line
    client = workspace.client()
    run = only_run(client)
    assert run.info.status == "KILLED"
    assert name in run.data.tags["error"]
    logged = [item.path for item in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert logged == ["checkpoints/best.keras"]
    assert list(workspace.root.glob("outputs/runs/*/resume/state.json"))  # resumable
    job_log = next(workspace.root.glob("outputs/runs/*/runner.log")).read_text()
    assert "Traceback" in job_log  # the details go to the job's log, not the console


def test_sigterm_to_a_sweep_leaves_no_running_run(workspace):
    process = start(workspace, "-m", *LONG, "trainer.seed=1,2")
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
    assert process.returncode == 143 and "Traceback" not in stderr
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # parent and job


def test_a_job_failing_validation_counts_as_failed_in_its_sweep(workspace):
    result = workspace.run("-m", "experiment=digits_lenet", *FAST, "trainer.batch_size=0,32",
                           "logger.log_model=false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 of 2 jobs finished, 1 failed" in result.stdout
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and "trainer.batch_size should be >= 1" in failed[0].data.tags["error"]
    assert failed[0].data.params["trainer.batch_size"] == "0"


@pytest.mark.fresh_store
@pytest.mark.parametrize("value", ["nan", "-1"])
def test_a_bad_learning_rate_is_refused_before_any_data_or_run(workspace, value):
    result = workspace.run("data=mnist", "data.mirror=http://127.0.0.1:9", *FAST,
                           f"optimizer.lr={value}")  # fmt: skip
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
                for offset in range(0, len(data), 4096):  # a slow link: 4 KB at a time
                    self.wfile.write(data[offset : offset + 4096])
                    self.wfile.flush()
                    time.sleep(mirror.delay)

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


def test_parallel_jobs_on_a_cold_cache_download_once(workspace, counting_mirror):
    mirror, digest = counting_mirror
    result = workspace.run(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "data=mnist",
        f"data.mirror={mirror.url}", f"data.files.archive.sha256={digest}", "model=mlp",
        "trainer.seed=1,2,3,4", *FAST, "logger.log_model=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert mirror.requests == ["/mnist.npz"]
    assert "4 of 4 jobs finished" in result.stdout
    cached = workspace.data_dir / "mnist" / "mnist.npz"
    assert sha256(cached) == digest
    assert sorted(p.name for p in cached.parent.iterdir() if not p.name.startswith(".")) == [
        "mnist.npz"
    ]


def test_a_download_killed_half_way_leaves_no_cached_file(workspace, counting_mirror):
    mirror, digest = counting_mirror
    mirror.delay = 0.05  # about 80 KB/s: the fixture takes seconds to arrive
    args = ["data=mnist", f"data.mirror={mirror.url}", f"data.files.archive.sha256={digest}",
            "model=mlp", *FAST, "logger.log_model=false"]  # fmt: skip
    process = start(workspace, *args)
    cache = workspace.data_dir / "mnist"
    wait_until(lambda: any(p.stat().st_size > 8192 for p in cache.glob("*")) if cache.exists()
               else False, process)  # fmt: skip
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cache / "mnist.npz").exists()
    mirror.delay = 0.0
    again = workspace.run(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sha256(cache / "mnist.npz") == digest


def test_a_mirror_that_never_answers_times_out(workspace):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never says a word
    try:
        started = time.monotonic()
        result = workspace.run("data=mnist", f"data.mirror=http://127.0.0.1:{silent.getsockname()[1]}",
                               "data.timeout=2", *FAST, timeout=120)  # fmt: skip
        assert time.monotonic() - started < 60
    finally:
        silent.close()
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "no answer for 2 s" in message and "data.timeout" in message
    assert not (workspace.data_dir / "mnist" / "mnist.npz").exists()


def test_an_unreadable_cached_file_says_delete_it(workspace, mirror):
    cached = workspace.data_dir / "mnist" / "mnist.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 this is no longer a zip")
    result = workspace.run("data=mnist", "data.verify_checksum=false", *FAST)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert str(cached) in message and "delete it to download it again" in message
    assert "allow_pickle" not in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- image files


def test_odd_file_names_are_read_and_pixel_bombs_skipped(workspace, tmp_path):
    root = tmp_path / "animals"
    fx.write_class_tree(root, per_class=16, unusual_in=None, bad_in=None)
    odd = root / "cats" / "caf\udce9 \udcff.jpg"  # not UTF-8: bytes 0xE9 0xFF in the name
    fx.picture(0, seed=77).save(odd)
    bomb = root / "dogs" / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)  # tiny file, 400 MP declared
    assert bomb.stat().st_size < 200_000
    result = workspace.run("data=image_folder", f"data.path={root}", "model=simple_nn",
                           *FAST, "logger.log_model=false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(workspace.client())
    listing = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data/skipped_files.json")
    skipped = json.loads(listing)
    assert [item["path"].rsplit("/", 1)[-1] for item in skipped] == ["bomb.png"]
    assert "20000x20000" in skipped[0]["reason"] and "data.max_pixels" in skipped[0]["reason"]
    sizes = sum(int(run.data.params[f"data.size.{s}"]) for s in ("train", "val", "test"))
    assert sizes == 16 * 3 + 1  # the odd name was read


# --------------------------------------------------------------------------- checkpoints


def test_a_diverged_job_logs_no_nan_checkpoint(workspace):
    result = workspace.run(
        "experiment=digits_lenet", *FAST, "trainer.epochs=3", "optimizer.lr=1e12",
        "trainer.evaluate=last", "callbacks.model_checkpoint.monitor=loss",
    )  # fmt: skip
    assert result.returncode == 2
    assert "diverged" in result.stderr.strip().splitlines()[-1]
    client = workspace.client()
    run = only_run(client)
    assert run.info.status == "FAILED"
    assert client.list_artifacts(run.info.run_id, "checkpoints") == []
    assert "not finite" in run.data.tags["checkpoint"]
