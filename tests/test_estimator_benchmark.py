"""The estimator-variance benchmark runs in smoke mode and writes well-formed, sane results."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from conftest import Z_BOUND

pytest.importorskip("torch")
pytest.importorskip("transformers")
from scipy.stats import norm  # noqa: E402

pytestmark = pytest.mark.hf

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "estimator_variance.py"
EXACT_REL = 1e-9
"""An exactly computed unbiased row: ‖E ĝ - g‖/‖g‖ is floating error (~1e-15)."""


def load_benchmark():
    spec = importlib.util.spec_from_file_location("estimator_variance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("estimator_variance") / "results.json"
    load_benchmark().main(["--smoke", "--out", str(out)])
    return out


def test_smoke_run_writes_json_and_csv(results):
    data = json.loads(results.read_text())
    assert set(data) >= {"config", "estimators", "models", "rows", "cdf_bias", "pipeline_check_max_rel_err"}
    assert data["config"]["smoke"] is True
    assert set(data["models"]) == {"tabular", "gpt2"}
    names = {e["name"] for e in data["estimators"]}
    cfg = data["config"]
    expected = sum(1 for e in data["estimators"] for k in cfg["k"] if not (e["baseline"] == "loo" and k < 2))
    assert len(data["rows"]) == expected * len(cfg["n"]) * 2
    for row in data["rows"]:
        assert row["estimator"] in names
        for key in ("bias_norm", "bias_z", "total_variance", "rel_mse", "mean_cosine", "seconds_per_estimate"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row)
        assert row["total_variance"] >= 0 and row["seconds_per_estimate"] > 0
        assert -1 <= row["mean_cosine"] <= 1
    with open(results.with_suffix(".csv")) as handle:
        assert len(list(csv.DictReader(handle))) == len(data["rows"])
    assert data["runtime_seconds"] < 60


def test_unbiased_estimators_have_zero_exact_bias_and_small_z(results):
    """Claimed-unbiased rows: exact bias at floating error, and the Monte Carlo mean of R estimates within
    the Bonferroni-adjusted bound (Z_BOUND = 5 family-wise over all rows and directions) of g."""
    data = json.loads(results.read_text())
    unbiased = [r for r in data["rows"] if r["claimed_unbiased"]]
    comparisons = len(unbiased) * (data["config"]["directions"] + 1)
    z_bound = float(norm.isf(2 * norm.sf(Z_BOUND) / (2 * comparisons)))
    for row in unbiased:
        assert row["exact"] and row["rel_bias"] < EXACT_REL, row
        assert row["bias_z"] < z_bound, (
            f"{row['model']} N={row['n']} {row['estimator']} k={row['k']}: z = {row['bias_z']:.2f} >= {z_bound:.2f} "
            f"(Z_BOUND = {Z_BOUND}, Bonferroni over {comparisons} comparisons)"
        )
    for row in data["rows"]:
        if row["exact"]:
            assert row["mc_vs_exact_z"] < z_bound, row


def test_biased_estimators_show_their_bias(results):
    """The mean baseline is biased by exactly ‖g‖/k; per-token k3 and estimated F are biased."""
    data = json.loads(results.read_text())
    for row in data["rows"]:
        if row["estimator"] == "mean_baseline":
            assert row["rel_bias"] == pytest.approx(1 / row["k"], rel=1e-9)
        if row["estimator"] in ("loo+k3_loss", "grpo") or row["estimator"].startswith("bound_rloo_Fhat"):
            assert row["rel_bias"] > 1e-3, row
    ms = sorted({r["m"] for r in data["cdf_bias"]})
    for model in data["models"]:
        for n in data["config"]["n"]:
            bias = {r["m"]: r["rel_bias"] for r in data["cdf_bias"] if r["model"] == model and r["n"] == n}
            assert bias[ms[-1]] < bias[ms[0]], bias


def test_pipeline_matches_the_exact_decomposition(results):
    """Every timed estimate (sampler, model, surrogate, backward) equals its per-string rebuild."""
    data = json.loads(results.read_text())
    for model, err in data["pipeline_check_max_rel_err"].items():
        assert err < 1e-8, (model, err)
