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
