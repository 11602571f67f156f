"""The real MLflow UI shows a sweep: `mlflow server` on 127.0.0.1, opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from runner.cli.server import NO_JOB_RUNNER, free_port, wait_for
from runner.tracking.store import TRAINING_VIEW, run_link
from tests.conftest import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_DIR = PROJECT_ROOT / "test-artifacts"

if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI needs Debian's chromium for the UI test: .ci/run installs it")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (apt-get install chromium); CI installs it"
)


def assert_rendered(png) -> None:
    """A page was drawn: a real PNG of the window's size with text and widgets, not a blank."""
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] >= 800
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50, f"{png} is (nearly) blank"


def page(url: str, screenshot: str) -> str:
    """One headless chromium visit: the page's screenshot (for a person to look at, checked
    not blank) and its DOM (returned)."""
    path = SCREENSHOT_DIR / screenshot
    dom = chromium(f"--screenshot={path}", "--dump-dom", url)
    assert_rendered(path)
    return dom


def chromium(*args: str, timeout: float = 90) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "--virtual-time-budget=20000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return result.stdout


@pytest.fixture
def mlflow_server(poisoned_sweep):
    """`mlflow server` on the sweep's store, as `make ui` starts it."""
    workspace, _ = poisoned_sweep
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            workspace.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=workspace.root,
        env={**NO_JOB_RUNNER, **workspace.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url, server, timeout=90)  # its /health answers, or it exited or timed out
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_mlflow_ui_shows_a_sweep_its_runs_datasets_and_metrics(poisoned_sweep, mlflow_server):
    # The sweep of tests/conftest.py: three jobs, one healthy, one diverged, one refused.
    workspace, _ = poisoned_sweep
    client = workspace.client()
    SCREENSHOT_DIR.mkdir(exist_ok=True)
    experiment_id = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([experiment_id])
    assert len(runs) == 4
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = {r.data.params["optimizer.lr"]: r for r in runs if r is not parent}
    run = children["0.05"]  # the healthy one

    # The experiment's runs table lists the sweep (its jobs folded under the parent run), in
    # the UI's Model training view, where the runner's links open it.
    runs_page = f"{mlflow_server}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"
    dom = page(runs_page, "mlflow_ui_runs.png")
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "Model registry" in text and "Evaluation runs" not in text, "the Model training view"
    assert parent.info.run_name in dom, "the sweep's parent run is listed"
    assert re.search(r"4\s*matching runs", text), "parent + 3 jobs"
    # A job's page, as the runner links it: its metrics, the test accuracy among them, and its
    # datasets (logged as MLflow inputs).
    run_page = run_link(mlflow_server, experiment_id, run.info.run_id)
    text = re.sub(r"<[^>]+>", " ", page(run_page, "mlflow_ui_run.png"))
    assert "Model registry" in text and "Evaluation runs" not in text, "the Model training view"
    assert "test_accuracy" in text and f"{run.data.metrics['test_accuracy']:.3f}"[:4] in text
    assert re.search(r"digits\s*\(?\s*" + run.data.tags["data.train_digest"][:4], text), (
        "the run's page names its data"
    )

    # Comparing the healthy and the diverged job shows each run with its params and metrics.
    compared = [run, children["100000.0"]]
    ids = ",".join(f'"{r.info.run_id}"' for r in compared)
    compare = f'{mlflow_server}/#/compare-runs?runs=[{ids}]&experiments=["{experiment_id}"]'
    dom = page(compare, "mlflow_ui_compare.png")
    assert [r.info.run_name for r in compared] == ["lenet-digits lr=0.05", "lenet-digits lr=100000"]
    for child in compared:
        assert child.info.run_name in dom
    assert "best_val_loss" in dom and "test_accuracy" in dom, "metric rows are shown"
    assert "optimizer.lr" in dom, "the swept param is shown"
