"""Keras on torch (`backend=torch`): the JAX path's input and augmentation (PyDataset,
keras.ops) under torch. These run where torch is installed: `make test-torch` adds PyTorch's
CPU build to .venv-jax (no TensorFlow there) and runs them; CI does."""

from __future__ import annotations

import pytest

from tests.test_backends import has_module, trains_resumes_and_predicts

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not has_module("torch"), reason="needs torch: make test-torch"),
]


@pytest.mark.e2e
def test_torch_trains_resumes_after_a_kill_like_an_uninterrupted_run_and_predicts(
    workspace, tmp_path
):
    trains_resumes_and_predicts(workspace, tmp_path, "torch")


@pytest.mark.e2e
def test_a_sweep_on_torch(workspace):
    result = workspace.run(
        "-m",
        *("backend=torch", "experiment=digits_lenet", "trainer.epochs=1"),
        "optimizer.lr=0.01,0.002",
        "logger.experiment=sweep",
        "logger.log_model=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = workspace.client()
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    children = [run for run in runs if run.data.tags.get("sweep") != "parent"]
    assert sorted(run.data.params["optimizer.lr"] for run in children) == ["0.002", "0.01"]
    assert {run.data.tags["backend"] for run in children} == {"torch"}
    assert all(run.info.status == "FINISHED" for run in runs) and len(runs) == 3
