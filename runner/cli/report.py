"""`python -m runner.report`: compare the runs of an experiment or of one sweep.

Reads runs with `mlflow.search_runs` (a pandas DataFrame) and writes, into one folder:
  runs.csv, runs.md          the runs sorted by the objective, with the params that differ
  validation_curves.png      the per-epoch validation metric of every run on one plot
  objective_vs_params.png    the objective against each parameter that differs
  parallel_coordinates.png   a search over 3+ parameters: every run across all of them
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from runner.cli.app import run_command  # noqa: E402
from runner.tracking.store import default_tracking_uri  # noqa: E402

# Params that differ between runs but say nothing about the model or its training.
RUN_SPECIFIC = (
    "params.paths.",
    "params.logger.",
    "params.trainer.verbose",
    "params.trainer.resume",
    "params.trainer.intra_op_threads",
    "params.trainer.inter_op_threads",
    "params.notes",
    "params.data.path",
)


def find_runs(client: MlflowClient, experiment: str, sweep: str | None) -> tuple[pd.DataFrame, str]:
    """Job runs of the experiment (parents left out), or the children of one sweep."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"error: no MLflow experiment named {experiment!r} in this store.")
    experiment_id = found.experiment_id
    if sweep == "latest":
        parents = client.search_runs(
            [experiment_id],
            "tags.sweep = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not parents:
            raise SystemExit(f"error: experiment {experiment!r} has no sweep yet.")
        sweep = parents[0].info.run_id
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep}'" if sweep else "",
        max_results=10000,
    )
    if "tags.sweep" in runs:
        runs = runs[runs["tags.sweep"] != "parent"]
    label = f"sweep-{sweep[:8]}" if sweep else "all-runs"
    return runs.reset_index(drop=True), label


def as_text(column: pd.Series) -> pd.Series:
    """Values as strings; a param a run does not have (another model's key) reads '-'."""
    return column.astype(object).where(column.notna(), "-").astype(str)


def differing_params(runs: pd.DataFrame) -> list[str]:
    """The param columns that tell the runs apart.

    Taken from the command-line overrides that differ between runs (`model=mlp` stands for
    `model.name`), so a grid over `model=lenet,mlp` shows `model.name`, not every key that
    one model has and the other lacks. Without such overrides: every param that differs.
    """
    columns = [
        c for c in runs.columns if c.startswith("params.") and not c.startswith(RUN_SPECIFIC)
    ]
    differing = [c for c in columns if as_text(runs[c]).nunique() > 1]
    if "tags.overrides" not in runs:
        return differing
    overrides = [
        dict(item.split("=", 1) for item in str(text).split() if "=" in item)
        for text in runs["tags.overrides"].fillna("")
    ]
    keys = {key for job in overrides for key in job}
    swept = [key for key in sorted(keys) if len({job.get(key) for job in overrides}) > 1]
    picked = []
    for key in swept:
        for column in (f"params.{key}", f"params.{key}.name"):
            if column in differing and column not in picked:
                picked.append(column)
                break
    return picked or differing


def comparison_table(runs: pd.DataFrame, objective: str, mode: str) -> pd.DataFrame:
    metric_columns = [
        f"metrics.{name}"
        for name in (f"best_{objective}", "test_accuracy", "test_loss")
        if f"metrics.{name}" in runs
    ]
    columns = ["run_id", "status", *differing_params(runs), *metric_columns]
    table = runs[[c for c in columns if c in runs]].copy()
    sort_key = f"metrics.best_{objective}"
    if sort_key in table:
        table = table.sort_values(sort_key, ascending=(mode == "min"), na_position="last")
    table.columns = [c.removeprefix("params.").removeprefix("metrics.") for c in table.columns]
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.4f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def short(param: str) -> str:
    """`params.optimizer.lr` -> `lr`: a legend's or an axis' name for a param."""
    return param.removeprefix("params.").split(".")[-1]


def rounded(value: object) -> str:
    """Numbers to 3 significant digits (0.0100000002 -> 0.01); anything else as it is."""
    try:
        return f"{float(str(value)):.3g}"
    except ValueError:
        return str(value)


def run_label(row: pd.Series, params: list[str]) -> str:
    """The settings that tell this run apart, else its short id."""
    settings = " ".join(f"{short(p)}={rounded(row[p])}" for p in params if p in row)
    return settings or row["run_id"][:8]


def load_histories(
    client: MlflowClient, runs: pd.DataFrame, metric: str
) -> dict[str, tuple[list[int], list[float]]]:
    params = differing_params(runs)
    histories = {}
    for _, row in runs.iterrows():
        history = sorted(client.get_metric_history(row["run_id"], metric), key=lambda m: m.step)
        if history:
            label = run_label(row, params)
            label = label if label not in histories else f"{label} ({row['run_id'][:6]})"
            histories[label] = ([m.step + 1 for m in history], [m.value for m in history])
    return histories


def plot_validation_curves(histories: dict, metric: str, path: Path) -> plt.Figure:
    """Every run's curve; the legend (outside the axes) names each by what differs."""
    figure, axis = plt.subplots(figsize=(10, 5), layout="constrained")
    for label, (epochs, values) in histories.items():
        axis.plot(epochs, values, marker="o", markersize=3, label=label)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(metric)
    axis.set_title(f"{metric} of every run")
    axis.grid(alpha=0.3)
    if histories:
        columns = 1 if len(histories) <= 16 else 2
        figure.legend(loc="outside right upper", fontsize="small", ncols=columns)
    figure.savefig(path, dpi=100)
    return figure


def plot_objective_vs_params(
    table: pd.DataFrame, params: list[str], objective: str, path: Path
) -> plt.Figure | None:
    """One panel per parameter that differs, wrapped three to a row."""
    key = f"best_{objective}"
    names = [p.removeprefix("params.") for p in params]
    if key not in table or not names:
        return None
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False, layout="constrained"
    )
    for axis in axes.flat[len(names) :]:
        axis.set_visible(False)
    for axis, name in zip(axes.flat, names, strict=False):
        values = pd.to_numeric(table[name], errors="coerce")
        if values.notna().all():
            axis.scatter(values, table[key])
            if values.min() > 0 and values.max() / values.min() >= 100:
                axis.set_xscale("log")
        else:  # categorical: one column of points per value
            labels = as_text(table[name])
            categories = sorted(labels.unique())
            axis.scatter(labels.map(categories.index), table[key])
            axis.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        axis.set_xlabel(short(name))
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
    figure.suptitle(f"{key} against each parameter that differs")
    figure.savefig(path, dpi=100)
    return figure


def plot_parallel_coordinates(
    table: pd.DataFrame, params: list[str], objective: str, path: Path
) -> plt.Figure | None:
    """A search over 3+ parameters: one line per run across the parameters' axes (each scaled
    to its range), colored by the objective."""
    key = f"best_{objective}"
    names = [p.removeprefix("params.") for p in params]
    if key not in table or len(names) < 3:
        return None
    axes_values, ticks = [], []
    for name in [*names, key]:
        numeric = pd.to_numeric(table[name], errors="coerce")
        if numeric.notna().all():
            low, high = numeric.min(), numeric.max()
            axes_values.append((numeric - low) / ((high - low) or 1.0))
            ticks.append((rounded(low), rounded(high)))
        else:
            labels = as_text(table[name])
            categories = sorted(labels.unique())
            codes = labels.map(categories.index).astype(float)
            axes_values.append(codes / max(1, len(categories) - 1))
            ticks.append((categories[0], categories[-1]))
    figure, axis = plt.subplots(figsize=(2.2 * len(axes_values) + 2, 4.5), layout="constrained")
    scores = pd.to_numeric(table[key], errors="coerce")
    colors = plt.get_cmap("viridis")((scores - scores.min()) / ((scores.max() - scores.min()) or 1))
    for run in range(len(table)):
        axis.plot(
            range(len(axes_values)),
            [v.iloc[run] for v in axes_values],
            color=colors[run],
            alpha=0.8,
        )
    axis.set_xticks(range(len(axes_values)), [short(n) for n in names] + [key])
    for position, (low, high) in enumerate(ticks):  # each axis' range, beside it
        axis.axvline(position, color="0.6", linewidth=0.8, zorder=0)
        axis.annotate(
            low,
            (position, 0),
            xytext=(4, 2),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize="small",
        )
        axis.annotate(
            high,
            (position, 1),
            xytext=(4, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize="small",
        )
    axis.set_yticks([])
    axis.set_ylim(-0.05, 1.05)
    axis.set_title(f"{len(table)} runs across {len(names)} parameters, colored by {key}")
    figure.colorbar(
        plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(scores.min(), scores.max())),
        ax=axis,
        label=key,
    )
    figure.savefig(path, dpi=100)
    return figure


def write_report(
    tracking_uri: str,
    experiment: str,
    sweep: str | None,
    out: Path,
    objective: str | None,
    mode: str,
) -> Path:
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    runs, label = find_runs(client, experiment, sweep)
    if runs.empty:
        raise SystemExit(f"error: no runs found in {experiment!r} ({label}).")
    folder = out / experiment / label
    folder.mkdir(parents=True, exist_ok=True)
    if objective is None:  # what the runs optimized (tag objective_metric)
        tags = runs.get("tags.objective_metric")
        objective = (
            tags.dropna().iloc[0] if tags is not None and tags.notna().any() else ("val_accuracy")
        )
    table = comparison_table(runs, objective, mode)
    table.to_csv(folder / "runs.csv", index=False)
    header = (
        f"# {experiment}: {label}\n\n{len(table)} runs, sorted by best {objective} ({mode}).\n\n"
    )
    (folder / "runs.md").write_text(header + to_markdown(table))
    params = differing_params(runs)
    figures = [
        plot_validation_curves(
            load_histories(client, runs, objective), objective, folder / "validation_curves.png"
        ),
        plot_objective_vs_params(table, params, objective, folder / "objective_vs_params.png"),
        plot_parallel_coordinates(table, params, objective, folder / "parallel_coordinates.png"),
    ]
    for figure in figures:
        if figure is not None:
            plt.close(figure)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m runner.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experiment", default="runner", help="MLflow experiment (runner)")
    parser.add_argument(
        "--sweep", default=None, help="a sweep's parent run id, or 'latest'; default: every run"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db under $RUNNER_ROOT or here",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments"))
    parser.add_argument(
        "--objective", default=None, help="default: the runs' own (val_accuracy, val_pr_auc)"
    )
    parser.add_argument("--mode", choices=("max", "min"), default="max")
    args = parser.parse_args(argv)
    folder = write_report(
        args.tracking_uri or default_tracking_uri(),
        args.experiment,
        args.sweep,
        args.out,
        args.objective,
        args.mode,
    )
    print(
        f"[runner.report] wrote {', '.join(sorted(p.name for p in folder.iterdir()))} to {folder}"
    )


def entry() -> None:
    run_command(main)
