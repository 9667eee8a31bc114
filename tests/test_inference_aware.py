"""Inference-aware objectives and estimators against brute force in exact rationals.

Claims of :mod:`bonmath.inference_aware` (max@k, pass@k, the true reward of BoN under a
proxy, HedgeTune's N*) and :mod:`bonmath.estimators_at_k` (PKPO's weights and baselines,
Chen et al.'s Pass@k Training advantages, verl's grpo_passk), one test per claim.

Oracles share no code with the library: every k- or n-tuple of draws is enumerated
with exact probabilities (:class:`fractions.Fraction`) on supports with tied rewards and
zero-mass strings (:func:`bonmath.testing.supports`); the policy is a softmax of logits θ,
so ∇_θ log π(y) = e_y - π is rational and E[Σ_i w_i ∇log π(y_i)] is an exact sum. The
target gradient ∇_θ max@k comes from differentiating the closed form Σ_v v (F_le^k - F_lt^k)
by hand (not from a score-function identity). Estimator oracles are written from their
definitions (averages over k-subsets, max minus leave-one-out max), not from the rank
formulas the library uses.
"""

from __future__ import annotations

import itertools
import math
import statistics
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import ATOL_LOG_FLOAT32, RTOL_EXACT, RTOL_FINITE_DIFFERENCE, RTOL_MPMATH
from hypothesis import assume, given
from hypothesis import strategies as st

import bonmath
from bonmath.estimators_at_k import (
    GRPO_PASSK_EPS,
    PASSK_TRAINING_CODE_EPS,
    _pass_at_k_table,
    _pkpo_coefficients,
    exact_weight_moments,
    grpo_passk_advantages,
    max_at_k_estimate,
    pass_at_k_estimate,
    passk_training_advantages,
    pkpo_weights,
)
from bonmath.testing import brute_force_bon, exact_cdf, supports

torch = pytest.importorskip("torch")

BIAS_FLOOR = 1e-3
"""A bias is 'really there' when its relative size exceeds this (floating error is ~1e-15)."""

UNBIASED = ("plain", "loo", "loo_minus_one")


# ---------------------------------------------------------------- exact oracles


def exact_max_at_k(probs, rewards, k: int) -> Fraction:
    """E[max of k draws] by enumerating every k-tuple."""
    total = Fraction(0)
    for draws in itertools.product(range(len(probs)), repeat=k):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        if weight:
            total += weight * max(rewards[i] for i in draws)
    return total


def exact_max_at_k_gradient(probs, rewards, k: int) -> list[Fraction]:
    """∇_θ of Σ_v v (F_le(v)^k - F_lt(v)^k) for π = softmax(θ), by hand.

    ∂/∂π_y = Σ_v v k (F_le(v)^(k-1) [r_y <= v] - F_lt(v)^(k-1) [r_y < v]); the softmax
    Jacobian gives ∂/∂θ_y = π_y (∂/∂π_y - Σ_z π_z ∂/∂π_z).
    """
    def cdf(v, strict):
        return sum((p for p, r in zip(probs, rewards) if (r < v if strict else r <= v)), Fraction(0))

    levels = sorted(set(rewards))
    d = [sum(v * k * (cdf(v, False) ** (k - 1) * (r <= v) - cdf(v, True) ** (k - 1) * (r < v)) for v in levels)
         for r in rewards]
    mean = sum(p * x for p, x in zip(probs, d))
    return [p * (x - mean) for p, x in zip(probs, d)]


def subset_max_weights(g, k):
    """PKPO's s_i from its definition: (1/C(n,k)) Σ over k-subsets I ∋ i of max_I g."""
    n = len(g)
    total = Fraction(math.comb(n, k))
    return [sum(max(g[j] for j in subset) for subset in itertools.combinations(range(n), k) if i in subset) / total
            for i in range(n)]


def subset_max_mean(g, k) -> Fraction:
    return sum(max(s) for s in itertools.combinations(g, k)) / Fraction(math.comb(len(g), k))


def loo_weights(g, k):
    """s_i minus the mean over j ≠ i of the s_j computed without sample i (PKPO's LOO baseline)."""
    s = subset_max_weights(g, k)
    out = []
    for i in range(len(g)):
        rest = list(g[:i]) + list(g[i + 1:])
        out.append(s[i] - sum(subset_max_weights(rest, k)) / (len(g) - 1))
    return out


def loo_minus_one_weights(g, k):
    """(1/C(n,k)) Σ_{k-subsets I ∋ i} (max_I g - max_{I∖i} g): each subset's best of the others as baseline."""
    n = len(g)
    total = Fraction(math.comb(n, k))
    out = []
    for i in range(n):
        terms = [max(g[j] for j in subset) - max(g[j] for j in subset if j != i)
                 for subset in itertools.combinations(range(n), k) if i in subset]
        out.append(sum(terms) / total)
    return out


def mean_centred_weights(g, k):
    s = subset_max_weights(g, k)
    return [x - sum(s) / len(s) for x in s]


def leave_one_out_margin(g):
    """Tang et al.'s leave-one-out advantage for the max of the group: max_j g_j - max_{j≠i} g_j."""
    return [max(g) - max(g[:i] + g[i + 1:]) for i in range(len(g))]


FRACTION_ORACLES = {
    "plain": subset_max_weights,
    "loo": loo_weights,
    "loo_minus_one": loo_minus_one_weights,
    "mean_centred": mean_centred_weights,
}


def readme_passk_advantages(g, k, eps=0.0):
    """Chen et al. (2025), README of RUCAIBox/Passk_Training: R̄, σ, A_pos, A_neg (eps: the code's +1e-6)."""
    n, c = len(g), sum(g)
    mean = 1 - math.comb(n - c, k) / math.comb(n, k)
    sigma = math.sqrt(mean * (1 - mean))
    if sigma + eps == 0:
        return [0.0] * n
    positive = (1 - mean) / (sigma + eps)
    negative = (1 - mean - math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)) / (sigma + eps) if c < n else 0.0
    return [positive if x == 1 else negative for x in g]


def verl_grpo_passk(g, eps=GRPO_PASSK_EPS):
    """verl's normalised grpo_passk, written from its description: margin over the runner-up / (stdev + eps)."""
    ordered = sorted(g)
    margin = ordered[-1] - ordered[-2]
    best = g.index(max(g))
    scale = statistics.stdev(g) + eps
    return [margin / scale if i == best and margin else 0.0 for i in range(len(g))]


def tuple_moments(probs, rewards, n, weights_of):
    """E[ĝ] (exact when the weights are rational) and E‖ĝ‖² of ĝ = Σ_i w_i (e_{y_i} - π), every n-tuple."""
    support = [i for i, p in enumerate(probs) if p]
    size = len(probs)
    mean = [Fraction(0)] * size
    second = Fraction(0)
    for draws in itertools.product(support, repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        w = weights_of([rewards[i] for i in draws])
        total_weight = sum(w, Fraction(0))
        g = [-total_weight * p for p in probs]
        for wi, i in zip(w, draws):
            g[i] += wi
        mean = [m + weight * x for m, x in zip(mean, g)]
        second += weight * sum(x * x for x in g)
    return mean, second


def by_rewards(fn):
    """fn(numpy rewards) -> weights, as exact Fractions of its float64 output, evaluated once per reward vector."""
    cache = {}

    def weights(g):
        key = tuple(g)
        if key not in cache:
            cache[key] = [Fraction(float(x)) for x in fn(np.array(key, float))]
        return cache[key]

    return weights


def floats(values):
    return np.array([float(v) for v in values])


def score_matrix(probs):
    """∇_θ log π(y) = e_y - π for π = softmax(θ), one row per string."""
    p = floats(probs)
    return torch.as_tensor(np.eye(len(p)) - p[None, :])


def assert_vectors_close(have, want, rtol=RTOL_EXACT):
    have, want = np.asarray(have, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    assert np.max(np.abs(have - want), initial=0.0) <= rtol * scale, (have, want)


def groups(min_size=1, max_size=5, values=3):
    return st.lists(st.integers(0, values - 1), min_size=min_size, max_size=max_size)


# --------------------------------------------------------------------- objectives


@given(supports(max_size=5), st.integers(1, 3))
def test_max_at_k_is_the_expected_maximum_of_k_draws(support, k):
    """max@k = E[max of k i.i.d. draws] = Σ_v v (F_le^k - F_lt^k), with ties and zero mass (docs/math.md; PKPO's maxg@k)."""
    want = float(exact_max_at_k(support.probs, support.rewards, k))
    have = float(bonmath.max_at_k(support.ref_log_probs, support.rewards_array, k))
    assert have == pytest.approx(want, rel=RTOL_EXACT, abs=RTOL_EXACT)


@given(supports(max_size=6), st.floats(0.05, 500.0))
def test_max_at_k_for_real_k_is_the_closed_form(support, k):
    """For real k > 0, max@k = Σ_v v (F_le(v)^k - F_lt(v)^k) (the CDF F becomes F^k), against mpmath."""
    lt, le = exact_cdf(support.probs, support.rewards)
    with mpmath.workdps(60):
        seen, want = set(), mpmath.mpf(0)
        for r, a, b in zip(support.rewards, lt, le):
            if r not in seen and b > a:
                seen.add(r)
                want += r * (mpmath.mpf(b.numerator) / b.denominator) ** k
                want -= r * (mpmath.mpf(a.numerator) / a.denominator) ** k if a else 0
    have = float(bonmath.max_at_k(support.ref_log_probs, support.rewards_array, k))
    assert have == pytest.approx(float(want), rel=RTOL_MPMATH, abs=RTOL_MPMATH)


def test_max_at_k_refuses_an_infinite_reward_with_mass_and_ignores_one_without():
    """Rewards are used as numbers where π has mass: ±inf there is refused; at a zero-mass string it is inert."""
    with pytest.raises(ValueError, match="finite where"):
        bonmath.max_at_k(np.log([0.5, 0.5]), [0.0, np.inf], 2)
    have = float(bonmath.max_at_k([0.0, -np.inf], [1.0, np.inf], 3))
    assert have == 1.0


@given(supports(max_size=6, num_rewards=2), st.integers(1, 12))
def test_pass_at_k_is_one_minus_the_chance_that_k_draws_all_fail(support, k):
    """pass@k = 1 - (1 - p)^k with p = P(r = 1), and it is max@k on {0, 1} rewards (docs/math.md)."""
    p = sum((q for q, r in zip(support.probs, support.rewards) if r == 1), Fraction(0))
    have = float(bonmath.pass_at_k(support.ref_log_probs, support.rewards_array, k))
    assert have == pytest.approx(float(1 - (1 - p) ** k), rel=RTOL_EXACT, abs=RTOL_EXACT)
    as_max = float(bonmath.max_at_k(support.ref_log_probs, support.rewards_array, k))
    assert have == pytest.approx(as_max, rel=RTOL_EXACT, abs=RTOL_EXACT)


@pytest.mark.parametrize("log_p_correct, log_p_wrong", [
    (-690.0, 0.0), (-700.0, 0.0), (math.log(0.5), math.log(0.5)), (0.0, -690.0), (0.0, -745.0),
    (math.log(1e-9), math.log1p(-1e-9)),
])
@pytest.mark.parametrize("k", [1, 3.7, 1e6, 1e15])
def test_pass_at_k_is_accurate_for_extreme_p_and_k(log_p_correct, log_p_wrong, k):
    """-expm1(k log(1 - p)) keeps full relative precision for p near 0 and near 1 and k up to 1e15 (mpmath, 60 digits)."""
    with mpmath.workdps(60):
        correct, wrong = mpmath.exp(mpmath.mpf(log_p_correct)), mpmath.exp(mpmath.mpf(log_p_wrong))
        p = correct / (correct + wrong)
        want = -mpmath.expm1(k * mpmath.log1p(-p))
    have = float(bonmath.pass_at_k(np.array([log_p_wrong, log_p_correct]), [0, 1], k, normalize=True))
    assert have == pytest.approx(float(want), rel=RTOL_MPMATH, abs=0)


@pytest.mark.parametrize("dtype, log_p_correct", [("float64", -720.0), ("float64", -740.0), ("float64", -760.0),
                                                   ("float32", -95.0), ("float32", -100.0)])
def test_pass_at_k_keeps_its_relative_precision_where_p_is_below_the_smallest_normal(dtype, log_p_correct):
    """For p under the dtype's smallest normal, pass@k = -expm1(k log(1 - p)) ≈ k p is a normal number at
    k = 1e15; it keeps its relative precision (mpmath, 60 digits) instead of inheriting a subnormal p's few
    digits: float64 numpy and torch to RTOL_MPMATH, float32 torch to ATOL_LOG_FLOAT32 (log-space rounding)."""
    k = 1e15
    with mpmath.workdps(60):
        p = mpmath.exp(mpmath.mpf(log_p_correct)) / (1 + mpmath.exp(mpmath.mpf(log_p_correct)))
        want = float(-mpmath.expm1(k * mpmath.log1p(-p)))
    log_probs = torch.tensor([0.0, log_p_correct], dtype=getattr(torch, dtype))
    have = [float(bonmath.pass_at_k(log_probs, torch.tensor([0, 1]), k, normalize=True))]
    if dtype == "float64":
        have.append(float(bonmath.pass_at_k(log_probs.numpy(), [0, 1], k, normalize=True)))
    rtol = RTOL_MPMATH if dtype == "float64" else ATOL_LOG_FLOAT32
    assert have == pytest.approx([want] * len(have), rel=rtol, abs=0)


def test_pass_at_k_refuses_non_binary_rewards():
    """pass@k is defined for rewards in {0, 1} only."""
    with pytest.raises(ValueError, match="binary"):
        bonmath.pass_at_k(np.log([0.5, 0.5]), [0.0, 0.5], 2)


def _softmax_logits(size, seed):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal(size), dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("objective", ["max_at_k", "pass_at_k", "bon_true_reward", "bon_true_reward_dn"])
@pytest.mark.parametrize("k", [1, 2.5, 7])
def test_autograd_gradients_match_central_finite_differences(objective, k):
    """Autograd through the enumerated policy is the gradient of each objective: central differences
    along random directions agree to RTOL_FINITE_DIFFERENCE (Vieira, 'How to test gradient implementations')."""
    size = 7
    theta = _softmax_logits(size, seed=3)
    rewards = torch.tensor([0.0, 1.0, 1.0, 2.0, 0.0, 3.0, 2.0], dtype=torch.float64)  # ties
    binary = (rewards >= 2).to(torch.float64)
    true = torch.tensor([1.0, -1.0, 0.5, 2.0, 0.0, -3.0, 1.0], dtype=torch.float64)

    def f(t):
        log_probs = torch.log_softmax(t, 0)
        if objective == "max_at_k":
            return bonmath.max_at_k(log_probs, rewards, k)
        if objective == "pass_at_k":
            return bonmath.pass_at_k(log_probs, binary, k)
        return getattr(bonmath, objective)(log_probs, rewards, true, k)

    (grad,) = torch.autograd.grad(f(theta), theta)
    rng = np.random.default_rng(4)
    step = 1e-5
    for _ in range(3):
        u = torch.as_tensor(rng.standard_normal(size))
        u = u / u.norm()
        with torch.no_grad():
            want = (f(theta + step * u) - f(theta - step * u)) / (2 * step)
        have = grad @ u
        assert float(abs(have - want)) <= RTOL_FINITE_DIFFERENCE * max(float(abs(want)), float(grad.norm())), (have, want)


@given(supports(max_size=6, num_rewards=2, zero_mass=False), st.floats(0.5, 40.0))
def test_pass_at_k_gradient_is_k_one_minus_p_to_the_k_minus_one_times_grad_p(support, k):
    """∇pass@k = k (1 - p)^(k-1) ∇p (docs/math.md, "Inference-aware objectives"), by autograd on both sides."""
    assume(0 < sum(support.rewards) < len(support.rewards))  # 0 < p < 1
    theta = torch.tensor(support.ref_log_probs, requires_grad=True)
    log_probs = torch.log_softmax(theta, 0)
    correct = torch.tensor(support.rewards_array)
    (have,) = torch.autograd.grad(bonmath.pass_at_k(log_probs, correct, k), theta, retain_graph=True)
    p = (log_probs.exp() * correct).sum()
    (grad_p,) = torch.autograd.grad(p, theta)
    want = k * (1 - p.detach()) ** (k - 1) * grad_p
    assert_vectors_close(have, want)


@given(supports(max_size=5), st.integers(1, 4))
def test_max_at_k_gradient_matches_the_closed_form_derivative_in_exact_rationals(support, k):
    """Autograd of max@k w.r.t. softmax logits equals the hand derivative of Σ_v v (F_le^k - F_lt^k)."""
    theta = torch.tensor(support.ref_log_probs, requires_grad=True)
    value = bonmath.max_at_k(torch.log_softmax(theta, 0), torch.tensor(support.rewards_array), k)
    (have,) = torch.autograd.grad(value, theta)
    assert_vectors_close(have, floats(exact_max_at_k_gradient(support.probs, support.rewards, k)))


@given(supports(max_size=5), st.lists(st.integers(-2, 2), min_size=6, max_size=6), st.integers(1, 4))
def test_bon_true_reward_is_the_true_reward_of_brute_force_bon(support, true, n):
    """E_{BoN_n(proxy)}[r_true] = Σ_y π_N(y) r_true(y), with π_N the law of the best of n draws by the proxy."""
    true = true[: len(support.weights)]
    law = brute_force_bon(support.probs, support.rewards, n)
    want = float(sum(p * t for p, t in zip(law, true)))
    have = float(bonmath.bon_true_reward(support.ref_log_probs, support.rewards_array, np.array(true, float), n))
    assert have == pytest.approx(want, rel=RTOL_EXACT, abs=RTOL_EXACT)


def _mp_true_reward_curve(log_probs, proxy, true):
    """n -> Σ_v m_v (F_le^n - F_lt^n) in mpmath at the working precision (float log-probabilities taken as exact)."""
    weights = [mpmath.exp(mpmath.mpf(x)) if x > -math.inf else mpmath.mpf(0) for x in log_probs]
    total = mpmath.fsum(weights)
    probs = [w / total for w in weights]
    levels = []
    for v in sorted(set(proxy)):
        level = [i for i, r in enumerate(proxy) if r == v]
        q = mpmath.fsum(probs[i] for i in level)
        if q > 0:
            lt = mpmath.fsum(p for p, r in zip(probs, proxy) if r < v)
            levels.append((mpmath.fsum(probs[i] * true[i] for i in level) / q, lt, lt + q))
    return lambda n: mpmath.fsum(m * (le**n - lt**n) for m, lt, le in levels)


def _mp_true_reward(log_probs, proxy, true, n):
    return _mp_true_reward_curve(log_probs, proxy, true)(n)


@given(supports(max_size=6), st.lists(st.integers(-2, 2), min_size=6, max_size=6), st.floats(0.3, 50.0))
def test_bon_true_reward_dn_is_the_n_derivative_of_the_true_reward(support, true, n):
    """d/dn E_n[r_true] = Σ_v m_v (F_le^n log F_le - F_lt^n log F_lt) (HedgeTune's derivative), against mpmath.diff."""
    true = [float(t) for t in true[: len(support.weights)]]
    with mpmath.workdps(50):
        want = mpmath.diff(lambda x: _mp_true_reward(support.ref_log_probs, support.rewards, true, x), n)
    have = float(bonmath.bon_true_reward_dn(support.ref_log_probs, support.rewards_array, np.array(true), n))
    scale = max(abs(t) for t in true) or 1.0
    assert have == pytest.approx(float(want), rel=RTOL_MPMATH, abs=RTOL_MPMATH * scale)


def test_bon_true_reward_dn_keeps_a_level_of_mass_e_to_the_minus_700():
    """A level of mass q = e^-700 above F_lt = 0.3 contributes q F^(n-1) (n log F + 1) ~ 1e-305: kept to
    relative precision (the bracket is never a difference of two nearly equal powers)."""
    log_probs = np.array([math.log(0.3), -700.0, math.log1p(-0.3)])
    proxy, true = [0.0, 1.0, 2.0], [0.0, 1.0, 0.0]
    with mpmath.workdps(400):
        want = mpmath.diff(lambda x: _mp_true_reward(log_probs, proxy, true, x), 5.0)
    have = float(bonmath.bon_true_reward_dn(log_probs, proxy, true, 5.0, normalize=True))
    assert want != 0 and have == pytest.approx(float(want), rel=RTOL_MPMATH)


def _exact_true_rewards(support, true, n_max):
    lt, le = exact_cdf(support.probs, support.rewards)
    levels = {}
    for p, r, t, a, b in zip(support.probs, support.rewards, true, lt, le):
        if p:
            mass, total, low, high = levels.get(r, (Fraction(0), Fraction(0), a, b))
            levels[r] = (mass + p, total + p * t, low, high)
    return [sum((total / mass) * (high**n - low**n) for mass, total, low, high in levels.values())
            for n in range(1, n_max + 1)]


@given(supports(min_size=2, max_size=6, num_rewards=4), st.lists(st.integers(-3, 3), min_size=6, max_size=6),
       st.integers(1, 40))
def test_hedgetune_n_is_the_integer_argmax_of_the_true_reward(support, true, n_max):
    """N* = argmax over integers N <= n_max of E_N[r_true] (exact rationals over every N), the smallest
    among ties; a smaller N also wins over one better by less than float64 can resolve (1e-15 of the scale)."""
    true = true[: len(support.weights)]
    values = _exact_true_rewards(support, true, n_max)
    have = bonmath.hedgetune_n(support.ref_log_probs, support.rewards_array, np.array(true, float), n_max)
    best = max(values)
    scale = max(abs(t) for t in true) or 1
    assert best - values[have - 1] <= RTOL_EXACT * scale, (have, [float(v) for v in values])
    runner_up = max((v for v in values if v != best), default=None)
    if values.count(best) == 1 and (runner_up is None or best - runner_up > RTOL_EXACT * scale):
        assert have == values.index(best) + 1
    if len(set(values)) == 1:
        assert have == 1


def test_hedgetune_n_finds_the_global_optimum_of_a_two_peaked_curve():
    """On a finite support E_N[r_true] can have two interior maxima (here near N = 20 and N = 1266, the second
    higher); N* is the global one: brute force over every N <= 3000 in mpmath (float inputs taken as exact)."""
    log_probs = np.log([0.9, 0.09, 0.009, 0.0009, 0.0001])  # proxy levels 0..4, tail masses ~10^-j
    proxy, true = [0, 1, 2, 3, 4], [0.0, 5.0, -5.0, 20.0, -60.0]
    with mpmath.workdps(30):
        curve = _mp_true_reward_curve(log_probs, proxy, true)
        values = [curve(n) for n in range(1, 3001)]
    maxima = [n for n in range(2, 3000) if values[n - 2] < values[n - 1] > values[n]]
    assert len(maxima) == 2, maxima
    have = bonmath.hedgetune_n(log_probs, proxy, true, 3000)
    assert have == values.index(max(values)) + 1 == maxima[1]


def test_hedgetune_n_finds_an_optimum_near_ten_to_the_twelve():
    """With level masses 1e-11 and 1e-14 at the top the optimum is near 6e11; the integer found is the exact
    argmax among its neighbours (mpmath, 80 digits, the float inputs taken as exact)."""
    b, c = 1e-11, 1e-14
    log_probs = np.array([math.log1p(-b - c), math.log(b), math.log(c)])
    proxy, true = [0.0, 1.0, 2.0], [0.0, 1.0, -1.0]
    have = bonmath.hedgetune_n(log_probs, proxy, true, 10**15)
    with mpmath.workdps(80):
        lam1 = mpmath.log(_mp_cdf(log_probs, 1))
        lam2 = mpmath.log(_mp_cdf(log_probs, 2))
        root = mpmath.log(-(true[1] - true[2]) * lam2 / ((true[0] - true[1]) * lam1)) / (lam1 - lam2)
        assert abs(root - mpmath.floor(root) - 0.5) > 0.01  # the two neighbouring integers are distinguishable
        near = range(int(mpmath.floor(root)) - 2, int(mpmath.floor(root)) + 4)
        values = [_mp_true_reward(log_probs, proxy, true, n) for n in near]
        want = list(near)[values.index(max(values))]
    assert 5e11 < have < 7e11 and have == want


def _mp_cdf(log_probs, level):
    weights = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
    return mpmath.fsum(weights[:level]) / mpmath.fsum(weights)


def test_hedgetune_n_batched_rows_are_the_rows():
    """A batch of (reference, proxy, true) rows gives each row's N*."""
    ref = np.log(np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]))
    proxy = np.array([[0, 1, 2, 3], [0, 1, 1, 2]], dtype=float)
    true = np.array([[0.0, 1.0, 2.0, -0.5], [0.0, 2.0, -1.0, 1.0]])
    have = bonmath.hedgetune_n(ref, proxy, true, 50)
    want = [bonmath.hedgetune_n(r, p, t, 50) for r, p, t in zip(ref, proxy, true)]
    assert have.tolist() == want


# --------------------------------------------------------------------- estimators


@given(groups(min_size=1, max_size=6), st.data())
def test_pkpo_weights_match_their_subset_definitions(g, data):
    """Each PKPO variant equals its definition over k-subsets in exact rationals, with ties (PKPO eqs. 19, 29, 33)."""
    n = len(g)
    k = data.draw(st.integers(1, n))
    exact = [Fraction(x) for x in g]
    for variant, oracle in FRACTION_ORACLES.items():
        if (variant == "loo" and n <= k) or (variant == "loo_minus_one" and k < 2):
            continue
        assert_vectors_close(pkpo_weights(np.array(g, float), k, variant), floats(oracle(exact, k)))
    assert float(max_at_k_estimate(np.array(g, float), k)) == pytest.approx(float(subset_max_mean(exact, k)),
                                                                           rel=RTOL_EXACT)


def test_pkpo_leave_one_out_at_k_one_is_not_rloo():
    """At k = 1 PKPO's eq. 29 baseline is the other samples' mean on the scale 1/(n-1):
    w_i = g_i/n - mean_{j≠i} g_j/(n-1), not RLOO's (g_i - mean_{j≠i} g_j)/n (worked by hand)."""
    assert pkpo_weights(np.array([0.0, 1.0]), 1, "loo").tolist() == [-1.0, 0.5]  # RLOO: [-0.5, 0.5]
    g = np.array([0.0, 1.0, 2.0, 3.0])
    others = (g.sum() - g) / 3
    assert_vectors_close(pkpo_weights(g, 1, "loo"), g / 4 - others / 3)


@given(supports(max_size=4), st.data())
def test_max_at_k_estimate_is_unbiased(support, data):
    """E[(1/C(n,k)) Σ_{i>=k} C(i-1,k-1) g_(i)] = max@k over every n-tuple (PKPO eq. 12), with ties."""
    n = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, n))
    probs, rewards = support.probs, support.rewards
    exact = Fraction(0)
    have = 0.0
    for draws in itertools.product([i for i, p in enumerate(probs) if p], repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        group = [rewards[i] for i in draws]
        exact += weight * subset_max_mean(group, k)
        have += float(weight) * float(max_at_k_estimate(np.array(group, float), k))
    want = exact_max_at_k(probs, rewards, k)
    assert exact == want
    assert have == pytest.approx(float(want), rel=RTOL_EXACT, abs=RTOL_EXACT)


@given(supports(max_size=4), st.data())
def test_pkpo_weights_are_unbiased_for_the_max_at_k_gradient(support, data):
    """E[Σ_i s_i ∇log π(y_i)] = ∇max@k exactly for the plain, leave-one-out and k-1 weights (PKPO eqs. 19,
    29, 33): equality in exact rationals, and the library's float weights to rounding."""
    n = data.draw(st.integers(2, 4))
    k = data.draw(st.integers(1, n))
    want = exact_max_at_k_gradient(support.probs, support.rewards, k)
    for variant in UNBIASED:
        if (variant == "loo" and n <= k) or (variant == "loo_minus_one" and k < 2):
            continue
        exact, _ = tuple_moments(support.probs, support.rewards, n,
                                 lambda g, v=variant: FRACTION_ORACLES[v]([Fraction(x) for x in g], k))
        assert exact == want, variant
        have, _ = tuple_moments(support.probs, support.rewards, n, by_rewards(lambda g, v=variant: pkpo_weights(g, k, v)))
        assert_vectors_close(floats(have), floats(want))


@given(supports(max_size=4), st.data())
def test_mean_centred_pkpo_weights_are_biased_by_the_factor_one_minus_k_over_n(support, data):
    """Centring s by its group mean (which contains s_i) gives E[ĝ] = (1 - k/n) ∇max@k: the mean is
    (k/n) ρ(n, k), and E[ρ Σ_i ∇log π(y_i)] = ∇E[ρ] = ∇max@k (exact rationals)."""
    n = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, n))
    want = [(1 - Fraction(k, n)) * x for x in exact_max_at_k_gradient(support.probs, support.rewards, k)]
    exact, _ = tuple_moments(support.probs, support.rewards, n,
                             lambda g: mean_centred_weights([Fraction(x) for x in g], k))
    assert exact == want
    have, _ = tuple_moments(support.probs, support.rewards, n, by_rewards(lambda g: pkpo_weights(g, k, "mean_centred")))
    assert_vectors_close(floats(have), floats(want))


@given(supports(max_size=4), st.integers(2, 4))
def test_grpo_passk_without_std_is_unbiased_for_the_max_at_n_gradient(support, n):
    """verl's grpo_passk advantage r_max - r_2nd at the argmax, summed over the group, is Tang et al.'s
    leave-one-out estimate: E[Σ_i A_i ∇log π(y_i)] = ∇max@n exactly (it is PKPO's k - 1 weight at k = n)."""
    want = exact_max_at_k_gradient(support.probs, support.rewards, n)
    exact, _ = tuple_moments(support.probs, support.rewards, n, lambda g: leave_one_out_margin([Fraction(x) for x in g]))
    assert exact == want
    have, _ = tuple_moments(support.probs, support.rewards, n,
                            by_rewards(lambda g: grpo_passk_advantages(g, scale_rewards="none")))
    assert_vectors_close(floats(have), floats(want))
    every_group = np.array(list(itertools.product(range(3), repeat=n)), dtype=float)
    assert_vectors_close(grpo_passk_advantages(every_group, scale_rewards="none"), pkpo_weights(every_group, n))


@given(groups(min_size=2, max_size=7, values=2), st.data())
def test_passk_training_advantages_match_the_papers_and_codes_formulas(g, data):
    """Chen et al.'s A_pos = (1 - R̄)/σ, A_neg = (1 - R̄ - C(N_neg-1,k-1)/C(N-1,k-1))/σ (paper/README), and the
    released code's σ + 1e-6."""
    k = data.draw(st.integers(1, len(g)))
    rewards = np.array(g, float)
    assert_vectors_close(passk_training_advantages(rewards, k, "paper"), readme_passk_advantages(g, k))
    assert_vectors_close(passk_training_advantages(rewards, k, "code"),
                         readme_passk_advantages(g, k, eps=PASSK_TRAINING_CODE_EPS))


@pytest.mark.parametrize("n, k, c", [(2000, 1000, 999), (2000, 1000, 1000), (1300, 650, 640), (64, 32, 32)])
def test_passk_training_advantages_stay_exact_where_sigma_is_below_the_float64_range(n, k, c):
    """Chen et al.'s A_pos = (1 - R̄)/σ and A_neg = (1 - R̄ - C(N_neg-1,k-1)/C(N-1,k-1))/σ are normal numbers
    (2.2e-299 at n = 2000, k = 1000, c = 999) where 1 - R̄ = C(n-c,k)/C(n,k) and σ underflow float64; they match
    the definitions evaluated in mpmath (60 digits) from exact binomials to RTOL_MPMATH."""
    with mpmath.workdps(60):
        fail = mpmath.mpf(math.comb(n - c, k)) / math.comb(n, k)
        sigma = mpmath.sqrt((1 - fail) * fail)
        gap = mpmath.mpf(math.comb(n - c - 1, k - 1)) / math.comb(n - 1, k - 1)
        want = [float(fail / sigma), float((fail - gap) / sigma)]
    advantages = passk_training_advantages(np.array([1.0] * c + [0.0] * (n - c)), k)
    assert [float(advantages[0]), float(advantages[-1])] == pytest.approx(want, rel=RTOL_MPMATH, abs=0)


@given(groups(min_size=1, max_size=7, values=2), st.data())
def test_passk_training_advantage_times_sigma_is_the_mean_centred_pkpo_weight_times_n_over_k(g, data):
    """σ A_i = (n/k)(s_i - s̄): Chen et al.'s analytic advantage is the mean-centred PKPO weight rescaled by
    n/(k σ), in exact rationals (σ A_pos = 1 - R̄ and σ A_neg = 1 - R̄ - C(N_neg-1,k-1)/C(N-1,k-1))."""
    n = len(g)
    k = data.draw(st.integers(1, n))
    c = sum(g)
    mean = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    numerators = [1 - mean if x else 1 - mean - Fraction(math.comb(n - c - 1, k - 1), math.comb(n - 1, k - 1))
                  for x in g]
    centred = mean_centred_weights([Fraction(x) for x in g], k)
    assert numerators == [Fraction(n, k) * x for x in centred]
    sigma = math.sqrt(float(mean * (1 - mean)))
    assert_vectors_close(sigma * passk_training_advantages(np.array(g, float), k) * k / n,
                         pkpo_weights(np.array(g, float), k, "mean_centred"))


def _binary_support():
    """Five strings, two correct (p = 3/10), tied within both levels, one zero-mass string."""
    probs = [Fraction(2, 10), Fraction(1, 10), Fraction(0), Fraction(3, 10), Fraction(4, 10)]
    return probs, [1, 1, 1, 0, 0]


@pytest.mark.parametrize("n, k", [(3, 2), (4, 2), (4, 3), (5, 3)])
def test_passk_training_advantages_are_biased_for_the_pass_at_k_gradient(n, k):
    """With its σ normalisation, Σ_i (k/n) A_i ∇log π(y_i) has mean c ∇pass@k with c ≠ 1 (and ≠ the unnormalised
    1 - k/n): the exact mean over every n-tuple (the README formula) is matched by exact_weight_moments."""
    probs, rewards = _binary_support()
    want = floats(exact_max_at_k_gradient(probs, rewards, k))
    mean, _ = tuple_moments(probs, rewards, n,
                            lambda g: [Fraction(k * a / n) for a in readme_passk_advantages(g, k)])
    moments = exact_weight_moments(lambda g: passk_training_advantages(g, k) * (k / n),
                                   floats(probs), floats(rewards), score_matrix(probs), n)
    assert_vectors_close(moments.mean, floats(mean))
    scale = float(floats(mean) @ want / (want @ want))
    assert abs(scale - 1) > BIAS_FLOOR and abs(scale - (1 - k / n)) > BIAS_FLOOR, scale


@given(supports(max_size=4, num_rewards=2), st.integers(1, 4), st.sampled_from(["pkpo", "chen", "grpo_std"]))
def test_on_binary_rewards_every_reward_only_estimator_is_parallel_to_grad_p(support, n, name):
    """For binary rewards E[Σ_i w_i ∇log π(y_i)] = n P(r=1) m_1 (W̄_1 - W̄_0) with m_1 = E[∇log π | r = 1], and
    P(r=1) m_1 = ∇p: any weights that depend on the rewards only have a mean parallel to ∇p, hence to ∇pass@k.
    Their bias on one prompt is a scale (which re-weights prompts in a batch), never a direction (exact rationals)."""
    k = min(2, n)
    fn = {"pkpo": lambda g: pkpo_weights(g, k, "mean_centred"), "chen": lambda g: passk_training_advantages(g, k),
          "grpo_std": grpo_passk_advantages if n >= 2 else None}[name]
    assume(fn is not None)
    mean, _ = tuple_moments(support.probs, support.rewards, n, by_rewards(fn))
    grad_p = exact_max_at_k_gradient(support.probs, support.rewards, 1)  # ∇p: max@1 of a {0, 1} reward
    # parallel: every 2x2 minor of (mean, ∇p) vanishes
    assert all(abs(float(a * d - b * c)) <= RTOL_EXACT for (a, b), (c, d)
               in itertools.combinations(zip(mean, grad_p), 2))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_grpo_passk_std_normalisation_is_biased(n):
    """Dividing grpo_passk's margin by the group's std + 1e-6 (verl's default) changes its expectation away
    from ∇max@n: exact mean over every n-tuple (an independent implementation of verl's rule)."""
    probs = [Fraction(2, 10), Fraction(1, 10), Fraction(0), Fraction(3, 10), Fraction(4, 10)]
    rewards = [2, 0, 1, 1, 3]
    want = floats(exact_max_at_k_gradient(probs, rewards, n))
    mean, _ = tuple_moments(probs, rewards, n, lambda g: [Fraction(a) for a in verl_grpo_passk(list(g))])
    moments = exact_weight_moments(grpo_passk_advantages, floats(probs), floats(rewards), score_matrix(probs), n)
    assert_vectors_close(moments.mean, floats(mean))
    assert np.linalg.norm(floats(mean) - want) / np.linalg.norm(want) > BIAS_FLOOR


@pytest.mark.parametrize("rewards", [[1e300, -1e300], [1e200, 0.0, 0.0], [1.7e308, -1.7e308, 0.0], [1e-300, 0.0],
                                     [3e-310, 0.0, 0.0], [1.0, 1.0 + 2.0**-52, 1.0], [-1e-300, -2e-300, -3e-300]])
@pytest.mark.parametrize("eps", [GRPO_PASSK_EPS, 0.0])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_grpo_passk_margin_over_the_group_std_is_accurate_for_huge_tiny_and_near_equal_rewards(rewards, eps, as_tensor):
    """The best sample's (r_max - r_2nd)/(std + eps) matches mpmath (50 digits) to RTOL_MPMATH where the squared
    deviations of the rewards overflow (1e200: std = inf, advantage 0), underflow (1e-300 with eps = 0: std = 0,
    advantage inf) or where the rounded mean swamps the rewards' spread (1 and 1 + 2^-52)."""
    with mpmath.workdps(50):
        values = [mpmath.mpf(r) for r in rewards]
        mean = sum(values) / len(values)
        std = mpmath.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        top, second = sorted(values)[-1], sorted(values)[-2]
        want = float((top - second) / (std + eps))
    group = torch.tensor(rewards, dtype=torch.float64) if as_tensor else np.array(rewards)
    have = grpo_passk_advantages(group, eps=eps)
    assert float(have.max()) == pytest.approx(want, rel=RTOL_MPMATH, abs=0)
    assert int((have != 0).sum()) == 1


@given(groups(min_size=2, max_size=7), st.data())
def test_the_order_among_tied_rewards_does_not_change_the_weights(g, data):
    """The rank formula s_(i) = [C(i-1,k-1) g_(i) + Σ_{j>i} C(j-2,k-2) g_(j)]/C(n,k) gives every tied sample the
    same weight whichever order the sort puts ties in (exact rationals, both orders), so no expectation depends on
    it; and the library's weights follow any permutation of the group exactly."""
    n = len(g)
    k = data.draw(st.integers(1, n))

    def rank_formula(order):
        sorted_g = [Fraction(g[i]) for i in order]
        total = math.comb(n, k)
        w = {}
        for rank, i in enumerate(order, start=1):
            own = math.comb(rank - 1, k - 1) * sorted_g[rank - 1]
            above = sum(math.comb(j - 2, k - 2) * sorted_g[j - 1] for j in range(rank + 1, n + 1)) if k >= 2 else 0
            w[i] = (own + above) / total
        return [w[i] for i in range(n)]

    forward = sorted(range(n), key=lambda i: (g[i], i))
    backward = sorted(range(n), key=lambda i: (g[i], -i))
    assert rank_formula(forward) == rank_formula(backward) == subset_max_weights([Fraction(x) for x in g], k)
    permutation = data.draw(st.permutations(range(n)))
    rewards = np.array(g, float)
    for variant in FRACTION_ORACLES:
        if (variant == "loo" and n <= k) or (variant == "loo_minus_one" and k < 2):
            continue
        base = pkpo_weights(rewards, k, variant)
        assert pkpo_weights(rewards[permutation], k, variant).tolist() == base[permutation].tolist()


@given(supports(max_size=4), st.data())
def test_exact_weight_moments_match_every_n_tuple(support, data):
    """exact_weight_moments (a sum over reward multisets with per-level score moments) gives the mean and second
    moment of the n-tuple enumeration, for every estimator: PKPO's four weights, grpo_passk with and without its
    std, Chen et al.'s advantages (of the binary reward r > 0)."""
    n = data.draw(st.integers(2, 4))
    k = data.draw(st.integers(1, n))
    probs, rewards = support.probs, support.rewards
    scores = score_matrix(probs)
    estimators = {variant: lambda g, v=variant: pkpo_weights(g, k, v) for variant in FRACTION_ORACLES
                  if not (variant == "loo" and n <= k) and not (variant == "loo_minus_one" and k < 2)}
    estimators.update({
        "grpo_passk": lambda g: grpo_passk_advantages(g, scale_rewards="none"),
        "grpo_passk_std": grpo_passk_advantages,
        "passk_training_of_r_positive": lambda g: passk_training_advantages(g > 0, k) * (k / n),
    })
    for name, fn in estimators.items():
        mean, second = tuple_moments(probs, rewards, n, by_rewards(fn))
        moments = exact_weight_moments(fn, floats(probs), np.array(rewards, float), scores, n)
        assert_vectors_close(moments.mean, floats(mean))
        assert moments.second_moment == pytest.approx(float(second), rel=RTOL_EXACT, abs=RTOL_EXACT), name


def test_exact_weight_moments_refuses_an_order_dependent_weight_function():
    """The moments assume weights follow the samples under permutation; a rule that favours position 0 is refused."""
    probs = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="permutation-equivariant"):
        exact_weight_moments(lambda g: g * (np.arange(g.shape[-1]) == 0), probs, np.array([0.0, 1.0]),
                             score_matrix([Fraction(1, 2)] * 2).numpy(), 3)


@pytest.mark.parametrize("k", [1, 2, 50, 4999, 5000, 9999, 10000])
def test_binomial_weights_are_exact_for_n_ten_thousand(k):
    """At n = 10^4 every binomial ratio behind the weights is the correctly rounded ratio of the exact integers
    (math.comb), finite or gracefully 0 below float range; the plain weights of a binary group are k/n for a
    correct sample and (k/n)(1 - C(n-1-c,k-1)/C(n-1,k-1)) for a failed one (PKPO's binary case)."""
    n = 10_000
    coefficients, table = _pkpo_coefficients(n, k), _pass_at_k_table(n, k)
    ranks = sorted({r for r in (1, 2, k - 1, k, k + 1, (n + k) // 2, n - 1, n) if 1 <= r <= n})

    def ratio(a, b):
        return float(Fraction(a, b))

    for r in ranks:
        assert coefficients["diagonal"][r - 1] == ratio(math.comb(r - 1, k - 1), math.comb(n, k))
        assert coefficients["off"][r - 1] == (ratio(math.comb(r - 2, k - 2), math.comb(n, k)) if r >= 2 and k >= 2
                                              else 0.0)
        if r < n and k < n:
            assert coefficients["loo"][r - 1] == ratio(math.comb(r - 1, k - 1), math.comb(n - 1, k))
        if r < n and k >= 2:
            assert coefficients["loo_minus"][r - 1] == ratio(math.comb(r - 1, k - 2), math.comb(n - 1, k - 1))
    for c in (0, 1, n - k, n - k + 1, n // 2, n - 1, n):
        if 0 <= c <= n:
            assert table["rho"][c] == ratio(math.comb(n, k) - math.comb(n - c, k), math.comb(n, k))
            assert table["neg_gap"][c] == (ratio(math.comb(n - c - 1, k - 1), math.comb(n - 1, k - 1)) if c < n else 0)
    rng = np.random.default_rng(k)
    correct = (rng.random(n) < 0.3).astype(float)
    c = int(correct.sum())
    s = pkpo_weights(correct, k, "plain")
    fail = Fraction(k, n) * (1 - Fraction(math.comb(n - 1 - c, k - 1), math.comb(n - 1, k - 1)))
    assert np.all(np.isfinite(s))
    assert_vectors_close(s[correct == 1], np.full(c, k / n))
    assert_vectors_close(s[correct == 0], np.full(n - c, float(fail)))


def test_estimators_agree_on_numpy_and_torch_and_over_a_batch():
    """numpy and torch give the same weights, and a batch of groups is its rows."""
    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 3, size=(4, 6)).astype(float)
    binary = (rewards > 0).astype(float)
    calls = [
        lambda x: pkpo_weights(x, 3, "plain"), lambda x: pkpo_weights(x, 3, "loo"),
        lambda x: pkpo_weights(x, 3, "loo_minus_one"), lambda x: pkpo_weights(x, 3, "mean_centred"),
        lambda x: grpo_passk_advantages(x), lambda x: max_at_k_estimate(x, 3),
    ]
    binary_calls = [lambda x: passk_training_advantages(x, 3), lambda x: pass_at_k_estimate(x, 3)]
    for fn, data in [(f, rewards) for f in calls] + [(f, binary) for f in binary_calls]:
        have = fn(data)
        assert_vectors_close(fn(torch.as_tensor(data)).numpy(), have)
        assert_vectors_close(np.stack([fn(row) for row in data]), have)


def test_estimators_refuse_what_they_cannot_compute():
    """k > n, a leave-one-out baseline with n = k, a k - 1 baseline with k = 1, non-binary rewards for pass@k
    estimators, non-finite rewards, and a group of one for grpo_passk are refused."""
    g = np.array([0.0, 1.0, 2.0])
    for call in [lambda: pkpo_weights(g, 4), lambda: pkpo_weights(g, 3, "loo"),
                 lambda: pkpo_weights(g, 1, "loo_minus_one"), lambda: pkpo_weights(g, 2, "nope"),
                 lambda: passk_training_advantages(g, 2), lambda: pass_at_k_estimate(g, 2),
                 lambda: max_at_k_estimate(np.array([0.0, np.nan]), 1),
                 lambda: pkpo_weights(np.array([0.0, np.inf]), 1, "plain"), lambda: grpo_passk_advantages(g[:1])]:
        with pytest.raises(ValueError):
            call()


# ---------------------------------------------------------------------- benchmark


EXACT_REL = 1e-9
"""An exactly computed unbiased row: ‖E ĝ - g‖/‖g‖ is floating error (~1e-15)."""


@pytest.fixture(scope="module")
def smoke_results():
    pytest.importorskip("transformers")
    from bonmath.inference_aware_variance import SMOKE, VarianceConfig, run

    return run(VarianceConfig(**SMOKE, smoke=True), progress=False)


@pytest.mark.hf
def test_benchmark_smoke_rows_follow_the_schema(smoke_results):
    """benchmarks/inference_aware_variance.py's computation (bonmath.inference_aware_variance.run) in smoke mode:
    the fixed JSON schema, one row per (model, target, n, k <= n, applicable estimator), finite numbers."""
    from bonmath.inference_aware_variance import ESTIMATORS, TARGETS

    meta, rows = smoke_results["meta"], smoke_results["rows"]
    assert meta["smoke"] is True and {"bonmath", "numpy", "torch"} <= set(meta["versions"])
    keys = {"estimator", "label", "model", "target", "n", "k", "relative_bias", "relative_variance",
            "relative_mse", "cosine"}
    config = meta["config"]
    want = {(m, t, n, k, s.name) for m in config["models"] for t in TARGETS for n in config["n"] for k in config["k"]
            for s in ESTIMATORS if k <= n and t in s.targets and s.applies(n, k)}
    assert {(r["model"], r["target"], r["n"], r["k"], r["estimator"]) for r in rows} == want and len(rows) == len(want)
    for row in rows:
        assert set(row) == keys and row["model"] in ("tabular", "gpt2") and row["target"] in TARGETS
        assert isinstance(row["n"], int) and isinstance(row["k"], int)
        for key in ("relative_bias", "relative_variance", "relative_mse", "cosine"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), row
        assert row["relative_variance"] >= 0 and -1 - 1e-12 <= row["cosine"] <= 1 + 1e-12
        assert row["relative_mse"] == pytest.approx(row["relative_bias"] ** 2 + row["relative_variance"], rel=1e-12)


@pytest.mark.hf
def test_benchmark_smoke_rows_show_each_estimators_exact_bias(smoke_results):
    """Unbiased rows have bias at rounding (PKPO's three weights; grpo_passk without std at k = n); the mean-centred
    weights are biased by exactly k/n (at k = n their mean is 0: cosine 0, else 1); grpo_passk at k < n, its std
    form and Chen et al.'s advantages are biased; on pass@k every row with a non-zero mean is parallel to the
    gradient (cosine ±1: binary rewards on one prompt)."""
    for row in smoke_results["rows"]:
        name, n, k = row["estimator"], row["n"], row["k"]
        zero_mean = row["cosine"] == 0.0 and row["relative_bias"] == pytest.approx(1, rel=EXACT_REL)
        if name in ("pkpo", "pkpo_loo", "pkpo_loo_minus_one") or (name == "grpo_passk" and k == n):
            assert row["relative_bias"] < EXACT_REL and row["cosine"] == pytest.approx(1, abs=EXACT_REL), row
        elif name == "pkpo_mean_centred":
            assert row["relative_bias"] == pytest.approx(k / n, rel=EXACT_REL), row
            assert zero_mean if k == n else row["cosine"] == pytest.approx(1, abs=EXACT_REL), row
        else:
            assert row["relative_bias"] > BIAS_FLOOR, row
        if row["target"] == "pass@k":
            assert zero_mean or abs(row["cosine"]) == pytest.approx(1, abs=EXACT_REL), row


def test_benchmark_config_refuses_bad_values():
    """Bad settings are ValueErrors naming the setting (the script turns them into exit status 2)."""
    from bonmath.inference_aware_variance import VarianceConfig

    for bad, name in [({"n": (1,)}, "n"), ({"k": (0,)}, "k"), ({"pass_rate": 1.0}, "pass_rate"),
                      ({"models": ("bert",)}, "models"), ({"tabular_vocab": 30}, "strings"),
                      ({"n": (4000,)}, "multisets")]:
        with pytest.raises(ValueError, match=name):
            VarianceConfig(**bad).validate()
