"""bonmath.estimator_evaluation against enumeration of every k-tuple of samples.

The oracle pushes every k-tuple of support strings through the real surrogate loss
(:func:`bonmath.estimators.vbon_surrogate`), one backward pass per tuple, and weighs
the gradients by the tuple's probability (as tests/test_estimators.py does).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import RTOL_EXACT, Z_BOUND

torch = pytest.importorskip("torch")

import bonmath  # noqa: E402
from bonmath.estimator_evaluation import evaluate_estimator  # noqa: E402
from bonmath.estimator_moments import exact_moments, per_output_gradients  # noqa: E402
from bonmath.estimators import exact_gradient, flat_gradient, vbon_surrogate  # noqa: E402

N_BON = 4
MOMENT_RTOL = 1e-10
"""Second moments from the U-statistic formulas against tuple sums (as in tests/test_estimators.py)."""


class SoftmaxCase:
    """A 4-string softmax policy (the last string blocked: zero mass) against a tied reference."""

    def __init__(self):
        self.logits = torch.tensor([0.4, -0.3, 0.1, 0.0], dtype=torch.float64, requires_grad=True)
        self.block = torch.tensor([0.0, 0.0, 0.0, -math.inf], dtype=torch.float64)
        self.ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64).log()
        self.rewards = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
        self.log_ratio = bonmath.bon_log_ratio(self.ref, self.rewards, N_BON)

    def policy(self):
        return torch.log_softmax(self.logits + self.block, 0)

    @property
    def probs(self):
        return self.policy().detach().exp()

    def target(self):
        return exact_gradient("vbon", self.policy(), self.ref, [self.logits], rewards=self.rewards, n=N_BON)

    def estimate(self, index, baseline):
        """The vBoN score-function estimate of one draw of k support indices."""
        loss = vbon_surrogate(self.policy()[index], self.ref[index], self.log_ratio[index], baseline)
        return flat_gradient(loss, [self.logits])

    def terms(self):
        """(score, value) per string: ĝ's decomposition for the vBoN estimator."""
        policy = self.policy()
        score = per_output_gradients(policy, [self.logits])
        value = (policy.detach() - self.ref - self.log_ratio).detach()  # -inf on the blocked string
        return score, value


@pytest.fixture(scope="module")
def case():
    return SoftmaxCase()


def tuple_moments(case, k, baseline):
    """E[ĝ], E||ĝ||² and E||ĝ - g||² by enumerating every k-tuple of strings with mass."""
    support = torch.nonzero(case.probs > 0).squeeze(1).tolist()
    target = case.target()
    mean, second, error = 0.0, 0.0, 0.0
    for draws in itertools.product(support, repeat=k):
        weight = float(case.probs[list(draws)].prod())
        g = case.estimate(torch.tensor(draws), baseline)
        mean = mean + weight * g
        second += weight * float(g @ g)
        error += weight * float((g - target) @ (g - target))
    return mean, second, error


@pytest.mark.parametrize("baseline", ["none", "loo", "mean"])
@pytest.mark.parametrize("k", [2, 3])
def test_exact_evaluation_equals_enumeration_of_tuples(case, baseline, k):
    """Exact mean, total variance, relative MSE, relative bias and cosine equal their
    definitions summed over every k-tuple of samples pushed through vbon_surrogate."""
    score, value = case.terms()
    target = case.target()
    have = evaluate_estimator(target, case.probs, k, score=score, value=value, baseline=baseline)
    mean, second, error = tuple_moments(case, k, baseline)
    scale = float(target.norm())
    torch.testing.assert_close(have.mean, mean, rtol=0, atol=RTOL_EXACT * scale)
    assert have.total_variance == pytest.approx(second - float(mean @ mean), rel=MOMENT_RTOL)
    assert have.relative_mse == pytest.approx(error / scale**2, rel=MOMENT_RTOL)
    assert have.relative_bias == pytest.approx(float((mean - target).norm()) / scale, abs=RTOL_EXACT)
    assert have.cosine == pytest.approx(float(mean @ target) / (float(mean.norm()) * scale), abs=RTOL_EXACT)
    assert have.num_estimates is None and have.relative_bias_standard_error is None


@pytest.mark.parametrize("k", [2, 3, 8])
def test_mean_baseline_has_relative_bias_one_over_k_and_cosine_one(case, k):
    """Centring on the mean of all k values scales the expected gradient by (k-1)/k
    (docs/math.md, "Gradients"): relative bias 1/k, cosine 1; with loo the bias is 0."""
    score, value = case.terms()
    target = case.target()
    mean = evaluate_estimator(target, case.probs, k, score=score, value=value, baseline="mean")
    assert mean.relative_bias == pytest.approx(1.0 / k, abs=RTOL_EXACT)
    assert mean.cosine == pytest.approx(1.0, abs=RTOL_EXACT)
    loo = evaluate_estimator(target, case.probs, k, score=score, value=value, baseline="loo")
    assert loo.relative_bias <= RTOL_EXACT


@pytest.mark.statistical
def test_monte_carlo_bias_is_within_z_bound_standard_errors_of_the_exact_bias(case):
    """With a fixed seed, the Monte Carlo bias (mean of R estimates - g) of the mean-baseline
    estimator agrees with the exact bias along the bias direction and two random directions,
    within Z_BOUND exact standard errors sqrt(Var⟨ĝ, u⟩ / R)."""
    k, runs = 3, 2000
    score, value = case.terms()
    target = case.target()
    exact = evaluate_estimator(target, case.probs, k, score=score, value=value, baseline="mean")
    sampled = evaluate_estimator(target, case.probs, k, estimator=lambda index: case.estimate(index, "mean"),
                                 num_estimates=runs, rng=12345)
    rng = np.random.default_rng(0)
    directions = [exact.bias / exact.bias.norm()] + [torch.tensor(rng.standard_normal(4)) for _ in range(2)]
    score_masked = torch.where((case.probs > 0)[:, None], score, 0.0)
    value_masked = torch.where(case.probs > 0, value, 0.0)
    for u in directions:
        projected = exact_moments(case.probs, None, score_masked @ u[:, None], value_masked, k=k, baseline="mean")
        standard_error = math.sqrt(projected.total_variance / runs)
        gap = float((sampled.bias - exact.bias) @ u)
        assert abs(gap) <= Z_BOUND * standard_error, f"{gap:.3g} is more than {Z_BOUND} sds {standard_error:.3g}"
    # the bias (relative size 1/k) is resolved: far above the stated noise floor
    assert exact.relative_bias > Z_BOUND * sampled.relative_bias_standard_error
    assert sampled.num_estimates == runs and sampled.mean_standard_error.shape == target.shape


def test_monte_carlo_is_reproducible_with_a_seed(case):
    def run():
        return evaluate_estimator(case.target(), case.probs, 2, estimator=lambda i: case.estimate(i, "loo"),
                                  num_estimates=20, rng=3)

    assert torch.equal(run().mean, run().mean)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "either score and value"),
        ({"score": "S", "estimator": "E"}, "either score and value"),
        ({"score": "S"}, "needs value"),
        ({"score": torch.zeros(4, 3, dtype=torch.float64), "value": "V"}, r"score must have shape"),
        ({"score": "S", "value": torch.full((4,), math.nan, dtype=torch.float64)}, "value must be finite"),
        ({"estimator": lambda index: torch.zeros(3, dtype=torch.float64)}, "expected a finite vector"),
        ({"estimator": "E", "num_estimates": 1}, "num_estimates must be >= 2"),
    ],
)
def test_evaluate_estimator_rejects_bad_input(case, kwargs, match):
    score, value = case.terms()
    fill = {"S": score, "V": value, "E": lambda index: case.estimate(index, "loo")}
    kwargs = {key: fill.get(v, v) if isinstance(v, str) else v for key, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        evaluate_estimator(case.target(), case.probs, 2, **kwargs)


def test_evaluate_estimator_rejects_a_zero_target_and_unnormalised_probs(case):
    score, value = case.terms()
    with pytest.raises(ValueError, match="zero gradient"):
        evaluate_estimator(torch.zeros(4, dtype=torch.float64), case.probs, 2, score=score, value=value)
    with pytest.raises(ValueError, match="sum to 1"):
        evaluate_estimator(case.target(), 2 * case.probs, 2, score=score, value=value)
