"""`backend=`: which Keras backend trains (tensorflow, jax, torch).

Keras fixes its backend when it is first imported, from `KERAS_BACKEND`; so the runner picks it
once a config is composed and before anything imports Keras. `auto` keeps a `KERAS_BACKEND`
the user set, else takes TensorFlow where it is installed, else JAX. A process that already
runs Keras on one backend cannot switch: a sweep over backends needs one process per job.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from runner.core.errors import RunnerError

BACKENDS = ("tensorflow", "jax", "torch")
AUTO = "auto"


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def resolve(requested: str) -> str:
    """The backend `requested` (a name or `auto`) means on this machine."""
    if requested == AUTO:
        chosen = os.environ.get("KERAS_BACKEND")
        if chosen:
            requested = chosen
        else:
            return next((name for name in BACKENDS if installed(name)), "tensorflow")
    if requested not in BACKENDS:
        raise RunnerError(
            f"backend should be one of {', '.join((AUTO, *BACKENDS))}. Received: {requested}"
        )
    if not installed(requested):
        extra = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[requested]
        raise RunnerError(
            f"backend={requested}, but {requested} is not installed in this environment: "
            f"pip install -e '.[{extra}]', or pick another backend "
            f"({', '.join(name for name in BACKENDS if installed(name)) or 'none installed'})."
        )
    return requested


def select(requested: str) -> str:
    """Make `requested` Keras' backend for this process; returns its name."""
    name = resolve(requested)
    running = current()
    if running is not None and running != name:
        raise RunnerError(
            f"backend={name}, but this process already runs Keras on {running} (Keras fixes its "
            "backend at import): run each backend in a process of its own, e.g. a sweep over "
            "backend=... with hydra/launcher=submitit_local."
        )
    os.environ["KERAS_BACKEND"] = name
    return name


def current() -> str | None:
    """The backend of the Keras this process imported, None before Keras is imported."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (the `tf.data` and `tf.distribute` path)."""
    import keras

    return keras.backend.backend() == "tensorflow"


def peak_accelerator_memory_mb() -> float | None:
    """The most memory the backend has held at once on a GPU/TPU of this process so far, in MB
    (the highest over its local accelerators); None where it trains on the CPU (the process'
    peak RSS tells there). Each backend's own counter: JAX's `memory_stats()`, TensorFlow's
    `get_memory_info`, torch's `max_memory_allocated`."""
    import keras

    name = keras.backend.backend()
    peaks: list[int] = []
    if name == "jax":
        import jax

        for device in jax.local_devices():
            stats = device.memory_stats() if device.platform != "cpu" else None
            if stats and "peak_bytes_in_use" in stats:
                peaks.append(stats["peak_bytes_in_use"])
    elif name == "tensorflow":
        import tensorflow as tf

        for index, _ in enumerate(tf.config.list_logical_devices("GPU")):
            peaks.append(tf.config.experimental.get_memory_info(f"GPU:{index}")["peak"])
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            peaks = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())]
    return max(peaks) / 2**20 if peaks else None
