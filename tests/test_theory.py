"""The wider Best-of-N theory (bonmath.theory): one test per claim, named after it.

Claims come from docs/math.md ("Related results") and the papers cited in each
docstring. Each law is checked against a brute-force oracle with exact rationals
on tiny hypothesis-generated supports with ties and zero-mass strings; limits are
checked by how fast the gap shrinks. Where a claim holds only in the continuous
limit, the test shows what is true on finite supports.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import ATOL_LOG, ATOL_LOG_FLOAT32, RTOL_EXACT, RTOL_FINITE_DIFFERENCE, RTOL_MPMATH
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import poisson

import bonmath
from bonmath.testing import brute_force_bon, exact_bon, policies, supports
from bonmath.theory import (
    beirami_kl_estimate,
    best_of_poisson_log_probs,
    bon_chi2_upper_bound,
    bon_expected_margin,
    bon_renyi_upper_bound,
    bon_win_rate_upper_bound,
    bonbon_beta,
    bonbon_c_for_kl,
    bonbon_kl,
    bonbon_margin,
    bonbon_tilt_c_for_kl,
    bonbon_tilt_log_probs,
    bonbon_win_rate,
    bond_divergences,
    bond_log_probs,
    chi2_divergence,
    expected_beirami_kl_estimate,
    regularized_bon_log_probs,
    released_exact_mode_optimum,
    renyi_divergence,
    soft_bon_log_probs,
)

"""Central finite differences (step 1e-6, float64) against autograd: truncation O(h²)
plus rounding O(eps/h) ~ 1e-10, relative to max(1, |derivative|); as in tests/test_torch.py."""

LOG2 = math.log(2.0)


def as_floats(fractions):
    return np.array([float(f) for f in fractions])


def as_mpf(fraction):
    return mpmath.mpf(fraction.numerator) / fraction.denominator


def uniform_support(k):
    """k equally likely strings with distinct rewards: the continuous limit as k → ∞."""
    return np.full(k, -math.log(k)), np.arange(float(k))


def kl(p, q):
    return float(bonmath.kl_divergence(p, q))


def top_level_mass(support):
    probs = support.probs
    top = max(r for p, r in zip(probs, support.rewards) if p > 0)
    return sum((p for p, r in zip(probs, support.rewards) if r == top), Fraction(0))


# ======================================================= Beirami et al. (2024)


def test_two_equally_likely_strings_kl_is_0_1308_against_bound_0_1931():
    """Two equally likely strings with distinct rewards, N = 2: π_N = (1/4, 3/4), KL = 0.1308
    against the bound 0.1931 (docs/math.md, "Divergences, win rate"; Beirami et al. 2024)."""
    ref, rewards = np.log([0.5, 0.5]), [0.0, 1.0]
    have = bonmath.bon_log_probs(ref, rewards, 2)
    np.testing.assert_allclose(np.exp(have), [0.25, 0.75], rtol=RTOL_EXACT)
    want_kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert abs(kl(have, ref) - want_kl) < ATOL_LOG and round(want_kl, 4) == 0.1308
    assert round(bonmath.bon_kl_upper_bound(2), 4) == 0.1931


def test_two_string_kl_tends_to_log_2_while_the_bound_grows_without_limit():
    """As N grows the two-string KL tends to log 2 (all mass on the top string) while
    log N - (N-1)/N grows without limit (Beirami et al. 2024: the bound can be arbitrarily loose)."""
    ref, rewards = np.log([0.5, 0.5]), [0.0, 1.0]
    gaps = [math.log(2) - kl(bonmath.bon_log_probs(ref, rewards, n), ref) for n in (2, 4, 8, 16, 32, 64)]
    assert all(0 < b < a for a, b in zip(gaps[:-1], gaps[1:-1]))
    assert abs(gaps[-1]) < ATOL_LOG  # 2^-64 (1 + log 2) + O(4^-64)
    bounds = [bonmath.bon_kl_upper_bound(n) for n in (2, 10**3, 10**6, 10**9)]
    assert all(b > a + 2 for a, b in zip(bounds[1:], bounds[2:])) and bounds[-1] > math.log(10**9) - 1


def test_kl_bound_is_tight_as_atoms_shrink():
    """log N - (N-1)/N - KL(π_N || π_ref) → 0 as the atoms shrink: uniform support of size k
    with distinct rewards, k growing (Beirami et al. 2024, tight in the continuous limit).
    The gap shrinks at least 10x per decade of k (it is O(log k / k²))."""
    for n in (2, 8):
        gaps = []
        for k in (10, 100, 1000, 10_000):
            ref, rewards = uniform_support(k)
            gaps.append(bonmath.bon_kl_upper_bound(n) - kl(bonmath.bon_log_probs(ref, rewards, n), ref))
        assert all(g > 0 for g in gaps)
        assert all(b < a / 10 for a, b in zip(gaps, gaps[1:])), gaps


def test_beirami_estimate_is_the_exact_kl_of_an_atom_on_top_of_a_continuum():
    """KL̂_n(ε) is KL(π_N || π_ref) for an atom of mass ε at the top reward and an atomless
    rest (Beirami et al. 2024, Section 4): m equal atoms below, m → ∞, and the gap shrinks
    at least 50x per decade of m (it is O(1/m²))."""
    eps = 0.3
    for n in (2, 8):
        gaps = []
        for m in (10, 100, 1000, 10_000):
            ref = np.log(np.concatenate([np.full(m, (1 - eps) / m), [eps]]))
            rewards = np.arange(m + 1.0)
            have = kl(bonmath.bon_log_probs(ref, rewards, n), ref)
            gaps.append(float(beirami_kl_estimate(eps, n)) - have)
        assert all(g > 0 for g in gaps)
        assert all(b < a / 50 for a, b in zip(gaps, gaps[1:])), gaps


@pytest.mark.parametrize("n", [1, 2, 7.5, 1000])
def test_beirami_estimate_matches_mpmath_and_decreases_from_the_bound_to_zero(n):
    """KL̂_n(ε) against mpmath at 400 digits for ε from 1e-300 to 1; it decreases in ε from
    log n - (n-1)/n (ε → 0) to 0 (ε = 1)."""
    eps = np.concatenate([[1e-300, 1e-20, 1e-8], np.linspace(0.001, 1.0, 200)])
    have = beirami_kl_estimate(eps, n)
    with mpmath.workdps(400):  # 1 - (1 - 1e-300)^n needs 300+ digits
        for e, h in zip(eps, have):
            e = mpmath.mpf(e)
            stay = (1 - e) ** n
            continuous = stay * (mpmath.log(n) + (n - 1) * mpmath.log(1 - e) - mpmath.mpf(n - 1) / n) if e < 1 else 0
            want = continuous + (1 - stay) * mpmath.log((1 - stay) / e)
            assert abs(h - float(want)) <= RTOL_MPMATH * abs(float(want))
    assert np.all(np.diff(have) <= 0)
    assert have[-1] == 0.0
    assert abs(have[0] - bonmath.bon_kl_upper_bound(n)) < ATOL_LOG


@given(supports(), st.sampled_from([1, 2, 3, 5.5, 20, 200]))
def test_kl_le_beirami_estimate_at_top_level_mass_le_bound(support, n):
    """KL(π_N || π_ref) <= KL̂_n(q_top) <= log N - (N-1)/N on tied supports, q_top the reference
    mass of the top reward level: the level law is a coarse-graining of "atom q_top on top of a
    continuum" and KL shrinks under coarse-graining (data processing; refines Beirami et al.)."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    exact = kl(bonmath.bon_log_probs(ref, rewards, n), ref)
    refined = float(beirami_kl_estimate(float(top_level_mass(support)), n))
    assert exact <= refined + ATOL_LOG
    assert refined <= bonmath.bon_kl_upper_bound(n) + ATOL_LOG


@given(supports(), st.sampled_from([1, 2, 3, 5.5, 20, 200]))
def test_expected_beirami_estimate_upper_bounds_the_kl_on_tied_supports(support, n):
    """E_{π_N}[KL̂_n(π_ref(y))] >= KL(π_N || π_ref) (and <= the bound) on every tied support tried.

    Beirami et al. state this without proof (Conjecture 4.4 in the ICML 2025 version, for
    distinct rewards); here ties are included. 20,000 random and adversarially optimised
    supports found no counterexample."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    exact = kl(bonmath.bon_log_probs(ref, rewards, n), ref)
    estimate = float(expected_beirami_kl_estimate(ref, rewards, n))
    assert exact <= estimate + ATOL_LOG
    assert estimate <= bonmath.bon_kl_upper_bound(n) + ATOL_LOG


@given(supports(), st.integers(1, 30))
def test_bon_win_rate_le_n_over_n_plus_1(support, n):
    """W(π_N, π_ref) <= N/(N+1), with W = 1/2 at N = 1 (Beirami et al. 2024; ties count one half)."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = float(bonmath.win_rate(bonmath.bon_log_probs(ref, rewards, n), ref, rewards))
    assert have <= bon_win_rate_upper_bound(n) + RTOL_EXACT
    if n == 1:
        assert abs(have - 0.5) < RTOL_EXACT


def test_bon_win_rate_reaches_n_over_n_plus_1_in_the_continuous_limit():
    """On a uniform support of size k the BoN win rate is n/(n+1) - c_n/k²: the gap to the
    bound shrinks 100x per decade of k (Beirami et al. 2024, tight without atoms)."""
    for n in (2, 8):
        gaps = []
        for k in (10, 100, 1000):
            ref, rewards = uniform_support(k)
            bon = bonmath.bon_log_probs(ref, rewards, n)
            gaps.append(bon_win_rate_upper_bound(n) - float(bonmath.win_rate(bon, ref, rewards)))
        assert all(g > 0 for g in gaps)
        assert all(b < a / 90 for a, b in zip(gaps, gaps[1:])), gaps


# ======================================================= BOND (Sessa et al. 2024)


@given(supports(max_size=5), st.integers(1, 4))
def test_bond_correction_factor_form_equals_brute_force_bon(support, n):
    """π_ref F_le^(N-1) Σ_i (F_lt/F_le)^(i-1) is the BoN law with ties (BOND, eq. 4)."""
    want = as_floats(brute_force_bon(support.probs, support.rewards, n))
    have = np.exp(bond_log_probs(support.ref_log_probs, support.rewards_array, n))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@given(supports(), st.integers(1, 300))
def test_bond_correction_factor_form_equals_the_core_bon_law(support, n):
    """BOND's term-by-term sum and the core's geometric-series evaluation give one law."""
    have = bond_log_probs(support.ref_log_probs, support.rewards_array, n)
    want = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    np.testing.assert_array_equal(have == -np.inf, want == -np.inf)
    finite = np.isfinite(want)
    np.testing.assert_allclose(have[finite], want[finite], atol=ATOL_LOG, rtol=0)


@given(supports(max_size=5), st.integers(1, 3), st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_bond_divergences_equal_exact_kls(support, n, beta):
    """forward = KL(π_N || π_θ), backward = KL(π_θ || π_N), Jeffreys = (1-β) fwd + β bwd
    (BOND, Section 4.2), with π_N from brute force and π_θ of full support."""
    bon = as_floats(brute_force_bon(support.probs, support.rewards, n))
    policy = np.log(np.arange(1.0, len(bon) + 1) / sum(range(1, len(bon) + 1)))
    theta = np.exp(policy)
    on = bon > 0
    forward = float(np.sum(bon[on] * np.log(bon[on] / theta[on])))
    backward = float(np.sum(theta * np.log(theta / bon))) if on.all() else math.inf
    have = bond_divergences(policy, support.ref_log_probs, support.rewards_array, n, backward_weight=beta)
    assert abs(float(have.forward) - forward) < ATOL_LOG
    assert float(have.backward) == backward or abs(float(have.backward) - backward) < ATOL_LOG
    jeffreys = forward if beta == 0 else backward if beta == 1 else (1 - beta) * forward + beta * backward
    assert float(have.jeffreys) == jeffreys or abs(float(have.jeffreys) - jeffreys) < ATOL_LOG


@pytest.mark.torch
@pytest.mark.parametrize("which", ["forward", "backward", "jeffreys"])
@pytest.mark.parametrize("n", [2, 3.5])
def test_bond_divergence_gradients_match_central_finite_differences(which, n):
    """Exact gradients of BOND's divergences in the policy and the reference logits: autograd
    against central differences along 3 random directions (Vieira's gradient test), float64."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    rewards = torch.tensor([0.0, 1.0, 1.0, 2.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    theta = torch.randn(7, generator=generator, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(7, generator=generator, dtype=torch.float64, requires_grad=True)

    def f(theta, ref):
        policy, reference = torch.log_softmax(theta, 0), torch.log_softmax(ref, 0)
        return getattr(bond_divergences(policy, reference, rewards, n), which)

    f(theta, ref).backward()
    for _ in range(3):
        d_theta = torch.randn(7, generator=generator, dtype=torch.float64)
        d_ref = torch.randn(7, generator=generator, dtype=torch.float64)
        have = float(theta.grad @ d_theta + ref.grad @ d_ref)
        step = 1e-6
        with torch.no_grad():
            plus = f(theta + step * d_theta, ref + step * d_ref)
            minus = f(theta - step * d_theta, ref - step * d_ref)
        want = float((plus - minus) / (2 * step))
        assert abs(have - want) <= RTOL_FINITE_DIFFERENCE * max(1.0, abs(want)), (have, want)


@given(supports(), st.floats(0.2, 6.0), st.floats(0.2, 6.0))
def test_iterated_bon_composes_for_real_n(support, a, b):
    """BOND's iterated distillation: BoN_a of BoN_b is BoN_{ab}, for real a, b > 0 too (the
    level CDF F becomes (F^b)^a); the core tests integers."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = bonmath.bon_log_probs(bonmath.bon_log_probs(ref, rewards, b), rewards, a)
    want = bonmath.bon_log_probs(ref, rewards, a * b)
    np.testing.assert_allclose(np.exp(have), np.exp(want), rtol=1e-11, atol=1e-300)


# ======================================================= BoNBoN (Gui, Gârbacea, Veitch 2024)


@given(supports(zero_mass=False), st.integers(2, 12))
def test_mid_cdf_tilt_wins_at_least_as_often_as_bon_at_matched_kl(support, n):
    """π_ref e^(c F_mid)/Z is win-rate optimal at its KL (BoNBoN, Theorem 1; exact on tied
    supports because W(π, π_ref) = E_π[F_mid]): at BoN's KL it wins at least as often as BoN."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    if len(set(support.rewards)) < 2:
        return  # one level: every policy of the form π_ref f(r) is π_ref
    bon = bonmath.bon_log_probs(ref, rewards, n)
    c = bonbon_tilt_c_for_kl(ref, rewards, kl(bon, ref))
    tilt = bonbon_tilt_log_probs(ref, rewards, c)
    assert abs(kl(tilt, ref) - kl(bon, ref)) < ATOL_LOG
    assert float(bonmath.win_rate(tilt, ref, rewards)) >= float(bonmath.win_rate(bon, ref, rewards)) - ATOL_LOG


@given(supports(zero_mass=False), policies(6, zero_mass=False), st.integers(0, 5))
def test_mid_cdf_tilt_is_the_exact_win_rate_frontier(support, policy, zeros):
    """No policy beats the F_mid tilt's win rate at equal KL: W - KL/c is maximised by the tilt
    (KL-RL with reward F_mid). Beyond the tilt's largest KL, -log q_top, nothing beats the
    top level's win rate."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    policy = policy[: len(ref)].copy()
    policy[: min(zeros, len(ref) - 1)] = -np.inf  # some policies miss strings
    policy = policy - np.logaddexp.reduce(policy)
    if len(set(support.rewards)) < 2:
        return
    have = float(bonmath.win_rate(policy, ref, rewards))
    distance = max(kl(policy, ref), 0.0)  # KL(π_ref || π_ref) can round to -1e-16
    if distance >= -math.log(top_level_mass(support)) - 1e-12:
        lt, le = bonmath.reward_cdf(ref, rewards)
        assert have <= float(np.max(np.exp(lt) + np.exp(le)) / 2) + ATOL_LOG
        return
    tilt = bonbon_tilt_log_probs(ref, rewards, bonbon_tilt_c_for_kl(ref, rewards, distance))
    assert float(bonmath.win_rate(tilt, ref, rewards)) >= have - ATOL_LOG


def test_lt_cdf_tilt_is_not_win_rate_optimal_with_ties():
    """With ties the tilt must use the mid-CDF: tilting by F_lt (the continuous-limit
    formula read literally) wins less often at matched KL on a tied support."""
    ref, rewards = np.log([0.2, 0.3, 0.1, 0.4]), np.array([0.0, 1.0, 1.0, 2.0])
    lt, _ = bonmath.reward_cdf(ref, rewards)
    lt_tilt = bonmath.tilted_log_probs(ref, np.exp(lt), beta=1 / 3.0)
    c = bonbon_tilt_c_for_kl(ref, rewards, kl(lt_tilt, ref))
    mid_tilt = bonbon_tilt_log_probs(ref, rewards, c)
    gain = float(bonmath.win_rate(mid_tilt, ref, rewards) - bonmath.win_rate(lt_tilt, ref, rewards))
    assert gain > 1e-4, gain


def test_bonbon_continuous_curves_match_mpmath():
    """W(c) = 1/(1-e^-c) - 1/c and KL(c) = c W(c) - log((e^c - 1)/c) (BoNBoN, Section 3),
    to RTOL_MPMATH from c = 1e-8 to 1e6 (series near 0, no cancellation elsewhere)."""
    cs = np.concatenate([[1e-8, 1e-4, 0.0499, 0.05, 0.0501], np.geomspace(0.06, 1e6, 60)])
    have_w, have_kl = bonbon_win_rate(cs), bonbon_kl(cs)
    with mpmath.workdps(60):
        for c, hw, hk in zip(cs, have_w, have_kl):
            c = mpmath.mpf(c)
            w = 1 / (1 - mpmath.exp(-c)) - 1 / c
            k = c * w - mpmath.log(mpmath.expm1(c) / c)
            assert abs(hw - float(w)) <= RTOL_MPMATH * float(w)
            assert abs(hk - float(k)) <= RTOL_MPMATH * float(k)
    assert bonbon_win_rate(0.0) == 0.5 and bonbon_kl(0.0) == 0.0


def test_bonbon_curves_are_the_limit_of_the_tilt_on_uniform_supports():
    """The discrete mid-CDF tilt's (KL, W) on a uniform support of size k tends to (KL(c), W(c))
    as k → ∞ (BoNBoN, Section 3): the gap shrinks at least 50x per decade (it is O(1/k²))."""
    for c in (0.5, 3.0, 20.0):
        gaps = []
        for k in (10, 100, 1000):
            ref, rewards = uniform_support(k)
            tilt = bonbon_tilt_log_probs(ref, rewards, c)
            gaps.append(max(abs(kl(tilt, ref) - bonbon_kl(c)),
                            abs(float(bonmath.win_rate(tilt, ref, rewards)) - bonbon_win_rate(c))))
        assert all(b < a / 50 for a, b in zip(gaps, gaps[1:])), gaps


@pytest.mark.parametrize("target", [0.0, 1e-10, 1e-3, 0.1931, 1.0, 5.0, 30.0])
def test_bonbon_c_for_kl_inverts_the_kl_curve(target):
    """bonbon_c_for_kl solves KL(c) = target (KL is increasing, from 0 to ∞)."""
    c = bonbon_c_for_kl(target)
    assert abs(bonbon_kl(c) - target) <= RTOL_EXACT * max(target, 1e-300) + 1e-300


def test_bon_is_within_0_01_of_the_optimal_win_rate_in_the_continuous_limit():
    """"BoN is within 0.01 of the optimal win rate at matched KL" (BoNBoN, Section 3): in the
    continuous limit, W(c) at KL(c) = log n - (n-1)/n exceeds n/(n+1) by at most 0.0095, for
    real n from 1 to 10^6 (largest near n = 1.78; 0.0092 at n = 2)."""
    ns = np.concatenate([np.linspace(1.0, 4.0, 121), np.geomspace(4.0, 1e6, 120)])
    gaps = np.array([bonbon_win_rate(bonbon_c_for_kl(bonmath.bon_kl_upper_bound(n))) - n / (n + 1) for n in ns])
    assert np.all(gaps >= -RTOL_EXACT)
    assert gaps.max() < 0.01
    assert 0.0094 < gaps.max() < 0.0095 and 1.7 < ns[gaps.argmax()] < 1.9


def test_bon_is_within_0_01_of_optimal_on_a_large_uniform_support():
    """The same claim on an exact large support (k = 4000 equally likely strings, distinct
    rewards): the exact gap is in [0, 0.01) and within 1e-5 of the continuous-limit gap."""
    ref, rewards = uniform_support(4000)
    for n in (2, 4, 16, 64):
        bon = bonmath.bon_log_probs(ref, rewards, n)
        tilt = bonbon_tilt_log_probs(ref, rewards, bonbon_tilt_c_for_kl(ref, rewards, kl(bon, ref)))
        gap = float(bonmath.win_rate(tilt, ref, rewards) - bonmath.win_rate(bon, ref, rewards))
        continuous = bonbon_win_rate(bonbon_c_for_kl(bonmath.bon_kl_upper_bound(n))) - n / (n + 1)
        assert 0 <= gap < 0.01 and abs(gap - continuous) < 1e-5, (n, gap, continuous)


def test_bon_can_be_more_than_0_01_from_optimal_on_a_tied_finite_support():
    """The 0.01 claim is a continuous-limit fact, not a finite-support one: with reference
    masses (1, 1, 1, 14, 3)/20 on five reward levels and n = 2, the optimal tilt at BoN's KL
    wins 0.0110 more often than BoN."""
    masses = [1, 1, 1, 14, 3]
    ref, rewards = np.log(np.array(masses) / 20), np.arange(5.0)
    bon = bonmath.bon_log_probs(ref, rewards, 2)
    tilt = bonbon_tilt_log_probs(ref, rewards, bonbon_tilt_c_for_kl(ref, rewards, kl(bon, ref)))
    gap = float(bonmath.win_rate(tilt, ref, rewards) - bonmath.win_rate(bon, ref, rewards))
    # independently, in mpmath: π_2 = F_le^2 - F_lt^2 per string (distinct rewards), the tilt
    # q e^{c F_mid}/Z with c solving KL(tilt||q) = KL(π_2||q), and W(π) = Σ π F_mid
    with mpmath.workdps(40):
        q = [mpmath.mpf(m) / 20 for m in masses]
        lt = [sum(q[:i], mpmath.mpf(0)) for i in range(5)]
        le = [a + b for a, b in zip(lt, q)]
        mid = [(a + b) / 2 for a, b in zip(lt, le)]

        def kl_to_q(p):
            return sum(x * mpmath.log(x / y) for x, y in zip(p, q))

        def tilted(c):
            w = [y * mpmath.exp(c * f) for y, f in zip(q, mid)]
            return [x / sum(w) for x in w]

        bon_mp = [b**2 - a**2 for a, b in zip(lt, le)]
        c = mpmath.findroot(lambda c: kl_to_q(tilted(c)) - kl_to_q(bon_mp), 2)
        want = sum(x * f for x, f in zip(tilted(c), mid)) - sum(x * f for x, f in zip(bon_mp, mid))
    assert gap == pytest.approx(float(want), rel=RTOL_MPMATH)
    assert gap > 0.01 and round(float(want), 4) == 0.0110  # the docstring's number


def brute_force_margin(probs, rewards, n):
    """E[R_n(best) - R_n(worst)] by enumerating n-tuples; R_n = log(exact π_n/π_ref) per level."""
    law = exact_bon(probs, rewards, n)
    log_ratio = {r: math.log(b / p) for p, r, b in zip(probs, rewards, law) if p > 0}
    total = 0.0
    for draws in itertools.product(range(len(probs)), repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        if weight:
            drawn = [rewards[i] for i in draws]
            total += float(weight) * (log_ratio[max(drawn)] - log_ratio[min(drawn)])
    return total


@given(supports(max_size=5), st.integers(1, 4))
def test_bon_expected_margin_equals_brute_force(support, n):
    """The exact best-vs-worst BoN log-ratio margin on a tied support (the discrete value of
    the quantity BoNBoN sets β from) equals enumeration of the n draws."""
    want = brute_force_margin(support.probs, support.rewards, n)
    have = float(bon_expected_margin(support.ref_log_probs, support.rewards_array, n))
    assert abs(have - want) < ATOL_LOG


def test_bon_margin_tends_to_n_minus_1_times_harmonic_and_sets_beta_star():
    """E[R_n(best) - R_n(worst)] → (n-1) H_{n-1} as atoms shrink (BoNBoN, Section 4), and
    β* = 1/(2 (n-1) H_{n-1}): the gap shrinks 8x per decade of k (it is O(1/k))."""
    for n in (2, 5):
        gaps = []
        for k in (10, 100, 1000, 10_000):
            ref, rewards = uniform_support(k)
            gaps.append(abs(float(bon_expected_margin(ref, rewards, n)) - bonbon_margin(n)))
        assert all(b < a / 8 for a, b in zip(gaps, gaps[1:])), gaps
    assert bonbon_margin(2) == 1.0 and bonbon_margin(4) == 3 * (1 + 1 / 2 + 1 / 3)
    assert bonbon_beta(2) == 0.5 and bonbon_beta(4) == 1 / (2 * 3 * (1 + 1 / 2 + 1 / 3))
    with mpmath.workdps(30):
        assert abs(bonbon_margin(3.5) - float(2.5 * mpmath.harmonic(2.5))) < RTOL_EXACT


# ======================================================= Soft best-of-n (Verdun et al. 2025)


def brute_force_soft_bon(probs, weights, n):
    """Soft BoN by enumerating all n-tuples: draw i is returned w.p. w(y_i)/Σ_j w(y_j). Exact
    for rational probabilities and weights."""
    law = [Fraction(0)] * len(probs)
    for draws in itertools.product(range(len(probs)), repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        if weight:
            total = sum(weights[i] for i in draws)
            for i in draws:
                law[i] += weight * Fraction(weights[i]) / total
    return law


@given(supports(max_size=5), st.integers(1, 3))
def test_soft_bon_equals_brute_force_with_exact_rationals(support, n):
    """The exact soft-BoN law equals enumeration of the n draws (Verdun et al. 2025's sampler).
    λ = 1/log 2 makes every weight e^(r/λ) = 2^r an integer, so the oracle is exact."""
    want = as_floats(brute_force_soft_bon(support.probs, [2**r for r in support.rewards], n))
    have = np.exp(soft_bon_log_probs(support.ref_log_probs, support.rewards_array, n, 1 / LOG2))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@given(supports(), st.floats(0.01, 100.0))
def test_soft_bon_with_one_draw_is_the_reference(support, lam):
    """n = 1: the only draw is returned (Verdun et al. 2025)."""
    have = soft_bon_log_probs(support.ref_log_probs, support.rewards_array, 1, lam)
    np.testing.assert_array_equal(have, support.ref_log_probs)


@given(supports(), st.integers(1, 6))
def test_soft_bon_cold_limit_is_bon_with_uniform_ties(support, n):
    """λ → 0 gives Best-of-n with ties broken uniformly among the tied maxima (tied draws
    keep equal softmax weights; Verdun et al. 2025). At λ = 1/60 with integer rewards the
    difference is O(n e^-60), below float64 resolution."""
    have = soft_bon_log_probs(support.ref_log_probs, support.rewards_array, n, 1 / 60)
    want = as_floats(brute_force_bon(support.probs, support.rewards, n)) if len(support.probs) ** n <= 10**4 \
        else as_floats(exact_bon(support.probs, support.rewards, n))
    np.testing.assert_allclose(np.exp(have), want, rtol=RTOL_EXACT, atol=0)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_soft_bon_tends_to_the_tilt_at_rate_one_over_n_squared(lam):
    """n → ∞ gives π_ref e^(r/λ)/Z (Verdun et al. 2025 prove O(1/n) in KL). Exactly, the KL is
    Var_{π_λ}(w)/(2 E_ref[w]²) / n² + O(1/n³), w = e^(r/λ): n² KL converges to that constant,
    its error halving with each doubling of n."""
    with np.errstate(divide="ignore"):
        ref = np.log(np.array([3, 1, 2, 4, 0, 2.0]) / 12)
    rewards = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 0.0])
    tilt = bonmath.tilted_log_probs(ref, rewards, lam)
    p, w = np.exp(ref), np.exp(rewards / lam)
    scale = np.sum(p * w)
    limit = 0.5 * (np.sum(np.exp(tilt) * (w / scale) ** 2) - np.sum(np.exp(tilt) * w / scale) ** 2)
    ns = [8, 16, 32, 64, 128, 256]
    kls = [kl(soft_bon_log_probs(ref, rewards, n, lam), tilt) for n in ns]
    assert all(b < a for a, b in zip(kls, kls[1:]))
    errors = [abs(n * n * d - limit) for n, d in zip(ns, kls)]
    assert all(b < 0.6 * a for a, b in zip(errors[2:], errors[3:])), errors


@given(supports(), st.integers(2, 8), st.floats(0.05, 20.0))
def test_soft_bon_normalises_and_is_proportional_to_the_reference_within_a_level(support, n, lam):
    """The law sums to 1, and soft BoN (like BoN) is ∝ π_ref within a reward level."""
    have = soft_bon_log_probs(support.ref_log_probs, support.rewards_array, n, lam)
    assert abs(np.logaddexp.reduce(have)) < ATOL_LOG
    positive = np.isfinite(support.ref_log_probs)
    ratio = have[positive] - support.ref_log_probs[positive]
    for r in set(support.rewards_array[positive]):
        level = ratio[support.rewards_array[positive] == r]
        assert np.ptp(level) < ATOL_LOG


# ======================================================= Best-of-Poisson


@given(supports(), st.floats(0.01, 20.0))
def test_best_of_poisson_equals_the_poisson_mixture_of_bon_laws(support, mu):
    """N - 1 ~ Poisson(μ): π_μ = Σ_k Poisson(k; μ) π_{k+1}, truncated where the Poisson tail
    is below 1e-17 (the truncation bound is the absolute tolerance)."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    top = next(t for t in itertools.count(int(mu)) if poisson.sf(t, mu) < 1e-17)
    ks = np.arange(top + 1)
    laws = np.exp([bonmath.bon_log_probs(ref, rewards, k + 1) for k in ks])
    want = poisson.pmf(ks, mu) @ laws
    have = np.exp(best_of_poisson_log_probs(ref, rewards, mu))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=poisson.sf(top, mu) + 1e-300)


@pytest.mark.parametrize("mu", [0.5, 3.0, 40.0])
def test_best_of_poisson_has_quantile_density_one_plus_mu_u_times_exp(mu):
    """In the continuous limit the Best-of-Poisson ratio at quantile u is (1 + μu) e^(μ(u-1))
    (docs/math.md, "Related results"). On a uniform support of size k the exact ratio of string j
    is the mean of that density over [(j-1)/k, j/k], within max|G'''|/(24 k²) of its midpoint value."""
    for k in (10, 1000):
        ref, rewards = uniform_support(k)
        have = np.exp(best_of_poisson_log_probs(ref, rewards, mu) - ref)
        u = (np.arange(k) + 0.5) / k
        density = (1 + mu * u) * np.exp(mu * (u - 1))
        bound = (3 * mu**2 + mu**3) / (24 * k**2)  # G(u) = u e^(μ(u-1)): |G'''| <= (3μ² + μ³)
        assert np.max(np.abs(have - density)) <= bound * (1 + 1e-9)


def mp_poisson_log_probs(log_probs, rewards, mu, dps=420):
    """log π_μ by the naive formula π/q (G(F_le) - G(F_lt)), G(F) = F e^(μ(F-1)), in mpmath."""
    with mpmath.workdps(dps):
        probs = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
        total = mpmath.fsum(probs)
        probs = [p / total for p in probs]
        out = []
        for p, r in zip(probs, rewards):
            lt = mpmath.fsum(w for w, s in zip(probs, rewards) if s < r)
            q = mpmath.fsum(w for w, s in zip(probs, rewards) if s == r)
            le = lt + q
            gain = le * mpmath.exp(mu * (le - 1)) - lt * mpmath.exp(mu * (lt - 1))
            out.append(float(mpmath.log(p / q * gain)))
        return np.array(out)


@pytest.mark.parametrize("mu", [1e-6, 1.0, 1e3])
def test_best_of_poisson_is_accurate_for_tiny_atoms_and_large_mu(mu):
    """The positive-terms form e^(μ(b-1)) (e^(μq) + b expm1(μq)/q) keeps log π_μ accurate next
    to atoms of 1e-300 and for large μ, against mpmath at 420 digits."""
    log_probs = np.log([0.3, 1e-300, 0.2, 0.1, 1e-200])
    log_probs = log_probs - np.logaddexp.reduce(log_probs)
    rewards = [0.0, 1.0, 2.0, 2.0, 3.0]
    have = best_of_poisson_log_probs(log_probs, rewards, mu)
    want = mp_poisson_log_probs(log_probs, rewards, mu)
    np.testing.assert_allclose(have, want, rtol=RTOL_MPMATH)


# ======================================================= Regularised BoN


@given(supports(max_size=5), st.integers(1, 4), st.sampled_from([-1.0, -0.3, 0.0, 0.5, 2.0]))
def test_regularized_bon_is_bon_of_the_score_by_brute_force(support, n, beta):
    """BoN ranked by r + β log π_ref is an exact law with ties: enumeration of the n draws,
    ranking each by its score, breaking score ties uniformly."""
    positive = [w > 0 for w in support.weights]
    scores = [r + beta * lp if ok else -math.inf
              for r, lp, ok in zip(support.rewards, support.ref_log_probs, positive)]
    want = as_floats(brute_force_bon(support.probs, scores, n))
    have = np.exp(regularized_bon_log_probs(support.ref_log_probs, support.rewards_array, n, beta))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


def test_regularized_bon_ties_strings_with_different_rewards():
    """The score can tie strings of different rewards: with β = 1/log 2, π_ref = (1/2, 1/4, 1/4)
    and r = (1, 2, 0) the scores are (0, 0, -2); the law is BoN over the score levels,
    ∝ π_ref within the tied level (exact rationals)."""
    probs = [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)]
    want = as_floats(brute_force_bon(probs, [0, 0, -2], 3))
    have = np.exp(regularized_bon_log_probs(np.log([0.5, 0.25, 0.25]), [1.0, 2.0, 0.0], 3, 1 / LOG2))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT)
    assert abs(have[0] / have[1] - 2.0) < RTOL_EXACT


@pytest.mark.parametrize("beta", [1e-10, 1e10])
def test_regularized_bon_of_float32_tensors_ranks_by_the_float64_score(beta):
    """With float32 tensors the score r + β log π_ref is formed in float64, as for numpy: in float32,
    1 + 1e-10 log 0.3 = 1 + 1e-10 log 0.25 and 1e10 log 0.25 + 1 = 1e10 log 0.25 + 2 were false ties, a
    different law (log-probs off by 0.4). The float32 law is the float64 one to ATOL_LOG_FLOAT32."""
    torch = pytest.importorskip("torch")
    with np.errstate(divide="ignore"):
        ref = np.log(np.float32([0.3, 0.2, 0.0, 0.25, 0.25])).astype(np.float64)
    rewards = np.array([1.0, 0.0, 5.0, 1.0, 2.0])
    want = regularized_bon_log_probs(ref, rewards, 4.0, beta, normalize=True)
    have = regularized_bon_log_probs(torch.tensor(ref, dtype=torch.float32), torch.tensor(rewards, dtype=torch.float32),
                                     4.0, beta)
    assert have.dtype == torch.float32
    np.testing.assert_allclose(have.numpy(), want, rtol=0, atol=ATOL_LOG_FLOAT32)


# ======================================================= divergence bounds


@given(supports(max_size=5), st.lists(st.integers(0, 5), min_size=5, max_size=5))
def test_chi2_and_renyi_divergences_equal_exact_sums(support, weights):
    """χ²(p||q) = Σ p²/q - 1 in exact rationals; D_α = log(Σ p^α q^(1-α))/(α-1) in mpmath;
    D_1 = KL, D_2 = log(1 + χ²), D_∞ = log max p/q."""
    q = support.probs
    k = len(q)
    weights = weights[:k]
    if sum(weights) == 0:
        weights[0] = 1
    p = [Fraction(w, sum(weights)) for w in weights]
    with np.errstate(divide="ignore"):
        p_log = np.log(as_floats(p))
    q_log = support.ref_log_probs
    missing = any(a > 0 and b == 0 for a, b in zip(p, q))
    chi2 = float(chi2_divergence(p_log, q_log))
    if missing:
        assert chi2 == math.inf
        return
    want_chi2 = sum((a * a / b for a, b in zip(p, q) if a > 0), Fraction(0)) - 1
    assert abs(chi2 - float(want_chi2)) <= RTOL_EXACT * max(1.0, float(want_chi2))
    for alpha in (0.5, 2.0, 3.0):
        with mpmath.workdps(50):
            total = mpmath.fsum(as_mpf(a) ** alpha * as_mpf(b) ** (1 - alpha) for a, b in zip(p, q) if a > 0)
            want = float(mpmath.log(total) / (alpha - 1))
        assert abs(float(renyi_divergence(p_log, q_log, alpha)) - want) < ATOL_LOG
    assert abs(float(renyi_divergence(p_log, q_log, 1.0)) - kl(p_log, q_log)) < ATOL_LOG
    assert abs(float(renyi_divergence(p_log, q_log, 2.0)) - math.log1p(chi2)) < ATOL_LOG
    want_inf = max(math.log(a / b) for a, b in zip(p, q) if a > 0)
    assert abs(float(renyi_divergence(p_log, q_log, math.inf)) - want_inf) < ATOL_LOG


@given(supports(), st.sampled_from([1, 2, 3, 4.5, 10, 100]))
def test_bon_chi2_le_n_minus_1_squared_over_2n_minus_1(support, n):
    """χ²(π_N || π_ref) <= (N-1)²/(2N-1) on tied supports (docs/math.md, "Related results";
    the continuous case is the worst by data processing)."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = float(chi2_divergence(bonmath.bon_log_probs(ref, rewards, n), ref))
    assert have <= bon_chi2_upper_bound(n) * (1 + RTOL_EXACT) + RTOL_EXACT


@given(supports(), st.sampled_from([1, 2, 3, 4.5, 10, 100]), st.sampled_from([0.3, 0.5, 1.0, 2.0, 3.0, math.inf]))
def test_bon_renyi_le_continuous_value(support, n, alpha):
    """D_α(π_N || π_ref) <= (1/(α-1)) log(n^α/(α(n-1)+1)) (D_∞ <= log n, D_1 <= log n - (n-1)/n)
    on tied supports: Rényi divergences shrink under the level coarse-graining."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = float(renyi_divergence(bonmath.bon_log_probs(ref, rewards, n), ref, alpha))
    assert have <= bon_renyi_upper_bound(n, alpha) + ATOL_LOG


@pytest.mark.parametrize("n", [2, 5, 30])
def test_bon_divergence_bounds_are_attained_in_the_continuous_limit(n):
    """The χ² and Rényi bounds are the continuous values: on uniform supports of growing size
    the gaps shrink at least 10x per decade; E_ref[(n u^(n-1))^α] = n^α/(α(n-1)+1) by quadrature."""
    for alpha in (0.5, 2.0, 3.0):
        with mpmath.workdps(30):
            integral = mpmath.quad(lambda u, alpha=alpha: (n * u ** (n - 1)) ** alpha, [0, 1])
        assert abs(float(integral) - n**alpha / (alpha * (n - 1) + 1)) <= RTOL_MPMATH * float(integral)
    gaps = []
    for k in (10, 100, 1000, 10_000):
        ref, rewards = uniform_support(k)
        bon = bonmath.bon_log_probs(ref, rewards, n)
        gaps.append(max(
            bon_chi2_upper_bound(n) - float(chi2_divergence(bon, ref)),
            *(bon_renyi_upper_bound(n, a) - float(renyi_divergence(bon, ref, a)) for a in (0.5, 3.0)),
        ))
    assert all(g >= 0 for g in gaps) and all(b < a / 10 for a, b in zip(gaps, gaps[1:])), gaps
    assert abs(bon_renyi_upper_bound(n, 2.0) - math.log1p(bon_chi2_upper_bound(n))) < ATOL_LOG
    assert abs(bon_renyi_upper_bound(n, 1 + 1e-7) - bonmath.bon_kl_upper_bound(n)) < 1e-6


# ======================================================= the released "exact" mode


@given(supports(), st.sampled_from([2, 3, 4.5, 10]), policies(6, zero_mass=False))
def test_released_exact_mode_optimum_maximises_its_objective(support, n, policy):
    """With reward R_n/n and β = 1/(n-1) the KL-RL optimum is π_ref^(1/n) π_n^((n-1)/n)/Z
    (docs/math.md, "vBoN"): it equals that closed form and no policy scores higher."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = released_exact_mode_optimum(ref, rewards, n)
    bon = bonmath.bon_log_probs(ref, rewards, n)
    closed = np.where(np.isfinite(ref), ref / n + (n - 1) / n * bon, -np.inf)
    closed = closed - np.logaddexp.reduce(closed)
    np.testing.assert_allclose(np.exp(have), np.exp(closed), rtol=1e-11, atol=1e-300)
    reward = np.where(np.isfinite(ref), bonmath.bon_log_ratio(ref, rewards, n) / n, 0.0)
    beta = 1 / (n - 1)
    best = float(bonmath.kl_rl_objective(have, ref, reward, beta))
    policy = policy[: len(ref)] - np.logaddexp.reduce(policy[: len(ref)])
    other = float(bonmath.kl_rl_objective(policy, ref, reward, beta))
    assert other <= best + ATOL_LOG


@given(supports(zero_mass=False), st.sampled_from([2, 3, 4.5, 10]))
def test_released_exact_mode_reaches_bon_only_with_beta_one_over_n(support, n):
    """The released mode's optimum is not π_n: KL(optimum || π_n) > 0 with β = 1/(n-1) whenever
    π_n ≠ π_ref, and = 0 with β = 1/n (docs/math.md, "vBoN")."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    bon = bonmath.bon_log_probs(ref, rewards, n)
    released = kl(released_exact_mode_optimum(ref, rewards, n), bon)
    fixed = kl(released_exact_mode_optimum(ref, rewards, n, beta=1 / n), bon)
    assert fixed < ATOL_LOG
    if kl(bon, ref) > 1e-6:
        assert released > 0
        # the distance from π_n shrinks towards β = 1/n and grows past it
        betas = [1 / (n - 1), 1 / (n - 0.5), 1 / n, 1 / (n + 1)]
        dists = [kl(released_exact_mode_optimum(ref, rewards, n, beta=b), bon) for b in betas]
        assert dists[0] > dists[1] > dists[2] < dists[3]


def test_released_exact_mode_two_string_example():
    """Two equally likely strings, n = 2: the released mode converges to (0.366, 0.634), a KL of
    0.0330 from π_2 = (1/4, 3/4)."""
    ref, rewards = np.log([0.5, 0.5]), [0.0, 1.0]
    have = np.exp(released_exact_mode_optimum(ref, rewards, 2))
    want = np.sqrt([0.5 * 0.25, 0.5 * 0.75])
    np.testing.assert_allclose(have, want / want.sum(), rtol=RTOL_EXACT)
    with mpmath.workdps(40):  # p = (1, √3)/(1 + √3) against π_2 = (1/4, 3/4)
        p1, p2 = 1 / (1 + mpmath.sqrt(3)), mpmath.sqrt(3) / (1 + mpmath.sqrt(3))
        want = p1 * mpmath.log(4 * p1) + p2 * mpmath.log(4 * p2 / 3)
    assert kl(np.log(have), bonmath.bon_log_probs(ref, rewards, 2)) == pytest.approx(float(want), rel=RTOL_MPMATH)
    assert round(float(want), 4) == 0.0330 and round(float(p1), 3) == 0.366  # the docstring's numbers


# ======================================================= numpy and torch, validation


THEORY_LAWS = {
    "bond_log_probs": lambda ref, r: bond_log_probs(ref, r, 4),
    "soft_bon_log_probs": lambda ref, r: soft_bon_log_probs(ref, r, 4, 0.7),
    "best_of_poisson_log_probs": lambda ref, r: best_of_poisson_log_probs(ref, r, 2.5),
    "bonbon_tilt_log_probs": lambda ref, r: bonbon_tilt_log_probs(ref, r, 3.0),
    "regularized_bon_log_probs": lambda ref, r: regularized_bon_log_probs(ref, r, 3, 0.5),
    "released_exact_mode_optimum": lambda ref, r: released_exact_mode_optimum(ref, r, 3),
    "expected_beirami_kl_estimate": lambda ref, r: expected_beirami_kl_estimate(ref, r, 3),
    "bon_expected_margin": lambda ref, r: bon_expected_margin(ref, r, 3),
    "chi2_divergence": lambda ref, r: chi2_divergence(bonmath.bon_log_probs(ref, r, 3), ref),
    "renyi_divergence": lambda ref, r: renyi_divergence(bonmath.bon_log_probs(ref, r, 3), ref, 0.5),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", THEORY_LAWS)
def test_theory_numpy_and_torch_agree_and_torch_gradients_are_finite(name):
    """Each formula is written once: a batch of tied supports with a zero-mass string gives the
    same numbers in numpy and torch, and finite torch gradients."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 6))
    logits[0, 2] = -np.inf
    ref = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    rewards = rng.integers(0, 3, size=(2, 6)).astype(float)
    want = THEORY_LAWS[name](ref, rewards)
    theta = torch.tensor(logits, requires_grad=True)
    have = THEORY_LAWS[name](torch.log_softmax(theta, -1), torch.as_tensor(rewards))
    np.testing.assert_allclose(have.detach().numpy(), want, rtol=1e-13, atol=1e-13)
    torch.where(torch.isfinite(have), have, 0.0).sum().backward()
    assert torch.isfinite(theta.grad).all()
    low = THEORY_LAWS[name](torch.log_softmax(theta.detach().float(), -1), torch.as_tensor(rewards))
    assert low.dtype == torch.float32


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: beirami_kl_estimate(0.0, 2), "eps"),
        (lambda: beirami_kl_estimate(0.5, 0.5), "n"),
        (lambda: bond_log_probs([0.0], [1.0], 2.5), "n"),
        (lambda: bond_divergences([0.0], [0.0], [1.0], 2, backward_weight=1.5), "backward_weight"),
        (lambda: bonbon_tilt_log_probs([0.0], [1.0], -1.0), "c"),
        (lambda: bonbon_c_for_kl(-1.0), "kl"),
        (lambda: bonbon_tilt_c_for_kl(np.log([0.5, 0.5]), [0, 1], 1.0), "kl"),
        (lambda: bonbon_beta(1), "n"),
        (lambda: soft_bon_log_probs([0.0], [1.0], 2, 0.0), "temperature"),
        (lambda: soft_bon_log_probs(np.log([0.5, 0.5]), [0.0, np.inf], 2, 1.0), "rewards"),
        (lambda: soft_bon_log_probs(np.full(8, -np.log(8)), np.arange(8.0), 60, 1.0, max_terms=1000), "max_terms"),
        (lambda: best_of_poisson_log_probs([0.0], [1.0], -0.1), "mu"),
        (lambda: regularized_bon_log_probs([0.0], [1.0], 2, math.nan), "log_ref_weight"),
        (lambda: renyi_divergence([0.0], [0.0], 0.0), "alpha"),
        (lambda: released_exact_mode_optimum([0.0], [1.0], 1), "n"),
        (lambda: chi2_divergence(np.log([0.5, 0.6]), [0.0, -np.inf]), "p_log_probs"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, name):
    """Bad input raises ValueError naming the argument (bonmath.validation's convention)."""
    with pytest.raises(ValueError, match=name):
        call()
