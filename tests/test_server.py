"""A real `mlflow server` on loopback: unreachable at start (fails in seconds), and killed in the
middle of a run and started again later (the run trains to the end; `runner.sync` sends what
the server missed, each epoch once, and the final status)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.server import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`mlflow server` with a SQLite store and proxied artifacts, as a team would run it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(self.url, self.process, timeout=90)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its workers
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path / "server")
    running.folder.mkdir()
    running.start()
    yield running
    running.stop()


@pytest.mark.fresh_store
def test_unreachable_server_fails_in_seconds_before_any_work(workspace):
    started = time.monotonic()
    result = workspace.run(
        "experiment=digits_lenet", f"logger.tracking_uri=http://127.0.0.1:{free_port()}"
    )
    assert time.monotonic() - started < 45
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "does not answer" in message and "logger.tracking_uri" in message
    assert "Traceback" not in result.stderr


@pytest.mark.fresh_store  # it asserts the client made no store of its own
def test_a_server_that_dies_mid_run_gets_everything_after_sync(workspace, server):
    job = workspace.root / "outputs" / "job"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "experiment=digits_lenet", "trainer.epochs=6",
         "callbacks.early_stopping.enabled=false", f"logger.tracking_uri={server.url}",
         "logger.experiment=team", f"hydra.run.dir={job}"],
        cwd=workspace.root, env=workspace.env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def epochs_done() -> int:
        try:
            return json.loads((job / "resume" / "state.json").read_text())["epochs_done"]
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 240
    while epochs_done() < 2:
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.stop()  # at epoch 2 of 6
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "Epoch 6/6" in output  # trained to the end
    assert f"python -m runner.sync {job}" in output
    assert (job / "mlflow_outbox" / "journal.jsonl").exists()

    server.start()  # later, the server is back
    sync = subprocess.run(
        [sys.executable, "-m", "runner.sync", str(job)], cwd=workspace.root,
        env=workspace.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert not (job / "mlflow_outbox").exists()

    import mlflow

    client = mlflow.MlflowClient(server.url)
    [run] = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert run.info.status == "FINISHED"
    for metric in ("loss", "val_accuracy", "epoch_seconds"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
        assert steps == [0, 1, 2, 3, 4, 5], metric
    assert "test_accuracy" in run.data.metrics
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/learning_curves.png" in paths
    models = client.search_logged_models([run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    # The artifacts live on the server (its artifact store), not on the client's disk.
    assert list((server.folder / "artifacts").rglob("learning_curves.png"))
    assert not (workspace.root / "mlruns").exists()


@pytest.mark.fresh_store  # the client must make no store of its own
def test_make_server_keeps_runs_in_postgresql_and_artifacts_on_the_server(workspace):
    """`python -m runner.server` (what `make server` runs): real PostgreSQL, real mlflow server
    with proxied artifacts; a job logs to it and everything is read back through the server."""
    import tempfile

    from mlflow import MlflowClient

    from runner.server import postgres_bin

    # Outside pytest's private temp folder: PostgreSQL's own user must be able to reach it.
    folder = Path(tempfile.mkdtemp(prefix="runner-server-"))
    folder.chmod(0o755)
    port, pg_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.server", "--folder", str(folder / "team"),
         "--port", str(port), "--pg-port", str(pg_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(url, process, timeout=180)
        result = workspace.run(
            "experiment=digits_lenet", "trainer.epochs=1", "logger.experiment=team",
            "logger.log_model=false", MLFLOW_TRACKING_URI=url,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"open the UI: {url}/#/experiments/" in result.stdout  # the server's own link
        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("team")
        [run] = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # the server's artifacts
        (workspace.root / "download").mkdir()
        downloaded = Path(client.download_artifacts(
            run.info.run_id, "plots/learning_curves.png", str(workspace.root / "download")
        ))  # fmt: skip
        assert downloaded.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert list((folder / "team" / "artifacts").rglob("learning_curves.png"))
        assert not (workspace.root / "mlruns").exists()
        # The run is a row of the PostgreSQL database, with its metrics.
        rows = subprocess.run(
            [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow",
             "-d", "mlflow", "-At", "-c",
             f"select count(*) from metrics where run_uuid = '{run.info.run_id}' "
             "and key = 'val_accuracy'"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert rows.stdout.strip() == "1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert "[runner.server] stopped" in output
    assert not (folder / "team" / "postgres" / "data" / "postmaster.pid").exists()
    shutil.rmtree(folder, ignore_errors=True)


def test_a_taken_port_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "runner.server", "--folder", str(tmp_path / "team"),
             "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} on 127.0.0.1 is not free")
    assert "PORT=5001" in line
    assert not (tmp_path / "team").exists()  # nothing was created
