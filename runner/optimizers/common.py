"""The keyword arguments every Keras optimizer takes, from the keys every optimizer config has
(runner/config/schema.py, OptimizerConfig)."""

from __future__ import annotations

from typing import Any


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
