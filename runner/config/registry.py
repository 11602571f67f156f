"""Registries: a config group's option name -> its typed schema and the code that builds it.

An option lives in one module, which declares its schema beside its builder:

    @MODELS.register("lenet", LeNetConfig)
    def build(info: DataInfo, cfg: LeNetConfig) -> keras.Model: ...

plus its YAML (`conf/model/lenet.yaml`, holding only the values that differ from the schema's
defaults) and a README row. `register_configs` stores every registered schema in Hydra's
ConfigStore as `schema/<group>/<name>` with `name` filled in, so the YAML's first line
`- /schema/model/lenet@_here_` is the only link between them and a typo in a key is still
rejected while Hydra composes, before TensorFlow is imported (option modules import Keras and
TensorFlow lazily: see runner/core/lazy.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from runner.core.errors import RunnerError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Option:
    """One choice of a config group: `group=name`."""

    name: str
    schema: type
    build: Callable[..., Any]
    module: ModuleType

    def hook(self, name: str) -> Callable[..., Any] | None:
        """An optional function of the option's module (e.g. a model's `weights_file`)."""
        return getattr(self.module, name, None)


class Registry:
    def __init__(self, group: str, package: str) -> None:
        self.group, self.package = group, package
        self._options: dict[str, Option] = {}
        self._discovered = False

    def register(
        self, name: str, schema: type, *, aliases: tuple[str, ...] = ()
    ) -> Callable[[F], F]:
        """Decorator: `fn` builds option `name` (and each alias: same code, same keys, its own
        YAML and `name`) from a config of type `schema`."""

        def decorator(fn: F) -> F:
            module = importlib.import_module(fn.__module__)
            for option in (name, *aliases):
                if option in self._options and self._options[option].build is not fn:
                    raise ValueError(f"{self.group}={option} is registered twice")
                self._options[option] = Option(option, schema, fn, module)
            return fn

        return decorator

    def discover(self) -> None:
        """Import every module of the package, so each registers its options."""
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        self._discovered = True

    def options(self) -> dict[str, Option]:
        self.discover()
        return dict(sorted(self._options.items()))

    def __getitem__(self, name: str) -> Option:
        options = self.options()
        if name not in options:
            raise RunnerError(
                f"{self.group}.name should be one of {sorted(options)}. "
                f"Received: {self.group}.name={name!r}"
            )
        return options[name]


DATASETS = Registry("data", "runner.data")
MODELS = Registry("model", "runner.models")
OPTIMIZERS = Registry("optimizer", "runner.optimizers")
