"""Schedule-Free AdamW (Defazio et al., 2024): no decay schedule to choose; the optimizer
averages its iterates instead. Only `optimizer.warmup_epochs` shapes its rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.schema import Schedule
from runner.core.errors import RunnerError
from runner.core.lazy import keras
from runner.optimizers.common import MomentsConfig, keyword_args, moments


@dataclass
class ScheduleFreeAdamWConfig(MomentsConfig):
    lr: float = 0.0025
    epsilon: float = 1e-8

    def check_schedule(self, at: str) -> None:
        schedule = Schedule(self.schedule)
        if schedule is not Schedule.constant:
            raise RunnerError(
                f"{at}.schedule={schedule.value} cannot drive optimizer=schedule_free_adamw, "
                f"which replaces schedules: keep {at}.schedule=constant (its warmup is "
                f"{at}.warmup_epochs)."
            )


@OPTIMIZERS.register("schedule_free_adamw", ScheduleFreeAdamWConfig)
def build(cfg: ScheduleFreeAdamWConfig, lr: Any, steps_per_epoch: int) -> Any:
    return keras.optimizers.ScheduleFreeAdamW(
        learning_rate=lr,
        **moments(cfg),
        warmup_steps=round((cfg.warmup_epochs or 0) * steps_per_epoch),
        **keyword_args(cfg),
    )
