"""A real `mlflow server` on loopback: unreachable at start (fails in seconds), and killed in the
middle of a run and started again later (the run trains to the end; `runner.sync` sends what
the server missed, each epoch once, and the final status)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.cli.server import free_port, postgres_bin, wait_for
from tests.conftest import epochs_done, in_session, processes, wait_until


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


class TeamServer:
    """`python -m runner.server` (what `make server` runs): real PostgreSQL and a real
    `mlflow server` with proxied artifacts, stopped with SIGTERM as a service manager would."""

    def __init__(self) -> None:
        # Outside pytest's private temp folder: PostgreSQL's own user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="runner-server-"))
        self.root.chmod(0o755)
        self.folder = self.root / "team"
        self.port, self.pg_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner.server",
                "--folder",
                str(self.folder),
                "--port",
                str(self.port),
                "--pg-port",
                str(self.pg_port),
                "--workers",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_for(self.url, self.process, timeout=180)

    def stop(self) -> str:
        if self.process is None or self.process.poll() is not None:
            return ""
        os.killpg(self.process.pid, signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        return output

    @property
    def pgpass(self) -> Path:
        return self.folder / "secrets" / "pgpass"

    def psql(self, sql: str, role: str = "mlflow", **env: str) -> subprocess.CompletedProcess:
        """psql over TCP as `role`; the password from the server's PGPASSFILE unless given."""
        return subprocess.run(
            [
                str(postgres_bin() / "psql"),
                *("-h", "127.0.0.1", "-p", str(self.pg_port), "-U", role, "-d", "mlflow"),
                *("-w", "-At", "-c", sql),  # -w: never prompt
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSFILE": str(self.pgpass), **env},
        )

    def metric_rows(self, run_id: str, key: str) -> int:
        rows = self.psql(
            f"select count(*) from metrics where run_uuid = '{run_id}' and key = '{key}'"
        )
        assert rows.returncode == 0, rows.stderr
        return int(rows.stdout.strip())


def test_the_team_database_wants_a_password_and_mlflow_is_no_superuser():
    """PostgreSQL asks every connection for its password (a wrong or missing one is refused),
    the passwords are the owner's alone, and MLflow's role cannot run shell commands."""
    server = TeamServer()
    server.start()
    try:
        assert server.psql("select 1").stdout.strip() == "1"  # the right password, from pgpass
        wrong = server.psql("select 1", PGPASSFILE="/dev/null", PGPASSWORD="guess")
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
        missing = server.psql("select 1", PGPASSFILE="/dev/null")
        assert missing.returncode != 0 and "no password supplied" in missing.stderr
        admin = server.psql("select 1", role="runner_admin", PGPASSFILE="/dev/null")
        assert admin.returncode != 0  # the superuser too
        assert server.psql("select rolsuper from pg_roles where rolname = 'mlflow'").stdout == "f\n"
        shell = server.psql("create temp table t (x text); copy t from program 'id'")
        assert shell.returncode != 0 and "must be superuser" in shell.stderr
        for secret in (server.folder / "secrets").iterdir():
            assert secret.stat().st_mode & 0o077 == 0, secret  # no one else can read it
        assert (server.folder / "secrets").stat().st_mode & 0o077 == 0
        sockets = server.folder / "postgres" / "run"
        assert sockets.stat().st_mode & 0o077 == 0
        if os.geteuid() == 0:  # run as postgres: its own group, not root's
            [postmaster] = [
                pid
                for pid, (parent, _, command) in processes().items()
                if parent == server.process.pid and command.split()[0].endswith("/postgres")
            ]
            status = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{postmaster}/status").read_text().splitlines()
            )
            assert "0" not in status["Gid"].split() and status["Groups"].split() == []
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.mark.fresh_store  # the client must make no store of its own
def test_a_team_server_keeps_everything_even_when_it_dies_mid_run(workspace, monkeypatch):
    """A job logs to the team server (PostgreSQL + proxied artifacts); the server goes away at
    epoch 2 of 4: the job trains to the end, and once the server is back `runner.sync` sends
    what it missed, each epoch once, and the final status. Everything is then read back through
    the server and found in PostgreSQL, nothing on the client's disk."""
    server = TeamServer()
    server.start()
    try:
        # mlflow server (in a session of its own) runs without MLflow's GenAI job runner.
        [mlflow_server] = [
            pid
            for pid, (parent, _, command) in processes().items()
            if parent == server.process.pid and "mlflow" in command
        ]
        assert not any("huey" in command for command in in_session(mlflow_server).values())
        job = workspace.root / "outputs" / "job"
        process = workspace.start(
            "experiment=digits_lenet",
            "trainer.epochs=4",
            "callbacks.early_stopping.enabled=false",
            "logger.experiment=team",
            f"hydra.run.dir={job}",
            merge_output=True,
            MLFLOW_TRACKING_URI=server.url,
        )
        wait_until(lambda: epochs_done(job) >= 2, process)
        assert "[runner.server] stopped" in server.stop()  # at epoch 2 of 4
        assert not (server.folder / "postgres" / "data" / "postmaster.pid").exists()
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
        assert "Epoch 4/4" in output  # trained to the end
        assert f"python -m runner.sync {job}" in output
        assert f"open the UI: {server.url}/#/experiments/" in output  # the server's own link
        assert (job / "mlflow_outbox" / "journal.jsonl").exists()

        server.start()  # later, the server is back
        sync = subprocess.run(
            [sys.executable, "-m", "runner.sync", str(job)],
            cwd=workspace.root,
            env=workspace.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sync.returncode == 0, sync.stderr[-3000:]
        assert not (job / "mlflow_outbox").exists()

        client = MlflowClient(tracking_uri=server.url)
        [run] = client.search_runs([client.get_experiment_by_name("team").experiment_id])
        assert run.info.status == "FINISHED"
        for metric in ("loss", "val_accuracy", "epoch_seconds"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
            assert steps == [0, 1, 2, 3], metric
        assert "test_accuracy" in run.data.metrics
        assert server.metric_rows(run.info.run_id, "val_accuracy") == 4  # rows of PostgreSQL
        # Its second database keeps shared Optuna studies (hydra.sweeper.storage=...).
        import optuna

        storage = f"postgresql://mlflow@127.0.0.1:{server.pg_port}/optuna"
        monkeypatch.setenv("PGPASSFILE", str(server.pgpass))  # as the server's banner says
        optuna.create_study(study_name="team", storage=storage).optimize(lambda t: 1.0, 1)
        assert len(optuna.load_study(study_name="team", storage=storage).trials) == 1
        models = client.search_logged_models([run.info.experiment_id])
        assert [m.source_run_id for m in models] == [run.info.run_id]
        # The artifacts live on the server (its artifact store), not on the client's disk.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        (workspace.root / "download").mkdir()
        downloaded = Path(
            client.download_artifacts(
                run.info.run_id, "plots/learning_curves.png", str(workspace.root / "download")
            )
        )
        assert downloaded.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert list((server.folder / "artifacts").rglob("learning_curves.png"))
        assert not (workspace.root / "mlruns").exists()
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def test_a_taken_port_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "runner.server",
                "--folder",
                str(tmp_path / "team"),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} on 127.0.0.1 is not free")
    assert "PORT=5001" in line
    assert not (tmp_path / "team").exists()  # nothing was created
