"""`make bench`: the runner against the tutorials' way, side by side in one invocation.

  overhead   steady-state epoch time and whole-process wall time of `python -m runner` vs a bare
             Keras script (bench/bare_keras_lenet.py): LeNet, MNIST-format data in memory
             (60,000 synthetic images in a real mnist.npz), batch 128, same threads.
  pipeline   images/s of the 64x64 RGB training batches `fit` consumes (fit.image_batches), from
             3,000 JPEGs in memory and streamed from their folder, with augmentation=tutorial
             and without, vs the legacy ImageDataGenerator (.flow on the same arrays,
             .flow_from_directory on the same folder); and the time to load the folder.
  accuracy   time to 90% validation accuracy: `experiment=digits_lenet` (offline, bundled data).
  time-to-accuracy
             the tutorials' recipe vs the tuned preset on the same data,
             each trained the same epochs: seconds and epochs to a validation-accuracy threshold
             (97% on the offline digits; 99% on MNIST and 92% on Fashion-MNIST, run too where
             their files are in the data cache: mnist.npz or MNIST's IDX files, Fashion-MNIST's).
  precision  epoch time of one job under float32, mixed precision (float16 on a GPU, bfloat16
             on a CPU) and XLA on/off: the speed-up of each setting over float32.
  backends   Keras on TensorFlow vs on JAX, the same job (LeNet and the CIFAR CNN on
             MNIST-format data in memory, batch 128): steady epoch time, training images/s
             and the whole-process wall time and peak memory of each backend.
  gpu        for a machine with a GPU (not in the default set): `--backend` (default jax)
             LeNet and the CIFAR CNN on 60,000 MNIST-format images (epoch time, images/s,
             peak accelerator memory), mnist_lenet vs mnist_tuned to 99% validation accuracy
             on MNIST-shaped handwritten digits (scikit-learn's, upscaled and jittered; test
             on held-out originals), and cifar10_tuned's epoch time. bench/gpu.sh runs it.
  transfer   feature extraction with a frozen pretrained backbone (random weights: no network
             needed, same cost): cached features (`model.cache_features=true`, the backbone runs
             once per image) vs the naive frozen model run every epoch, on the same folder of
             JPEGs; `--backbone`, `--size` (default vgg16 at 150x150, the tutorial's preset).

A and B alternate (the machine may be noisy); medians and ratios are reported, with the peak
memory (max RSS) of each process. Results go to experiments/bench/<name>.json with the machine.
Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "bench"
# The repository first, then what PYTHONPATH already holds (bench/gpu.sh's wheels there).
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
}


def gpus() -> list[str]:
    """The NVIDIA GPUs of this machine (nvidia-smi; none where it is missing). Read without
    importing a framework: JAX in this process would reserve most of the GPU's memory before
    the jobs start."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
    }
    for package in ("keras", "tensorflow", "jax", "jaxlib", "torch", "mlflow", "mlflow-skinny"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def run_process(args: list[str], cwd: Path, env: dict | None = None) -> tuple[str, float, float]:
    """Run to completion; returns (stdout, wall seconds, peak RSS in MB of that process)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output[-3000:]}")
    return output, wall, usage.ru_maxrss / 1024


def steady(seconds: list[float]) -> float:
    """Median epoch time without the first epoch (tracing, warm-up)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def logged_epoch_seconds(uri: str, experiment: str) -> list[float]:
    """`epoch_seconds` of the latest run of an experiment, by epoch."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])[0]
    history = client.get_metric_history(run.info.run_id, "epoch_seconds")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def alternate(label: str, names: tuple[str, str], rounds: int, run_one) -> dict[str, list]:
    """A and B in alternating order (A B, B A, ...); `run_one(name)` returns
    (epoch seconds, wall seconds, peak RSS MB). Returns every round's figures per name."""
    results: dict[str, list] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            epochs_s, wall, rss = run_one(name)
            results[name].append(
                {"epoch_seconds": epochs_s, "wall_seconds": wall, "peak_rss_mb": rss}
            )
            print(
                f"  {label} round {round_ + 1} {name}: epoch {steady(epochs_s):.2f} s, "
                f"process {wall:.1f} s, {rss:.0f} MB",
                flush=True,
            )
    return results


def summary(runs: list[dict]) -> dict:
    """Medians over the rounds (steady epoch, process wall) and the highest peak memory."""
    return {
        "steady_epoch_seconds": statistics.median(steady(r["epoch_seconds"]) for r in runs),
        "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def write_mnist_cache(work: Path, samples: int) -> tuple[Path, Path]:
    """A real mnist.npz of `samples` synthetic images in a data cache; returns (cache, npz)."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import balanced_labels, class_images

    cache = work / "cache"
    (cache / "mnist").mkdir(parents=True, exist_ok=True)
    npz = cache / "mnist" / "mnist.npz"
    y = balanced_labels(samples, seed=1)
    np.savez(
        npz,
        x_train=class_images(y, 28, seed=1),
        y_train=y,
        x_test=class_images(y[:1000], 28, seed=2),
        y_test=y[:1000],
    )
    return cache, npz


# Switched off for a timed job: no early stop, no checkpoint writes, one evaluation at the end.
UNTIMED_WORK = (
    "callbacks.early_stopping.enabled=false",
    "callbacks.model_checkpoint.enabled=false",
    "trainer.evaluate=last",
)


# `--override KEY=VALUE` of the command line: added last to every runner job, so they win
# (e.g. trainer.precision=mixed_bfloat16 on a CPU with bfloat16 units).
USER_OVERRIDES: list[str] = []


def runner_job(work: Path, experiment: str, *overrides: str) -> tuple[list[str], str]:
    """The command line of one `python -m runner` job logging to its own experiment in the
    bench's store, and that store's URI."""
    uri = f"sqlite:///{work}/mlruns/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "runner",
        *overrides,
        *USER_OVERRIDES,
        "trainer.verbose=2",
        f"logger.tracking_uri={uri}",
        f"logger.experiment={experiment}",
    ]
    return command, uri


def bench_overhead(work: Path, rounds: int, epochs: int, samples: int) -> dict:
    cache, npz = write_mnist_cache(work, samples)
    runner_args, uri = runner_job(
        work,
        "bench",
        "data=mnist",
        "model=lenet",
        "data.verify_checksum=false",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=128",
        "trainer.validation_split=0.1",
        *UNTIMED_WORK,
    )
    bare_args = [
        sys.executable,
        str(ROOT / "bench" / "bare_keras_lenet.py"),
        str(npz),
        str(epochs),
        "128",
        "0.1",
    ]
    env = {**ENV, "RUNNER_DATA_DIR": str(cache)}

    def run_one(name: str) -> tuple[list[float], float, float]:
        output, wall, rss = run_process(runner_args if name == "runner" else bare_args, work, env)
        if name == "bare":
            return json.loads(output.strip().splitlines()[-1])["epoch_seconds"], wall, rss
        return logged_epoch_seconds(uri, "bench"), wall, rss

    results = alternate("overhead", ("runner", "bare"), rounds, run_one)
    runner, bare = summary(results["runner"]), summary(results["bare"])
    return {
        "what": f"LeNet on {samples} MNIST-format images, {epochs} epochs, batch 128",
        "runner": runner,
        "bare_keras": bare,
        "epoch_time_ratio": runner["steady_epoch_seconds"] / bare["steady_epoch_seconds"],
        "wall_time_ratio": runner["wall_seconds"] / bare["wall_seconds"],
        "goal": "epoch_time_ratio <= 1.05",
        "rounds": results,
    }


def bench_precision(work: Path, rounds: int, epochs: int, samples: int) -> dict:
    """Steady epoch time of one runner job under each precision / XLA setting, same data and
    model (LeNet, batch 256): float32 is the baseline. Mixed precision is float16 on a GPU (tensor
    cores), bfloat16 elsewhere."""
    cache, _ = write_mnist_cache(work, samples)
    on_gpu = bool(gpus())
    mixed = "mixed_float16" if on_gpu else "mixed_bfloat16"
    settings = {
        "float32": ["trainer.precision=float32", "trainer.jit_compile=false"],
        "float32+xla": ["trainer.precision=float32", "trainer.jit_compile=true"],
        mixed: [f"trainer.precision={mixed}", "trainer.jit_compile=false"],
        f"{mixed}+xla": [f"trainer.precision={mixed}", "trainer.jit_compile=true"],
    }
    base, uri = runner_job(
        work,
        "bench_precision",
        "data=mnist",
        "model=lenet",
        "data.verify_checksum=false",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=256",
        *UNTIMED_WORK,
        "logger.log_model=false",
    )
    env = {**ENV, "RUNNER_DATA_DIR": str(cache)}

    def run_one(name: str) -> tuple[list[float], float, float]:
        _, wall, rss = run_process([*base, *settings[name]], work, env)
        return logged_epoch_seconds(uri, "bench_precision"), wall, rss

    results = alternate("precision", tuple(settings), rounds, run_one)
    summaries = {name: summary(runs) for name, runs in results.items()}
    baseline = summaries["float32"]["steady_epoch_seconds"]
    return {
        "what": f"LeNet on {samples} MNIST-format images, {epochs} epochs, batch 256",
        "device": "GPU" if on_gpu else "CPU",
        "settings": summaries,
        "speedup_vs_float32": {
            name: baseline / s["steady_epoch_seconds"] for name, s in summaries.items()
        },
        "best_speedup": max(baseline / s["steady_epoch_seconds"] for s in summaries.values()),
        "rounds": results,
    }


def logged_images_per_second(uri: str, experiment: str) -> float:
    """Median training images/s of the latest run of an experiment, the first epoch left out."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])[0]
    history = client.get_metric_history(run.info.run_id, "images_per_second")
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    return statistics.median(values[1:] if len(values) > 1 else values)


def bench_backends(work: Path, rounds: int, epochs: int, samples: int, backends: str) -> dict:
    """One runner job per backend, alternating, for each model (`--backends`, default
    tensorflow,jax: `make install` has both; the ratios need both)."""
    names = tuple(name.strip() for name in backends.split(",") if name.strip())
    cache, _ = write_mnist_cache(work, samples)
    env = {**ENV, "RUNNER_DATA_DIR": str(cache)}
    models = {}
    for model in ("lenet", "cifar_cnn"):
        experiment = f"bench_backends_{model}"
        base, uri = runner_job(
            work,
            experiment,
            "data=mnist",
            f"model={model}",
            "data.verify_checksum=false",
            f"trainer.epochs={epochs}",
            "trainer.batch_size=128",
            *UNTIMED_WORK,
            "logger.log_model=false",
        )
        throughput: dict[str, list[float]] = {name: [] for name in names}

        def run_one(name: str, base=base, uri=uri, experiment=experiment, throughput=throughput):
            _, wall, rss = run_process([*base, f"backend={name}"], work, env)
            throughput[name].append(logged_images_per_second(uri, experiment))
            return logged_epoch_seconds(uri, experiment), wall, rss

        results = alternate(f"backends {model}", names, rounds, run_one)
        summaries = {name: summary(runs) for name, runs in results.items()}
        for name in summaries:
            summaries[name]["images_per_second"] = statistics.median(throughput[name])
        models[model] = {**summaries, "rounds": results}
        if {"tensorflow", "jax"} <= set(names):
            tf_s, jax_s = summaries["tensorflow"], summaries["jax"]
            models[model]["epoch_time_ratio_jax_over_tf"] = (
                jax_s["steady_epoch_seconds"] / tf_s["steady_epoch_seconds"]
            )
            models[model]["wall_time_ratio_jax_over_tf"] = (
                jax_s["wall_seconds"] / tf_s["wall_seconds"]
            )
    result: dict = {
        "what": f"LeNet and the CIFAR CNN on {samples} MNIST-format images, {epochs} epochs, "
        f"batch 128, backend={' vs backend='.join(names)}",
        "backends": list(names),
        "models": models,
    }
    for model in models:
        for key, short in (
            ("epoch_time_ratio_jax_over_tf", "epoch"),
            ("wall_time_ratio_jax_over_tf", "wall"),
        ):
            if key in models[model]:
                result[f"{model}_{short}_ratio"] = models[model][key]
        for name in names:
            result[f"{model}_{name}_epoch_seconds"] = models[model][name]["steady_epoch_seconds"]
    return result


def write_digits_mnist(work: Path, train: int, test: int, seed: int = 0) -> Path:
    """A data cache holding a real-format mnist.npz of handwritten digits where MNIST itself
    cannot be downloaded (the GPU machine reaches no network): scikit-learn's 8x8 digits,
    upscaled to 20x20 in a 28x28 frame like MNIST's, each image a random rotation (+-12
    degrees), scale (0.9-1.1) and shift (+-3 px) of an original, with a little noise. The test
    images come from originals held out of training (20%, stratified), so test accuracy is
    honest; validation (`trainer.validation_split` of the training images) shares originals
    with training and reads higher."""
    from scipy import ndimage
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    upscaled = ndimage.zoom(digits.images / 16.0, (1, 2.5, 2.5), order=1).clip(0, 1)
    kept, held_out = train_test_split(
        np.arange(len(digits.target)), test_size=0.2, stratify=digits.target, random_state=seed
    )
    rng = np.random.default_rng(seed)
    centre = np.array([13.5, 13.5])

    def draw(originals: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        picked = rng.choice(originals, count)
        images = np.empty((count, 28, 28), np.float32)
        canvas = np.zeros((28, 28), np.float32)
        for index, original in enumerate(picked):
            canvas[4:24, 4:24] = upscaled[original]
            angle = np.deg2rad(rng.uniform(-12, 12))
            scale = rng.uniform(0.9, 1.1)
            # output pixel o reads input pixel M @ (o - centre) + centre - shift
            matrix = (
                np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
            )
            offset = centre - matrix @ centre - rng.integers(-3, 4, 2)
            images[index] = ndimage.affine_transform(canvas, matrix, offset=offset, order=1)
        images += rng.normal(0, 0.03, images.shape).astype(np.float32)
        pixels = (images.clip(0, 1) * 255).round().astype(np.uint8)
        return pixels, digits.target[picked].astype(np.uint8)

    x_train, y_train = draw(kept, train)
    x_test, y_test = draw(held_out, test)
    cache = work / "digits_mnist_cache"
    (cache / "mnist").mkdir(parents=True, exist_ok=True)
    np.savez(
        cache / "mnist" / "mnist.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    return cache


def write_cifar_cache(work: Path, per_batch: int, n_test: int) -> Path:
    """A data cache holding a real-format cifar-10-python.tar.gz of synthetic images (timing
    only: its accuracy means nothing)."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import write_cifar10

    cache = work / "cifar_cache"
    (cache / "cifar10").mkdir(parents=True, exist_ok=True)
    write_cifar10(cache / "cifar10" / "cifar-10-python.tar.gz", per_batch=per_batch, n_test=n_test)
    return cache


def save_partial(name: str, parts: dict) -> None:
    """What a long benchmark has measured so far (experiments/bench/<name>.partial.json), so a
    run cut off by its time limit still leaves its first figures."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.partial.json").write_text(json.dumps(parts, indent=2))


def steady_images_per_second(curve: dict) -> float:
    rates = curve["images_per_second"]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def bench_gpu(
    work: Path,
    samples: int,
    epochs: int,
    tta_epochs: int,
    cifar_per_batch: int,
    cifar_epochs: int,
    backend: str,
    batch_size: int,
) -> dict:
    """What a GPU gives, one job each (device time is short): epoch time, training images/s,
    accelerator and process peak memory of LeNet and the CIFAR CNN on `samples` MNIST-format
    images; seconds and epochs to 99% validation accuracy on MNIST-shaped handwritten digits,
    the tutorials' recipe (mnist_lenet) vs the tuned one (mnist_tuned); and the epoch time of
    cifar10_tuned on CIFAR-format data. `--backend` (default jax: the GPU machine has no
    TensorFlow); it runs on a CPU too, slowly (`--quick` for a smoke run)."""
    chosen = (f"backend={backend}", "data.verify_checksum=false")
    mnist_cache, _ = write_mnist_cache(work, samples)
    throughput = {}
    for model in ("lenet", "cifar_cnn"):
        print(f"[bench]   throughput: {model}", flush=True)
        curve = job_curve(
            work,
            f"bench_gpu_{model}",
            *chosen,
            "data=mnist",
            f"model={model}",
            f"trainer.epochs={epochs}",
            f"trainer.batch_size={batch_size}",
            *UNTIMED_WORK,
            env={**ENV, "RUNNER_DATA_DIR": str(mnist_cache)},
        )
        throughput[model] = {
            "steady_epoch_seconds": steady(curve["epoch_seconds"]),
            "first_epoch_seconds": curve["epoch_seconds"][0],
            "images_per_second": steady_images_per_second(curve),
            "device_peak_memory_mb": curve["device_peak_memory_mb"],
            "process_wall_seconds": curve["process_wall_seconds"],
            "peak_rss_mb": curve["peak_rss_mb"],
        }
        save_partial("gpu", {"throughput": throughput})
    digits_cache = write_digits_mnist(work, train=samples, test=max(samples // 6, 1000))
    recipes = {}
    for label, preset in (("seed", "experiment=mnist_lenet"), ("tuned", "experiment=mnist_tuned")):
        print(f"[bench]   time to 99%: {label} recipe ({preset})", flush=True)
        curve = job_curve(
            work,
            f"bench_gpu_tta_{label}",
            preset,
            *chosen,
            f"trainer.epochs={tta_epochs}",
            "callbacks.early_stopping.enabled=false",
            env={**ENV, "RUNNER_DATA_DIR": str(digits_cache)},
        )
        recipes[label] = {"preset": preset, **to_target(curve, 0.99)}
        save_partial("gpu", {"throughput": throughput, "time_to_99": recipes})
    cifar = None
    if cifar_epochs:
        print("[bench]   cifar10_tuned epoch time", flush=True)
        cifar_cache = write_cifar_cache(
            work, cifar_per_batch, n_test=max(cifar_per_batch // 5, 100)
        )
        curve = job_curve(
            work,
            "bench_gpu_cifar10_tuned",
            "experiment=cifar10_tuned",
            *chosen,
            f"trainer.epochs={cifar_epochs}",
            env={**ENV, "RUNNER_DATA_DIR": str(cifar_cache)},
        )
        from omegaconf import OmegaConf  # the kit carries it to the GPU machine too

        preset = OmegaConf.load(ROOT / "conf" / "experiment" / "cifar10_tuned.yaml")
        preset_epochs = int(preset.trainer.epochs)
        cifar = {
            "train_images": 5 * cifar_per_batch,
            "epochs": cifar_epochs,
            "epoch_seconds": curve["epoch_seconds"],
            "steady_epoch_seconds": steady(curve["epoch_seconds"]),
            "images_per_second": steady_images_per_second(curve),
            "device_peak_memory_mb": curve["device_peak_memory_mb"],
            "process_wall_seconds": curve["process_wall_seconds"],
            # The preset's epochs at the measured steady pace, plus the first (compiling) one.
            "preset_epochs": preset_epochs,
            "preset_epochs_seconds_estimate": curve["epoch_seconds"][0]
            + (preset_epochs - 1) * steady(curve["epoch_seconds"]),
        }
    headline = {
        "what": f"backend={backend}: LeNet and the CIFAR CNN on {samples} MNIST-format images "
        f"(batch {batch_size}, {epochs} epochs); mnist_lenet vs mnist_tuned to 99% val accuracy "
        f"on MNIST-shaped digits ({tta_epochs} epochs each); cifar10_tuned epoch time",
        "backend": backend,
        "throughput": throughput,
        "time_to_99": recipes,
        "cifar10_tuned": cifar,
        "lenet_images_per_second": throughput["lenet"]["images_per_second"],
        "lenet_device_peak_mb": throughput["lenet"]["device_peak_memory_mb"],
        "cifar_cnn_images_per_second": throughput["cifar_cnn"]["images_per_second"],
        "cifar_cnn_device_peak_mb": throughput["cifar_cnn"]["device_peak_memory_mb"],
        "seed_seconds_to_99": recipes["seed"]["seconds_to_target"],
        "tuned_seconds_to_99": recipes["tuned"]["seconds_to_target"],
        "tuned_test_accuracy": recipes["tuned"]["final_test_accuracy"],
        "cifar10_tuned_epoch_seconds": cifar and cifar["steady_epoch_seconds"],
    }
    # On a CPU there is no accelerator memory (and --quick may skip CIFAR): those rows say n/a.
    return {key: value for key, value in headline.items() if value is not None or "_to_" in key}


def write_jpeg_folder(folder: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        label = index % 3
        height, width = rng.integers(200, 401, size=2)
        pixels = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((int(width), int(height)))
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{label}" / f"{index:05d}.jpg", quality=90)


PIPELINE_CASES = (
    ("memory", "tutorial"),
    ("folder", "tutorial"),
    ("memory", "none"),
    ("folder", "none"),
)


def bench_pipeline(work: Path, rounds: int, count: int, batches: int) -> dict:
    """The training batches `fit` consumes (runner.training.fit.image_batches) against the legacy
    ImageDataGenerator on the same images, each side in its own process (bench/pipeline_side.py):
    in-memory arrays and a folder streamed from disk, augmented (tutorial preset) or not."""
    from PIL import Image

    from runner.data.folders import scan_class_folders
    from runner.data.images import decode_files

    folder = work / "jpegs"
    write_jpeg_folder(folder, count)
    side = [sys.executable, str(ROOT / "bench" / "pipeline_side.py")]
    cases: dict[str, dict] = {}
    for source, preset in PIPELINE_CASES:
        case = f"{source}, augmentation={preset}"
        runs: dict[str, list] = {"runner": [], "legacy": []}
        for round_ in range(rounds):
            for name in ("runner", "legacy") if round_ % 2 == 0 else ("legacy", "runner"):
                output, _, rss = run_process(
                    [*side, name, source, preset, str(folder), str(batches)], work
                )
                rate = json.loads(output.strip().splitlines()[-1])["images_per_second"]
                runs[name].append({"images_per_second": rate, "peak_rss_mb": rss})
                print(
                    f"  pipeline {case} round {round_ + 1} {name}: {rate:,.0f} images/s, "
                    f"{rss:.0f} MB",
                    flush=True,
                )
        medians = {
            name: {
                "images_per_second": statistics.median(r["images_per_second"] for r in results),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            }
            for name, results in runs.items()
        }
        cases[case] = {
            **medians,
            "ratio": medians["runner"]["images_per_second"]
            / medians["legacy"]["images_per_second"],
            "rounds": runs,
        }

    def ours_load():
        paths, labels, _, _ = scan_class_folders(folder)
        images, kept, _ = decode_files(paths, size=(64, 64), channels=3)
        return images, labels[kept]

    def tutorial_load():  # the tutorial: a Python loop with PIL into a NumPy array
        paths, labels, _, _ = scan_class_folders(folder)
        data = [np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths]
        return np.stack(data), labels

    loads: dict[str, list[float]] = {"ours": [], "tutorial": []}
    for round_ in range(rounds):
        for name in ("ours", "tutorial") if round_ % 2 == 0 else ("tutorial", "ours"):
            started = time.perf_counter()
            ours_load() if name == "ours" else tutorial_load()
            loads[name].append(time.perf_counter() - started)
    return {
        "what": f"{count} JPEGs (200-400 px) -> 64x64 RGB, batch 32, {batches} batches timed",
        "cases": cases,
        "throughput_ratio": cases["memory, augmentation=tutorial"]["ratio"],
        "streamed_ratio": cases["folder, augmentation=tutorial"]["ratio"],
        "load_seconds": {k: statistics.median(v) for k, v in loads.items()},
        "load_ratio": statistics.median(loads["tutorial"]) / statistics.median(loads["ours"]),
        "goal": "throughput_ratio >= 10",
    }


def job_curve(work: Path, experiment: str, *overrides: str, env: dict | None = None) -> dict:
    """One runner job to its end; its cumulative training seconds and validation accuracy per
    epoch, its test accuracy, its process wall time and peak memory (and the accelerator's,
    where the job ran on one)."""
    import mlflow

    args, uri = runner_job(work, experiment, *overrides, "logger.log_model=false")
    _, wall, rss = run_process(args, work, env)
    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])[0]

    def history(name):
        return [
            m.value
            for m in sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        ]

    return {
        "epoch_seconds": history("epoch_seconds"),
        "seconds": np.cumsum(history("epoch_seconds")).tolist(),
        "images_per_second": history("images_per_second"),
        "val_accuracy": history("val_accuracy"),
        "test_accuracy": run.data.metrics["test_accuracy"],
        "process_wall_seconds": wall,
        "peak_rss_mb": rss,
        "device_peak_memory_mb": run.data.metrics.get("device_peak_memory_mb"),
    }


def to_target(curve: dict, target: float) -> dict:
    """The first epoch whose validation accuracy reaches `target`, and the training seconds
    up to its end (None, None: never reached)."""
    reached = next((i for i, a in enumerate(curve["val_accuracy"]) if a >= target), None)
    return {
        "epochs_to_target": None if reached is None else reached + 1,
        "seconds_to_target": None if reached is None else curve["seconds"][reached],
        "best_val_accuracy": max(curve["val_accuracy"]),
        "final_test_accuracy": curve["test_accuracy"],
        "process_wall_seconds": curve["process_wall_seconds"],
        "peak_rss_mb": curve["peak_rss_mb"],
        "device_peak_memory_mb": curve["device_peak_memory_mb"],
    }


def bench_accuracy(work: Path, target: float = 0.9) -> dict:
    curve = job_curve(
        work, "bench_accuracy", "experiment=digits_lenet", "callbacks.early_stopping.enabled=false"
    )
    return {
        "what": f"experiment=digits_lenet (offline): training time to val_accuracy >= {target}",
        **to_target(curve, target),
    }


@dataclass(frozen=True)
class RecipePair:
    """The tutorials' recipe and the tuned one on one dataset: their overrides, the
    validation-accuracy threshold they race to and the overrides both get."""

    seed: tuple[str, ...]
    tuned: tuple[str, ...]
    target: float
    common: tuple[str, ...] = ()


# The datasets other than digits take whatever files the cache holds (Keras' own, or a copy
# converted or compressed again, whose bytes differ): the bench times recipes, it does not
# vouch for files.
RECIPE_PAIRS = {
    # Digits has 1,293 training images: batch 32 (the seed recipe's) gives the tuned recipe's
    # EMA and one-cycle schedule their steps.
    "digits": RecipePair(
        ("experiment=digits_lenet",),
        ("experiment=mnist_tuned",),
        0.97,
        ("data=digits", "trainer.batch_size=32"),
    ),
    "mnist": RecipePair(
        ("experiment=mnist_lenet",),
        ("experiment=mnist_tuned",),
        0.99,
        ("data.verify_checksum=false",),
    ),
    # The tutorial trains Fashion-MNIST with mnist_lenet's recipe (LeNet, SGD 0.01, batch 128).
    "fashion_mnist": RecipePair(
        ("experiment=mnist_lenet", "data=fashion_mnist"),
        ("experiment=fashion_mnist_tuned",),
        0.92,
        ("data.verify_checksum=false",),
    ),
}
SHOWN_NAMES = {"digits": "digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def cached_datasets() -> dict[str, tuple[str, ...]]:
    """The datasets of RECIPE_PAIRS this machine has, each with the `data=` override that reads
    its files: digits always (bundled); MNIST as mnist.npz or else as its four IDX files
    (data=mnist_idx); Fashion-MNIST as its four IDX files."""
    cache = Path(os.environ.get("RUNNER_DATA_DIR", "~/.cache/runner")).expanduser()

    def holds(folder: str, names: tuple[str, ...]) -> bool:
        return all((cache / folder / name).is_file() for name in names)

    found: dict[str, tuple[str, ...]] = {"digits": ()}
    if holds("mnist", ("mnist.npz",)):
        found["mnist"] = ()
    elif holds("mnist_idx", IDX_FILES):
        found["mnist"] = ("data=mnist_idx",)
    if holds("fashion_mnist", IDX_FILES):
        found["fashion_mnist"] = ()
    return found


def bench_time_to_accuracy(work: Path, epochs: int) -> dict:
    """The tutorials' recipe and the tuned one on the same data, trained `epochs` epochs each:
    the seconds and epochs each needs to reach the threshold, side by side. Digits always
    (offline); MNIST and Fashion-MNIST too where their files are in the data cache."""
    results: dict = {}
    for data, reader in cached_datasets().items():
        recipes = RECIPE_PAIRS[data]
        common = (
            *recipes.common,
            *reader,
            f"trainer.epochs={epochs}",
            "callbacks.early_stopping.enabled=false",
        )
        pair = {}
        for label, preset in (("seed", recipes.seed), ("tuned", recipes.tuned)):
            shown = " ".join((*preset, *reader))
            print(f"[bench]   {data}: {label} recipe ({shown})", flush=True)
            curve = job_curve(work, f"bench_tta_{data}_{label}", *preset, *common)
            pair[label] = {"preset": shown, **to_target(curve, recipes.target)}
        seed_s, tuned_s = (pair[k]["seconds_to_target"] for k in ("seed", "tuned"))
        pair["target"] = recipes.target
        pair["speedup"] = seed_s / tuned_s if seed_s and tuned_s else None
        results[data] = pair
    rows = {}
    for data, pair in results.items():
        for label in ("seed", "tuned"):
            rows[f"{data}_{label}_seconds"] = pair[label]["seconds_to_target"]
            rows[f"{data}_{label}_test_accuracy"] = pair[label]["final_test_accuracy"]
        if data != "digits":
            # Absent (n/a) where the data is not cached; None ("not reached") where a recipe
            # missed the threshold.
            rows[f"{data}_speedup"] = pair["speedup"]
    return {
        "what": "seconds and epochs to a validation-accuracy threshold, seed vs tuned recipe",
        "epochs": epochs,
        "results": results,
        **rows,
    }


def bench_transfer(
    work: Path, rounds: int, *, count: int, epochs: int, backbone: str, size: int
) -> dict:
    folder = work / "transfer_images"
    if not folder.exists():
        write_jpeg_folder(folder, count)
    args, uri = runner_job(
        work,
        "bench_transfer",
        "data=image_folder",
        f"data.path={folder}",
        "model=pretrained",
        f"model.backbone={backbone}",
        "model.weights=null",
        f"model.input_size=[{size},{size}]",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=32",
        *UNTIMED_WORK,
        "logger.log_model=false",
    )

    def run_one(name: str) -> tuple[list[float], float, float]:
        cache = "true" if name == "cached" else "false"
        _, wall, rss = run_process([*args, f"model.cache_features={cache}"], work)
        return logged_epoch_seconds(uri, "bench_transfer"), wall, rss

    results = alternate("transfer", ("cached", "naive"), rounds, run_one)
    cached, naive = summary(results["cached"]), summary(results["naive"])
    return {
        "what": f"{backbone} frozen at {size}x{size}, {count} JPEGs (75% train), {epochs} epochs",
        "cached_features": cached,
        "naive_frozen_model": naive,
        "epoch_time_ratio": naive["steady_epoch_seconds"] / cached["steady_epoch_seconds"],
        "wall_time_ratio": naive["wall_seconds"] / cached["wall_seconds"],
        "rounds": results,
    }


# Per benchmark: (what the row measures, result key, number format, goal shown beside it).
TABLE_ROWS = {
    "overhead": [
        ("overhead: epoch time runner / bare Keras", "epoch_time_ratio", ".3f", "<= 1.05"),
        ("overhead: process wall time runner / bare Keras", "wall_time_ratio", ".2f", ""),
    ],
    "pipeline": [
        (
            "pipeline: augmented in-memory images/s runner / legacy",
            "throughput_ratio",
            ".2f",
            ">= 10",
        ),
        ("pipeline: augmented streamed images/s runner / legacy", "streamed_ratio", ".2f", ""),
        ("pipeline: folder load time tutorial / ours", "load_ratio", ".2f", ""),
    ],
    "accuracy": [
        ("accuracy: seconds to 90% val accuracy (digits LeNet)", "seconds_to_target", ".1f", ""),
    ],
    "time-to-accuracy": [
        *(
            row
            for data, shown in SHOWN_NAMES.items()
            for label in ("seed", "tuned")
            for row in (
                (
                    f"time-to-accuracy: {shown} {label} recipe, s to "
                    f"{RECIPE_PAIRS[data].target:.0%} val",
                    f"{data}_{label}_seconds",
                    ".1f",
                    "",
                ),
                (
                    f"time-to-accuracy: {shown} {label} recipe, test accuracy",
                    f"{data}_{label}_test_accuracy",
                    ".4f",
                    "",
                ),
            )
        ),
        *(
            (
                f"time-to-accuracy: {shown} speed-up tuned / seed (if cached)",
                f"{data}_speedup",
                ".2f",
                "",
            )
            for data, shown in SHOWN_NAMES.items()
            if data != "digits"
        ),
    ],
    "precision": [
        ("precision: best epoch speed-up over float32 (mixed, XLA)", "best_speedup", ".2f", ""),
    ],
    "backends": [
        ("backends: LeNet epoch time jax / tensorflow", "lenet_epoch_ratio", ".2f", ""),
        ("backends: LeNet process wall time jax / tensorflow", "lenet_wall_ratio", ".2f", ""),
        ("backends: CIFAR CNN epoch time jax / tensorflow", "cifar_cnn_epoch_ratio", ".2f", ""),
        ("backends: CIFAR CNN process wall jax / tensorflow", "cifar_cnn_wall_ratio", ".2f", ""),
    ],
    "gpu": [
        ("gpu: LeNet training images/s", "lenet_images_per_second", ",.0f", ""),
        ("gpu: LeNet peak accelerator memory, MB", "lenet_device_peak_mb", ",.0f", ""),
        ("gpu: CIFAR CNN training images/s", "cifar_cnn_images_per_second", ",.0f", ""),
        ("gpu: CIFAR CNN peak accelerator memory, MB", "cifar_cnn_device_peak_mb", ",.0f", ""),
        ("gpu: mnist_lenet, s to 99% val (MNIST-shaped)", "seed_seconds_to_99", ".1f", ""),
        ("gpu: mnist_tuned, s to 99% val (MNIST-shaped)", "tuned_seconds_to_99", ".1f", ""),
        ("gpu: mnist_tuned test accuracy (held-out digits)", "tuned_test_accuracy", ".4f", ""),
        ("gpu: cifar10_tuned steady epoch, s", "cifar10_tuned_epoch_seconds", ".2f", ""),
    ],
    "transfer": [
        ("transfer: epoch time naive frozen / cached features", "epoch_time_ratio", ".1f", ""),
        ("transfer: process wall time naive / cached", "wall_time_ratio", ".2f", ""),
    ],
}


# Per benchmark: its function, its sizes as {keyword: (with --quick, full run)}, and the
# command-line options it takes.
BENCHMARKS: dict[str, tuple[Callable[..., dict], dict[str, tuple[int, int]], tuple[str, ...]]] = {
    "overhead": (bench_overhead, {"epochs": (2, 3), "samples": (6000, 60000)}, ("rounds",)),
    "pipeline": (bench_pipeline, {"count": (300, 3000), "batches": (20, 200)}, ("rounds",)),
    "accuracy": (bench_accuracy, {}, ()),
    "time-to-accuracy": (bench_time_to_accuracy, {"epochs": (4, 12)}, ()),
    "precision": (bench_precision, {"epochs": (2, 4), "samples": (6000, 60000)}, ("rounds",)),
    "backends": (
        bench_backends,
        {"epochs": (2, 3), "samples": (6000, 20000)},
        ("rounds", "backends"),
    ),
    "gpu": (
        bench_gpu,
        {
            "samples": (3000, 60000),
            "epochs": (2, 3),
            "tta_epochs": (2, 8),
            "cifar_per_batch": (200, 10000),
            "cifar_epochs": (1, 3),
        },
        ("backend", "batch_size"),
    ),
    "transfer": (
        bench_transfer,
        {"count": (400, 2000), "epochs": (3, 5)},
        ("rounds", "backbone", "size"),
    ),
}


def run_benchmark(name: str, work: Path, args: argparse.Namespace) -> dict:
    function, sizes, options = BENCHMARKS[name]
    chosen = {key: quick if args.quick else full for key, (quick, full) in sizes.items()}
    return function(work, **chosen, **{option: getattr(args, option) for option in options})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "which",
        nargs="*",
        default=[name for name in BENCHMARKS if name != "gpu"],
        choices=list(BENCHMARKS),
        help="the benchmarks to run (default: all but gpu, which is for a machine with one)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--backbone", default="vgg16", help="transfer: the pretrained backbone")
    parser.add_argument("--size", type=int, default=150, help="transfer: input side in pixels")
    parser.add_argument(
        "--backends", default="tensorflow,jax", help="backends: the backends compared"
    )
    parser.add_argument("--backend", default="jax", help="gpu: the backend of every job")
    parser.add_argument("--batch-size", type=int, default=128, help="gpu: the throughput batch")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override added to every runner job (repeatable), e.g. "
        "trainer.precision=mixed_bfloat16",
    )
    args = parser.parse_args()
    USER_OVERRIDES.extend(args.override)
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    table = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in args.which:
            print(f"[bench] {name} ...", flush=True)
            result = run_benchmark(name, work, args)
            record = {
                "benchmark": name,
                "when": datetime.now(UTC).isoformat(),
                "machine": info,
                "quick": args.quick,
                **result,
            }
            (OUT / f"{name}.json").write_text(json.dumps(record, indent=2))
            for measure, key, fmt, goal in TABLE_ROWS[name]:
                value = result.get(key, "n/a")
                if value is None:
                    shown = "not reached"
                else:
                    shown = value if isinstance(value, str) else f"{value:{fmt}}"
                table.append((measure, shown, goal))
    width = max(len(row[0]) for row in table)
    print(
        f"\nmachine: {info['platform']}, {info['cpu_count']} CPUs, GPUs: {info['gpus'] or 'none'}"
    )
    print(f"{'measure'.ljust(width)}  value   goal")
    for measure, value, goal in table:
        print(f"{measure.ljust(width)}  {value:<6}  {goal}")
    print(f"JSON: {OUT}/")


if __name__ == "__main__":
    main()
