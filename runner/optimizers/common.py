"""The keyword arguments every Keras optimizer takes, from the keys every optimizer config has
(runner/config/schema.py, OptimizerConfig), and the keys Adam's family shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.config.rules import in_range, positive
from runner.config.schema import OptimizerConfig


def keyword_args(cfg: Any) -> dict[str, Any]:
    """Decay, clipping, the weights' moving average and gradient accumulation; a key left
    null keeps the optimizer's own default."""
    args: dict[str, Any] = {
        "clipnorm": cfg.clipnorm,
        "use_ema": bool(cfg.ema),
        "ema_momentum": cfg.ema_momentum,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
    }
    if cfg.weight_decay is not None:
        args["weight_decay"] = cfg.weight_decay
    return args


@dataclass
class MomentsConfig(OptimizerConfig):
    """The keys of Adam's family (Adam, AdamW, LAMB, Schedule-Free AdamW): the decay rates of
    the first and second moment estimates, and the denominator's epsilon."""

    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def check(self, at: str) -> None:
        super().check(at)
        in_range(f"{at}.beta_1", self.beta_1, 0, 1)
        in_range(f"{at}.beta_2", self.beta_2, 0, 1)
        positive(f"{at}.epsilon", self.epsilon)


def moments(cfg: Any) -> dict[str, Any]:
    return {"beta_1": cfg.beta_1, "beta_2": cfg.beta_2, "epsilon": cfg.epsilon}
