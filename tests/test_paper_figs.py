"""Every figure script runs in smoke mode and writes a PNG and a JSON of finite, consistent numbers.

A figure script ``paper_figs/fig_<name>.py`` writes ``<name>.png`` and ``<name>.json``.
``test_every_figure_script_is_listed`` fails when a script exists that ``FIGURES``
does not list, so a new figure cannot be forgotten here.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")
pytest.importorskip("vaderSentiment")

ROOT = Path(__file__).resolve().parent.parent
FIGURES = [
    "fig_reward_vs_kl",
    "fig_win_rate_vs_kl",
    "fig_vbon_bound_gap",
    "fig_bon_kl_bound",
    "fig_inference_cost",
    "fig_estimator_variance",
    "fig_related_laws",
    "fig_inference_aware",
]
EXPERIMENT_FIGURES = {"fig_reward_vs_kl", "fig_win_rate_vs_kl", "fig_vbon_bound_gap", "fig_bon_kl_bound",
                      "fig_inference_cost"}
TOL = 1e-9  # float64 numbers computed exactly, compared after a JSON round trip


def test_every_figure_script_is_listed():
    """Every paper_figs/fig_*.py is in FIGURES, so a new figure cannot be forgotten here."""
    present = {p.stem for p in (ROOT / "paper_figs").glob("fig_*.py")}
    missing = sorted(present - set(FIGURES))
    assert not missing, f"figure scripts not run by this test: {missing}; add them to FIGURES"


def test_main_discovers_every_figure():
    """python -m paper_figs runs every fig_*.py."""
    from paper_figs.__main__ import figure_modules

    present = {p.stem for p in (ROOT / "paper_figs").glob("fig_*.py")}
    assert set(figure_modules()) == present


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One output directory for all figures, so the smoke experiment trains once (its cache)."""
    return tmp_path_factory.mktemp("paper_figs")


def _strict_json(path: Path):
    def reject(constant):
        raise ValueError(f"{path.name} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def _numbers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def test_only_accepts_the_readme_names_and_lists_the_valid_ones(capsys):
    """--only takes a figure's output name (reward_vs_kl) or its module name (fig_reward_vs_kl);
    an unknown name exits 2 with the valid names in the message."""
    from paper_figs.__main__ import FiguresConfig, main

    cfg = FiguresConfig(only=("reward_vs_kl", "fig_bon_kl_bound", "fig_reward_vs_kl"))
    assert cfg.only == ("fig_reward_vs_kl", "fig_bon_kl_bound")
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "reward_vs_kll"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "reward_vs_kll" in message
    assert all(name.removeprefix("fig_") in message for name in FIGURES)


def test_cache_defaults_under_out_not_beside_the_package(tmp_path):
    """Without --cache the experiment cache is <out>/cache, and the default --out is relative to
    the working directory, not to the package (which could be in site-packages)."""
    from paper_figs import _common

    cfg = _common.parse(_common.FigureConfig, ["--out", str(tmp_path)], "x")
    assert _common.cache_dir(cfg) == tmp_path / "cache"
    default = _common.parse(_common.FigureConfig, [], "x")
    assert _common.cache_dir(default) == default.out / "cache" and not default.out.is_absolute()
    assert _common.cache_dir(_common.parse(_common.FigureConfig, ["--cache", str(tmp_path / "c")], "x")) == \
        tmp_path / "c"


def test_figure_options_are_checked(capsys):
    """A figure script's invalid option exits 2 with an argparse error, not a traceback."""
    from paper_figs import fig_inference_cost

    for argv in (["--threads", "0"], ["--batch", "100000"]):
        with pytest.raises(SystemExit) as exit_info:
            fig_inference_cost.main(argv)
        assert exit_info.value.code == 2
    assert "continuations per BoN call" in capsys.readouterr().err


@pytest.fixture(scope="module")
def figures(out) -> dict[str, dict]:
    """Run every listed figure in smoke mode with the options ``python -m paper_figs`` passes
    on (``--cache`` included); their JSON. A listed script that is missing fails."""
    from paper_figs.__main__ import FiguresConfig, figure_argv

    argv = figure_argv(FiguresConfig(out=out, smoke=True, cache=out / "cache", progress=False))
    if not (ROOT / "models" / "review_lm" / "config.json").is_file():
        pytest.skip("models/review_lm is not built")
    data = {}
    for name in FIGURES:
        assert (ROOT / "paper_figs" / f"{name}.py").is_file(), f"paper_figs/{name}.py is missing"
        module = importlib.import_module(f"paper_figs.{name}")
        status = module.main(argv)
        assert status in (0, None), f"{name} exited with {status}"
        stem = name.removeprefix("fig_")
        png, js = out / f"{stem}.png", out / f"{stem}.json"
        assert png.is_file() and png.stat().st_size > 1000, f"{name}: no PNG"
        assert js.is_file(), f"{name}: no JSON"
        data[name] = _strict_json(js)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", FIGURES)
def test_figure_writes_png_and_finite_json(figures, name):
    """Each figure's JSON holds numbers, all finite."""
    numbers = list(_numbers(figures[name]))
    assert numbers, f"{name}: JSON holds no numbers"
    assert all(math.isfinite(x) for x in numbers)


@pytest.mark.slow
def test_reward_vs_kl_is_consistent(figures):
    """Pareto counts match the flags; no policy beats the exact frontier; BoN obeys its bounds."""
    data = figures["fig_reward_vs_kl"]
    for series, points in data["trained"].items():
        assert data["pareto_counts"][series]["pareto"] == sum(p["pareto"] for p in points)
        assert data["pareto_counts"][series]["total"] == len(points)
        for p in points:  # π_β maximises E[r] - β KL, so no policy beats any frontier point on it
            for f in data["frontier"]:
                assert p["reward"] - f["beta"] * p["kl_ref"] <= f["reward"] - f["beta"] * f["kl_ref"] + TOL, \
                    (p["label"], f["beta"])
    for b in data["bon"]:
        n = b["n"]
        assert 0 <= b["kl_ref"] <= math.log(n) - (n - 1) / n + TOL
    frontier_kl = [f["kl_ref"] for f in data["frontier"]]
    assert max(frontier_kl) >= max(b["kl_ref"] for b in data["bon"])  # the β sweep spans BoN's KLs
    for e in data["kl_estimates"]:
        assert e["k3_sd"] >= 0 and e["k1_sd"] >= 0


@pytest.mark.slow
def test_win_rate_vs_kl_is_consistent(figures):
    """BoN's win rate lies in [1/2, N/(N+1)]; every trained model's in [0, 1]."""
    data = figures["fig_win_rate_vs_kl"]
    for b in data["bon"]:
        assert 0.5 - TOL <= b["win_rate"] <= b["n"] / (b["n"] + 1) + TOL
    for points in data["trained"].values():
        assert all(0 <= p["win_rate"] <= 1 for p in points)


@pytest.mark.slow
def test_bon_kl_bound_is_consistent(figures):
    """KL with ties <= KL with ties broken <= log N - (N-1)/N; the injective formula loses mass."""
    for row in figures["fig_bon_kl_bound"]["rows"]:
        assert row["kl_bon_ref"] <= row["kl_bon_ref_tie_free"] + TOL
        assert row["kl_bon_ref_tie_free"] <= row["kl_bound"] + TOL
        assert row["injective_total_mass"] <= 1 + TOL
        assert row["injective_tv"] == pytest.approx(row["injective_missing_mass"] / 2, abs=TOL)
        if row["n"] == 1:
            assert abs(row["injective_missing_mass"]) < TOL
        else:
            assert row["injective_missing_mass"] > 0  # the review rewards tie


@pytest.mark.slow
def test_vbon_bound_gap_is_consistent(figures):
    """L̃ <= J for every trained model; the bound's optimum is not π_N (KL > 0)."""
    data = figures["fig_vbon_bound_gap"]
    for points in data["trained"].values():
        for p in points:
            assert p["L"] <= p["J"] + TOL and p["J"] <= TOL
    assert all(g["kl_bound_optimum_to_bon"] > 0 for g in data["bound_optimum_gap"])


@pytest.mark.slow
def test_inference_cost_is_positive(figures):
    """Every measured throughput is positive."""
    data = figures["fig_inference_cost"]
    for regime in data["regimes"].values():
        assert regime["vbon"]["outputs_per_second"] > 0
        assert all(row["bon_outputs_per_second"] > 0 for row in regime["bon"])


@pytest.mark.slow
def test_estimator_variance_is_drawn(figures):
    """The estimator-variance figure draws curves from the benchmark (it is in the repository)."""
    data = figures["fig_estimator_variance"]
    assert "skipped" not in data
    assert data["curves"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FIGURES) - {"fig_estimator_variance"}))
def test_smoke_figures_say_smoke(figures, name):
    """A smoke figure is marked as one (its title, and "smoke": true in its JSON)."""
    assert figures[name]["smoke"] is True


@pytest.mark.slow
def test_smoke_experiment_is_cached(out, figures):
    """The experiment figures share one cached run under <out>/cache: the trained models and the
    results file."""
    cache = out / "cache"
    assert len(list(cache.glob("experiment_*.json"))) == 1
    assert any((cache / "models").iterdir())
