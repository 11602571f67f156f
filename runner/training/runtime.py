"""Stage 1, the runtime: seeds, thread pools, precision and the distribution strategy a job
trains with, and a description of the devices it runs on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.config.schema import Precision
from runner.training import distribute


@dataclass(frozen=True)
class Runtime:
    strategy: tf.distribute.Strategy
    device: str  # "CPU (2 threads)", "GPU x2, 2 replicas"

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def global_batch(self, batch_size: int) -> int:
        """Batches hold `trainer.batch_size` images per replica."""
        return batch_size * self.replicas


def configure(cfg: DictConfig) -> Runtime:
    """Seed everything, size the thread pools, set the precision policy, pick the distribution
    strategy."""
    distribute.prepare_devices(cfg)  # before anything starts TensorFlow's runtime
    keras.backend.clear_session()  # a sweep runs jobs one after another in this process
    # Set for every job: a sweep's jobs share this process and may differ in precision.
    keras.mixed_precision.set_global_policy(Precision(cfg.trainer.precision).value)
    intra, inter = thread_pools(cfg.trainer)
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already fixed by an earlier job in this process
    keras.utils.set_random_seed(cfg.trainer.seed)
    strategy = distribute.build(cfg)
    gpus = tf.config.list_physical_devices("GPU")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    device = f"GPU x{len(gpus)}" if gpus else f"CPU ({threads} threads)"
    replicas = strategy.num_replicas_in_sync
    return Runtime(strategy, f"{device}, {replicas} replicas" if replicas > 1 else device)


def device_names() -> str:
    """What the job trains on, by name: each GPU's model, else the CPU's."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        return ", ".join(d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True))
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
