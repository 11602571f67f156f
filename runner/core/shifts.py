"""Which variables are shifts: a normalization layer's `beta`, or a bias a model marks as one
(airbench's whitening stem: a frozen kernel whose bias still learns). `optimizer.
norm_bias_lr_scale` trains them faster. The mark lives on the variable object (models mark
theirs as they build), so it holds for the run that built the model, resume included, and
is not saved: a model loaded from its file trains its shifts at the ordinary rate."""

from __future__ import annotations

from typing import Any

MARK = "runner_shift"


def mark_shift(variable: Any) -> None:
    setattr(variable, MARK, True)


def is_shift(variable: Any) -> bool:
    return variable.name == "beta" or bool(getattr(variable, MARK, False))
