"""The Monte Carlo BoN sampler agrees with the exact law (and so validates it statistically)."""

import numpy as np
import pytest
from conftest import Z_BOUND

import bonmath

pytestmark = pytest.mark.statistical


@pytest.mark.parametrize("n", [1, 2, 7])
def test_sample_bon_frequencies_match_the_exact_law(n):
    """Every string's frequency among 100 000 BoN samples lies within Z_BOUND binomial
    standard errors of the exact π_N (ties, a zero-mass string included)."""
    ref = np.log([0.3, 0.2, 0.1, 0.25, 0.15, 1.0]) + [0, 0, 0, 0, 0, -np.inf]
    rewards = np.array([1.0, 2.0, 2.0, 0.0, 1.0, 3.0])
    size = 100_000
    counts = np.bincount(bonmath.sample_bon(ref, rewards, n, size, rng=n), minlength=6)
    p = np.exp(bonmath.bon_log_probs(ref, rewards, n))
    assert counts[5] == 0
    z = (counts - size * p)[:5] / np.sqrt(size * p * (1 - p))[:5]
    assert np.abs(z).max() < Z_BOUND, f"max |z| = {np.abs(z).max():.2f}"


def test_sample_bon_breaks_ties_uniformly():
    """Two tied strings of unequal mass: BoN keeps their ratio (π_N ∝ π_ref inside a level),
    which a tie-break preferring the first *string* would not."""
    ref = np.log([0.6, 0.1, 0.3])
    rewards = np.array([1.0, 1.0, 0.0])
    size = 200_000
    counts = np.bincount(bonmath.sample_bon(ref, rewards, 4, size, rng=0), minlength=3)
    p = np.exp(bonmath.bon_log_probs(ref, rewards, 4))
    z = (counts[1] - size * p[1]) / np.sqrt(size * p[1] * (1 - p[1]))
    assert abs(z) < Z_BOUND, f"z = {z:.2f}"


def test_sample_bon_is_reproducible_and_batched():
    ref = np.log([[0.5, 0.5], [0.9, 0.1]])
    a = bonmath.sample_bon(ref, [0.0, 1.0], 3, 50, rng=7)
    b = bonmath.sample_bon(ref, [0.0, 1.0], 3, 50, rng=7)
    assert a.shape == (2, 50)
    np.testing.assert_array_equal(a, b)
