"""Modules imported on first use, so that composing a config never waits for TensorFlow.

Option modules (runner/models/*, runner/optimizers/*) sit beside their schemas, which Hydra
needs before anything trains; `from runner.lazy import keras` gives them Keras at no cost until
a builder actually runs. (Python's own `importlib.util.LazyLoader`, as TensorFlow uses.)
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


keras = lazy_import("keras")
tf = lazy_import("tensorflow")
