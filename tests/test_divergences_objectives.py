"""KL, entropy, win rate, the vBoN objective and bound, KL-RL and their optima."""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import ATOL_LOG, RTOL_EXACT
from hypothesis import given
from hypothesis import strategies as st

import bonmath
from bonmath.testing import exact_bon, exact_cdf, exact_win_rate, policies, supports


def mpf(fraction):
    return mpmath.mpf(fraction.numerator) / fraction.denominator


def mp_kl(p, q):
    """KL in mpmath from exact rationals."""
    with mpmath.workdps(50):
        total = mpmath.mpf(0)
        for pi, qi in zip(p, q):
            if pi == 0:
                continue
            if qi == 0:
                return mpmath.inf
            total += mpf(pi) * mpmath.log(mpf(pi / qi))
        return total


@given(supports(), supports())
def test_kl_divergence_matches_exact_sum(p, q):
    """KL(p||q) = Σ p log(p/q) with 0 log 0 = 0 and +inf where p > 0 = q."""
    size = min(len(p.weights), len(q.weights))
    p = bonmath.testing.Support(p.weights[:size] if sum(p.weights[:size]) else (1,) * size, p.rewards[:size])
    q = bonmath.testing.Support(q.weights[:size] if sum(q.weights[:size]) else (1,) * size, q.rewards[:size])
    want = mp_kl(p.probs, q.probs)
    have = bonmath.kl_divergence(p.ref_log_probs, q.ref_log_probs)
    if want == mpmath.inf:
        assert have == np.inf
    else:
        assert abs(have - float(want)) <= ATOL_LOG


@given(supports())
def test_entropy_matches_exact_sum(support):
    """H(p) = -Σ p log p, zero-mass strings contributing 0."""
    with mpmath.workdps(50):
        want = -sum(mpf(p) * mpmath.log(mpf(p)) for p in support.probs if p)
    assert abs(bonmath.entropy(support.ref_log_probs) - float(want)) <= ATOL_LOG


@given(supports(), st.integers(1, 12))
def test_win_rate_matches_double_sum(support, n):
    """W(π_N, π_ref) = P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')), by the exact double sum."""
    bon = exact_bon(support.probs, support.rewards, n)
    want = float(exact_win_rate(bon, support.probs, support.rewards))
    have = bonmath.win_rate(
        bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n), support.ref_log_probs, support.rewards_array
    )
    assert abs(have - want) <= 1e-12


@given(supports(), st.integers(1, 64))
def test_bon_win_rate_le_n_over_n_plus_1(support, n):
    """W(π_N, π_ref) <= N/(N+1), with equality ½ at N = 1 (docs/math.md)."""
    have = bonmath.win_rate(
        bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n), support.ref_log_probs, support.rewards_array
    )
    assert have <= n / (n + 1) + 1e-12
    if n == 1:
        assert abs(have - 0.5) <= 1e-12


@given(supports(max_size=8), st.floats(1.0, 1e4))
def test_kl_bon_le_log_n_minus_frac(support, n):
    """KL(π_N||π_ref) <= log N - (N-1)/N (Beirami et al. 2024, Theorem 1 of arXiv v1, Theorem 3.1 of the ICML 2025 version), ties included."""
    bon = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    assert bonmath.kl_divergence(bon, support.ref_log_probs) <= bonmath.bon_kl_upper_bound(n) + 1e-12


@pytest.mark.parametrize("n", [2, 8, 64])
def test_kl_bon_bound_is_nearly_tight_as_atoms_shrink(n):
    """The bound log N - (N-1)/N is the continuous limit: on k equally likely strings with
    distinct rewards, bound - KL shrinks towards 0 as k grows."""
    gaps = []
    for k in (10, 100, 1000, 10000):
        ref = np.full(k, -math.log(k))
        kl = bonmath.kl_divergence(bonmath.bon_log_probs(ref, np.arange(k), n), ref)
        gaps.append(bonmath.bon_kl_upper_bound(n) - kl)
    assert all(g > 0 for g in gaps)
    assert all(b < a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-3 * bonmath.bon_kl_upper_bound(n) + 1e-3


def test_kl_two_outcome_example():
    """Two equally likely strings, distinct rewards, N = 2: π_N = (1/4, 3/4), KL = 0.1308
    against the bound 0.1931; as N grows KL -> log 2 while the bound grows without limit."""
    ref = np.log([0.5, 0.5])
    bon = bonmath.bon_log_probs(ref, [0, 1], 2)
    np.testing.assert_allclose(np.exp(bon), [0.25, 0.75], rtol=RTOL_EXACT)
    want = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert abs(bonmath.kl_divergence(bon, ref) - want) <= 1e-15
    assert round(want, 4) == 0.1308 and round(bonmath.bon_kl_upper_bound(2), 4) == 0.1931
    big = 10**6
    kl_big = bonmath.kl_divergence(bonmath.bon_log_probs(ref, [0, 1], big), ref)
    assert abs(kl_big - math.log(2)) < 1e-5
    assert bonmath.bon_kl_upper_bound(big) > 12


@given(supports(), st.data(), st.floats(1.0, 50.0))
def test_vbon_objective_is_minus_reverse_kl_and_equals_reward_minus_kl(support, data, n):
    """J = -KL(π_θ||π_N) = E_θ[R_N] - KL(π_θ||π_ref) (vBoN, Amini et al. 2025, eq. 6)."""
    policy = data.draw(policies(len(support.weights)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = bonmath.vbon_objective(policy, ref, rewards, n)
    kl_ref = bonmath.kl_divergence(policy, ref)
    if np.isinf(kl_ref):
        assert have == -np.inf
        return
    ratio = bonmath.bon_log_ratio(ref, rewards, n)
    p = np.exp(policy)
    want = np.sum(p[p > 0] * ratio[p > 0]) - kl_ref
    assert abs(have - want) <= 1e-10


@given(supports(), st.data(), st.floats(1.0, 100.0))
def test_vbon_lower_bound_le_objective(support, data, n):
    """L = log N + (N-1) E_θ[log F_lt] - KL(π_θ||π_ref) <= J (vBoN, Amini et al. 2025)."""
    policy = data.draw(policies(len(support.weights)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    lower = bonmath.vbon_lower_bound(policy, ref, rewards, n)
    assert lower <= bonmath.vbon_objective(policy, ref, rewards, n) + 1e-12


@given(supports(), st.data())
def test_vbon_lower_bound_at_n_one_is_minus_kl(support, data):
    """At N = 1, L = -KL(π_θ||π_ref) exactly (no 0 · (-inf))."""
    policy = data.draw(policies(len(support.weights)))
    have = bonmath.vbon_lower_bound(policy, support.ref_log_probs, support.rewards_array, 1)
    assert have == -bonmath.kl_divergence(policy, support.ref_log_probs)


def test_vbon_lower_bound_is_minus_inf_with_mass_on_the_lowest_level():
    """L = -inf when π_θ puts mass where F_lt = 0 and N > 1, even a mass of e^-1000
    (0 in linear space)."""
    ref = np.log([0.5, 0.5])
    assert bonmath.vbon_lower_bound(ref, ref, [0, 1], 2) == -np.inf
    assert bonmath.vbon_lower_bound([-1000.0, 0.0], ref, [0, 1], 2) == -np.inf
    assert np.isfinite(bonmath.vbon_lower_bound([-np.inf, 0.0], ref, [0, 1], 2))


def test_kl_is_inf_where_p_has_mass_below_float_range_and_q_has_none():
    """KL(p||q) = +inf for p = (e^-1000, 1 - e^-1000) against q = (0, 1): the mass is
    positive although e^-1000 is 0 in float64; with p's first mass exactly 0 it is 0."""
    q = [-np.inf, 0.0]
    assert bonmath.kl_divergence([-1000.0, 0.0], q) == np.inf
    assert bonmath.kl_divergence([-np.inf, 0.0], q) == 0.0


@given(supports(zero_mass=False), st.floats(1.0, 30.0), st.sampled_from([np.exp, np.arctan, lambda r: 5 * r - 2]))
def test_vbon_objective_and_bound_are_invariant_to_increasing_reward_transforms(support, n, transform):
    """J and L depend on rewards only through their order."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    policy = bonmath.tilted_log_probs(ref, rewards, 1.0)
    for objective in (bonmath.vbon_objective, bonmath.vbon_lower_bound):
        want = objective(policy, ref, rewards, n)
        have = objective(policy, ref, transform(rewards), n)
        assert have == want or abs(have - want) <= ATOL_LOG


@given(supports(zero_mass=False), st.integers(2, 30), st.data())
def test_maximiser_of_lower_bound_is_ref_times_cdf_power(support, n, data):
    """argmax L = π_ref F_lt^(N-1)/Z, the KL-RL optimum with reward log F_lt and β = 1/(N-1),
    and (in general) not π_N: L at the optimum is log N + log Z and beats any other policy."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    if len(set(support.rewards)) < 2:
        return  # one level: L = -inf for every policy
    optimum = bonmath.vbon_bound_optimum(ref, rewards, n)
    lt, _ = bonmath.reward_cdf(ref, rewards)
    tilted = bonmath.tilted_log_probs(ref, lt, 1.0 / (n - 1))
    np.testing.assert_allclose(np.exp(optimum), np.exp(tilted), rtol=1e-12, atol=1e-300)
    with np.errstate(divide="ignore"):
        log_z = np.log(np.sum(np.exp(ref) * np.exp(lt) ** (n - 1)))
    best = bonmath.vbon_lower_bound(optimum, ref, rewards, n)
    assert abs(best - (math.log(n) + log_z)) <= 1e-10
    other = data.draw(policies(len(support.weights)))
    assert bonmath.vbon_lower_bound(other, ref, rewards, n) <= best + 1e-12


@given(supports(), st.data(), st.floats(0.05, 20.0))
def test_tilted_policy_maximises_kl_rl_with_value_beta_log_z(support, data, beta):
    """π_β = π_ref e^(r/β)/Z maximises E[r] - β KL(π||π_ref), with value β log Z."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    optimum = bonmath.tilted_log_probs(ref, rewards, beta)
    best = bonmath.kl_rl_objective(optimum, ref, rewards, beta)
    log_z = np.logaddexp.reduce(ref + rewards / beta)
    assert abs(best - beta * log_z) <= 1e-10 * max(1.0, abs(beta * log_z))
    other = data.draw(policies(len(support.weights)))
    assert bonmath.kl_rl_objective(other, ref, rewards, beta) <= best + 1e-10


@given(supports(), st.integers(1, 10))
def test_vbon_objective_is_zero_exactly_at_bon(support, n):
    """J(π_N) = 0 = max J."""
    bon = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    assert abs(bonmath.vbon_objective(bon, support.ref_log_probs, support.rewards_array, n)) <= 1e-12


def test_exact_cdf_oracle_is_consistent():
    """Sanity of the oracle used above: F_le - F_lt is the level mass."""
    lt, le = exact_cdf([Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)], [1, 1, 0])
    assert [b - a for a, b in zip(lt, le)] == [Fraction(3, 4), Fraction(3, 4), Fraction(1, 4)]
