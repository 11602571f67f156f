#!/usr/bin/env bash
# bench/gpu.sh: the GPU check, one prepared script for a machine with a GPU and no network
# (the device lent to this project: Python 3.12 with JAX on CUDA and PyTorch, no TensorFlow,
# no Keras, Hydra or MLflow). Run from the repository root, with the kit of `make gpu-kit`
# (.whl/) beside it:
#
#   make gpu-kit                 # here, with network: about 25 MB of wheels into .whl/
#   bash bench/gpu.sh            # there: the kit into $RUNNER_KIT_SITE, then the steps below
#
# Steps, each under a time limit of its own so a slow one leaves time to the rest: a first
# job on JAX (digits, the summary line), the GPU bench (bench/run.py gpu: throughput and peak
# GPU memory, time to 99% validation accuracy, cifar10_tuned's epoch time), a sweep on JAX,
# and a job on Keras' torch backend. Logs and JSON go to $OUT (else experiments/bench/gpu-run).
# Rehearse it on a CPU: PYTHON=<a venv's python> RUNNER_KIT=<3.11 kit> BENCH_ARGS=--quick.
set -uo pipefail

OUT=${OUT:-experiments/bench/gpu-run}
PYTHON=${PYTHON:-python3}
RUNNER_KIT=${RUNNER_KIT:-.whl}
RUNNER_KIT_SITE=${RUNNER_KIT_SITE:-/tmp/runner-kit}
BENCH_ARGS=${BENCH_ARGS:-}
BENCH_LIMIT=${BENCH_LIMIT:-330}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.sh.log") 2>&1

say() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*"; }

# A step: its name, its time limit in seconds, its command; its output in $OUT/<name>.log.
step() {
    local name=$1 limit=$2
    shift 2
    say "$name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local status=$?
    tail -n 15 "$OUT/$name.log"
    say "$name: exit $status after $((SECONDS - started))s"
    echo "$name $status $((SECONDS - started))" >> "$OUT/steps.txt"
}

say "machine"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 && head -n 15 "$OUT/nvidia-smi.txt"
"$PYTHON" --version

say "installing the kit ($RUNNER_KIT) into $RUNNER_KIT_SITE"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$RUNNER_KIT_SITE" "$RUNNER_KIT"/*.whl \
    || { say "the kit did not install"; exit 1; }
export PYTHONPATH="$RUNNER_KIT_SITE:$PWD"
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
"$PYTHON" - <<'EOF' | tee "$OUT/versions.txt"
import importlib.metadata as m
for name in ("jax", "jaxlib", "keras", "hydra-core", "mlflow-skinny", "torch", "numpy"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "not installed")
import jax
print("jax devices:", jax.devices())
EOF
# Everything a job imports, at once: a missing wheel shows here in one line, not in each step.
"$PYTHON" -c "import keras, hydra, optuna, mlflow, mlflow.store.tracking.sqlalchemy_store, \
runner.cli.train, runner.sweeps.parent" || { say "the kit lacks a module (above)"; exit 1; }

step first_job 150 "$PYTHON" -m runner backend=jax experiment=digits_lenet trainer.epochs=3 \
    logger.experiment=gpu_first_job
step bench "$BENCH_LIMIT" "$PYTHON" bench/run.py gpu --backend jax $BENCH_ARGS
cp experiments/bench/gpu.json experiments/bench/gpu.partial.json "$OUT/" 2>/dev/null
step sweep 150 "$PYTHON" -m runner -m backend=jax experiment=mnist_tuned data=digits \
    trainer.batch_size=32 trainer.epochs=4 optimizer.lr=0.001,0.003 logger.experiment=gpu_sweep
step torch_job 120 env KERAS_BACKEND=torch "$PYTHON" -m runner backend=torch \
    experiment=digits_lenet trainer.epochs=3 logger.experiment=gpu_torch_job

say "the jobs' runs in the store (mlruns/)"
"$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/runs.txt"
import mlflow

client = mlflow.MlflowClient("sqlite:///mlruns/mlflow.db")
for experiment in client.search_experiments():
    if not experiment.name.startswith("gpu_"):
        continue
    for run in client.search_runs([experiment.experiment_id]):
        metrics = run.data.metrics
        keys = ("test_accuracy", "device_peak_memory_mb", "images_per_second", "epoch_seconds")
        shown = {key: round(metrics[key], 4) for key in keys if key in metrics}
        print(experiment.name, run.info.run_name, run.info.status,
              run.data.params.get("backend"), run.data.tags.get("device"), shown)
EOF
say "done: $OUT"
cat "$OUT/steps.txt"
