"""`python -m runner.server` (`make server`): a team's MLflow tracking server, on this machine.

    PostgreSQL (the system's own binaries)  <-  mlflow server  ->  artifacts folder
            <folder>/postgres/                    :PORT            <folder>/artifacts/

Runs, params and metrics go to a PostgreSQL database in `<folder>/postgres/` (created on first
start, listening on 127.0.0.1 only; a second database, `optuna`, holds shared Optuna studies);
artifacts are proxied by the server into `<folder>/artifacts/` (`--artifacts-destination`), so a
client never needs the server's disk.
Point jobs at it with `MLFLOW_TRACKING_URI=http://HOST:PORT`. Ctrl-C (or SIGTERM) stops the
MLflow server, then PostgreSQL; the data stays for the next start.

Locked: PostgreSQL asks every connection for a password (scram-sha-256), its Unix socket is in
a private folder, and MLflow connects as `mlflow`, a role that is not a superuser (a superuser
can run shell commands through `COPY ... FROM PROGRAM`). The passwords are generated at the
first start and kept in `<folder>/secrets/` (0600): `pgpass` is libpq's password file, which
MLflow, psql and Optuna read through `PGPASSFILE`, so no password is on a command line.

Nothing here is home-made: PostgreSQL's `initdb`/`postgres`/`psql`, and `mlflow server`.
PostgreSQL refuses to run as root; as root, its processes run as the `postgres` user and group.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from runner.cli.app import run_command
from runner.core.errors import RunnerError

DATABASE = "mlflow"
DB_USER = "mlflow"  # MLflow's and Optuna's role: owns their databases, no superuser
DB_ADMIN = "runner_admin"  # the cluster's superuser, for creating roles and databases only
OPTUNA_DATABASE = "optuna"  # shared Optuna studies: hydra.sweeper.storage=<Postgres.url(...)>
# MLflow 3 starts a job runner with its server (huey consumer processes for its GenAI jobs):
# about 15 CPU-seconds and several processes at every start, for features runner does not use.
# Off unless the environment asks for it (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true).
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_env() -> dict[str, str]:
    """The environment for `mlflow server` / `mlflow ui`: this one, with MLflow's job runner
    off unless set."""
    return {**NO_JOB_RUNNER, **os.environ}


class ServerError(RunnerError):
    """A reason the server cannot start, in one line."""


def postgres_bin() -> Path:
    """The folder of PostgreSQL's programs: PATH, `pg_config --bindir`, or Debian's layout."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        return Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if versions:
        return versions[-1].parent
    raise ServerError(
        "PostgreSQL is not installed (no initdb found): install it, e.g. "
        "`sudo apt-get install postgresql` on Debian or Ubuntu."
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Postgres:
    """A PostgreSQL cluster in `folder`, started for as long as the server runs."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.data, self.sockets = folder / "data", folder / "run"
        self.secrets = folder.parent / "secrets"
        self.pgpass = self.secrets / "pgpass"
        self.bin = postgres_bin()
        # PostgreSQL refuses root; the system's `postgres` user (and group) runs it then.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen | None = None

    def _as_postgres(self) -> dict[str, Any]:
        """Popen's arguments that run a program as PostgreSQL's user: uid, gid and no other
        groups (root's group 0 would otherwise stay with it)."""
        if not self.user:
            return {}
        return {"user": self.user, "group": self.user, "extra_groups": []}

    def _run(self, program: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / program), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            **self._as_postgres(),
        )

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
        if self.user:
            shutil.chown(path, self.user, self.user)

    def password(self, role: str) -> str:
        return (self.secrets / f"{role}.password").read_text().strip()

    def _new_secrets(self) -> None:
        """A password per role, readable by this user only, and libpq's password file."""
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secrets.chmod(0o700)
        for role in (DB_ADMIN, DB_USER):
            write_private(self.secrets / f"{role}.password", secrets.token_urlsafe(32) + "\n")
        lines = [f"127.0.0.1:*:*:{role}:{self.password(role)}\n" for role in (DB_ADMIN, DB_USER)]
        write_private(self.pgpass, "".join(lines))

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            if not self.pgpass.exists():
                raise ServerError(
                    f"{self.data} was made by an older runner.server, without passwords: start "
                    "a new folder (--folder), or keep using that one with the older version."
                )
            return
        self._own(self.folder)
        self._own(self.data)
        self._new_secrets()
        # initdb reads the superuser's password from a file PostgreSQL's user can read.
        pwfile = self.folder / ".pwfile"
        write_private(pwfile, self.password(DB_ADMIN) + "\n")
        if self.user:
            shutil.chown(pwfile, self.user, self.user)
        try:
            done = self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                DB_ADMIN,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",  # every connection, socket or TCP, gives a password
                "-E",
                "UTF8",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ServerError(f"initdb failed in {self.data}: {done.stderr.strip()[-300:]}")

    def start(self) -> None:
        self._own(self.sockets)
        self.log = open(self.folder / "postgres.log", "a")  # noqa: SIM115 - open while it runs
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
                str(self.sockets),
                "-c",
                "unix_socket_permissions=0700",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            **self._as_postgres(),
        )
        deadline = time.monotonic() + 60
        while self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port)).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(
                    f"PostgreSQL did not start on port {self.port}: see {self.folder}/postgres.log"
                )
            time.sleep(0.2)
        self._create_role_and_databases()

    def sql(self, statement: str, role: str = DB_ADMIN, database: str = "postgres") -> str:
        done = self._run(
            "psql",
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", role, "-d", database),
            *("-v", "ON_ERROR_STOP=1", "-At", "-c", statement),
            PGPASSWORD=self.password(role),
        )
        if done.returncode != 0:
            raise ServerError(f"PostgreSQL refused {statement.split()[0]}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _create_role_and_databases(self) -> None:
        exists = self.sql(f"select 1 from pg_roles where rolname = '{DB_USER}'")
        if not exists:
            self.sql(
                f"create role {DB_USER} login nosuperuser nocreatedb nocreaterole "
                f"password '{self.password(DB_USER)}'"
            )
        for database in (DATABASE, OPTUNA_DATABASE):
            if not self.sql(f"select 1 from pg_database where datname = '{database}'"):
                self.sql(f"create database {database} owner {DB_USER}")

    def url(self, database: str = DATABASE) -> str:
        """No password in it: libpq reads it from PGPASSFILE (`client_env`)."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def uri(self) -> str:
        return self.url(DATABASE)

    def client_env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.pgpass)}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def write_private(path: Path, text: str) -> None:
    """A file only its owner can read, created so (never world-readable, even briefly)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if process.poll() is not None:
                raise ServerError("mlflow server exited while starting") from None
            if time.monotonic() > deadline:
                raise ServerError(f"mlflow server did not answer on {url}") from None
            time.sleep(0.3)


def check_port(host: str, port: int) -> None:
    """Before anything starts: a taken port is one clear line, not a server dying later."""
    with socket.socket() as probe:
        # As servers bind: the last run's closed connections (TIME_WAIT) do not hold the port,
        # a listening socket does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServerError(
                f"port {port} on {host} is not free ({error.strerror}): stop what uses it, or "
                "pick another (make server PORT=5001, or --port 5001)."
            ) from None


def serve(folder: Path, host: str, port: int, pg_port: int, workers: int | None = None) -> None:
    check_port(host, port)
    folder = folder.resolve()
    postgres = Postgres(folder / "postgres", pg_port or free_port())
    postgres.init()
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    stopping: list[int] = []

    def stop(signum: int, _: Any) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    mlflow = None
    try:
        postgres.start()
        mlflow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                host,
                "--port",
                str(port),
                "--backend-store-uri",
                postgres.uri,
                "--artifacts-destination",
                str(folder / "artifacts"),
                *(["--workers", str(workers)] if workers else []),
            ],
            env={**mlflow_server_env(), **postgres.client_env()},
            start_new_session=True,
        )
        url = f"http://{host}:{port}"
        wait_for(url, mlflow)
        print(
            f"[runner.server] MLflow server on {url} (PostgreSQL database in {postgres.folder}, "
            f"artifacts in {folder / 'artifacts'})\n"
            f"[runner.server] log to it: MLFLOW_TRACKING_URI={url} python -m runner ...\n"
            f"[runner.server] share Optuna studies on this machine: PGPASSFILE={postgres.pgpass} "
            f"python -m runner ... hydra.sweeper.storage={postgres.url(OPTUNA_DATABASE)}\n"
            "[runner.server] Ctrl-C stops it; the data stays.",
            flush=True,
        )
        mlflow.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if mlflow is not None and mlflow.poll() is None:
            os.killpg(mlflow.pid, signal.SIGTERM)  # the server and its workers
            try:
                mlflow.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(mlflow.pid, signal.SIGKILL)
        postgres.stop()
        print("[runner.server] stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runner.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path("mlflow-server"),
        help="PostgreSQL data and artifacts (default: ./mlflow-server)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a team host)"
    )
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--pg-port", type=int, default=0, help="PostgreSQL's port (0: a free one)")
    parser.add_argument(
        "--workers", type=int, default=None, help="mlflow server's worker processes (its default)"
    )
    args = parser.parse_args(argv)
    serve(args.folder, args.host, args.port, args.pg_port, args.workers)


def entry() -> None:
    run_command(main)
