"""Stage 1, the runtime: seeds, thread pools, precision and the distribution a job trains
with, and a description of the devices it runs on.

On TensorFlow the distribution is a `tf.distribute` strategy (distribute.py); on JAX (and
torch) it is `keras.distribution` (distribution.py).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import keras
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.config.schema import Precision


@dataclass(frozen=True)
class Runtime:
    scope: Callable[[], AbstractContextManager]  # where the model, optimizer, metrics are made
    replicas: int  # model copies that each take trainer.batch_size images per step
    device: str  # "CPU (2 threads)", "GPU x2, 2 replicas"
    backend: str
    # Multi-process training: this process' rank and the number of processes.
    process_id: int = 0
    num_processes: int = 1

    def global_batch(self, batch_size: int) -> int:
        """Batches hold `trainer.batch_size` images per replica."""
        return batch_size * self.replicas

    @property
    def is_chief(self) -> bool:
        """Process 0 logs and checkpoints; the others only train."""
        return self.process_id == 0


def configure(cfg: DictConfig) -> Runtime:
    """Seed everything, size the thread pools, set the precision policy, pick the
    distribution."""
    name = keras.backend.backend()
    if name == "tensorflow":
        from runner.training import distribute

        distribute.prepare_devices(cfg)  # before anything starts TensorFlow's runtime
    else:
        from runner.training import distribution

        distribution.prepare(cfg)  # before anything starts JAX's runtime
    keras.backend.clear_session()  # a sweep runs jobs one after another in this process
    # Set for every job: a sweep's jobs share this process and may differ in precision.
    keras.mixed_precision.set_global_policy(Precision(cfg.trainer.precision).value)
    keras.utils.set_random_seed(cfg.trainer.seed)
    if name == "tensorflow":
        return _tensorflow_runtime(cfg)
    from runner.training import distribution

    placed = distribution.build(cfg)
    device = _device(accelerators(), os.cpu_count() or 1)
    if placed.replicas > 1:
        device = f"{device}, {placed.replicas} replicas"
    if placed.num_processes > 1:
        device = f"{device}, process {placed.process_id} of {placed.num_processes}"
    return Runtime(
        contextlib.nullcontext,
        placed.replicas,
        device,
        name,
        placed.process_id,
        placed.num_processes,
    )


def _tensorflow_runtime(cfg: DictConfig) -> Runtime:
    import tensorflow as tf

    from runner.training import distribute

    intra, inter = thread_pools(cfg.trainer)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already fixed by an earlier job in this process
    strategy = distribute.build(cfg)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    device = _device(accelerators(), threads)
    replicas = strategy.num_replicas_in_sync
    return Runtime(
        strategy.scope,
        replicas,
        f"{device}, {replicas} replicas" if replicas > 1 else device,
        "tensorflow",
    )


def _device(gpus: list[str], threads: int) -> str:
    return f"GPU x{len(gpus)}" if gpus else f"CPU ({threads} threads)"


def accelerators() -> list[str]:
    """The local GPUs' names (empty on a CPU-only machine), on any backend."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        return [d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True)]
    if name == "jax":
        import jax

        return [d.device_kind for d in jax.local_devices() if d.platform == "gpu"]
    if name == "torch":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.cuda.get_device_name(i) for i in range(count)]
    return []


def device_names() -> str:
    """What the job trains on, by name: each GPU's model, else the CPU's."""
    gpus = accelerators()
    if gpus:
        return ", ".join(gpus)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_pools(trainer: DictConfig) -> tuple[int, int]:
    """Configured sizes; else a job that shares the machine gets its share of the cores: 1/N of
    them with N parallel jobs (joblib launcher), the CPUs Ray reserves for each job
    (`hydra.launcher.ray.remote.num_cpus`)."""
    intra, inter = trainer.intra_op_threads, trainer.inter_op_threads
    launcher = HydraConfig.get().launcher
    share = None
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if isinstance(n_jobs, int) and n_jobs != 1:
        cores = os.cpu_count() or 1
        share = max(1, cores // (cores if n_jobs < 0 else n_jobs))
    reserved = OmegaConf.select(launcher, "ray.remote.num_cpus", default=None)
    if isinstance(reserved, int | float) and reserved >= 1:
        share = int(reserved)
    if share:
        intra, inter = intra or share, inter or min(2, share)
    return intra, inter
