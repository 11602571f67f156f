"""`strategy=`: how many devices train one model, through `tf.distribute`.

  default       one device: the first GPU, else the CPU (TensorFlow's default strategy)
  mirrored      every local GPU (or `strategy.devices`) holds a replica; each step splits the
                global batch (trainer.batch_size x replicas) across them and averages gradients

The model, its optimizer and its metrics are created inside the strategy's scope; Keras' `fit`
distributes the batches. `strategy.cpu_devices` splits the CPU into that many logical devices,
so `mirrored` can be tried (and tested) on a machine without GPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from runner.core.errors import RunnerError

log = logging.getLogger(__name__)


def prepare_devices(cfg: Any) -> None:
    """What must happen before TensorFlow's runtime starts: `mirrored`'s logical CPU devices."""
    if cfg.strategy.name == "mirrored":
        split_cpu(cfg.strategy.cpu_devices)


def split_cpu(count: int) -> None:
    """`count` logical CPU devices; only possible before TensorFlow's runtime starts."""
    if count < 2:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:  # a later job of a sweep: the runtime already has its devices
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise RunnerError(
                f"strategy.cpu_devices={count}, but this process already runs with {have} "
                "CPU device(s); a sweep's jobs share one process: give them the same value."
            ) from None


def one_device(strategy_cfg: Any) -> tf.distribute.Strategy:
    return tf.distribute.get_strategy()


def mirrored(strategy_cfg: Any) -> tf.distribute.Strategy:
    devices = list(strategy_cfg.devices or [])
    if not devices and not tf.config.list_physical_devices("GPU"):
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices or None)
    log.info(
        "strategy=mirrored: %d replicas (%s)",
        strategy.num_replicas_in_sync,
        ", ".join(strategy.extended.worker_devices),
    )
    return strategy


# `strategy=<name>` (conf/strategy/<name>.yaml) -> its tf.distribute strategy. A new strategy
# is a YAML file and a line here.
STRATEGIES: dict[str, Callable[[Any], tf.distribute.Strategy]] = {
    "default": one_device,
    "mirrored": mirrored,
}


MULTI_HOST = (
    "strategy={name} trains across processes and hosts on backend=jax only (Keras 3's "
    "MultiWorkerMirroredStrategy is broken, keras-team/keras#20585): use backend=jax "
    "strategy=data_parallel strategy.num_processes=N strategy.process_id=I "
    "strategy.coordinator=HOST:PORT."
)
REPLACED = {
    "multi_worker": MULTI_HOST.format(name="multi_worker"),
    "data_parallel": (
        "strategy=data_parallel is keras.distribution's, on backend=jax; on TensorFlow, "
        "strategy=mirrored trains on several local devices."
    ),
}


def build(cfg: Any) -> tf.distribute.Strategy:
    """The job's strategy; `prepare_devices(cfg)` ran first."""
    name = cfg.strategy.name
    if name in REPLACED:
        raise RunnerError(REPLACED[name])
    if name not in STRATEGIES:
        raise RunnerError(f"strategy.name should be one of {sorted(STRATEGIES)}. Received: {name}")
    return STRATEGIES[name](cfg.strategy)
