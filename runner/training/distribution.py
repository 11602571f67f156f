"""`strategy=` off TensorFlow: `keras.distribution` (JAX), Keras' own multi-device and
multi-host training.

  default        one device: the first GPU, else the CPU
  data_parallel  a replica on every device (keras.distribution.DataParallel); each step
                 splits the global batch (trainer.batch_size x replicas) across them. With
                 strategy.num_processes > 1, the devices of every process (one per host, say)
                 train together: keras.distribution.initialize joins the processes at
                 strategy.coordinator, process 0 logs to MLflow and writes checkpoints

Without GPUs, strategy.cpu_devices splits the CPU into that many devices (XLA's host device
count), so data_parallel can be tried, and tested, on a laptop. Each process feeds its own part
of each batch (Keras shards only tf.data input by itself).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import keras

from runner.core.errors import RunnerError

log = logging.getLogger(__name__)
NAMES = ("default", "data_parallel")


@dataclass(frozen=True)
class Placement:
    replicas: int  # devices over all processes
    process_id: int = 0
    num_processes: int = 1


def prepare(cfg: Any) -> None:
    """What must happen before JAX's runtime starts: the CPU's devices, joining the other
    processes."""
    strategy = cfg.strategy
    if strategy.name == "mirrored":
        raise RunnerError(
            f"strategy=mirrored is TensorFlow's (tf.distribute); backend={keras.backend.backend()}"
            " trains on several devices with strategy=data_parallel."
        )
    if strategy.name == "multi_worker":
        raise RunnerError(
            "strategy=multi_worker was replaced by strategy=data_parallel with "
            "strategy.num_processes=N strategy.process_id=I strategy.coordinator=HOST:PORT."
        )
    if strategy.name not in NAMES:
        raise RunnerError(
            f"strategy.name should be one of {', '.join(NAMES)} on backend="
            f"{keras.backend.backend()}. Received: {strategy.name}"
        )
    if strategy.name != "data_parallel":
        return
    if keras.backend.backend() != "jax":
        raise RunnerError(
            f"strategy=data_parallel needs backend=jax (keras.distribution); this job runs on "
            f"{keras.backend.backend()}."
        )
    import jax

    if strategy.cpu_devices >= 2:
        flag = f"--xla_force_host_platform_device_count={strategy.cpu_devices}"
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
        jax.config.update("jax_num_cpu_devices", strategy.cpu_devices)
    if _multi_process(strategy):
        # CPU processes exchange gradients through gloo (GPUs use NCCL by themselves).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if not jax.distributed.is_initialized():
            keras.distribution.initialize(
                job_addresses=strategy.coordinator,
                num_processes=strategy.num_processes,
                process_id=strategy.process_id,
            )


def _multi_process(strategy: Any) -> bool:
    return bool(
        (strategy.num_processes or 0) > 1
        or strategy.coordinator
        or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    )


def build(cfg: Any) -> Placement:
    """Set the job's distribution; `prepare(cfg)` ran first."""
    if cfg.strategy.name != "data_parallel":
        keras.distribution.set_distribution(None)
        return Placement(1)
    import jax

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )
    placement = Placement(len(devices), jax.process_index(), jax.process_count())
    log.info(
        "strategy=data_parallel: %d replicas (%s), process %d of %d",
        placement.replicas,
        ", ".join(devices),
        placement.process_id,
        placement.num_processes,
    )
    return placement
