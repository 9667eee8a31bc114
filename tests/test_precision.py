"""Precision against mpmath: log-space primitives and the BoN law at the awkward points.

Targets (issue "bonmath core", Numerics): relative error of log π_N <= 1e-10 for
atoms down to 1e-300, n up to 10^6, and levels whose mass is within 1e-15 of 0 or 1.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
from conftest import RTOL_MPMATH
from hypothesis import given
from hypothesis import strategies as st

import bonmath
from bonmath.backend import (
    count_vectors,
    log1mexp,
    log_boundary_sums,
    log_normaliser,
    logaddexp,
    logcumsumexp,
    logsumexp,
    namespace,
)
from bonmath.testing import mp_bon_log_probs

XP = namespace(np.zeros(1))
SUBNORMAL_STEP = 5e-324
"""Spacing of float64 below its normal range (2^-1074)."""


def relative_error(have, want):
    have = mpmath.mpf(float(have))
    if want == have:
        return 0.0
    return float(abs(have - want) / abs(want))


@pytest.mark.parametrize(
    "t", [-1e-300, -1e-20, -1e-10, -0.5, -math.log(2) + 1e-12, -math.log(2), -math.log(2) - 1e-12, -1.0, -40.0, -700.0]
)
def test_log1mexp_matches_mpmath(t):
    """log(1 - e^t) is accurate near t = 0⁻, at t = -log 2 and deep in the tail."""
    with mpmath.workdps(400):  # enough digits that 1 - e^t does not cancel at t = -1e-300
        want = mpmath.log(1 - mpmath.exp(mpmath.mpf(t)))
    assert relative_error(log1mexp(np.array(t), XP), want) < 1e-14



def test_log1mexp_at_the_subnormal_edge():
    """At t = -745, log(1 - e^t) = -e^t is the smallest subnormal: right to one subnormal step."""
    assert abs(float(log1mexp(np.array(-745.0), XP)) + float(mpmath.exp(-745))) <= 5e-324


def mp_log_sum(values):
    """log Σ e^v at 50 digits (-inf for no terms)."""
    with mpmath.workdps(50):
        return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in values)) if values else -mpmath.inf


def assert_log_close(have, want):
    if want == -mpmath.inf:
        assert have == -np.inf
    else:
        assert abs(float(have) - float(want)) <= 1e-13 * max(1.0, abs(float(want)))


@given(st.lists(st.floats(-800, 0), min_size=1, max_size=20))
def test_log_sum_primitives_match_mpmath(values):
    """logsumexp, logcumsumexp and the boundary sums (below and from each boundary, on
    numpy's linear-space path and its logaddexp fallback for terms e^-700 apart)
    agree with 50-digit sums, tiny terms included."""
    x = np.array(values)
    k = len(values)
    for i, have in enumerate(logcumsumexp(x, XP)):
        assert_log_close(have, mp_log_sum(values[: i + 1]))
    assert_log_close(logsumexp(x, XP), mp_log_sum(values))
    below, above = log_boundary_sums(np.stack([x, x[::-1]]), XP)
    for j in range(k + 1):
        assert_log_close(below[0, j], mp_log_sum(values[:j]))
        assert_log_close(above[0, j], mp_log_sum(values[j:]))
        assert_log_close(below[1, j], mp_log_sum(values[::-1][:j]))


@given(st.lists(st.floats(-800, -1e-300), min_size=1, max_size=8), st.floats(1e-18, 1e-3))
def test_log_normaliser_is_exact_to_rounding_when_the_mass_is_near_one(tail, gap):
    """log Σ e^x for a row with one entry log(1 - gap) and small others: the 50-digit value
    to the rounding of its terms, 4 eps (|x_top| + |result| + Σ_j (1 + |x_j|) e^{x_j}) (e^{x_j}
    has relative error eps |x_j|), not 1e-16 absolute as logsumexp near 0."""
    values = [math.log1p(-gap)] + [v + math.log(gap) for v in tail]
    want = float(mp_log_sum(values))
    have = float(log_normaliser(np.array(values), XP)[0])
    terms = abs(values[0]) + abs(want) + sum((1 + abs(v)) * math.exp(v) for v in values[1:])
    assert abs(have - want) <= 4 * np.finfo(float).eps * terms + 1e-300


def test_normalize_true_keeps_r_n_at_n_ten_to_the_fifteen():
    """An already normalised row (mass 1 - 1e-16 on the lowest reward) renormalised by
    normalize=True gives the R_N of the row itself at N = 1e15 (logsumexp's 1e-16 there,
    times N, moved the lowest string's R_N from -0.1 to 0)."""
    log_probs = np.array([math.log1p(-1e-16), math.log(5e-17), math.log(5e-17)])
    rewards = np.array([0.0, 1.0, 2.0])
    have = bonmath.bon_log_ratio(log_probs, rewards, 1e15, normalize=True)
    want = bonmath.bon_log_ratio(log_probs, rewards, 1e15)
    np.testing.assert_allclose(have, want, rtol=RTOL_MPMATH)
    assert have[0] == pytest.approx(-0.1, rel=1e-2)


@pytest.mark.parametrize("axis", [-1, 0])
def test_logsumexp_over_an_axis_longer_than_a_block(axis):
    """numpy sums an axis longer than bonmath.backend.BLOCK in blocks; the result agrees
    with an exactly rounded sum (math.fsum), a -inf entry and a tiny row included."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 200_003)) * 5
    x[1, 7] = -np.inf
    x[2] -= 700.0
    x = x if axis == -1 else x.T
    have = logsumexp(x, XP, axis=axis)
    rows = x if axis == -1 else x.T
    for h, row in zip(have, rows):
        top = row.max()
        want = top + math.log(math.fsum(np.exp(row - top)))
        assert abs(h - want) <= 1e-14 * abs(want)


def test_logaddexp_at_minus_infinity():
    """log(e^-inf + e^-inf) = -inf and log(e^a + e^-inf) = a exactly."""
    a = np.array([-np.inf, -3.0, -np.inf])
    b = np.array([-np.inf, -np.inf, 2.0])
    np.testing.assert_array_equal(logaddexp(a, b, XP), [-np.inf, -3.0, 2.0])


def assert_matches_mpmath(log_probs, rewards, n, dps=420):
    have = bonmath.bon_log_probs(np.array(log_probs), np.array(rewards, dtype=float), n)
    want = mp_bon_log_probs(log_probs, rewards, n, dps=dps)
    for h, w in zip(have, want):
        if w == mpmath.mpf("-inf"):
            assert h == -np.inf
        else:
            assert np.isfinite(h), f"log π_N is {h}, want {w}"
            # Below float64's normal range (a string within 1e-308 of all the mass) only
            # absolute accuracy on the subnormal grid is attainable: log π_N there is
            # n log F_le + share, with log F_le and the share each rounded to the grid
            # (n + 1 half-steps after the product) and the sum rounded once more.
            close = abs(mpmath.mpf(float(h)) - w) <= RTOL_MPMATH * abs(w) + (n + 2) * SUBNORMAL_STEP
            assert close, f"have {h}, want {mpmath.nstr(w, 20)}"


@pytest.mark.parametrize("n", [2, 3.5, 64, 1000, 10**6])
def test_bon_law_with_atoms_down_to_1e_minus_300(n):
    """Atoms of 1e-300 beside O(1) masses, distinct and tied rewards."""
    log_probs = [math.log(1e-300), math.log1p(-1e-300 - 0.3 - 2e-300), math.log(0.3), math.log(2e-300)]
    for rewards in ([0, 1, 2, 3], [3, 1, 2, 0], [2, 0, 1, 2], [1, 1, 0, 1]):
        assert_matches_mpmath(log_probs, rewards, n)


@pytest.mark.parametrize("n", [2, 64, 10**6])
def test_bon_law_with_tied_atoms_below_the_float64_range(n):
    """Strings of mass e^-1000, e^-1001 and e^-760 (0 in float64's linear space) alone
    or tied, at the bottom, the middle and the top, beside O(1) masses: level sums fall
    back from linear space to logaddexp, and a top level of mass e^-760 keeps its BoN
    mass n e^-760 (not 0)."""
    log_probs = [-1000.0, math.log(0.3), -1001.0, math.log(0.7), -760.0]
    for rewards in ([0, 1, 0, 2, 1], [2, 0, 2, 1, 2], [1, 0, 1, 1, 2], [4, 0, 3, 1, 2], [0, 3, 1, 4, 2]):
        assert_matches_mpmath(log_probs, rewards, n, dps=500)  # F_le^n - F_lt^n cancels 435 digits


@pytest.mark.parametrize("n", [2, 100, 10**6])
def test_bon_law_with_level_masses_within_1e_minus_15_of_0_and_1(n):
    """A level of mass 1e-15 beside a level of mass 1 - 1e-15, in both orders."""
    log_probs = [math.log1p(-1e-15), math.log(1e-15)]
    assert_matches_mpmath(log_probs, [0, 1], n)
    assert_matches_mpmath(log_probs, [1, 0], n)
    three = [math.log1p(-2e-15), math.log(1e-15), math.log(1e-15)]
    assert_matches_mpmath(three, [1, 0, 2], n)


def test_bon_law_is_finite_where_it_underflows_in_linear_space():
    """With n = 10^6 the low levels' π_N underflow to 0 in float64, but log π_N is finite."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(12)
    log_probs = (logits - np.logaddexp.reduce(logits)).tolist()
    rewards = list(range(12))
    have = bonmath.bon_log_probs(np.array(log_probs), np.array(rewards, dtype=float), 10**6)
    assert np.all(np.isfinite(have)) and np.exp(have).min() == 0.0
    assert_matches_mpmath(log_probs, rewards, 10**6)


@given(
    st.lists(st.floats(-1100, 0), min_size=2, max_size=6),
    st.lists(st.integers(0, 2), min_size=6, max_size=6),
    st.sampled_from([2, 17, 1000, 10**6]),
)
def test_bon_law_matches_mpmath_on_random_extreme_supports(logits, rewards, n):
    """Random log-weights spanning 470 orders of magnitude (beyond float64's linear
    range), tied rewards, large n."""
    x = np.array(logits)
    log_probs = (x - np.logaddexp.reduce(x)).tolist()
    assert_matches_mpmath(log_probs, rewards[: len(log_probs)], n, dps=560)


@pytest.mark.parametrize("n", [2, 1000, 10**6])
@pytest.mark.parametrize("log_cdf_lt,log_mass", [(math.log(0.3), -690.0), (-1e-15, math.log(5e-16)), (-700.0, -700.0), (-600.0, -1e-200)])
def test_bon_log_ratio_from_cdf_matches_mpmath(n, log_cdf_lt, log_mass):
    """R_N = log[(a^n - b^n)/(a - b)] from per-sample (F_lt, q) stays accurate where the
    binomial sum overflows."""
    with mpmath.workdps(450):
        b = mpmath.exp(mpmath.mpf(log_cdf_lt))
        q = mpmath.exp(mpmath.mpf(log_mass))
        assert b + q <= 1, "the parameters must describe a distribution"
        want = mpmath.log((mpmath.power(b + q, n) - mpmath.power(b, n)) / q)
    have = bonmath.bon_log_ratio_from_cdf(log_cdf_lt, log_mass, n)
    assert relative_error(have, want) <= RTOL_MPMATH or abs(float(have) - float(want)) <= 1e-12


def test_reward_cdf_is_accurate_near_one():
    """log F_lt for a top level of mass 1e-15 is log(1 - 1e-15) to full relative precision."""
    log_probs = [math.log1p(-1e-15), math.log(1e-15)]
    lt, le = bonmath.reward_cdf(np.array(log_probs), [0.0, 1.0])
    with mpmath.workdps(50):
        p = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
        want = mpmath.log(p[0] / (p[0] + p[1]))
    assert relative_error(lt[1], want) < 1e-14
    assert le[1] == 0.0


@pytest.mark.parametrize("total,parts", [(0, 1), (0, 4), (5, 1), (3, 3), (6, 4), (4, 6)])
def test_count_vectors_are_every_composition_in_lexicographic_order(total, parts):
    """count_vectors(total, parts) lists each vector of `parts` non-negative integers with
    sum `total` exactly once, in lexicographic order (the oracle filters the product)."""
    expected = [list(c) for c in itertools.product(range(total + 1), repeat=parts) if sum(c) == total]
    table = count_vectors(total, parts)
    assert table.tolist() == expected
    assert len(table) == math.comb(total + parts - 1, parts - 1)
    assert not table.flags.writeable
