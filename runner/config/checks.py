"""Config values the schema's types allow but training does not, checked before any work.

Run on the composed config before TensorFlow is imported, before any data is read and before
an MLflow run exists: a bad value costs a second and leaves nothing behind.

Each schema checks its own keys (its `check(at)` method, beside its fields: an optimizer's in
its module under runner/optimizers/, a callback's in runner/config/callbacks.py); what is left
here are the rules between groups, which no one schema can see.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.config.callbacks import CallbacksConfig
from runner.config.schema import MAX_PARAM_LENGTH, Evaluate, Schedule
from runner.core.errors import RunnerError


def check_config(cfg: DictConfig) -> None:
    check_resolves(cfg)
    check_known_keys(cfg)
    check_presets()
    for key in cfg:
        check_group(cfg, str(key))
    check_strategy(cfg)
    check_callbacks(cfg)
    check_param_lengths(cfg)


def check_param_lengths(cfg: DictConfig) -> None:
    """MLflow keeps MAX_PARAM_LENGTH characters of a param: a longer value would be logged cut,
    and the run could not be told from one with another value."""

    def walk(node: object, at: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{at}.{key}" if at else str(key))
        elif len(str(node)) > MAX_PARAM_LENGTH:
            raise RunnerError(
                f"{at} is {len(str(node)):,} characters long; MLflow keeps at most "
                f"{MAX_PARAM_LENGTH:,} of a param. Shorten it (a long text belongs in a file)."
            )

    for key in cfg:
        if key == "hydra":  # Hydra's own node: not logged
            continue
        node = cfg[key]
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        walk(node, str(key))


def check_resolves(node: DictConfig | ListConfig, at: str = "") -> None:
    """Every `${...}` resolves now, not deep inside a run (`${oc.env:UNSET}`, a typo'd key)."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node)
    for key in keys:
        where = f"{at}[{key}]" if isinstance(key, int) else (f"{at}.{key}" if at else str(key))
        if where == "hydra":  # Hydra's own node, which Hydra resolves
            continue
        try:
            value = node[key]
        except OmegaConfBaseException as error:
            reason = " ".join(str(error).splitlines()[0].split())
            raise RunnerError(f"{where} cannot be resolved: {reason}") from None
        if isinstance(value, DictConfig | ListConfig):
            check_resolves(value, where)


def check_known_keys(node: DictConfig, at: str = "") -> None:
    """Every key is one of its schema's fields: Hydra's `+key=value` adds keys past the schema
    (it opens the config to do so), and a key nothing reads would be trained with silently."""
    schema = OmegaConf.get_type(node)
    fields = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    for key in node:
        where = f"{at}.{key}" if at else str(key)
        if where == "hydra":  # Hydra's own node, which Hydra checks
            continue
        if fields is not None and key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise RunnerError(
                f"{where} is not a config key (added with +?): nothing reads it. "
                f"Keys of {at or 'the config'}: {known}."
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, where)


def check_presets() -> None:
    """`experiment=` and `hparams_search=` are optional groups, so Hydra composes nothing for
    an option that does not exist: a typo would train the default experiment."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return  # composed outside a Hydra app (the compose API): no choices to check
    choices = HydraConfig.get().runtime.choices
    loader = GlobalHydra.instance().config_loader()
    for group in ("experiment", "hparams_search"):
        chosen = choices.get(group)
        if chosen in (None, "null"):
            continue
        options = loader.get_group_options(group)
        if chosen not in options:
            raise RunnerError(
                f"{group}={chosen} is not a preset. Presets (conf/{group}/): {', '.join(options)}."
            )


def check_group(cfg: DictConfig, key: str) -> None:
    """`cfg[key]`'s own checks, when its schema has some (`check(at)`)."""
    node = cfg[key]
    if isinstance(node, DictConfig) and callable(getattr(OmegaConf.get_type(node), "check", None)):
        OmegaConf.to_object(node).check(key)


def wants_resume(resume: object) -> bool:
    """Whether `trainer.resume` asks to resume (false, none, null and "" do not)."""
    return resume is not None and str(resume).lower() not in ("false", "none", "null", "")


def check_strategy(cfg: DictConfig) -> None:
    """Keras 3 on TensorFlow cannot run several steps per call under tf.distribute: the first
    step fails deep inside TensorFlow ("You must feed a value for placeholder tensor",
    keras-team/keras#19246, open), after the data is read and the run has started."""
    steps = cfg.trainer.steps_per_execution
    if cfg.strategy.name == "mirrored" and steps > 1:
        raise RunnerError(
            f"trainer.steps_per_execution={steps} cannot be combined with "
            f"strategy={cfg.strategy.name}: Keras fails at the first step under tf.distribute "
            "(keras-team/keras#19246). Use trainer.steps_per_execution=1 with this strategy."
        )
    resume = cfg.trainer.resume
    if wants_resume(resume) and (cfg.strategy.num_processes or 1) > 1:
        # Only process 0 keeps a resume state; the others would start from new weights.
        raise RunnerError(
            f"trainer.resume={resume} cannot resume a multi-process run (strategy.num_processes="
            f"{cfg.strategy.num_processes}): only process 0 keeps its state. Start it again "
            "without trainer.resume."
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
