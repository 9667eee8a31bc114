"""The finite vBoN bound L̃ (bonmath.vbon_finite_lower_bound) and its log-CDF log F̃.

L̃ = log N + (N-1) E_θ[log F_lt] - KL(π_θ||π_ref), with the per-string term replaced
by the exact R_N = (N-1) log q where F_lt = 0 (docs/math.md, "vBoN").
"""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import ATOL_LOG, RTOL_EXACT, RTOL_FINITE_DIFFERENCE
from hypothesis import given
from hypothesis import strategies as st

import bonmath
from bonmath.testing import exact_cdf, policies, supports

n_values = st.one_of(st.integers(1, 64), st.floats(1.0, 1e4))


@given(supports(), st.data(), n_values)
def test_finite_bound_le_objective(support, data, n):
    """L̃ <= J = -KL(π_θ||π_N) for every policy, ties and zero-mass strings included."""
    policy = data.draw(policies(len(support.weights)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = bonmath.vbon_finite_lower_bound(policy, ref, rewards, n)
    objective = bonmath.vbon_objective(policy, ref, rewards, n)
    if objective == -np.inf:
        assert have == -np.inf
    else:
        assert have <= objective + RTOL_EXACT * max(1.0, abs(objective))


@given(supports(), st.data(), n_values)
def test_finite_bound_equals_the_bound_where_the_bound_is_finite(support, data, n):
    """L̃ = L exactly wherever L > -inf (π_θ without mass where F_lt = 0), and at N = 1 both are -KL."""
    policy = data.draw(policies(len(support.weights)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    bound = bonmath.vbon_lower_bound(policy, ref, rewards, n)
    if np.isfinite(bound):
        assert bonmath.vbon_finite_lower_bound(policy, ref, rewards, n) == bound
    if n == 1:
        assert bonmath.vbon_finite_lower_bound(policy, ref, rewards, n) == -bonmath.kl_divergence(policy, ref)


@given(supports(), st.data(), n_values)
def test_finite_bound_is_minus_inf_only_where_the_objective_is(support, data, n):
    """L̃ is finite for every policy with finite J (in particular where L = -inf), and -inf where J is."""
    policy = data.draw(policies(len(support.weights)))
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = bonmath.vbon_finite_lower_bound(policy, ref, rewards, n)
    assert np.isfinite(have) == np.isfinite(bonmath.vbon_objective(policy, ref, rewards, n))


def test_finite_bound_matches_exact_rationals_on_a_tied_example():
    """On a tied support whose lowest string has no mass (so the next level also has F_lt = 0),
    L̃ equals log N + (N-1) log F_lt / R_N = (N-1) log q per string, from exact F_lt and q, minus KL."""
    weights, rewards = (0, 1, 2, 1, 3, 1), (-1, 0, 0, 1, 1, 2)
    policy_weights = (0, 2, 1, 1, 3, 5)
    ref = [Fraction(w, sum(weights)) for w in weights]
    policy = [Fraction(w, sum(policy_weights)) for w in policy_weights]
    lt, le = exact_cdf(ref, rewards)
    assert lt[1] == lt[2] == 0 and policy[1] > 0  # L = -inf here
    with np.errstate(divide="ignore"):
        policy_lp, ref_lp = np.log(np.array(policy, dtype=float)), np.log(np.array(ref, dtype=float))
    with mpmath.workdps(50):
        for n in (2, 5, 1000):
            want = mpmath.mpf(0)
            for p, r, a, b in zip(policy, ref, lt, le):
                if p == 0:
                    continue
                term = (n - 1) * mpmath.log(b - a) if a == 0 else mpmath.log(n) + (n - 1) * mpmath.log(a)
                want += p * (term - mpmath.log(p / r))
            have = bonmath.vbon_finite_lower_bound(policy_lp, ref_lp, rewards, n)
            assert abs(have - float(want)) <= RTOL_EXACT * max(1.0, abs(float(want))), n
            assert bonmath.vbon_lower_bound(policy_lp, ref_lp, rewards, n) == -np.inf


@given(supports(), st.one_of(st.integers(2, 64), st.floats(1.0 + 1e-9, 1e6)))
def test_finite_bound_log_cdf_gives_r_n_where_cdf_is_zero_and_at_most_r_n_elsewhere(support, n):
    """log N + (N-1) log F̃ <= R_N everywhere, = R_N where F_lt = 0, and log F̃ = log F_lt elsewhere."""
    ref, rewards = support.ref_log_probs, support.rewards_array
    have = math.log(n) + (n - 1) * bonmath.vbon_finite_bound_log_cdf(ref, rewards, n)
    ratio = bonmath.bon_log_ratio(ref, rewards, n)
    log_cdf_lt, _ = bonmath.reward_cdf(ref, rewards)
    zero = log_cdf_lt == -np.inf
    mass = ref > -np.inf  # R_N of a zero-mass string is a limit; the bound holds at the strings with mass
    np.testing.assert_allclose(have[zero & mass], ratio[zero & mass], rtol=RTOL_EXACT, atol=ATOL_LOG)
    assert np.all(have[mass] <= ratio[mass] + RTOL_EXACT * np.maximum(1.0, np.abs(ratio[mass])))
    assert np.array_equal(bonmath.vbon_finite_bound_log_cdf(ref, rewards, n)[~zero], log_cdf_lt[~zero])


@given(st.lists(supports(min_size=4, max_size=4), min_size=1, max_size=3), st.data(), n_values)
def test_finite_bound_is_batched_row_by_row(rows, data, n):
    """A batch of supports gives each row's L̃."""
    policy = np.stack([data.draw(policies(4)) for _ in rows])
    ref = np.stack([s.ref_log_probs for s in rows])
    rewards = np.stack([s.rewards_array for s in rows])
    have = bonmath.vbon_finite_lower_bound(policy, ref, rewards, n)
    want = [bonmath.vbon_finite_lower_bound(p, q, r, n) for p, q, r in zip(policy, ref, rewards)]
    np.testing.assert_array_equal(have, want)


def test_finite_bound_torch_gradient_matches_central_differences():
    """∇L̃ w.r.t. policy and reference logits (autograd) equals central finite differences along
    random directions, with policy mass on the F_lt = 0 level (where ∇L does not exist)."""
    torch = pytest.importorskip("torch")
    rewards = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    rng = np.random.default_rng(0)
    theta0, phi0 = rng.standard_normal(5), rng.standard_normal(5)

    def bound(theta, phi, n):
        return bonmath.vbon_finite_lower_bound(torch.log_softmax(theta, 0), torch.log_softmax(phi, 0), rewards, n)

    for n in (2.0, 7.5):
        theta = torch.tensor(theta0, requires_grad=True)
        phi = torch.tensor(phi0, requires_grad=True)
        value = bound(theta, phi, n)
        assert torch.isfinite(value)
        grad_theta, grad_phi = torch.autograd.grad(value, (theta, phi))
        for _ in range(3):
            u, w = torch.tensor(rng.standard_normal(5)), torch.tensor(rng.standard_normal(5))
            h = 1e-5
            with torch.no_grad():
                plus = bound(torch.tensor(theta0) + h * u, torch.tensor(phi0) + h * w, n)
                minus = bound(torch.tensor(theta0) - h * u, torch.tensor(phi0) - h * w, n)
            want = float((plus - minus) / (2 * h))
            have = float(grad_theta @ u + grad_phi @ w)
            assert abs(have - want) <= RTOL_FINITE_DIFFERENCE * max(1.0, abs(want)), (n, have, want)


def test_finite_bound_agrees_between_numpy_and_torch():
    """The torch path gives the numpy value (float64) and keeps the input dtype."""
    torch = pytest.importorskip("torch")
    policy, ref, rewards = np.log([0.1, 0.2, 0.3, 0.4]), np.log([0.4, 0.3, 0.2, 0.1]), [0.0, 0.0, 1.0, 3.0]
    want = bonmath.vbon_finite_lower_bound(policy, ref, rewards, 3)
    have = bonmath.vbon_finite_lower_bound(torch.tensor(policy), torch.tensor(ref), rewards, 3)
    assert have.dtype == torch.float64 and abs(float(have) - float(want)) <= RTOL_EXACT * abs(float(want))
    np.testing.assert_allclose(
        bonmath.vbon_finite_bound_log_cdf(torch.tensor(ref), rewards, 3).numpy(),
        bonmath.vbon_finite_bound_log_cdf(ref, rewards, 3), rtol=RTOL_EXACT)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bonmath.vbon_finite_lower_bound([0.0, -np.inf], [0.0, -np.inf], [0, 1], 0.5), "n must be >= 1"),
        (lambda: bonmath.vbon_finite_bound_log_cdf([0.0, -np.inf], [0, 1], 1), "n must be > 1"),
        (lambda: bonmath.vbon_finite_lower_bound([0.0, 0.0], np.log([0.5, 0.5]), [0, 1], 2), "policy_log_probs"),
        (lambda: bonmath.vbon_finite_lower_bound(np.log([0.5, 0.5]), np.log([0.5, 0.5]), [0, 1, 2], 2),
         "support sizes"),
        (lambda: bonmath.vbon_finite_bound_log_cdf(np.log([0.5, 0.5]), [0, np.nan], 2), "rewards contains NaN"),
    ],
)
def test_finite_bound_rejects_bad_input(call, match):
    """Bad n, unnormalised log-probabilities, mismatched supports and NaN rewards raise ValueError."""
    with pytest.raises(ValueError, match=match):
        call()
