"""The estimator benchmark (:mod:`bonmath.estimator_benchmark`): consistent numbers, current docs tables.

One run of the default configuration with one timed estimate per (model, estimator,
k) instead of nine (about 40 s of one core; several minutes on a loaded machine)
feeds every test here. The claims about the estimators themselves (which are
unbiased, by how much the others are biased) are tested by enumeration in
``tests/test_estimators.py``; these tests check that the benchmark measures what
it says: its Monte Carlo estimates agree with its exact moments, its timed
pipeline equals the per-string rebuild behind the exact numbers, and the tables
in ``docs/estimators.md`` are what it prints now.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from conftest import RTOL_EXACT, Z_BOUND

pytest.importorskip("torch")
pytest.importorskip("transformers")
from scipy.stats import norm  # noqa: E402

from bonmath.estimator_benchmark import (  # noqa: E402
    ESTIMATORS,
    SMOKE,
    EstimatorBenchmarkConfig,
    markdown_tables,
    preset_name,
    run,
)
from bonmath.tabular import num_sequences  # noqa: E402

pytestmark = [pytest.mark.hf, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "estimators.md"
CONFIG = dataclasses.replace(EstimatorBenchmarkConfig(), timing_reps=1)


def bonferroni_z(comparisons: int) -> float:
    """The z bound whose family-wise false-alarm rate over ``comparisons`` is that of one Z_BOUND test."""
    return float(norm.isf(norm.sf(Z_BOUND) / comparisons))


@pytest.fixture(scope="module")
def results() -> dict:
    return run(CONFIG, progress=False)


def test_rows_cover_every_model_n_estimator_and_k(results):
    """One row per (model, N, estimator, k), leave-one-out rows only for k >= 2; every reported
    number finite, variances non-negative, cosines in [-1, 1]."""
    config = results["config"]
    want = {(m, n, e.name, k) for m in ("tabular", "gpt2") for n in config["n"] for e in ESTIMATORS
            for k in config["k"] if e.needs(k)}
    have = [(r["model"], r["n"], r["estimator"], r["k"]) for r in results["rows"]]
    assert len(have) == len(set(have)) and set(have) == want
    for row in results["rows"]:
        for key in ("bias_norm", "bias_z", "total_variance", "rel_mse", "mean_cosine", "cos_of_mean",
                    "seconds_per_estimate"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row)
        assert row["total_variance"] >= 0
        assert abs(row["mean_cosine"]) <= 1 + RTOL_EXACT and abs(row["cos_of_mean"]) <= 1 + RTOL_EXACT
    assert {m: results["models"][m]["num_strings"] for m in results["models"]} == {
        "tabular": num_sequences(config["tabular_vocab"], config["tabular_len"]),
        "gpt2": num_sequences(config["gpt2_vocab"], config["gpt2_len"]),
    }


def test_claimed_unbiased_rows_have_zero_exact_bias_and_a_small_monte_carlo_z(results):
    """The benchmark's exact bias of every claimed-unbiased row is floating error, and the mean of
    its R Monte Carlo estimates lies within the Bonferroni-adjusted Z_BOUND of the exact gradient
    (projected on the gradient and the random directions)."""
    unbiased = [r for r in results["rows"] if r["claimed_unbiased"]]
    comparisons = len(unbiased) * (results["config"]["directions"] + 1)
    z_bound = bonferroni_z(comparisons)
    for row in unbiased:
        assert row["exact"] and row["rel_bias"] < RTOL_EXACT, row
        assert row["bias_z"] < z_bound, (
            f"{row['model']} N={row['n']} {row['estimator']} k={row['k']}: z = {row['bias_z']:.2f} >= "
            f"{z_bound:.2f} (Z_BOUND = {Z_BOUND}, Bonferroni over {comparisons} comparisons)")


def test_monte_carlo_estimates_agree_with_the_exact_moments(results):
    """For every exactly computed row, the mean of the R sampled estimates (the models' own samplers)
    lies within the Bonferroni-adjusted Z_BOUND of the exact mean, in exact standard errors."""
    exact = [r for r in results["rows"] if r["exact"]]
    z_bound = bonferroni_z(len(exact) * (results["config"]["directions"] + 1))
    worst = max(exact, key=lambda r: r["mc_vs_exact_z"])
    assert worst["mc_vs_exact_z"] < z_bound, worst


def test_timed_pipeline_equals_its_per_string_rebuild(results):
    """Every timed estimate (sampler, model, surrogate loss, backward) equals the estimate rebuilt
    from the per-string basis behind the exact numbers, to floating error of its summands."""
    checks = results["pipeline_check_max_rel_err"]
    assert set(checks) == {"tabular", "gpt2"}
    for model, err in checks.items():
        assert err < RTOL_EXACT, (model, err)


def generated_section(text: str) -> str:
    match = re.search(r"<!-- generated: begin -->\n(.*?)<!-- generated: end -->", text, re.S)
    assert match, f"{DOCS} has no '<!-- generated: begin -->' ... '<!-- generated: end -->' section"
    return match.group(1)


def test_docs_tables_match_a_fresh_run(results):
    """docs/estimators.md's tables are what `python benchmarks/estimator_variance.py --markdown`
    writes for the default configuration now (the cost table, timing, aside)."""
    committed = generated_section(DOCS.read_text())
    committed = committed.split("\n**Cost of one estimate")[0].rstrip("\n") + "\n"
    assert committed == markdown_tables(results, timing=False), (
        "docs/estimators.md is out of date: regenerate its tables with "
        "`python benchmarks/estimator_variance.py --markdown FILE` and paste FILE between the markers")


def test_size_guard_refuses_with_the_size_and_the_limit():
    """A GPT-2 of vocabulary 40 (60 880 continuations) is refused before anything is built, with its
    support size, the estimated memory and time, and the limits in the message."""
    with pytest.raises(ValueError, match=r"60880 strings.*GB.*h \(limits: max_memory_gb=8, max_minutes=30\)"):
        EstimatorBenchmarkConfig(gpt2_vocab=40)


def test_presets_are_named():
    assert preset_name(EstimatorBenchmarkConfig()) == "default"
    assert preset_name(SMOKE) == "smoke"
    assert preset_name(CONFIG) == "custom"
