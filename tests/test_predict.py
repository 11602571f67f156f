"""`python -m runner.predict` on a model trained here: files, folders, globs and a `.keras`
file give what `model.predict` gives on the same pixels; names never collide; every user error
is one line and exit code 2."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from runner.cli.server import free_port
from runner.data.images import decode_files
from tests import image_fixtures as fx
from tests.conftest import compose_config, in_session


def predict(workspace, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.predict", *args],
        cwd=cwd or workspace.root,
        env=workspace.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def files_body(*files: bytes) -> dict:
    """A serving request with encoded image files."""
    data = [[base64.b64encode(f).decode()] for f in files]
    return {"dataframe_split": {"columns": ["image"], "data": data}}


def refused(port: int, body: dict) -> tuple[int, dict]:
    """(status, JSON answer) of a request the serving model should refuse."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_files_folders_globs_and_a_keras_file_match_model_predict(trained, tmp_path):
    workspace, run, job = trained.workspace, trained.job, trained.job_dir
    photos = tmp_path / "photos"
    for folder, label in (("Cat", 0), ("Dog", 1)):
        (photos / folder).mkdir(parents=True)
        fx.picture(label, seed=500 + label, size=28).save(photos / folder / "1.jpg")  # same stem
    fx.picture(2, seed=600, size=64).save(tmp_path / "loose.png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    # From another folder: RUNNER_ROOT names the project whose store `runs:/` resolves in.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.predict",
            "--model",
            f"runs:/{run.info.run_id}/model",
            str(photos),
            str(tmp_path / "*.png"),
            "--out",
            str(out),
        ],
        cwd=elsewhere,
        env=workspace.env(RUNNER_ROOT=str(workspace.root)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (elsewhere / "mlruns").exists()  # no stray store created where it ran
    rows = json.loads((out / "predictions.json").read_text())
    classified = {r["path"]: r for r in rows if not r["skipped"]}
    assert len(classified) == 3
    assert [r["skipped"] for r in rows if r["skipped"]] == ["not an image file name"]
    assert sorted(r["image"] for r in classified.values()) == ["1-2.png", "1.png", "loose.png"]
    for name in ("1.png", "1-2.png"):
        assert Image.open(out / name).width >= 320  # a 28 px image is drawn enlarged
    with (out / "predictions.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == 4

    # The numbers are the model's own on the same pixels.
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    paths = sorted(classified)
    pixels, _, _ = decode_files(paths, size=(32, 32), channels=3)
    expected = model.predict(pixels, verbose=0)
    names = json.loads((job / "checkpoints" / "classes.json").read_text())["class_names"]
    for path, scores in zip(paths, expected, strict=True):
        top = np.argsort(scores)[::-1][:3]
        assert classified[path]["labels"] == [names[i] for i in top]
        np.testing.assert_allclose(classified[path]["probabilities"], scores[top], rtol=1e-5)

    # A .keras checkpoint (class names from classes.json beside it) answers the same (here in
    # process: the command's own arguments, no second TensorFlow start).
    from runner.cli.predict import main

    main(
        [
            "--model",
            str(job / "checkpoints" / "best.keras"),
            str(tmp_path / "loose.png"),
            "--out",
            str(tmp_path / "out2"),
        ]
    )
    [row] = json.loads((tmp_path / "out2" / "predictions.json").read_text())
    best = keras.saving.load_model(job / "checkpoints" / "best.keras", compile=False)
    pixels, _, _ = decode_files([tmp_path / "loose.png"], size=(32, 32), channels=3)
    scores = best.predict(pixels, verbose=0)[0]
    assert row["labels"][0] == names[int(np.argmax(scores))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "runs:/0123456789abcdef0123456789abcdef/model"], "Cannot load the model"),
        (["--model", "models:/no-such-model@champion"], "Cannot load the model"),
        (["--model", "best.keras"], "No model file best.keras"),
        (
            ["--model", "runs:/x/model", "--tracking-uri", "sqlite:////nowhere/mlflow.db"],
            "No MLflow store at",
        ),
        (["--model", "best.keras", "--top", "0"], "--top: should be a whole number >= 1"),
        (["--pretrained", "vgg16", "--out", "/proc/no/such"], "--out /proc/no/such cannot be"),
        (["--model", "best.keras", "--top", "-1"], "Received: '-1'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(workspace, tmp_path, args, message):
    image = tmp_path / "a.png"
    fx.picture(0, seed=1).save(image)
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    result = predict(workspace, *args, str(image), *out)
    assert result.returncode == 2
    lines = [x for x in result.stderr.splitlines() if "error:" in x]  # ours, or argparse's
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_no_usable_input_is_one_line(trained, tmp_path, capsys):
    """In process, through the command's main and the wrapper every command's entry uses (the
    CLI cases above cross the process boundary)."""
    from runner.cli.app import run_command
    from runner.cli.predict import main

    workspace, run = trained.workspace, trained.job
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    files = [str(tmp_path / "bad.jpg"), str(tmp_path / "missing.jpg")]
    argv = ["--model", f"runs:/{run.info.run_id}/model", "--tracking-uri", workspace.tracking_uri]
    with pytest.raises(SystemExit) as exit_:
        run_command(lambda: main([*argv, *files]))
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: None of the 1 input file(s) could be decoded")


def test_make_ui_and_the_report_use_the_store_runner_root_names(trained, tmp_path):
    """`make ui` from the project and `runner.report` from another folder, for a store kept
    elsewhere (RUNNER_ROOT): the real MLflow UI lists that store's experiment, the report its
    run."""
    import time
    import urllib.request

    from tests.conftest import PROJECT_ROOT

    workspace, run = trained.workspace, trained.job
    port = free_port()
    env = workspace.env(RUNNER_ROOT=str(workspace.root))
    ui = subprocess.Popen(
        ["make", "-s", "ui", f"PORT={port}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # Its first line links the experiments in the UI's Model training view.
        view = f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
        assert ui.stdout.readline().rstrip().endswith(view)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "runner.report",
                "--experiment",
                "tests",
                "--out",
                str(elsewhere / "experiments"),
            ],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert report.returncode == 0, report.stderr[-2000:]
        (table,) = (elsewhere / "experiments").rglob("runs.csv")
        assert run.info.run_id in table.read_text()
        assert not (elsewhere / "mlruns").exists()  # no stray store created where it ran

        deadline, names = time.monotonic() + 120, []
        while time.monotonic() < deadline and "tests" not in names:
            assert ui.poll() is None, ui.stdout.read()[-2000:]
            try:
                url = (
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=50"
                )
                with urllib.request.urlopen(url, timeout=5) as response:
                    names = [e["name"] for e in json.load(response).get("experiments", [])]
            except OSError:
                time.sleep(0.5)
        assert "tests" in names, names
        # Without MLflow's GenAI job runner (its huey consumers cost ~15 CPU-s at each start),
        # and in one worker process (MLflow's default of four costs ~9 CPU-s more to start).
        commands = list(in_session(ui.pid).values())
        assert [c for c in commands if "uvicorn" in c and "--workers 1 " in c]
        assert not any("huey" in c or "multiprocessing.spawn" in c for c in commands), commands
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_evaluate_scores_a_model_on_new_data_in_a_linked_run(trained, tmp_path):
    workspace, run = trained.workspace, trained.job
    fresh = tmp_path / "fresh"
    fx.write_class_tree(fresh, per_class=12, unusual_in=None, bad_in=None)
    for label, folder in enumerate(("cats", "dogs", "panda")):  # same classes, new images
        for index, path in enumerate(sorted((fresh / folder).iterdir())):
            fx.picture(label, seed=9000 + 100 * label + index, size=48).save(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.evaluate",
            "--model",
            f"runs:/{run.info.run_id}/model",
            "data=image_folder",
            f"data.path={fresh}",
            "logger.experiment=tests",
        ],
        cwd=workspace.root,
        env=workspace.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "36 images of data=image_folder (all)" in result.stdout
    client = workspace.client()
    runs = client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id],
        filter_string="tags.evaluation = 'true'",
    )
    [scored] = runs
    assert scored.data.tags["source_run_id"] == run.info.run_id
    assert scored.info.status == "FINISHED"
    report = json.loads(
        mlflow.artifacts.load_text(f"{scored.info.artifact_uri}/reports/classification_report.json")
    )
    assert sum(report[name]["support"] for name in ("cats", "dogs", "panda")) == 36
    assert scored.data.metrics["test_accuracy"] == pytest.approx(report["accuracy"], abs=1e-6)
    assert {a.path for a in client.list_artifacts(scored.info.run_id, "plots")} >= {
        "plots/confusion_matrix.png"
    }
    # An evaluation run is not a training run to resume: one line, before any import of Keras.
    resumed = workspace.run(
        "data=image_folder",
        f"data.path={fresh}",
        "logger.experiment=tests",
        f"trainer.resume={scored.info.run_id}",
    )
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "is an evaluation run (runner.evaluate), not a training run" in resumed.stderr

    # Other classes are refused (here in process: the one-line exit is the CLI's, as above).
    from runner.core.errors import RunnerError
    from runner.evaluation.scoring import score

    other = tmp_path / "other"
    fx.write_class_tree(other, classes=("ants", "bees"), per_class=12, unusual_in=None, bad_in=None)
    cfg = compose_config(
        [
            "data=image_folder",
            f"data.path={other}",
            "logger.experiment=tests",
            f"logger.tracking_uri={workspace.tracking_uri}",
        ]
    )
    with pytest.raises(RunnerError, match=r"\['ants', 'bees'\] are not the model's"):
        score(cfg, f"runs:/{run.info.run_id}/model", "all")
    # Images the model cannot take (one channel for its three) are refused too.
    cfg = compose_config(["data=digits", f"logger.tracking_uri={workspace.tracking_uri}"])
    with pytest.raises(RunnerError, match=r"shape \(32, 32, 1\); the model takes \(32, 32, 3\)"):
        score(cfg, f"runs:/{run.info.run_id}/model", "all")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (["data=digits"], {"image_size": 24}),  # one square side
        (["data=image_folder", "data.path=x"], {"image_size": [24, 24], "color_mode": "grayscale"}),
        (["data=mnist"], {}),
    ],  # arrays keep their own size
)
def test_evaluate_decodes_the_data_to_the_models_input(data, expected):
    from omegaconf import OmegaConf

    from runner.evaluation.scoring import sized_for

    sized = sized_for(compose_config(data), (24, 24, 1))
    cfg = OmegaConf.to_container(sized.data, enum_to_str=True)
    assert {key: cfg[key] for key in ("image_size", "color_mode") if key in cfg} == expected


def test_mlflow_models_serve_answers_like_predict(trained, tmp_path):
    """A real `mlflow models serve` on loopback: raw uint8 pixels and base64-encoded files get
    the probabilities `runner.predict` prints, and bad requests a one-line 400."""
    import time
    import urllib.request

    workspace, run = trained.workspace, trained.job
    photo = tmp_path / "photo.png"
    fx.picture(1, seed=4242, size=50).save(photo)
    # What runner.predict prints for it: the model's own probabilities on the decoded pixels
    # (test_files_folders_globs_and_a_keras_file_match_model_predict checks the CLI says so).
    workspace.client()  # runs:/ URIs resolve in its store
    pixels, _, _ = decode_files([photo], size=(32, 32), channels=3)
    scores = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model").predict(pixels, verbose=0)
    names = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/class_names.json"))
    expected = {
        "labels": [names[i] for i in np.argsort(scores[0])[::-1]],
        "probabilities": sorted(scores[0].tolist(), reverse=True),
    }

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"runs:/{run.info.run_id}/serving",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=workspace.root,
        env=workspace.env(  # its uvicorn is the virtualenv's, as after `source .venv/bin/activate`
            MLFLOW_TRACKING_URI=workspace.tracking_uri,
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def ask(body: dict) -> list[dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())["predictions"]

    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        encoded = base64.b64encode(photo.read_bytes()).decode()
        [from_file] = ask({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}})
        [from_pixels] = ask({"inputs": pixels.tolist()})
        # Bad requests: 400 with what is wrong, no stack; the server still answers after them.
        bomb = io.BytesIO()
        Image.new("1", (16000, 16000)).save(bomb, format="PNG", optimize=True)
        nan = pixels.astype(float)
        nan[0, 0, 0, 0] = float("nan")
        huge = pixels.astype(float) * 1e30
        for body, message in (
            (files_body(bomb.getvalue()), "image 0 declares 16000x16000 pixels, over the limit"),
            ({"dataframe_split": {"columns": ["image"], "data": [["%%%"]]}}, "not base64"),
            ({"inputs": nan.tolist()}, "pixel values from 0 to 255 (no NaN, no inf)"),
            ({"inputs": huge.tolist()}, "pixel values from 0 to 255"),
            ({"inputs": pixels[:, :8].tolist()}, "the model takes N x 32 x 32 x 3"),
        ):
            status, answer = refused(port, body)
            assert status == 400 and message in answer["message"], answer
            assert "stack_trace" not in answer and "Traceback" not in json.dumps(answer)
        assert ask({"inputs": pixels.tolist()}) == [from_pixels]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    for answer in (from_file, from_pixels):
        assert answer["label"] == expected["labels"][0]
        for label, probability in zip(expected["labels"], expected["probabilities"], strict=True):
            assert answer[label] == pytest.approx(probability, rel=1e-4)


def test_a_model_trained_on_either_backend_predicts_the_same_on_the_other(workspace, tmp_path):
    """`.keras` files are backend-neutral: a model trained on TensorFlow (here, in process) and
    one trained on JAX (through the CLI) each give the same top classes and probabilities on
    both backends. (The JAX-only virtualenv's tests, tests/test_backends.py, cannot reach
    TensorFlow.)"""
    from runner.cli.predict import main
    from tests.conftest import train_in_process

    train_in_process(
        workspace, ["experiment=digits_lenet", "trainer.epochs=1", "logger.experiment=tf"]
    )
    trained = workspace.run(
        *("backend=jax", "experiment=digits_lenet", "trainer.epochs=1", "logger.experiment=jax")
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    images = []
    for value in (0, 128, 255):
        images.append(tmp_path / f"digit-{value}.png")
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(images[-1])

    client = workspace.client()
    for experiment in ("tf", "jax"):
        [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert run.data.params["backend"] == {"tf": "tensorflow", "jax": "jax"}[experiment]
        model = [
            "--model",
            f"runs:/{run.info.run_id}/model",
            "--tracking-uri",
            workspace.tracking_uri,
        ]
        main([*model, *map(str, images), "--out", str(tmp_path / f"{experiment}-on-tensorflow")])
        on_jax = subprocess.run(
            [sys.executable, "-m", "runner.predict", *model, *map(str, images)]
            + ["--out", str(tmp_path / f"{experiment}-on-jax")],
            cwd=workspace.root,
            env=workspace.env(KERAS_BACKEND="jax"),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert on_jax.returncode == 0, on_jax.stderr[-3000:]
        rows = {
            backend: json.loads(
                (tmp_path / f"{experiment}-on-{backend}" / "predictions.json").read_text()
            )
            for backend in ("tensorflow", "jax")
        }
        assert len(rows["jax"]) == len(images)
        for here, there in zip(rows["tensorflow"], rows["jax"], strict=True):
            assert here["labels"] == there["labels"], experiment
            np.testing.assert_allclose(
                here["probabilities"], there["probabilities"], rtol=1e-4, atol=1e-6
            )
