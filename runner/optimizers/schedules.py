"""Learning-rate schedules: `optimizer.schedule=<name>` -> a Keras schedule stepping per batch.

Keras ships all but one-cycle (CosineDecay with warmup, PiecewiseConstantDecay,
InverseTimeDecay); one-cycle is a small LearningRateSchedule here, registered with Keras so a
saved model's optimizer loads back in safe mode.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from runner.config.schema import Anneal, Schedule
from runner.core.lazy import keras

ONECYCLE_WARMUP_FRACTION = 0.3  # and peaks after 30% of the steps (PyTorch's pct_start)


def learning_rate(cfg: Any, *, epochs: int, steps_per_epoch: int) -> Any:
    """A float for `constant`, else the schedule over `epochs` of `steps_per_epoch` batches."""
    schedule = Schedule(cfg.schedule)
    total = max(1, epochs * steps_per_epoch)
    if schedule is Schedule.constant:
        return cfg.lr
    if schedule is Schedule.inverse_time:
        # Keras 2's `SGD(decay=d)`: lr / (1 + d * iteration), stepping per batch.
        decay_rate = cfg.decay_rate if cfg.decay_rate is not None else cfg.lr / epochs
        return keras.optimizers.schedules.InverseTimeDecay(
            initial_learning_rate=cfg.lr, decay_steps=1, decay_rate=decay_rate
        )
    if schedule is Schedule.cosine:
        warmup = min(total - 1, round((cfg.warmup_epochs or 0) * steps_per_epoch))
        alpha = cfg.min_lr / cfg.lr
        if not warmup:
            return keras.optimizers.schedules.CosineDecay(cfg.lr, total, alpha=alpha)
        # Keras warms up from initial_learning_rate to warmup_target, then decays to
        # alpha * warmup_target over decay_steps.
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, alpha=alpha, warmup_target=cfg.lr, warmup_steps=warmup
        )
    if schedule is Schedule.onecycle:
        warmup_epochs = (
            cfg.warmup_epochs
            if cfg.warmup_epochs is not None
            else ONECYCLE_WARMUP_FRACTION * epochs
        )
        warmup = min(total - 1, max(1, round(warmup_epochs * steps_per_epoch)))
        return one_cycle_class()(
            cfg.lr,
            total,
            warmup,
            cfg.min_lr,
            div_factor=cfg.div_factor,
            anneal=Anneal(cfg.anneal_strategy).value,
        )
    # step / piecewise: rates that change at epoch milestones.
    # Keras keeps a rate up to and including its boundary step; milestone epoch m starts at
    # step m * steps_per_epoch with the new rate (PyTorch's MultiStepLR).
    boundaries = [max(0, round(m * steps_per_epoch) - 1) for m in cfg.milestones]
    if schedule is Schedule.step:
        rates = [cfg.lr * cfg.gamma**k for k in range(len(boundaries) + 1)]
    else:
        rates = [cfg.lr, *cfg.rates]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, rates)


@functools.cache
def one_cycle_class() -> type:
    """The one-cycle schedule's class, defined (and registered with Keras) on first use: this
    package's modules are imported to compose a config, before Keras is."""

    @keras.saving.register_keras_serializable(package="runner")
    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        """Linear from peak / `div_factor` up to `peak` over `warmup_steps`, then a half cosine
        (`anneal="cos"`) or a line (`"linear"`) from `peak` down to `final` at `total_steps`
        (held there after)."""

        def __init__(
            self,
            peak: float,
            total_steps: int,
            warmup_steps: int,
            final: float = 0.0,
            div_factor: float = 25.0,
            anneal: str = "cos",
        ):
            self.peak, self.final = float(peak), float(final)
            self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
            self.div_factor, self.anneal = float(div_factor), Anneal(anneal).value

        def __call__(self, step: Any) -> Any:
            ops = keras.ops
            step = ops.cast(step, "float32")
            start = self.peak / self.div_factor
            rising = start + (self.peak - start) * step / self.warmup_steps
            decay_steps = max(1, self.total_steps - self.warmup_steps)
            progress = ops.minimum(1.0, (step - self.warmup_steps) / decay_steps)
            remaining = (
                1.0 - progress
                if self.anneal == "linear"
                else 0.5 * (1.0 + ops.cos(math.pi * progress))
            )
            falling = self.final + (self.peak - self.final) * remaining
            return ops.where(step < self.warmup_steps, rising, falling)

        def get_config(self) -> dict:
            return {
                "peak": self.peak,
                "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps,
                "final": self.final,
                "div_factor": self.div_factor,
                "anneal": self.anneal,
            }

    return OneCycle
