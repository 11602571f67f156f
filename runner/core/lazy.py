"""Modules imported on first use, so that composing a config never waits for TensorFlow.

Option modules (runner/models/*, runner/optimizers/*) sit beside their schemas, which Hydra
needs before anything trains; `from runner.lazy import keras` gives them Keras at no cost until
a builder actually touches it. The stand-in never enters `sys.modules`: any other
`import keras` is the ordinary import, in the ordinary order (Keras before TensorFlow's own
Keras hooks), so nothing sees a half-imported module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands for module `name`; the first attribute read imports it and reads from it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # introspection (copy, pickle, doctest) stays lazy
            raise AttributeError(attribute)
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attribute)


keras: Any = LazyModule("keras")
tf: Any = LazyModule("tensorflow")
