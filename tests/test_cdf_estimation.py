"""Estimating the reward CDF from M reference samples, and the exact moments of the estimate."""

import math

import mpmath
import numpy as np
import pytest
from conftest import RTOL_MPMATH, Z_BOUND
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


def _mp_add_one_bias(cdf, m):
    """E[log F̂] - log F for add_one under Binomial(m, F), summed in mpmath over the counts
    within 40 standard deviations of m F (the rest weigh below e^-800)."""
    with mpmath.workdps(40):
        f = mpmath.mpf(cdf)
        spread = 40 * math.sqrt(m * cdf * (1 - cdf)) + 5
        counts = range(max(0, int(m * cdf - spread)), min(m, int(m * cdf + spread)) + 1)
        log_weights = [
            mpmath.loggamma(m + 1) - mpmath.loggamma(c + 1) - mpmath.loggamma(m - c + 1)
            + c * mpmath.log(f) + (m - c) * mpmath.log1p(-f)
            for c in counts
        ]
        return mpmath.fsum(
            mpmath.exp(w) * (mpmath.log(mpmath.mpf(c + 1) / (m + 1)) - mpmath.log(f)) for w, c in zip(log_weights, counts)
        )


@pytest.mark.parametrize("cdf", [1e-3, 0.3, 0.5])
def test_log_cdf_estimate_bias_is_exact_at_large_num_ref_samples(cdf):
    """At M = 10^6 the bias (~1e-6) is E[log F̂] - log F to the rounding of E[log F̂]
    (RTOL_MPMATH of it): the binomial weights are summed in Loader's saddle-point form
    (log C(M, c) from lgamma cancels terms of 10^7, leaving E[log F̂] 1e-9 relative
    wrong and the bias 1e-3 relative wrong)."""
    m = 10**6
    have = float(bonmath.log_cdf_estimate_bias(np.log(cdf), m))
    want = float(_mp_add_one_bias(cdf, m))
    assert abs(have - want) <= RTOL_MPMATH * abs(math.log(cdf) + want)


def test_log_cdf_estimate_moments_of_float32_input_are_the_float64_moments():
    """A float32 tensor gets the float64 moments, rounded (summed in float32 the mean was
    3% off at M = 10^5, 30% at 10^6)."""
    torch = pytest.importorskip("torch")
    log_cdf = torch.log(torch.tensor([1e-3, 0.3, 0.5], dtype=torch.float64))
    for have, want in zip(
        bonmath.log_cdf_estimate_moments(log_cdf.float(), 10**5),
        bonmath.log_cdf_estimate_moments(log_cdf.float().double(), 10**5),
    ):
        assert have.dtype == torch.float32
        torch.testing.assert_close(have, want.float(), rtol=2**-23, atol=0.0)


def test_log_cdf_estimate_variance_of_a_tiny_cdf():
    """F = 1e-300, M = 10: only the counts 0 and 1 matter, so Var[log F̂] = M F (1 - F)^(M-1)
    (log 2)^2 + O(F^2) = 10^-299 (log 2)^2 (the lgamma rounding of P(C = 0) put it at 2e-29)."""
    _, var = bonmath.log_cdf_estimate_moments(math.log(1e-300), 10)
    assert abs(var - 10 * 1e-300 * math.log(2) ** 2) <= 1e-12 * var
