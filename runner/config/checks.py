"""Config values the schema's types allow but training does not, checked before any work.

Run on the composed config before TensorFlow is imported, before any data is read and before
an MLflow run exists: a bad value costs a second and leaves nothing behind.

Each schema checks its own keys (its `check(at)` method, beside its fields: an optimizer's in
its module under runner/optimizers/, a callback's in runner/config/callbacks.py); what is left
here are the rules between groups, which no one schema can see.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from runner.config.callbacks import CallbacksConfig
from runner.config.schema import Evaluate, Schedule
from runner.core.errors import RunnerError


def check_config(cfg: DictConfig) -> None:
    for key in cfg:
        check_group(cfg, str(key))
    check_strategy(cfg)
    check_callbacks(cfg)


def check_group(cfg: DictConfig, key: str) -> None:
    """`cfg[key]`'s own checks, when its schema has some (`check(at)`)."""
    node = cfg[key]
    if isinstance(node, DictConfig) and callable(getattr(OmegaConf.get_type(node), "check", None)):
        OmegaConf.to_object(node).check(key)


def check_strategy(cfg: DictConfig) -> None:
    """Keras 3 on TensorFlow cannot run several steps per call under tf.distribute: the first
    step fails deep inside TensorFlow ("You must feed a value for placeholder tensor",
    keras-team/keras#19246, open), after the data is read and the run has started."""
    steps = cfg.trainer.steps_per_execution
    if cfg.strategy.name != "default" and steps > 1:
        raise RunnerError(
            f"trainer.steps_per_execution={steps} cannot be combined with "
            f"strategy={cfg.strategy.name}: Keras fails at the first step under tf.distribute "
            "(keras-team/keras#19246). Use trainer.steps_per_execution=1 with this strategy."
        )


def check_callbacks(cfg: DictConfig) -> None:
    callbacks: CallbacksConfig = cfg.callbacks
    if callbacks.reduce_lr_on_plateau.enabled:
        schedule = Schedule(cfg.optimizer.schedule)
        if schedule is not Schedule.constant:
            raise RunnerError(
                "callbacks.reduce_lr_on_plateau sets the learning rate itself; it cannot be "
                f"combined with optimizer.schedule={schedule.value}. Use one of the two."
            )
    if Evaluate(cfg.trainer.evaluate) is Evaluate.best and not callbacks.model_checkpoint.enabled:
        raise RunnerError(
            "trainer.evaluate=best scores checkpoints/best.keras, which "
            "callbacks.model_checkpoint.enabled=false does not write: enable it, or set "
            "trainer.evaluate=last."
        )
