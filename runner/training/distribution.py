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

import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from runner.core.errors import PeerLost, RunnerError

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
            _join(strategy)


def _join(strategy: Any) -> None:
    """What keras.distribution.initialize does (the keys, else its KERAS_DISTRIBUTION_*
    variables, else the cluster's environment as JAX reads it), with the keys' timeouts: JAX's
    own defaults leave a process waiting 5 minutes for a peer that was never started."""
    import jax

    env = os.environ
    coordinator = strategy.coordinator or env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    if coordinator:
        coordinator = coordinator.split(",")[0]  # Keras' list of every process' address
    count, rank = strategy.num_processes, strategy.process_id
    if count is None and env.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        count = int(env["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    if rank is None and env.get("KERAS_DISTRIBUTION_PROCESS_ID"):
        rank = int(env["KERAS_DISTRIBUTION_PROCESS_ID"])
    where = f"process {rank} of {count}" if rank is not None else "this process"
    if coordinator and rank not in (None, 0) and not _answers(coordinator, strategy.join_timeout):
        # JAX itself would abort the process (a C++ check failure) once the timeout is up.
        raise RunnerError(
            f"{where}: nothing answers at {coordinator} (strategy.coordinator) after "
            f"strategy.join_timeout={strategy.join_timeout} s: start process 0 on that host "
            "with the same strategy.coordinator (its host:port), or wait longer."
        )
    if coordinator and rank == 0 and _port_taken(coordinator):
        # JAX's service (gRPC, SO_REUSEPORT) would share the port with whatever holds it: the
        # processes of two runs would then meet the wrong service and abort with a stack trace.
        raise RunnerError(
            f"{where}: the port of strategy.coordinator={coordinator} is already in use on this "
            "host (another run's coordinator, or another program): pick a free port for every "
            "process of this run, or stop what holds it."
        )
    print(
        f"[runner] {where}: joining the others at {coordinator or 'the cluster coordinator'} "
        f"(up to strategy.join_timeout={strategy.join_timeout} s)",
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=count,
            process_id=rank,
            initialization_timeout=strategy.join_timeout,
            heartbeat_timeout_seconds=strategy.heartbeat_timeout,
        )
    except jax.errors.JaxRuntimeError as error:
        raise RunnerError(
            f"{where} could not join the others at {coordinator or 'the cluster coordinator'} "
            f"within strategy.join_timeout={strategy.join_timeout} s: start every process with "
            "the same strategy.coordinator and strategy.num_processes (process 0 on the "
            f"coordinator's host), or wait longer ({str(error).splitlines()[0][:120]})."
        ) from None


def _answers(address: str, timeout: float) -> bool:
    """Whether something accepts connections at `host:port` within `timeout` seconds."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return True
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


def _port_taken(address: str) -> bool:
    """Whether a program on this host listens on the port of `host:port`, on any address (where
    process 0's coordination service will listen)."""
    _, _, port = address.rpartition(":")
    dual = socket.has_dualstack_ipv6()
    try:
        # SO_REUSEADDR (create_server's default): a port left in TIME_WAIT counts as free.
        with socket.create_server(
            ("", int(port)), family=socket.AF_INET6 if dual else socket.AF_INET, dualstack_ipv6=dual
        ):
            return False
    except ValueError:
        return False  # not a port: JAX says so
    except OSError:
        return True


def _multi_process(strategy: Any) -> bool:
    """Asked for by the keys, by Keras' variable, or by a Slurm job step of several tasks
    (`srun`; JAX reads the coordinator, count and rank from Slurm's environment itself)."""
    return bool(
        (strategy.num_processes or 0) > 1
        or strategy.coordinator
        or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
        or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1
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


# What a failed exchange with a lost process says (gloo on CPUs, NCCL on GPUs, JAX's service).
PEER_FAILURES = ("gloo", "nccl", "heartbeat", "connection reset", "coordination service")


@contextmanager
def peers_watched(placement: Any) -> Iterator[None]:
    """Around the steps a multi-process run takes together (fit, the weights check), given
    this process' `process_id` and `num_processes` (a Placement, the job's Runtime): a lost
    process (killed, its host down) surfaces in the others as a failed collective (gloo, NCCL)
    or a missed heartbeat; they end with one line, their distribution off, so that process 0
    marks the run FAILED and logs its checkpoints alone."""
    if placement.num_processes <= 1:
        yield
        return
    import jax

    try:
        yield
    except (jax.errors.JaxRuntimeError, ValueError) as error:
        # JAX raises a failed collective as its runtime error, or re-raised as a ValueError
        # when it fails inside a dispatch (a device_put that checks the processes agree).
        text = str(error).strip()
        if isinstance(error, ValueError) and not any(w in text.lower() for w in PEER_FAILURES):
            raise
        keras.distribution.set_distribution(None)
        raise PeerLost(
            f"process {placement.process_id} of {placement.num_processes}: another process of "
            f"this run stopped, so this one cannot go on ({text.splitlines()[0][:160]}). Start "
            "every process again (a multi-process run does not resume)."
        ) from error


def agreed_weights(model: Any) -> str:
    """After a multi-process fit: a digest of this process' copy of the weights, checked to be
    the same in every process (they trained one model; a process whose copy drifted, from
    another seed or other data, fails the run instead of logging a model nobody trained)."""
    from jax.experimental import multihost_utils

    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    try:
        multihost_utils.assert_equal(np.frombuffer(digest.digest(), np.uint8))
    except AssertionError as error:
        raise RunnerError(
            "the processes of this run ended with different weights; start every process with "
            "the same config (trainer.seed, data, model) and only strategy.process_id changed."
        ) from error
    return digest.hexdigest()[:16]


def leave(model: Any, *, copy: bool) -> Any:
    """The end of a multi-process fit, in every process (after `agreed_weights`): the
    distribution off and the processes disconnected (JAX's shutdown waits for all of them), so
    that process 0 goes on alone: choose the weights, evaluate, log. With `copy`, returns
    `model` copied onto this process' devices (its weights span every process' devices, which
    end here), through a `.keras` file loaded in safe mode; else None."""
    import jax

    keras.distribution.set_distribution(None)
    local = None
    if copy:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            model.save(path)
            local = keras.saving.load_model(path, safe_mode=True, compile=False)
    jax.distributed.shutdown()
    return local


@contextmanager
def saving_alone() -> Iterator[None]:
    """Around a save by one process (process 0's checkpoints and resume state): Keras' saving
    creates variables (a throwaway optimizer), and under a multi-process distribution creating
    a variable is a step every process must take together; with the distribution off, a save
    is this process' own."""
    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)
