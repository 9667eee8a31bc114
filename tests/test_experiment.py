"""Claims about the exact evaluation of :mod:`bonmath.evaluation` and the injective formula
of :mod:`bonmath.theory.injective`, against brute force.

The brute-force oracle does not enumerate: it scores the list of all strings with
``CausalLMPolicy.log_prob`` (one right-padded forward over full sequences, no
prefix tree, no KV cache),
and recomputes each quantity from its definition with plain sums over strings
(the BoN law and the CDF by summing over all strings, the win rate by the double
sum over pairs).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from conftest import ATOL_LOG, RTOL_EXACT, RTOL_MPMATH
from hypothesis import given
from hypothesis import strategies as st

import bonmath
from bonmath.testing import paper_bon, supports
from bonmath.theory.injective import injective_bon_log_probs, injective_formula_error

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_train import tiny_task  # noqa: E402

from bonmath.evaluation import exact_frontier, pareto_mask, policy_metrics  # noqa: E402


def perturbed_model(task, scale: float = 0.5, seed: int = 3):
    import copy

    model = copy.deepcopy(task.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def brute_force(task, model, n: float) -> dict:
    """Every metric from its definition, with per-string log-probabilities (padded forward)."""
    with torch.no_grad():
        policy = task.policy(model, 0).log_prob(task.sequences).numpy()
        ref = task.policy(task.model, 0).log_prob(task.sequences).numpy()
    p, q, r = np.exp(policy), np.exp(ref), task.rewards[0]
    lt = np.array([q[r < x].sum() for x in r])
    le = np.array([q[r <= x].sum() for x in r])
    level = le - lt
    bon = q / level * (le**n - lt**n)
    beats = np.where(r[:, None] > r[None, :], 1.0, np.where(r[:, None] == r[None, :], 0.5, 0.0))
    win = p @ beats @ q  # Σ_ij p_i q_j [r_i > r_j] + ½ [r_i = r_j]
    # the bound L̃: log n + (n-1) log F_lt, with the lowest level's term replaced by R_N = (n-1) log q
    per_string = np.where(lt > 0, math.log(n) + (n - 1) * np.log(np.where(lt > 0, lt, 1.0)),
                          (n - 1) * np.log(level))
    kl_ref = float(np.sum(p * (policy - ref)))
    return {
        "reward": float(p @ r),
        "kl_ref": kl_ref,
        "win_rate": float(win),
        "entropy": float(-np.sum(p * policy)),
        "kl_bon": float(np.sum(p * (policy - np.log(bon)))),
        "bound": float(p @ per_string - kl_ref),
    }


@pytest.fixture(scope="module")
def task():
    return tiny_task(max_new_tokens=3)


def test_exact_metrics_match_brute_force(task):
    """E[r], KL(π||π_ref), W(π, π_ref), H(π), KL(π||π_N) and L̃_N from the enumeration
    equal their definitions evaluated string by string."""
    model = perturbed_model(task)
    n = 4
    have = policy_metrics(task, task.enumerate_log_probs(model), ns=[n], num_samples=0)
    want = brute_force(task, model, n)
    for key in ("reward", "kl_ref", "win_rate", "entropy"):
        assert getattr(have, key) == pytest.approx(want[key], abs=ATOL_LOG), key
    assert have.kl_to_bon(n) == pytest.approx(want["kl_bon"], abs=ATOL_LOG)
    assert have.bound_at(n) == pytest.approx(want["bound"], abs=ATOL_LOG)


def test_review_metrics_match_brute_force(tmp_path):
    """The same on the shipped review LM (1 prompt, 2 new tokens, VADER rewards with ties)."""
    pytest.importorskip("vaderSentiment")
    from bonmath.sentiment import REVIEW_LM_PATH, review_task

    if not (REVIEW_LM_PATH / "config.json").is_file():
        pytest.skip("models/review_lm is not built")
    task = review_task(prompts=[1], max_new_tokens=2, reward_cache_dir=tmp_path)
    assert len(np.unique(task.rewards)) < task.rewards.size  # ties
    model = perturbed_model(task, scale=0.2)
    have = policy_metrics(task, task.enumerate_log_probs(model), ns=[8], num_samples=0)
    want = brute_force(task, model, 8)
    for key in ("reward", "kl_ref", "win_rate", "entropy"):
        assert getattr(have, key) == pytest.approx(want[key], abs=ATOL_LOG), key
    assert have.kl_to_bon(8) == pytest.approx(want["kl_bon"], abs=ATOL_LOG)


def test_bon_metrics(task):
    """At π = π_N: KL(π||π_N) = 0, KL(π_N||π_ref) <= log N - (N-1)/N, W <= N/(N+1)."""
    for n in (2, 8):
        have = policy_metrics(task, task.bon_log_probs(n), ns=[n], num_samples=0)
        assert abs(have.kl_to_bon(n)) < ATOL_LOG
        assert have.kl_ref <= bonmath.bon_kl_upper_bound(n)
        assert have.win_rate <= n / (n + 1)


def test_sample_estimates_have_the_exact_sd(task):
    """k1/k3 sds are sqrt(Var/m) with Var the exact variance over the enumeration, and
    the estimates lie within Z_BOUND of that sd of the exact KL on average over seeds."""
    from conftest import Z_BOUND

    log_probs = task.enumerate_log_probs(perturbed_model(task))
    p, x = np.exp(log_probs[0]), log_probs[0] - task.ref_log_probs[0]
    kl = float(p @ x)
    k3 = np.expm1(-x) + x
    m, reps = 64, 200
    sample = policy_metrics(task, log_probs, num_samples=m, rng=0).sample
    assert sample.k1_sd == pytest.approx(math.sqrt(float(p @ (x - kl) ** 2) / m), rel=RTOL_MPMATH)
    assert sample.k3_sd == pytest.approx(math.sqrt(float(p @ (k3 - kl) ** 2) / m), rel=RTOL_MPMATH)
    for key in ("k1", "k3"):
        mean = np.mean([getattr(policy_metrics(task, log_probs, num_samples=m, rng=s).sample, key)
                        for s in range(reps)])
        z = (mean - kl) / (getattr(sample, f"{key}_sd") / math.sqrt(reps))
        assert abs(z) < Z_BOUND, f"{key}: z = {z:.2f}"


def test_k3_sd_under_pi_n_is_finite_in_logs(task):
    """Under π_N at huge N, ρ = π_ref/π_N reaches e^(10^6): k3's sd is reported by its log
    (and as None), k1's is finite."""
    sample = policy_metrics(task, task.bon_log_probs(1e6), num_samples=8, rng=0).sample
    assert math.isfinite(sample.k3_log_sd) and sample.k3_log_sd > 700 and sample.k3_sd is None
    assert sample.k1_sd is not None and math.isfinite(sample.k1_sd)


# --------------------------------------------------------------------- injective formula


@given(supports(), st.integers(1, 6))
def test_injective_formula_matches_the_papers_rationals(support, n):
    """The float formula equals ``bonmath.testing.paper_bon`` in exact rationals."""
    want = [float(x) for x in paper_bon(support.probs, support.rewards, n)]
    have = np.exp(injective_bon_log_probs(support.ref_log_probs, support.rewards_array, n))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@given(supports(zero_mass=False), st.integers(1, 6))
def test_injective_formula_never_exceeds_pi_n_and_tv_is_half_the_missing_mass(support, n):
    """formula <= π_N string by string, so TV = missing mass / 2; the missing mass equals
    1 - Σ paper_bon in exact rationals."""
    bon = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    error = injective_formula_error(support.ref_log_probs, support.rewards_array, bon, n)
    have = np.exp(injective_bon_log_probs(support.ref_log_probs, support.rewards_array, n))
    assert np.all(have <= np.exp(bon) * (1 + RTOL_EXACT))
    assert float(error.tv) == pytest.approx(float(error.missing_mass) / 2, abs=RTOL_EXACT)
    exact_missing = 1 - sum(paper_bon(support.probs, support.rewards, n), Fraction(0))
    assert float(error.missing_mass) == pytest.approx(float(exact_missing), abs=RTOL_EXACT)


def test_injective_formula_is_bon_without_ties():
    """Without ties the injective formula is the BoN law (50 distinct rewards, N up to 1000)."""
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(50)))
    rewards = rng.permutation(50).astype(float)
    for n in (1, 2, 7, 1000):
        np.testing.assert_allclose(injective_bon_log_probs(log_probs, rewards, n),
                                   bonmath.bon_log_probs(log_probs, rewards, n), atol=ATOL_LOG)


def test_injective_formula_is_finite_for_large_n():
    """At N = 10^6 the formula is finite in logs: a top string gets (1/2 + 1/4)^N - (1/2)^N,
    whose log is N log(3/4) + log1p(-(2/3)^N) = N log(3/4) to float precision."""
    log_probs = np.log([0.5, 0.25, 0.25])
    have = injective_bon_log_probs(log_probs, [0.0, 1.0, 1.0], 10**6)
    assert np.all(np.isfinite(have))
    assert have[1] == pytest.approx(10**6 * math.log(0.75), rel=RTOL_EXACT)


# ------------------------------------------------------------------------------ Pareto


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=12))
def test_pareto_mask_matches_brute_force(points):
    """pareto_mask flags exactly the points no other point dominates (pairwise check)."""
    cost = [c for c, _ in points]
    gain = [g for _, g in points]
    want = [not any(c2 <= c and g2 >= g and (c2 < c or g2 > g) for c2, g2 in points) for c, g in points]
    assert pareto_mask(cost, gain).tolist() == want


def test_tilted_policies_are_pareto_optimal(task):
    """No policy beats the tilted family π_β = π_ref e^{r/β}/Z: for every β and every π,
    E_π[r] - β KL(π||π_ref) <= E_β[r] - β KL(π_β||π_ref) (π_β maximises it), which is
    Pareto optimality of the frontier without interpolation. Checked for BoN, the bound
    optimum and a perturbed model."""
    betas = np.logspace(1.5, -2.5, 60)
    frontier = exact_frontier(task, betas)
    candidates = [task.bon_log_probs(n) for n in (2, 4, 16)]
    candidates.append(bonmath.vbon_bound_optimum(task.ref_log_probs, task.rewards, 8))
    candidates.append(task.enumerate_log_probs(perturbed_model(task)))
    for log_probs in candidates:
        m = policy_metrics(task, log_probs, num_samples=0)
        for beta, kl, reward in zip(frontier.beta, frontier.kl_ref, frontier.reward):
            assert m.reward - beta * m.kl_ref <= reward - beta * kl + ATOL_LOG, beta


def test_frontier_interpolation_is_below_the_frontier(task):
    """Frontier.value_at interpolates linearly between sweep points of a concave curve, so
    it never exceeds the reward of the tilted policy at the same KL (a finer sweep)."""
    coarse = exact_frontier(task, np.logspace(1.5, -2.5, 8))
    fine = exact_frontier(task, np.logspace(1.5, -2.5, 57))
    for kl, reward in zip(fine.kl_ref, fine.reward):
        value = coarse.value_at("reward", kl)
        if value is not None:
            assert value <= reward + ATOL_LOG
