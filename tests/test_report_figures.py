"""The comparison report's figures read at a glance: rendered for a 12-run, 3-parameter search,
their legends name only what differs (rounded), nothing is cut off, the panels wrap."""

from __future__ import annotations

import itertools

import matplotlib
import pandas as pd
import pytest

from runner.cli import report

matplotlib.use("Agg")


@pytest.fixture
def search() -> pd.DataFrame:
    rows = []
    for index, (lr, batch, model) in enumerate(
        itertools.product([0.01, 0.0010000000474974513], [32, 64, 128], ["lenet", "mlp"])
    ):
        rows.append(
            {
                "run_id": f"{index:02d}" + "f" * 30,
                "status": "FINISHED",
                "params.optimizer.lr": str(lr),
                "params.trainer.batch_size": str(batch),
                "params.model.name": model,
                "params.trainer.verbose": str(index % 2),
                "params.logger.log_model": "True",
                "params.paths.output_dir": f"/out/{index}",
                "metrics.best_val_accuracy": 0.5 + index / 40,
                "tags.overrides": f"optimizer.lr={lr} trainer.batch_size={batch} model={model}",
            }
        )
    return pd.DataFrame(rows)


def texts_inside(figure) -> list[str]:
    """What is drawn outside the canvas: matplotlib's tight box of every drawn artist (texts,
    legends, tick labels, titles) must fit in the figure."""
    figure.canvas.draw()
    tight = figure.get_tightbbox(figure.canvas.get_renderer())
    width, height = figure.get_size_inches()
    tolerance = 0.02  # inches
    sides = {
        "left": tight.x0 < -tolerance,
        "bottom": tight.y0 < -tolerance,
        "right": tight.x1 > width + tolerance,
        "top": tight.y1 > height + tolerance,
    }
    return [side for side, out in sides.items() if out]


def test_legends_name_only_what_differs_rounded_and_nothing_is_clipped(search, tmp_path):
    params = report.differing_params(search)
    assert params == ["params.model.name", "params.optimizer.lr", "params.trainer.batch_size"]
    histories = {
        report.run_label(row, params): ([1, 2, 3], [0.2, 0.4, 0.5 + i / 50])
        for i, (_, row) in enumerate(search.iterrows())
    }
    assert "name=lenet lr=0.001 batch_size=32" in histories  # 3 significant digits
    assert not any("verbose" in label or "log_model" in label for label in histories)
    curves = report.plot_validation_curves(histories, "val_accuracy", tmp_path / "curves.png")
    assert texts_inside(curves) == []
    assert len(curves.legends[0].get_texts()) == 12
    ticks = [t for t in curves.axes[0].get_xticks() if 1 <= t <= 3]
    assert all(float(t).is_integer() for t in ticks)  # whole epochs

    table = report.comparison_table(search, "val_accuracy", "max")
    panels = report.plot_objective_vs_params(table, params, "val_accuracy", tmp_path / "p.png")
    assert texts_inside(panels) == []
    assert panels.get_size_inches()[0] <= 13  # three panels to a row, not a long strip
    parallel = report.plot_parallel_coordinates(table, params, "val_accuracy", tmp_path / "c.png")
    assert parallel is not None and texts_inside(parallel) == []
    assert len(parallel.axes[0].lines) == 12 + 4  # a line per run, an axis line per column
    for name in ("curves.png", "p.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
