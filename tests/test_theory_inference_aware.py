"""BoN-distillation and inference-aware alignment closed forms: one test per claim.

J-BOND's anchor reward (Sessa et al. 2024), InfAlign's calibrate-and-transform RL
(Balashankar et al. 2024) and InferenceTimePessimism (Huang et al. 2025). Each exact
formula is checked against a brute-force oracle in exact rationals (enumerating anchor
pairs or n-tuples of draws) on hypothesis-generated supports with tied rewards and
zero-mass strings; a claim that fails is shown false by a counterexample computed
independently of the code under test.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import (
    ATOL_LOG,
    ATOL_LOG_FLOAT32,
    ATOL_NORMALISATION,
    RTOL_EXACT,
    RTOL_FINITE_DIFFERENCE,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import poisson

import bonmath
from bonmath.testing import (
    brute_force_bon,
    exact_bon,
    exact_cdf,
    exact_win_rate,
    policies,
    supports,
)
from bonmath.theory import (
    calibrated_reward,
    infalign_best_t,
    infalign_beta_for_kl,
    infalign_optimum_log_probs,
    inference_time_win_rate,
    jbond_anchor_reward,
    jbond_expected_reward,
    pessimism_log_probs,
    pessimism_sampler_log_probs,
    true_reward_curves,
)

LOG16 = math.log(16)


def as_floats(fractions):
    return np.array([float(f) for f in fractions])


def log_of(probs):
    with np.errstate(divide="ignore"):
        return np.log(as_floats(probs))


def positive_levels(support):
    return len({r for w, r in zip(support.weights, support.rewards) if w > 0})


# ======================================================= J-BOND (Sessa et al. 2024)


def test_jbond_anchor_reward_is_minus_log_16_below_both_anchor_samples():
    """r_J(y) = -log 16 when y is worse than both anchor samples, else 0 (BOND, Section 5);
    "worse" is r(y) < r(y') in the main text and r(y) <= r(y') in the appendix."""
    rewards = np.array([0.0, 1.0, 1.0, 2.0, 3.0])
    anchors = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 2.0], [2.0, 3.0], [1.0, 2.0]])
    np.testing.assert_array_equal(jbond_anchor_reward(rewards, anchors), [-LOG16, 0, -LOG16, 0, 0])
    np.testing.assert_array_equal(jbond_anchor_reward(rewards, anchors, worse="le"), [-LOG16, -LOG16, -LOG16, -LOG16, 0])


@pytest.mark.parametrize("worse", ["lt", "le"])
@given(support=supports())
def test_jbond_expected_reward_equals_brute_force_over_anchor_pairs(worse, support):
    """E[r_J(y)] = -log 16 · P(r(Y') > r(y))² ("lt") or -log 16 · P(r(Y') >= r(y))² ("le"):
    the sum over every pair of anchor draws, in exact rationals (ties and zero-mass strings)."""
    probs, rewards = support.probs, support.rewards
    below = (lambda a, b: a < b) if worse == "lt" else (lambda a, b: a <= b)
    want = [
        sum((p1 * p2 for (p1, r1), (p2, r2) in itertools.product(zip(probs, rewards), repeat=2)
             if below(r, r1) and below(r, r2)), Fraction(0))
        for r in rewards
    ]
    have = jbond_expected_reward(support.ref_log_probs, support.rewards_array, worse=worse)
    np.testing.assert_allclose(-have / LOG16, as_floats(want), rtol=RTOL_EXACT, atol=0)


def test_jbond_expected_reward_meets_log_cdf_only_at_the_median_and_near_0_113():
    """How well J-BOND's proxy approximates BOND's reward log F_le: with u = F_le(y),
    E[r_J(y)] - log u = f(u) = -log 16 (1-u)² - log u ("lt" convention, any support). f vanishes
    at u = 1/2 (the constant's purpose: -log 16 / 4 = log 1/2) and at u ≈ 0.1127; in between the
    proxy is below log u by up to 0.1744 nats (at u = (1 - sqrt(1 - 1/(2 log 2)))/2 ≈ 0.2361),
    above the median it is above by up to 0.1148 (u ≈ 0.7639), and as u → 0 it stays at
    -log 16 while log u → -∞. Checked on 10^4 equally likely strings (u = j/k)."""
    k = 10_000
    ref, rewards = np.full(k, -math.log(k)), np.arange(float(k))
    u = np.arange(1, k + 1) / k

    def f(x):
        return -LOG16 * (1 - x) ** 2 - np.log(x)

    proxy, log_cdf = jbond_expected_reward(ref, rewards), bonmath.reward_cdf(ref, rewards)[1]
    gap = proxy - log_cdf
    np.testing.assert_allclose(gap, f(u), rtol=0, atol=ATOL_LOG)
    assert abs(f(0.5)) < RTOL_EXACT and abs(brentq(f, 0.05, 0.3) - 0.11274) < 1e-5
    lowest = (1 - math.sqrt(1 - 1 / (2 * math.log(2)))) / 2
    assert abs(u[np.argmin(gap)] - lowest) < 1e-4 and abs(gap.min() + 0.17443) < 1e-5
    assert abs(u[np.argmax(np.where(u > 0.5, gap, -np.inf))] - (1 - lowest)) < 1e-4
    assert abs(gap[u > 0.5].max() - 0.11477) < 1e-5
    assert proxy.min() >= -LOG16 and abs(log_cdf[0] + math.log(k)) < ATOL_LOG  # only log u is unbounded


# ======================================================= InfAlign (Balashankar et al. 2024)


@given(support=supports(), data=st.data())
def test_mid_calibrated_reward_averages_to_the_win_rate_against_the_reference(support, data):
    """C_mid = (F_lt + F_le)/2 gives E_π[C] = W(π, π_ref) with ties counting ½, for any π; C_lt
    and C_le are F_lt and F_le (InfAlign's calibration with its three tie conventions)."""
    lt, le = exact_cdf(support.probs, support.rewards)
    ref, rewards = support.ref_log_probs, support.rewards_array
    np.testing.assert_allclose(calibrated_reward(ref, rewards, convention="lt"), as_floats(lt), rtol=RTOL_EXACT, atol=0)
    np.testing.assert_allclose(calibrated_reward(ref, rewards, convention="le"), as_floats(le), rtol=RTOL_EXACT, atol=0)
    weights = data.draw(st.lists(st.integers(0, 5), min_size=len(lt), max_size=len(lt)).filter(any))
    policy = [Fraction(w, sum(weights)) for w in weights]
    want = exact_win_rate(policy, support.probs, support.rewards)
    have = float(np.dot(as_floats(policy), calibrated_reward(ref, rewards)))
    assert abs(have - float(want)) <= RTOL_EXACT


@pytest.mark.parametrize("transform, t", [("log", None), ("identity", None), ("exp", 3.0), ("exp", -2.5), ("exp", 40.0)])
@given(support=supports(), beta=st.sampled_from([0.05, 0.5, 2.0]))
def test_ctrl_optimum_is_the_reference_tilted_by_the_transformed_calibrated_reward(transform, t, support, beta):
    """π ∝ π_ref exp(Φ(C)/β) with Φ = log C, C or (e^(tC) - 1)/t (InfAlign, CTRL step 2), C the
    mid-CDF: against the formula evaluated in mpmath at 50 digits from the exact C."""
    lt, le = exact_cdf(support.probs, support.rewards)
    if transform == "log":
        assume(any(p > 0 and a + b > 0 for p, a, b in zip(support.probs, lt, le)))
    with mpmath.workdps(50):
        def phi(c):
            c = mpmath.mpf(c.numerator) / c.denominator
            if transform == "log":
                return mpmath.log(c) if c > 0 else -mpmath.inf
            return c if transform == "identity" else mpmath.expm1(t * c) / t
        terms = [mpmath.mpf(p.numerator) / p.denominator * mpmath.exp(phi((a + b) / 2) / beta)
                 for p, a, b in zip(support.probs, lt, le)]
        want = [float(x / mpmath.fsum(terms)) for x in terms]
    have = np.exp(infalign_optimum_log_probs(support.ref_log_probs, support.rewards_array, beta,
                                             transform=transform, t=t if t is not None else 1.0))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@given(support=supports(), n=st.sampled_from([2, 3, 5.5, 16, 1000]))
def test_log_transform_with_beta_one_over_n_minus_1_is_the_vbon_bound_optimum_with_lt_cdf(support, n):
    """Φ = log C with β = 1/(n-1) gives π_ref C^(n-1)/Z: exactly vBoN's bound optimum
    π_ref F_lt^(n-1)/Z when C = F_lt (InfAlign's log transform recovers BoN distillation)."""
    assume(any(w > 0 and r > min(r2 for w2, r2 in zip(support.weights, support.rewards) if w2 > 0)
               for w, r in zip(support.weights, support.rewards)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = infalign_optimum_log_probs(ref, rewards, 1 / (n - 1), transform="log", convention="lt")
    want = bonmath.vbon_bound_optimum(ref, rewards, n)
    np.testing.assert_array_equal(have == -np.inf, want == -np.inf)
    finite = np.isfinite(want)
    np.testing.assert_allclose(have[finite], want[finite], atol=ATOL_LOG, rtol=0)


def test_log_transform_with_mid_or_le_cdf_is_not_the_vbon_bound_optimum():
    """With C = F_mid or F_le the log-transform optimum differs from vBoN's: two equally likely
    strings, rewards 0 < 1, n = 2: vBoN's optimum is (0, 1) (F_lt = 0 at the bottom), the mid
    one (1/4, 3/4) and the le one (1/3, 2/3)."""
    ref, rewards = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    np.testing.assert_allclose(np.exp(bonmath.vbon_bound_optimum(ref, rewards, 2)), [0, 1], atol=0)
    for convention, want in (("lt", [0, 1]), ("mid", [0.25, 0.75]), ("le", [1 / 3, 2 / 3])):
        have = np.exp(infalign_optimum_log_probs(ref, rewards, 1.0, transform="log", convention=convention))
        np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@pytest.mark.parametrize("procedure", ["best", "worst"])
@given(support=supports(max_size=4), data=st.data(), n=st.integers(1, 4))
def test_inference_time_win_rate_equals_brute_force_over_n_tuples(procedure, support, data, n):
    """W(T_n(π), T_n(π_ref)), T_n the max (or min) of n draws with ties broken uniformly and
    tied comparisons counting ½ (InfAlign, Section 2): both decoded laws by enumerating every
    n-tuple of draws, in exact rationals, for any policy π."""
    size = len(support.probs)
    weights = data.draw(st.lists(st.integers(0, 5), min_size=size, max_size=size).filter(any))
    policy = [Fraction(w, sum(weights)) for w in weights]
    scores = support.rewards if procedure == "best" else [-r for r in support.rewards]
    want = exact_win_rate(brute_force_bon(policy, scores, n), brute_force_bon(support.probs, scores, n), support.rewards)
    have = inference_time_win_rate(log_of(policy), support.ref_log_probs, support.rewards_array, n, procedure=procedure)
    assert abs(float(have) - float(want)) <= RTOL_EXACT


def test_infalign_best_t_is_positive_for_bon_and_negative_for_worst_of_n_near_the_continuous_limit():
    """InfAlign: exponential transforms with t > 0 win for best-of-n, t < 0 for worst-of-n
    (the authors' summary of Section 5). On 200 equally likely strings with distinct rewards,
    for n in {2, 4, 8} and KL budgets 0.25 and 1 nat, the best t has that sign, and the best
    t of the wrong sign wins strictly less often."""
    k = 200
    ref, rewards = np.full(k, -math.log(k)), np.arange(float(k))
    for n, kl in itertools.product((2, 4, 8), (0.25, 1.0)):
        best = infalign_best_t(ref, rewards, n, kl)
        worst = infalign_best_t(ref, rewards, n, kl, procedure="worst")
        assert best.t > 0 and worst.t < 0, (n, kl, best, worst)
        wrong_sign_best = infalign_best_t(ref, rewards, n, kl, t_range=(-64, -1e-9))
        wrong_sign_worst = infalign_best_t(ref, rewards, n, kl, procedure="worst", t_range=(1e-9, 64))
        assert wrong_sign_best.win_rate < best.win_rate and wrong_sign_worst.win_rate < worst.win_rate


@settings(max_examples=20)  # four searches over t per example; the dev profile's 400 take ~10 minutes
@given(support=supports(min_size=3, max_size=6, num_rewards=4), n=st.sampled_from([2, 3, 8]),
       fraction=st.sampled_from([0.05, 0.3, 0.6, 0.9]))
def test_infalign_t_of_the_claimed_sign_is_best_on_tied_supports(support, n, fraction):
    """On tied finite supports with at least three reward levels, for KL budgets from 5% to 90%
    of the largest attainable, no t < 0 beats the best t > 0 for best-of-n, and no t > 0
    beats the best t < 0 for worst-of-n (InfAlign's claim, tested beyond the continuous case)."""
    assume(positive_levels(support) >= 3)
    ref, rewards = support.ref_log_probs, support.rewards_array
    top = max(r for w, r in zip(support.weights, support.rewards) if w > 0)
    q_top = float(sum(p for p, r in zip(support.probs, support.rewards) if r == top))
    kl = -fraction * math.log(q_top)
    for procedure, good, bad in (("best", (1e-9, 64), (-64, -1e-9)), ("worst", (-64, -1e-9), (1e-9, 64))):
        good_side = infalign_best_t(ref, rewards, n, kl, procedure=procedure, t_range=good).win_rate
        bad_side = infalign_best_t(ref, rewards, n, kl, procedure=procedure, t_range=bad).win_rate
        assert bad_side <= good_side + RTOL_EXACT, (procedure, bad_side, good_side)


def test_infalign_best_t_beats_a_dense_grid_and_meets_the_kl_budget():
    """The search returns a t at least as good as every point of a 201-point grid of t in
    [-64, 64], and β(t) puts the optimum exactly at the KL budget (Brent's method)."""
    ref = np.log(np.array([3, 1, 2, 4, 2, 3, 1.0]) / 16)
    rewards = np.array([0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0])
    for procedure in ("best", "worst"):
        best = infalign_best_t(ref, rewards, 4, 0.4, procedure=procedure)
        policy = infalign_optimum_log_probs(ref, rewards, best.beta, t=best.t)
        assert abs(float(bonmath.kl_divergence(policy, ref)) - 0.4) < RTOL_EXACT
        assert abs(float(inference_time_win_rate(policy, ref, rewards, 4, procedure=procedure)) - best.win_rate) < RTOL_EXACT
        grid = []
        for t in np.linspace(-64, 64, 201):
            beta = infalign_beta_for_kl(ref, rewards, 0.4, t=t)
            tilt = infalign_optimum_log_probs(ref, rewards, beta, t=t)
            grid.append(float(inference_time_win_rate(tilt, ref, rewards, 4, procedure=procedure)))
        assert best.win_rate >= max(grid) - RTOL_EXACT


# ======================================================= InferenceTimePessimism (Huang et al. 2025)


def empirical_threshold(rewards, beta):
    """λ̂ with (1/n) Σ max(0, (r_i - λ̂)/β) = 1: the top j draws above it, the rest at or below."""
    n, ordered = len(rewards), sorted(rewards, reverse=True)
    for j in range(1, n + 1):
        lam = (sum(ordered[:j]) - n * beta) / j
        if lam < ordered[j - 1] and (j == n or lam >= ordered[j]):
            return lam
    raise AssertionError("no threshold")


def brute_force_pessimism(probs, rewards, n, beta, reward_bound=None, fallback="candidate"):
    """The rejection sampler run on every n-tuple of draws, in exact rationals."""
    law = [Fraction(0)] * len(probs)
    for draws in itertools.product(range(len(probs)), repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        if weight == 0:
            continue
        lam = empirical_threshold([rewards[i] for i in draws], beta)
        w = [max(Fraction(0), (rewards[i] - lam) / beta) for i in draws]
        envelope = max(w) if reward_bound is None else (reward_bound - lam) / beta
        not_yet = weight
        for i, wi in zip(draws, w):
            accept = min(Fraction(1), wi / envelope)
            law[i] += not_yet * accept
            not_yet *= 1 - accept
        for j, p in enumerate(probs):
            law[j] += not_yet * (Fraction(draws.count(j), n) if fallback == "candidate" else p)
    return law


@pytest.mark.parametrize("reward_bound, fallback", [(None, "candidate"), (3, "candidate"), (4, "reference")])
@given(support=supports(max_size=5), n=st.integers(1, 4), beta=st.sampled_from([Fraction(1, 4), Fraction(1), Fraction(3)]))
def test_pessimism_sampler_law_equals_the_brute_force_rejection_sampler(reward_bound, fallback, support, n, beta):
    """The exact law of InferenceTimePessimism's sampler (n draws, empirical λ̂, acceptance
    min(1, w/M), fallback) equals running it on every n-tuple of draws, in exact rationals;
    M is the largest weight or (R - λ̂)/β (Huang et al. 2025; closed form: bonmath)."""
    assume(len(support.probs) ** n <= 625)
    want = brute_force_pessimism(support.probs, support.rewards, n, beta, reward_bound, fallback)
    have = pessimism_sampler_log_probs(support.ref_log_probs, support.rewards_array, n, float(beta),
                                       reward_bound=reward_bound, fallback=fallback)
    np.testing.assert_allclose(np.exp(have), as_floats(want), rtol=RTOL_EXACT, atol=0)


def exact_pessimism_limit(probs, rewards, beta):
    """π_β = π_ref max(0, (r - λ)/β) with E_ref[max(0, (r - λ)/β)] = 1, λ found in exact
    rationals by trying every reward level as the lowest one kept."""
    values = sorted({r for p, r in zip(probs, rewards) if p > 0})
    for i, lowest in enumerate(values):
        kept = [(p, r) for p, r in zip(probs, rewards) if r >= lowest]
        lam = (sum(p * r for p, r in kept) - beta) / sum(p for p, _ in kept)
        if lam < lowest and (i == 0 or lam >= values[i - 1]):
            break
    want = [p * max(Fraction(0), (Fraction(r) - lam) / beta) for p, r in zip(probs, rewards)]
    assert sum(want) == 1
    return want


@pytest.mark.parametrize("reward_bound, fallback", [(None, "candidate"), (6, "reference")])
@pytest.mark.parametrize("beta", [Fraction(1, 10**17), Fraction(1, 10**300), Fraction(10**300)])
def test_pessimism_sampler_law_is_exact_for_extreme_chi2_coefficients(beta, reward_bound, fallback):
    """For β down to 1e-300 and up to 1e300 the sampler's law still equals the brute-force rejection sampler in
    exact rationals (ties, a zero-mass string of the highest reward): the drawn top level's excess n β/c was
    rounded away next to its reward (β = 1e-17: no mass at all, or only the top level's). float32 tensors give
    the same law to ATOL_LOG_FLOAT32 (β = 1e300 is inf in float32)."""
    probs = [Fraction(3, 10), Fraction(2, 10), Fraction(0), Fraction(1, 4), Fraction(1, 4)]
    rewards = [1, 0, 5, 1, 2]
    want = brute_force_pessimism(probs, rewards, 3, beta, reward_bound, fallback)
    with np.errstate(divide="ignore"):
        ref_log_probs, want_log_probs = np.log(as_floats(probs)), np.log(as_floats(want))
    have = pessimism_sampler_log_probs(ref_log_probs, np.array(rewards, float), 3, float(beta),
                                       reward_bound=reward_bound, fallback=fallback)
    np.testing.assert_allclose(np.exp(have), as_floats(want), rtol=RTOL_EXACT, atol=0)
    torch = pytest.importorskip("torch")
    have32 = pessimism_sampler_log_probs(torch.tensor(ref_log_probs, dtype=torch.float32),
                                         torch.tensor(rewards, dtype=torch.float32), 3, float(beta),
                                         reward_bound=reward_bound, fallback=fallback)
    assert have32.dtype == torch.float32
    np.testing.assert_allclose(have32.numpy(), want_log_probs, rtol=0, atol=ATOL_LOG_FLOAT32)


@given(support=supports(), beta=st.sampled_from([Fraction(1, 8), Fraction(1), Fraction(5)]))
def test_pessimism_limit_is_reference_times_relu_with_the_normalising_threshold(support, beta):
    """π_β = π_ref max(0, (r - λ)/β) with E_ref[max(0, (r - λ)/β)] = 1 (exact rationals)."""
    want = exact_pessimism_limit(support.probs, support.rewards, beta)
    have = pessimism_log_probs(support.ref_log_probs, support.rewards_array, float(beta))
    np.testing.assert_allclose(np.exp(have), as_floats(want), rtol=RTOL_EXACT, atol=0)


@pytest.mark.parametrize("beta", [Fraction(1, 10**17), Fraction(1, 10**40), Fraction(1, 10**300), Fraction(10**300)])
def test_pessimism_limit_is_exact_for_extreme_chi2_coefficients(beta):
    """For β down to 1e-300 the limit is π_ref on the top reward level with mass (here two tied strings, below
    a zero-mass string of higher reward), and for β = 1e300 it is π_ref, as the exact rationals say: the top
    level's weight (r - λ)/β = 1/q was lost next to the reward (r - λ rounded to 0: NaN everywhere). float32
    tensors (where β = 1e40 is inf and 1/q was lost below β = 1e-8) give the same law to float32 precision."""
    probs = [Fraction(3, 10), Fraction(2, 10), Fraction(0), Fraction(1, 4), Fraction(1, 4)]
    rewards = [1, 0, 5, 2, 2]
    want = exact_pessimism_limit(probs, rewards, beta)
    with np.errstate(divide="ignore"):
        ref_log_probs = np.log(as_floats(probs))
    have = pessimism_log_probs(ref_log_probs, np.array(rewards, float), float(beta))
    np.testing.assert_allclose(np.exp(have), as_floats(want), rtol=RTOL_EXACT, atol=0)
    torch = pytest.importorskip("torch")
    for beta32 in (float(beta), 1e-10, 1e40):
        have32 = pessimism_log_probs(torch.tensor(ref_log_probs, dtype=torch.float32),
                                     torch.tensor(rewards, dtype=torch.float32), beta32)
        want64 = pessimism_log_probs(np.float32(ref_log_probs), np.array(rewards, float), beta32, normalize=True)
        assert have32.dtype == torch.float32
        np.testing.assert_allclose(have32.numpy(), want64, rtol=0, atol=ATOL_LOG_FLOAT32)


@given(support=supports(), data=st.data(), beta=st.sampled_from([0.1, 1.0, 4.0]))
def test_pessimism_limit_maximises_the_chi2_regularised_reward(support, data, beta):
    """π_β maximises E_π[r] - (β/2) χ²(π || π_ref) over all policies π << π_ref (the population
    problem InferenceTimePessimism solves): no random policy scores higher."""
    ref, rewards = support.ref_log_probs, support.rewards_array

    def objective(log_probs):
        return float(np.dot(np.exp(log_probs), rewards) - beta / 2 * bonmath.theory.chi2_divergence(log_probs, ref))

    best = objective(pessimism_log_probs(ref, rewards, beta))
    other = data.draw(policies(len(rewards)))
    other = np.where(np.isfinite(ref), other, -np.inf)
    assume(np.isfinite(other).any())
    assert objective(other - np.logaddexp.reduce(other)) <= best + RTOL_EXACT


@given(support=supports())
def test_pessimism_sampler_with_one_draw_is_the_reference(support):
    """n = 1: λ̂ = r - β, the weight is 1 and the draw is returned (Huang et al. 2025)."""
    have = pessimism_sampler_log_probs(support.ref_log_probs, support.rewards_array, 1, 0.7)
    np.testing.assert_array_equal(have, support.ref_log_probs)


def test_pessimism_sampler_tends_to_its_population_limit():
    """As n grows the sampler's law tends to π_ref max(0, (r - λ)/β), at rate O(1/n): on three tied
    levels the total-variation distance halves with each doubling of n (ratio > 1.9), to below
    1e-3 at n = 256."""
    ref = np.log(np.array([2, 1, 3, 1, 1.0]) / 8)
    rewards = np.array([0.0, 1.0, 1.0, 2.0, 0.0])
    limit = np.exp(pessimism_log_probs(ref, rewards, 1.0))
    tv = [0.5 * np.abs(np.exp(pessimism_sampler_log_probs(ref, rewards, n, 1.0)) - limit).sum()
          for n in (16, 32, 64, 128, 256)]
    assert all(b < a / 1.9 for a, b in zip(tv, tv[1:])), tv
    assert tv[-1] < 1e-3


# Reward hacking: a proxy that ranks a rare bad string (true reward -2) above everything.
HACK_PROBS = [Fraction(3, 10), Fraction(3, 10), Fraction(2, 10), Fraction(15, 100), Fraction(5, 100)]
HACK_PROXY = [0, 1, 2, 3, 4]
HACK_TRUE = [0, 1, 2, 3, -2]


def expected(law, values):
    return sum((p * v for p, v in zip(law, values)), Fraction(0))


def test_bon_true_reward_rises_then_falls_on_the_hacked_proxy():
    """Best-of-N over-optimises the proxy: E_{BoN_N(proxy)}[r_true] rises from 1.05 (N = 1) to
    its peak at N = 3, falls below the reference's value from N = 9 on and tends to -2 (exact
    rationals, BoN's closed form with ties; Huang et al. 2025 prove BoN hacks for large N)."""
    values = [expected(exact_bon(HACK_PROBS, HACK_PROXY, n), HACK_TRUE) for n in range(1, 13)]
    assert values[0] == Fraction(21, 20)
    assert values[0] < values[1] < values[2] and all(b < a for a, b in zip(values[2:], values[3:]))
    assert values[7] > values[0] > values[8]
    assert float(expected(exact_bon(HACK_PROBS, HACK_PROXY, 400), HACK_TRUE)) < -1.99


def test_pessimism_true_reward_is_not_monotone_in_n():
    """Huang et al. prove InferenceTimePessimism's guarantee does not degrade with n
    ("scaling-monotonic"). Its exact expected true reward is nonetheless not monotone: on the
    hacked proxy with β = 1/2 it is 1.5139 at n = 4 and 1.4827 at n = 5 (exact rationals by
    enumerating the 5^n draws). The sampler itself is not hacked: the value stays above the
    reference's 1.05 and BoN's (0.6309 at n = 12) for n up to 32, heading for its limit."""
    beta = Fraction(1, 2)
    at_4, at_5 = (expected(brute_force_pessimism(HACK_PROBS, HACK_PROXY, n, beta), HACK_TRUE) for n in (4, 5))
    assert at_4 > at_5 and abs(float(at_4) - 1.5139) < 1e-4 and abs(float(at_5) - 1.4827) < 1e-4
    ref = log_of(HACK_PROBS)
    curves = true_reward_curves(ref, HACK_PROXY, HACK_TRUE, [4, 5, 12, 32], float(beta))
    np.testing.assert_allclose(curves.pessimism[:2], [float(at_4), float(at_5)], rtol=RTOL_EXACT)
    assert np.all(curves.pessimism > 1.05) and np.all(curves.pessimism[2:] > curves.bon[2:])
    assert abs(curves.pessimism[-1] - curves.pessimism_limit) < abs(curves.pessimism[0] - curves.pessimism_limit)


def test_pessimism_proxy_reward_is_not_monotone_in_n_either():
    """Even the reward the sampler sees overshoots: two strings with masses (5/7, 2/7), rewards
    (2, 5), β = 4: E[r] is 3.32734 at n = 6 and 3.32690 at n = 7 (exact rationals), above its
    limit 3.31633 = E_{π_β}[r], which it approaches from above."""
    probs, rewards, beta = [Fraction(5, 7), Fraction(2, 7)], [2, 5], Fraction(4)
    at_6, at_7 = (expected(brute_force_pessimism(probs, rewards, n, beta), rewards) for n in (6, 7))
    assert at_6 > at_7 and abs(float(at_6) - 3.32734) < 1e-5 and abs(float(at_7) - 3.32690) < 1e-5
    limit = float(np.exp(pessimism_log_probs(log_of(probs), np.array(rewards, float), float(beta))) @ rewards)
    assert abs(limit - 325 / 98) < RTOL_EXACT and float(at_7) > limit


def test_true_reward_curves_are_the_three_exact_laws():
    """The figure helper's curves: BoN by its closed form in exact rationals, the pessimism
    sampler by brute force, Best-of-Poisson (N - 1 ~ Poisson(N - 1), mean N draws) as the
    Poisson mixture of BoN laws."""
    ns = [1, 2, 3]
    curves = true_reward_curves(log_of(HACK_PROBS), HACK_PROXY, HACK_TRUE, ns, 1.0)
    np.testing.assert_array_equal(curves.n, ns)
    bon = [float(expected(exact_bon(HACK_PROBS, HACK_PROXY, n), HACK_TRUE)) for n in ns]
    pessimism = [float(expected(brute_force_pessimism(HACK_PROBS, HACK_PROXY, n, Fraction(1)), HACK_TRUE)) for n in ns]
    poisson_mix = []
    for n in ns:
        ks = np.arange(60)
        laws = [float(expected(exact_bon(HACK_PROBS, HACK_PROXY, int(k) + 1), HACK_TRUE)) for k in ks]
        poisson_mix.append(float(poisson.pmf(ks, n - 1) @ laws))
    np.testing.assert_allclose(curves.bon, bon, rtol=RTOL_EXACT)
    np.testing.assert_allclose(curves.pessimism, pessimism, rtol=RTOL_EXACT)
    np.testing.assert_allclose(curves.poisson, poisson_mix, rtol=RTOL_EXACT)
    limit = pessimism_log_probs(log_of(HACK_PROBS), np.array(HACK_PROXY, float), 1.0)
    assert abs(curves.pessimism_limit - float(np.exp(limit) @ HACK_TRUE)) < RTOL_EXACT


# ======================================================= precision, torch, refusals


def test_inference_aware_laws_are_finite_and_normalised_for_tiny_atoms():
    """Atoms of mass 1e-300 (below float64's linear range once squared or multiplied) keep
    finite log-probabilities wherever the law has mass (and -inf exactly where it has none);
    the laws normalise and stay ∝ π_ref within a tied level that holds a tiny atom."""
    ref = np.log(np.array([0.5, 1e-300, 0.3, 1e-300, 0.2]))
    ref = ref - np.logaddexp.reduce(ref)
    rewards = np.array([0.0, 1.0, 2.0, 3.0, 3.0])
    laws = {  # law, the strings it gives no mass
        "pessimism": (pessimism_log_probs(ref, rewards, 0.5), [0, 1]),  # λ = 1.4
        "sampler": (pessimism_sampler_log_probs(ref, rewards, 6, 0.5), []),
        "sampler_bound": (pessimism_sampler_log_probs(ref, rewards, 6, 0.5, reward_bound=4, fallback="reference"), []),
        "infalign_exp": (infalign_optimum_log_probs(ref, rewards, 0.1, t=5.0), []),
        "infalign_log": (infalign_optimum_log_probs(ref, rewards, 0.25, transform="log", convention="lt"), [0]),
    }
    for name, (law, empty) in laws.items():
        np.testing.assert_array_equal(np.flatnonzero(~np.isfinite(law)), empty, err_msg=name)
        assert abs(np.logaddexp.reduce(law)) < ATOL_NORMALISATION, name
        assert abs((law[3] - law[4]) - (ref[3] - ref[4])) < ATOL_LOG, name
    assert abs(laws["pessimism"][0][3] - (ref[3] + math.log((3 - 1.4) / 0.5))) < ATOL_LOG
    np.testing.assert_allclose(jbond_expected_reward(ref, rewards)[1], -LOG16 * 0.5**2, rtol=RTOL_EXACT)


@pytest.mark.torch
def test_inference_aware_functions_keep_autograd_with_exact_gradients():
    """torch inputs give the numpy values, and the gradients of E[r] under the pessimism limit
    and the sampler law, and of the CTRL optimum's E[C], match central finite differences in
    the reference logits (float64)."""
    torch = pytest.importorskip("torch")
    rewards = np.array([0.0, 1.0, 1.0, 2.0, 3.0])
    logits = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64, requires_grad=True)
    direction = torch.tensor([0.7, -0.1, 0.4, -0.9, 0.2], dtype=torch.float64)
    rewards_t = torch.tensor(rewards, dtype=torch.float64)
    laws = {
        "pessimism": lambda ref, r: pessimism_log_probs(ref, r, 0.8),
        "sampler": lambda ref, r: pessimism_sampler_log_probs(ref, r, 5, 0.8, reward_bound=4),
        "infalign": lambda ref, r: infalign_optimum_log_probs(ref, r, 0.5, t=2.0),
    }
    for name, law in laws.items():
        def value(x, law=law):
            return (torch.exp(law(torch.log_softmax(x, -1), rewards_t)) * rewards_t).sum()

        have_values = law(torch.log_softmax(logits, -1), rewards_t).detach().numpy()
        want_values = law(torch.log_softmax(logits, -1).detach().numpy(), rewards)
        np.testing.assert_allclose(have_values, want_values, rtol=RTOL_EXACT, atol=0)
        (grad,) = torch.autograd.grad(value(logits), logits)
        step = 1e-6
        with torch.no_grad():
            numeric = (value(logits + step * direction) - value(logits - step * direction)) / (2 * step)
        have = float(grad @ direction)
        assert abs(have - float(numeric)) <= RTOL_FINITE_DIFFERENCE * max(1.0, abs(have)), name


def test_inference_aware_functions_refuse_bad_input():
    """Bad arguments raise ValueError naming the argument; nothing is clipped or guessed."""
    ref, rewards = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    cases = [
        (lambda: jbond_anchor_reward(rewards, np.zeros((2, 3))), "anchor_rewards"),
        (lambda: jbond_expected_reward(ref, rewards, worse="lte"), "worse"),
        (lambda: calibrated_reward(ref, rewards, convention="median"), "convention"),
        (lambda: infalign_optimum_log_probs(ref, rewards, 0.0), "beta"),
        (lambda: infalign_optimum_log_probs(ref, rewards, 1.0, transform="square"), "transform"),
        (lambda: infalign_optimum_log_probs(ref, rewards, 1.0, t=math.inf), "t"),
        (lambda: inference_time_win_rate(ref, ref, rewards, 2, procedure="median"), "procedure"),
        (lambda: inference_time_win_rate(ref, ref, rewards, 0), "n"),
        (lambda: infalign_beta_for_kl(ref, rewards, math.log(2)), "kl"),
        (lambda: infalign_best_t(ref, rewards, 2, -0.1), "kl"),
        (lambda: infalign_best_t(ref, rewards, 2, 0.1, t_range=(1.0, -1.0)), "t_range"),
        (lambda: pessimism_log_probs(ref, [0.0, np.inf], 1.0), "rewards"),
        (lambda: pessimism_log_probs(ref, rewards, -1.0), "chi2_coefficient"),
        (lambda: pessimism_sampler_log_probs(ref, rewards, 0, 1.0), "n"),
        (lambda: pessimism_sampler_log_probs(ref, rewards, 3, 1.0, reward_bound=0.5), "reward_bound"),
        (lambda: pessimism_sampler_log_probs(ref, rewards, 3, 1.0, fallback="last"), "fallback"),
        (lambda: pessimism_sampler_log_probs(ref, rewards, 500, 1.0, max_terms=100), "max_terms"),
        (lambda: true_reward_curves(ref, rewards, rewards, [0], 1.0), "ns"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
