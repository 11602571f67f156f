"""Shared fixtures: a real HTTP mirror on 127.0.0.1 serving real-format dataset files, and a
helper that runs the real CLI in a subprocess against a throwaway MLflow store."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from tests import fixtures

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Mirror:
    url: str
    folder: Path
    requests: list[str] = field(default_factory=list)

    def sha(self, name: str) -> str:
        return sha256(self.folder / name)


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory):
    """A real HTTP server on loopback laid out like a dataset mirror (files side by side)."""
    folder = tmp_path_factory.mktemp("mirror")
    fixtures.write_mnist_npz(folder / "mnist.npz")
    fixtures.write_fashion_mnist(folder)
    fixtures.write_cifar10(folder / "cifar-10-python.tar.gz")
    fixtures.write_cifar10_binary(folder / "cifar-10-binary.tar.gz")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib's name
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Mirror(url=f"http://127.0.0.1:{server.server_port}", folder=folder, requests=requests)
    server.shutdown()


def checksum_overrides(mirror: Mirror, data: str) -> list[str]:
    """Point `data=<name>` at the fixture mirror and its files' checksums."""
    idx = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    roles = {
        "mnist": {"archive": "mnist.npz"},
        "fashion_mnist": idx,
        "mnist_idx": idx,  # the same IDX fixtures: the format is what is tested
        "cifar10": {"archive": "cifar-10-python.tar.gz"},
        "cifar10_bin": {"archive": "cifar-10-binary.tar.gz"},
    }[data]
    return [f"data={data}", f"data.mirror={mirror.url}"] + [
        f"data.files.{role}.sha256={mirror.sha(name)}" for role, name in roles.items()
    ]


@dataclass
class Workspace:
    """A project-like folder: the CLI runs here, so mlruns/ and outputs/ land here."""

    root: Path
    data_dir: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlruns/mlflow.db"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RUNNER_"))}
        env.update(RUNNER_DATA_DIR=str(self.data_dir), PYTHONPATH=str(PROJECT_ROOT), **extra)
        return env

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def module(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Another of the runner's commands (`python -m runner.runs ...`) in this workspace."""
        return subprocess.run(
            [sys.executable, "-m", name, *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, merge_output: bool = False, **env: str) -> subprocess.Popen:
        """The CLI in the background, for tests that signal, kill or watch it; stderr apart
        unless `merge_output`. Ctrl-C acts as in a terminal (a shell starts background jobs,
        such as a test run under `&`, with SIGINT ignored, which the job would inherit)."""
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def client(self):
        """A client on this workspace's store; `runs:/` URIs resolve against it too."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created once by MLflow itself: its schema migrations take
    seconds, and every CLI run in a test would otherwise pay them."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def new_workspace(base: Path, store_template: Path | None) -> Workspace:
    """A project folder in `base` (its data cache beside it) whose store is a copy of the
    template, or that has no store at all."""
    root = base / "project"
    root.mkdir()
    if store_template is not None:
        (root / "mlruns").mkdir()
        shutil.copyfile(store_template, root / "mlruns" / "mlflow.db")
    return Workspace(root=root, data_dir=base / "cache")


@pytest.fixture
def workspace(tmp_path: Path, request: pytest.FixtureRequest) -> Workspace:
    """A fresh project folder whose store starts as MLflow creates it. Tests about how the
    store comes to exist (or that none is made) are marked `fresh_store`: no store at all."""
    fresh = request.node.get_closest_marker("fresh_store") is not None
    return new_workspace(tmp_path, None if fresh else request.getfixturevalue("store_template"))


@pytest.fixture(scope="session")
def poisoned_sweep(tmp_path_factory: pytest.TempPathFactory, store_template: Path):
    """One sweep for the tests of what a sweep logs (test_sweeps.py) and of how the MLflow UI
    shows it (test_ui.py), run once: three learning rates on the offline digits, one healthy,
    one that diverges while training, one refused before its run starts; minimizing val_loss
    (the failed jobs must rank last: their value is +inf, not -inf)."""
    workspace = new_workspace(tmp_path_factory.mktemp("sweep"), store_template)
    result = workspace.run(
        "-m",
        "experiment=digits_lenet",
        "trainer.epochs=1",
        "logger.experiment=sweeps",
        "optimizer.lr=0.05,100000,-1",
        "logger.log_model=false",
        "objective.metric=val_loss",
        "objective.mode=min",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workspace, result


class Trained(NamedTuple):
    """The `trained` fixture: its workspace, the seed-1 job's MLflow run and folder, the sweep's
    completed process, and the image counts of the folder it trained on."""

    workspace: Workspace
    job: Any
    job_dir: Path
    result: subprocess.CompletedProcess
    counts: dict[str, int]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small model trained once on a fixture copy of the animals tutorial's folder, with the
    files real folders hold among the images (broken, oddly named, oversized), for the tests
    of that dataset (test_image_e2e.py) and of predict, evaluate, serve and the UI
    (test_predict.py): a sweep of two seeds, whose jobs must share their splits
    (test_resume.py)."""
    from PIL import Image

    from tests import image_fixtures

    base = tmp_path_factory.mktemp("animals")
    workspace = new_workspace(base, None)  # its first run creates the store
    folder = base / "animals"
    counts = image_fixtures.write_class_tree(folder)
    # A file name that is not UTF-8 (bytes 0xE9 0xFF) is read; a pixel bomb (a tiny file that
    # declares 400 megapixels) is skipped with the key that allows it.
    image_fixtures.picture(0, seed=77).save(folder / "cats" / "caf\udce9 \udcff.jpg")
    counts["cats"] += 1
    bomb = folder / "dogs" / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 200_000
    counts["bad"] += 1
    result = workspace.run(
        "-m",
        "data=animals",
        f"data.path={folder}",
        "model=simple_nn",
        "optimizer=adam",
        "trainer.epochs=6",
        "callbacks.early_stopping.enabled=false",
        "trainer.batch_size=16",
        "trainer.seed=1,2",
        "logger.experiment=tests",
        f"hydra.sweep.dir={workspace.root / 'outputs' / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Failed to infer signature" not in result.stderr  # logging the serving model is quiet
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    [job] = [r for r in runs if r.data.params.get("trainer.seed") == "1"]
    return Trained(workspace, job, Path(job.data.tags["output_dir"]), result, counts)


def compose_config(overrides: list[str]):
    """The config `python -m runner <overrides>` composes, in process, with its Hydra part set as
    in a job: for tests of what a command does with it where no process boundary is tested."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from runner.config.schema import register_configs

    register_configs()  # the typed schemas, as the commands register them
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def job_config(overrides: list[str]):
    """The config a job of `python -m runner <overrides>` is handed: Hydra's own part is set
    aside (in HydraConfig), as Hydra does."""
    from omegaconf import open_dict

    cfg = compose_config(overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def train_in_process(workspace: Workspace, overrides: list[str]):
    """What `python -m runner <overrides>` does in the workspace, run in this process: for tests
    of what a run does (its status, tags, files) where no process boundary is being tested; it
    saves a TensorFlow import (~5 CPU-seconds). Errors are raised, not turned into exit codes
    (the CLI's one-line exit is tested through it elsewhere). Returns the run's objective."""
    from runner.training.job import run

    job = workspace.root / "outputs" / "in_process"
    cfg = job_config(
        [
            *overrides,
            f"logger.tracking_uri={workspace.tracking_uri}",
            f"paths.root={workspace.root}",
            f"paths.data_dir={workspace.data_dir}",
            f"paths.output_dir={job}",
        ]
    )
    return run(cfg, None)


def wait_until(
    condition, process: subprocess.Popen, timeout: float = 240, every: float = 0.05
) -> None:
    """Poll `condition` every `every` seconds (longer for a condition that costs CPU, which the
    process under test needs) until it holds; fail if the process exits or time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.stderr or process.stdout
            raise AssertionError(f"exited early:\n{output.read()[-3000:] if output else ''}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(every)


def epochs_done(job_dir: Path) -> int:
    """Epochs a job has finished, by its resume state (0 before the first)."""
    try:
        return json.loads((job_dir / "resume" / "state.json").read_text())["epochs_done"]
    except (FileNotFoundError, ValueError):
        return 0


def processes() -> dict[int, tuple[int, int, str]]:
    """This machine's processes: pid -> (parent pid, session id, command line)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # fields after the command's closing parenthesis: state, ppid, pgrp, session
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # exited meanwhile
            continue
        table[int(stat.parent.name)] = (
            int(fields[1]),
            int(fields[3]),
            command.decode("utf-8", "replace"),
        )
    return table


def in_session(session_id: int) -> dict[int, str]:
    """The processes of a session (what `start_new_session=True` started, and its children):
    pid -> command line."""
    return {
        pid: command for pid, (_, session, command) in processes().items() if session == session_id
    }


FAST = [
    "trainer.epochs=1",
    "trainer.batch_size=32",
    "logger.experiment=tests",
    "logger.log_serving_model=false",  # tests of serving ask for it
]


# Fixtures that run the CLI once for several tests: their tests stay on one xdist worker.
SHARED_RUNS = {"trained", "poisoned_sweep"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start the real CLI (a `workspace`) are `e2e`: `pytest -m "not e2e"` is the
    quick loop (under a minute), `make test` runs everything.

    For `make test` (pytest-xdist, `--dist loadgroup`): the e2e tests go first, so that the
    short unit tests fill the end and no worker waits alone on a long run; the tests of a run
    made once for several of them (SHARED_RUNS) stay on one worker, where it is made once."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"workspace", *SHARED_RUNS} & fixtures:
            item.add_marker(pytest.mark.e2e)
        for shared in SHARED_RUNS & fixtures:
            item.add_marker(pytest.mark.xdist_group(shared))
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable


def pytest_configure(config: pytest.Config) -> None:
    """Refuse `--dist loadgroup` where it would silently not group: it marks grouped tests by a
    suffix of their node id, which pytest 9.2 no longer keeps (pytest-dev/pytest-xdist#1386)."""
    from packaging.version import Version

    broken = Version(pytest.__version__) >= Version("9.2")
    if broken and config.getoption("dist", "no") == "loadgroup":
        raise pytest.UsageError(
            f"pytest {pytest.__version__} breaks --dist loadgroup (pytest-dev/pytest-xdist#1386): "
            "install the pinned versions (make install, or pip install -c constraints.txt)"
        )
    # The test processes hold TensorFlow too: they end as the commands do
    # (runner/cli/quick_exit.py).
    from runner.cli.quick_exit import skip_final_collection

    skip_final_collection()


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """A command that failed as a user error: exit 2, no traceback, its last line saying it."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in line, line
    return line


def mirrored_mask(images: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Which of `out` are their image's mirror (every one is the image or its mirror)."""
    mirrored = np.array([np.array_equal(o, i[:, ::-1]) for i, o in zip(images, out, strict=True)])
    kept = np.array([np.array_equal(o, i) for i, o in zip(images, out, strict=True)])
    assert (mirrored | kept).all()
    return mirrored
