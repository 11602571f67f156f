"""`make gpu-kit`: the wheels the lent GPU machine lacks, into .whl/, to carry there.

That machine has Python 3.12 with JAX (CUDA), PyTorch, NumPy, pandas, matplotlib, scikit-learn,
SciPy, Pillow, h5py, rich, requests and their kin, but no Keras, Hydra or MLflow, and no
network: the runner's other dependencies travel with the working tree (at most 64 MiB in all).
This downloads them here, at the exact versions of constraints.txt, as wheels for that Python
(`--python-version`, default 3.12; 3.11 to rehearse on this machine), and prints their size.
bench/gpu.sh installs them there (`pip install --no-index --target`) and runs the bench.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT_MB = 64

# What `python -m runner backend=jax` imports that the GPU machine does not have (found by
# running the runner in a virtualenv holding only that machine's packages plus these).
KIT = (
    # Keras
    "keras",
    "namex",
    "optree",
    # Hydra and its config language
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    # MLflow's client and its SQLite store (the default store: SQLAlchemy + Alembic migrations)
    "mlflow-skinny",
    "mlflow-tracing",
    "sqlalchemy",
    "alembic",
    "mako",
    "sqlparse",
    "cachetools",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-proto",
    "opentelemetry-semantic-conventions",
    "importlib-metadata",
    "python-dotenv",
    "gitpython",
    "gitdb",
    "smmap",
    "databricks-sdk",
    "google-auth",
    "pyasn1",
    "pyasn1-modules",
    "protobuf",
    "cryptography",  # MLflow's model-registry tables (imported by every SQL store)
    "cffi",
    "pycparser",
    "fastapi",  # imported by `import mlflow` (its gateway), although nothing here serves
    "starlette",
    "annotated-doc",
    # hydra/sweeper=optuna (our plugin is found, and imported, by every Hydra start)
    "optuna",
    "colorlog",
)

# Published as a source archive only: built into a wheel here (pure Python).
SOURCE_ONLY = {"antlr4-python3-runtime"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions() -> dict[str, str]:
    versions = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[normalize(name)] = version.split(";")[0].strip()
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    args = parser.parse_args()
    versions = pinned_versions()
    missing = [name for name in KIT if normalize(name) not in versions]
    if missing:
        raise SystemExit(f"not pinned in constraints.txt: {', '.join(missing)}")
    shutil.rmtree(args.dest, ignore_errors=True)
    args.dest.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    binary = [f"{name}=={versions[normalize(name)]}" for name in KIT if name not in SOURCE_ONLY]
    platforms = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    subprocess.run(
        [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", args.dest]
        + ["--python-version", args.python_version, "--implementation", "cp"]
        + [option for name in platforms for option in ("--platform", name)]
        + binary,
        check=True,
    )
    built = [f"{name}=={versions[normalize(name)]}" for name in SOURCE_ONLY]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", args.dest, *built], check=True
    )
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(path.stat().st_size for path in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.1f} MB in {args.dest} (the carry limit: {CARRY_LIMIT_MB})")
    if size > CARRY_LIMIT_MB * 0.8:
        raise SystemExit(f"the kit is {size:.1f} MB: too close to the {CARRY_LIMIT_MB} MB carry")


if __name__ == "__main__":
    main()
