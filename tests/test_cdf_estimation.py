"""Estimating the reward CDF from M reference samples, and the exact moments of the estimate."""

import math

import mpmath
import numpy as np
import pytest
from conftest import Z_BOUND
from hypothesis import given
from hypothesis import strategies as st

import bonmath


@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.lists(st.integers(-1, 5), min_size=1, max_size=6),
    st.sampled_from(["add_one", "empirical", "empirical_le"]),
)
def test_estimate_log_cdf_counts_reference_rewards(reference, queries, method):
    """add_one = (1 + #{r_m < r})/(M+1), empirical = #{r_m < r}/M, empirical_le = #{r_m <= r}/M."""
    m = len(reference)
    have = np.exp(bonmath.estimate_log_cdf(np.array(reference, float), np.array(queries, float), method))
    for h, r in zip(have, queries):
        below = sum(x < r for x in reference)
        at_most = sum(x <= r for x in reference)
        want = {"add_one": (1 + below) / (m + 1), "empirical": below / m, "empirical_le": at_most / m}[method]
        assert abs(h - want) <= 1e-15


def test_estimate_log_cdf_batches_prompts():
    """Leading axes are prompts: each row uses its own reference samples."""
    reference = np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
    have = np.exp(bonmath.estimate_log_cdf(reference, np.array([[1.5], [1.5]])))
    np.testing.assert_allclose(have[:, 0], [3 / 4, 1 / 4])


@pytest.mark.parametrize("method", ["add_one", "empirical", "empirical_le"])
@pytest.mark.parametrize("cdf", [0.0, 1e-4, 0.3, 0.97, 1.0])
@pytest.mark.parametrize("m", [1, 7, 32])
def test_log_cdf_estimate_moments_match_binomial_sum_in_mpmath(method, cdf, m):
    """E[log F̂] and Var[log F̂] under C ~ Binomial(M, F), against a 40-digit direct sum."""
    with mpmath.workdps(40):
        f = mpmath.mpf(cdf)
        outcomes = []
        for c in range(m + 1):
            weight = mpmath.binomial(m, c) * f**c * (1 - f) ** (m - c)
            if weight == 0:
                continue
            value = (c + 1) / mpmath.mpf(m + 1) if method == "add_one" else c / mpmath.mpf(m)
            outcomes.append((weight, mpmath.log(value) if value > 0 else -mpmath.inf))
        want_mean = mpmath.fsum(w * v for w, v in outcomes)
        want_var = mpmath.fsum(w * (v - want_mean) ** 2 for w, v in outcomes) if want_mean != -mpmath.inf else mpmath.inf
    with np.errstate(divide="ignore"):
        log_cdf = np.log(cdf)
    mean, var = bonmath.log_cdf_estimate_moments(log_cdf, m, method)
    if want_mean == -mpmath.inf:
        assert mean == -np.inf and var == np.inf
    else:
        assert abs(mean - float(want_mean)) <= 1e-12
        assert abs(var - float(want_var)) <= 1e-12


@pytest.mark.statistical
def test_add_one_bias_matches_simulation():
    """The exact bias of log F̂ (add_one, M = 32, F = 0.05) agrees with 200 000 simulated
    estimates within Z_BOUND standard errors (standard error from the exact variance)."""
    m, cdf, reps = 32, 0.05, 200_000
    rng = np.random.default_rng(0)
    counts = rng.binomial(m, cdf, size=reps)
    simulated = np.log((counts + 1) / (m + 1))
    mean, var = bonmath.log_cdf_estimate_moments(math.log(cdf), m)
    z = (simulated.mean() - mean) / math.sqrt(var / reps)
    assert abs(z) < Z_BOUND, f"z = {z:.2f}"
    assert bonmath.log_cdf_estimate_bias(math.log(cdf), m) == pytest.approx(mean - math.log(cdf), abs=1e-15)


def test_add_one_bias_shrinks_with_more_reference_samples():
    """The add-one estimate of a small CDF is biased upwards, less so as M grows."""
    biases = [float(bonmath.log_cdf_estimate_bias(math.log(0.01), m)) for m in (8, 32, 300, 3000)]
    assert all(b > 0 for b in biases)
    assert all(b2 < b1 for b1, b2 in zip(biases, biases[1:]))
