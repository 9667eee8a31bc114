"""The Best-of-N law: against brute force, and the identities of docs/math.md."""

from fractions import Fraction

import numpy as np
import pytest
from conftest import ATOL_LOG, RTOL_EXACT
from hypothesis import given
from hypothesis import strategies as st

import bonmath
from bonmath.testing import brute_force_bon, exact_bon, exact_cdf, paper_bon, supports


def as_floats(fractions):
    return np.array([float(f) for f in fractions])


@given(supports(max_size=5), st.integers(1, 4))
def test_bon_law_equals_brute_force_with_ties_and_zero_mass(support, n):
    """π_N = π_ref/q (F_le^N - F_lt^N) is the law of the best of N i.i.d. draws with
    uniform tie-breaking (docs/math.md, "The Best-of-N law"; BOND eq. 4)."""
    want = as_floats(brute_force_bon(support.probs, support.rewards, n))
    have = np.exp(bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n))
    np.testing.assert_allclose(have, want, rtol=RTOL_EXACT, atol=0)


@given(supports(max_size=6), st.integers(1, 60))
def test_bon_law_equals_exact_rational_closed_form_for_large_n(support, n):
    """For n too large to enumerate tuples, the float law matches the closed form in exact rationals."""
    want = as_floats(exact_bon(support.probs, support.rewards, n))
    have = np.exp(bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n))
    np.testing.assert_allclose(have, want, rtol=1e-11, atol=1e-300)


@given(supports(max_size=6, num_rewards=10**6, zero_mass=False), st.integers(1, 4))
def test_paper_binomial_form_is_the_special_case_without_ties(support, n):
    """Without ties, the vBoN paper's Proposition Σ_i C(N,i) F_lt^(N-i) π^i is the BoN law."""
    if len(set(support.rewards)) < len(support.rewards):
        return  # a collision among 10^6 values: this claim is about distinct rewards
    assert paper_bon(support.probs, support.rewards, n) == brute_force_bon(support.probs, support.rewards, n)


def test_paper_binomial_form_does_not_normalise_with_ties():
    """With ties the paper's form is wrong: two tied strings of mass 1/2 (F_lt = 0) get
    C(2,2)(1/2)^2 = 1/4 each, total 1/2; the tie-aware law gives 1/2 each."""
    probs = [Fraction(1, 2), Fraction(1, 2)]
    rewards = [1, 1]
    assert sum(paper_bon(probs, rewards, 2)) == Fraction(1, 2)
    have = np.exp(bonmath.bon_log_probs(np.log([0.5, 0.5]), [1.0, 1.0], 2))
    np.testing.assert_allclose(have, [0.5, 0.5], rtol=RTOL_EXACT)


@given(supports(), st.floats(0.05, 300.0))
def test_bon_law_normalises_for_any_real_n(support, n):
    """F_le^n - F_lt^n telescopes over levels to 1 for every real n > 0."""
    have = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    assert abs(np.logaddexp.reduce(have)) < ATOL_LOG


@given(supports())
def test_bon_with_n_one_is_the_reference(support):
    """BoN with one draw returns the reference model."""
    have = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, 1)
    np.testing.assert_array_equal(have, support.ref_log_probs)
    assert np.all(bonmath.bon_log_ratio(support.ref_log_probs, support.rewards_array, 1) == 0)


@given(supports(), st.integers(1, 8))
def test_zero_mass_strings_get_zero_bon_mass(support, n):
    """BoN never returns a string the reference cannot produce."""
    have = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    zero = np.array(support.weights) == 0
    assert np.all(have[zero] == -np.inf)
    assert np.all(np.isfinite(have[~zero]))


@given(supports(), st.floats(0.1, 50.0), st.sampled_from([np.exp, np.arctan, lambda r: r**3 - 7.0]))
def test_bon_is_invariant_to_increasing_reward_transforms(support, n, transform):
    """BoN depends on rewards only through their order (docs/math.md)."""
    want = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    have = bonmath.bon_log_probs(support.ref_log_probs, transform(support.rewards_array), n)
    np.testing.assert_allclose(have, want, atol=ATOL_LOG)


@given(supports(), st.integers(1, 6), st.integers(1, 6))
def test_bon_composes_multiplicatively(support, m, n):
    """BoN_m(BoN_n(π)) = BoN_{mn}(π): the level CDF F becomes (F^n)^m."""
    inner = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n)
    have = bonmath.bon_log_probs(inner, support.rewards_array, m)
    want = bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, m * n)
    np.testing.assert_allclose(np.exp(have), np.exp(want), rtol=1e-11, atol=1e-300)


@given(supports(), st.integers(1, 20))
def test_bon_sandwich(support, n):
    """n π F_lt^(n-1) <= π_N <= n π F_le^(n-1) (docs/math.md, "Sandwich")."""
    probs = as_floats(support.probs)
    lt, le = (as_floats(f) for f in exact_cdf(support.probs, support.rewards))
    have = np.exp(bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n))
    assert np.all(have >= n * probs * lt ** (n - 1) * (1 - 1e-12))
    assert np.all(have <= n * probs * le ** (n - 1) * (1 + 1e-12))


@given(supports())
def test_bon_is_proportional_to_reference_within_a_level(support):
    """Inside a level π_N ∝ π_ref: the log ratio depends only on the reward level."""
    ratio = bonmath.bon_log_ratio(support.ref_log_probs, support.rewards_array, 5)
    for r in set(support.rewards):
        level = ratio[support.rewards_array == r]
        assert len(set(level.tolist())) == 1


def test_first_index_tie_breaking_gives_the_same_law():
    """Taking the first maximising draw gives the uniform-tie law (exchangeability):
    enumerate 3-tuples on a tied support with the first-index rule."""
    import itertools

    probs = [Fraction(1, 2), Fraction(1, 3), Fraction(1, 6)]
    rewards = [1, 1, 0]
    law = [Fraction(0)] * 3
    for draws in itertools.product(range(3), repeat=3):
        best = max(rewards[i] for i in draws)
        first = next(i for i in draws if rewards[i] == best)
        law[first] += probs[draws[0]] * probs[draws[1]] * probs[draws[2]]
    assert law == brute_force_bon(probs, rewards, 3)
    have = bonmath.bon_log_probs(np.log([0.5, 1 / 3, 1 / 6]), rewards, 3, ties="first_index")
    np.testing.assert_allclose(np.exp(have), as_floats(law), rtol=RTOL_EXACT)


def test_infinite_rewards_are_ordered_like_values():
    """±inf rewards are allowed and ordered: -inf < finite < +inf, equal infinities tie."""
    lp = np.log([0.25, 0.25, 0.25, 0.25])
    have = bonmath.bon_log_probs(lp, [-np.inf, 0.0, np.inf, np.inf], 2)
    want = bonmath.bon_log_probs(lp, [0.0, 1.0, 2.0, 2.0], 2)
    np.testing.assert_allclose(have, want, atol=ATOL_LOG)


def test_batch_axes_match_row_by_row():
    """Leading axes are a batch: each row is computed as if alone, up to rounding (with
    different tie patterns)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 7))
    ref = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    rewards = rng.integers(0, 3, size=(3, 4, 7)).astype(float)
    have = bonmath.bon_log_probs(ref, rewards, 4)
    for i in range(3):
        for j in range(4):
            want = bonmath.bon_log_probs(ref[i, j], rewards[i, j], 4)
            np.testing.assert_allclose(have[i, j], want, rtol=1e-15, atol=0)


def test_large_batches_match_row_by_row():
    """Rows longer than one block (bonmath.backend.blockwise) with ties, zero-mass strings
    and strings holding most of their level: each row is computed as if alone."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 40_000))
    logits[rng.random(logits.shape) < 0.01] = -np.inf
    rewards = np.round(rng.random((3, 40_000)), 2)
    logits[:, :50] = 30.0  # a dominant string in each of 50 levels
    rewards[:, :50] = np.arange(50) / 100
    ref = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    have = bonmath.bon_log_probs(ref, rewards, 8)
    for i in range(3):
        np.testing.assert_allclose(have[i], bonmath.bon_log_probs(ref[i], rewards[i], 8), rtol=1e-14, atol=0)


def test_rewards_broadcast_over_a_batch_of_reference_models():
    """One reward vector (shape (k,)) broadcasts against a batch of reference models (B, k)."""
    ref = np.log([[0.5, 0.5, 1.0], [0.2, 0.3, 0.5]]) + [[0, 0, -np.inf], [0, 0, 0]]
    have = bonmath.bon_log_probs(ref, [2.0, 1.0, 0.0], 3)
    assert have.shape == (2, 3)
    np.testing.assert_array_equal(have[1], bonmath.bon_log_probs(ref[1], [2.0, 1.0, 0.0], 3))


@given(supports(max_size=5))
def test_reward_cdf_matches_exact_sums(support):
    """reward_cdf gives log P(r(Y') < r(y)) and log P(r(Y') <= r(y)) under π_ref."""
    want_lt, want_le = (as_floats(f) for f in exact_cdf(support.probs, support.rewards))
    lt, le = bonmath.reward_cdf(support.ref_log_probs, support.rewards_array)
    np.testing.assert_allclose(np.exp(lt), want_lt, rtol=RTOL_EXACT, atol=0)
    np.testing.assert_allclose(np.exp(le), want_le, rtol=RTOL_EXACT, atol=0)


@pytest.mark.parametrize("n", [2, 7.5])
def test_bon_log_ratio_from_cdf_agrees_with_the_enumerated_ratio(n):
    """Per-sample (F_lt, level mass) pairs give the same R_N as the enumerated support."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(50)
    ref = logits - np.logaddexp.reduce(logits)
    rewards = rng.integers(0, 10, 50).astype(float)
    lt, le = bonmath.reward_cdf(ref, rewards)
    mass = np.array([np.logaddexp.reduce(ref[rewards == r]) for r in rewards])
    np.testing.assert_allclose(
        bonmath.bon_log_ratio_from_cdf(lt, mass, n), bonmath.bon_log_ratio(ref, rewards, n), atol=ATOL_LOG
    )
