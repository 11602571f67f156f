"""Schedule-Free AdamW (Defazio et al., 2024): no decay schedule to choose; the optimizer
averages its iterates instead. Only `optimizer.warmup_epochs` shapes its rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.registry import OPTIMIZERS
from runner.config.rules import in_range, positive
from runner.config.schema import OptimizerConfig, Schedule
from runner.core.errors import RunnerError
from runner.core.lazy import keras
from runner.optimizers.common import keyword_args


@dataclass
class ScheduleFreeAdamWConfig(OptimizerConfig):
    lr: float = 0.0025
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.beta_1", self.beta_1, 0, 1)
        in_range(f"{at}.beta_2", self.beta_2, 0, 1)
        positive(f"{at}.epsilon", self.epsilon)

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
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        epsilon=cfg.epsilon,
        warmup_steps=round((cfg.warmup_epochs or 0) * steps_per_epoch),
        **keyword_args(cfg),
    )
