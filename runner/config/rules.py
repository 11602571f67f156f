"""The wording of a range check, shared by the schemas' own `check(at)` methods.

A schema dataclass (a model's, an optimizer's, a group's) checks its own keys beside its fields:

    def check(self, at: str) -> None:
        at_least(f"{at}.units", self.units, 1)

`at` is where the node sits in the config (`model`, `callbacks.early_stopping`), so the message
names the key a user types. runner/config/checks.py calls every group's `check`, before
TensorFlow is imported and before an MLflow run exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from runner.core.errors import RunnerError


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(key: str, value: Any, minimum: float) -> None:
    if not (finite(value) and value >= minimum):
        raise RunnerError(f"{key} should be >= {minimum}. Received: {value}")


def positive(key: str, value: Any) -> None:
    if not (finite(value) and value > 0):
        raise RunnerError(f"{key} should be a positive number. Received: {key}={value}")


def optional_at_least(key: str, value: Any, minimum: float) -> None:
    if value is not None and not (finite(value) and value >= minimum):
        raise RunnerError(f"{key} should be >= {minimum} or null. Received: {value}")


def in_range(key: str, value: Any, low: float, high: float) -> None:
    """low <= value < high."""
    if not (finite(value) and low <= value < high):
        raise RunnerError(f"{key} should be in [{low}, {high}). Received: {value}")


def within(key: str, value: Any, low: float, high: float) -> None:
    """low <= value <= high."""
    if not (finite(value) and low <= value <= high):
        raise RunnerError(f"{key} should be in [{low}, {high}]. Received: {value}")


def between(key: str, value: Any, low: float, high: float) -> None:
    """low < value < high."""
    if not (finite(value) and low < value < high):
        raise RunnerError(
            f"{key} should be between {low} and {high} (exclusive). Received: {value}"
        )


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise RunnerError(f"{key} should be one of {choices}. Received: {value!r}")


def check_fields(node: Any, at: str) -> None:
    """`check(at.<field>)` of every field of dataclass `node` that has one: a schema made of
    schemas (CallbacksConfig) checks them with this."""
    for field in dataclasses.fields(node):
        check = getattr(getattr(node, field.name), "check", None)
        if callable(check):
            check(f"{at}.{field.name}")
