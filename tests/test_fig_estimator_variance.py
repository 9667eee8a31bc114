"""Figure 6 (paper_figs/fig_estimator_variance.py): it draws only current default results, and
every estimator is a distinct, readable series.

The drawing tests use a synthetic results dict with the registry's estimators (no
benchmark run); ``tests/test_paper_figs.py`` runs the figure's smoke mode for real.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bonmath.estimator_benchmark import ESTIMATORS, SMOKE, EstimatorBenchmarkConfig, code_version  # noqa: E402
from paper_figs import fig_estimator_variance as fig  # noqa: E402


def synthetic_results(preset: str) -> dict:
    """Results shaped like run()'s: every estimator, two models, two N, three k (numbers made up)."""
    config = EstimatorBenchmarkConfig() if preset == "default" else SMOKE
    rows = [dict(model=model, n=n, estimator=e.name, k=k, rel_mse=1.0 / k + i / 100, claimed_unbiased=e.claimed_unbiased)
            for model in ("tabular", "gpt2") for n in (2, 8) for i, e in enumerate(ESTIMATORS)
            for k in (2, 4, 8) if e.needs(k)]
    cdf = [dict(model=model, n=n, m=m, rel_bias=1.0 / m) for model in ("tabular", "gpt2") for n in (2, 8)
           for m in (1, 4, 16)]
    return {"config": dataclasses.asdict(config), "preset": preset, "code_version": code_version(),
            "estimators": [dataclasses.asdict(e) for e in ESTIMATORS], "rows": rows, "cdf_bias": cdf,
            "runtime_seconds": 1.0}


def write(tmp_path, results) -> object:
    path = tmp_path / "estimator_variance.json"
    path.write_text(json.dumps(results))
    return path


def test_full_mode_fails_loudly_without_the_benchmark_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="rerun `python benchmarks/estimator_variance.py --out"):
        fig.main(["--out", str(tmp_path), "--json", str(tmp_path / "missing.json")])


@pytest.mark.parametrize("change, match", [
    ({"code_version": "0123456789abcdef"}, "is stale: written by code version 0123456789abcdef"),
    ({"preset": "smoke"}, "holds a 'smoke' run, not the default configuration"),
])
def test_full_mode_refuses_stale_or_non_default_results(tmp_path, change, match):
    """Results written by other code, or of another configuration, are not drawn as figure 6."""
    path = write(tmp_path, {**synthetic_results("default"), **change})
    with pytest.raises(ValueError, match=match):
        fig.main(["--out", str(tmp_path), "--json", str(path)])


def test_full_mode_draws_current_default_results(tmp_path):
    path = write(tmp_path, synthetic_results("default"))
    assert fig.main(["--out", str(tmp_path), "--json", str(path)]) == 0
    data = json.loads((tmp_path / "estimator_variance.json").read_text())
    assert data["preset"] == "default"
    assert {c["estimator"] for c in data["curves"]} == {e.name for e in ESTIMATORS}


def test_every_series_has_its_own_colour_and_marker_and_one_label_in_every_run():
    """12 estimators, 12 distinct (colour, marker) pairs; a series' label is the estimator's registry
    name, the same in smoke and full results."""
    styles = {preset: fig.estimator_styles(synthetic_results(preset)) for preset in ("default", "smoke")}
    assert styles["default"] == styles["smoke"]
    pairs = {(s["color"], s["marker"]) for s in styles["default"].values()}
    assert len(pairs) == len(ESTIMATORS) == 12
    assert len({s["color"] for s in styles["default"].values()}) == 12
    assert len({s["marker"] for s in styles["default"].values()}) == 12
    assert [s["label"] for s in styles["default"].values()] == [e.name for e in ESTIMATORS]


@pytest.mark.parametrize("preset", ["default", "smoke"])
def test_legends_cover_no_axes_and_smoke_says_so(preset):
    """Every legend's box lies outside every axes' box (it covers no data); a smoke figure says
    "smoke" in its title, a full one does not."""
    figure, _ = fig.draw(synthetic_results(preset))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = list(figure.legends) + [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert len(legends) == 1 + 2  # the estimators', and the N legend of each model's bias panel
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend.get_title().get_text(), ax.get_title())
    assert ("smoke" in figure._suptitle.get_text()) == (preset == "smoke")
    import matplotlib.pyplot as plt

    plt.close(figure)
