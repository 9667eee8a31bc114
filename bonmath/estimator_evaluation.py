"""Measuring a gradient estimator against the exact gradient on an enumerated support.

A score-function estimator ĝ of a gradient g (built from k samples y_1..y_k ~ π_θ)
is judged by its bias E[ĝ] - g, its total variance tr Cov(ĝ) = E||ĝ - E ĝ||², and
their sum, the mean squared error E||ĝ - g||². :func:`evaluate_estimator` reports
them relative to ||g||, with the cosine between E[ĝ] and g, in two ways:

- exactly, when the estimator decomposes into per-string terms
  ĝ = (1/k) Σ_i v(y_i) + γ Σ_i s(y_i) f(y_i) + c Σ_{i≠j} s(y_i) f(y_j) (every estimator
  of :mod:`bonmath.estimators` but GRPO's std normalisation): finite sums over the
  support, :func:`bonmath.estimator_moments.exact_moments`;
- by Monte Carlo otherwise: the user's function from k sampled support indices to a
  gradient vector is called on independent draws, and the result carries the
  standard errors that say which biases the run can resolve.

Sign convention: ``target`` and the estimates are gradients of the same *loss* (what
``loss.backward()`` produces); :func:`bonmath.estimators.exact_gradient` is the
gradient of :func:`bonmath.estimators.objective_loss`, the negated objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bonmath.backend import float_array, is_torch, namespace, real_input
from bonmath.estimator_moments import exact_moments
from bonmath.validation import check_count, check_rng

__all__ = ["EstimatorEvaluation", "evaluate_estimator"]


@dataclass(frozen=True)
class EstimatorEvaluation:
    """Bias, variance and error of a gradient estimator against the exact gradient g.

    Attributes
    ----------
    mean : tensor of shape (P,)
        E[ĝ] (exact), or the mean of the R Monte Carlo estimates.
    target : tensor of shape (P,)
        The exact gradient g.
    relative_bias : float
        ||E[ĝ] - g|| / ||g||. By Monte Carlo, ||mean - g|| / ||g||, which noise inflates:
        its square overestimates the squared bias by total_variance / (R ||g||²) on average.
    relative_mse : float
        E||ĝ - g||² / ||g||² for one estimate (from k samples). By Monte Carlo, the
        mean of ||ĝ_r - g||² / ||g||² over the R estimates (unbiased).
    cosine : float
        cos(E[ĝ], g) (0 when E[ĝ] = 0).
    total_variance : float
        tr Cov(ĝ) = E||ĝ - E ĝ||² of one estimate. By Monte Carlo, the sum of the
        coordinates' sample variances (ddof = 1).
    num_estimates : int or None
        R, the Monte Carlo estimates drawn; None for the exact evaluation.
    mean_standard_error : tensor of shape (P,) or None
        Monte Carlo only: each coordinate's standard error of ``mean`` (sd / √R).
    relative_bias_standard_error : float or None
        Monte Carlo only: sqrt(total_variance / R) / ||g||, the root-mean-square size of
        the noise in (mean - g) / ||g||. The noise floor: a relative bias below about
        z times this (z ≈ 3 to 5) is not resolved by the run; draw more estimates.

    Examples
    --------
    One sample (k = 1) of two equally likely strings, ĝ = s(y) f(y) with s = ±1, f = (1, 0):
    E[ĝ] = 1/2 and tr Cov(ĝ) = 1/4, judged against g = 1.

    >>> result = evaluate_estimator([1.0], [0.5, 0.5], 1, score=[[1.0], [-1.0]], value=[1.0, 0.0], baseline="none")
    >>> result.bias.tolist(), result.relative_bias, result.total_variance, result.relative_mse
    ([-0.5], 0.5, 0.25, 0.5)
    >>> result.num_estimates is None  # exact, not Monte Carlo
    True
    """

    mean: torch.Tensor
    target: torch.Tensor
    relative_bias: float
    relative_mse: float
    cosine: float
    total_variance: float
    num_estimates: int | None = None
    mean_standard_error: torch.Tensor | None = None
    relative_bias_standard_error: float | None = None

    @property
    def bias(self) -> torch.Tensor:
        """E[ĝ] - g (by Monte Carlo: mean - g), shape (P,)."""
        return self.mean - self.target


def _tensor(x, name: str) -> torch.Tensor:
    """``x`` as a detached floating tensor (numpy and lists: float64), refusing what is not real numbers."""
    x = real_input(x, name)
    return (float_array(x, namespace(x), name=name) if is_torch(x) else torch.from_numpy(float_array(x, np, name=name))).detach()


def _vector(x, name: str) -> torch.Tensor:
    x = _tensor(x, name)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty vector (1-D); got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _probs(probs) -> torch.Tensor:
    probs = _vector(probs, "probs")
    if bool((probs < 0).any()):
        raise ValueError("probs must be non-negative")
    total = float(probs.sum())
    if abs(total - 1.0) > math.sqrt(float(torch.finfo(probs.dtype).eps)):
        raise ValueError(f"probs must sum to 1; they sum to {total:.17g}")
    return probs


def _per_string(x, name: str, shape: tuple[int, ...], positive: torch.Tensor, dtype) -> torch.Tensor:
    """A per-string array of ``shape`` (strings on the first axis), finite where π_θ > 0 and
    set to 0 where π_θ = 0 (those strings are never sampled: any value there is exact)."""
    x = _tensor(x, name).to(dtype)
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (S from probs, P from target); got {tuple(x.shape)}")
    mask = positive.reshape((-1,) + (1,) * (x.ndim - 1))
    if not bool(torch.isfinite(x[positive]).all()):
        raise ValueError(f"{name} must be finite on the strings with π_θ > 0")
    return torch.where(mask, x, 0.0)


def _cosine(mean: torch.Tensor, target: torch.Tensor) -> float:
    norm = float(mean.norm())
    return 0.0 if norm == 0.0 else float(mean @ target) / (norm * float(target.norm()))


def evaluate_estimator(
    target,
    probs,
    k: int,
    *,
    score=None,
    value=None,
    pathwise=None,
    value_second=None,
    baseline: str = "loo",
    estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_estimates: int = 1000,
    rng: np.random.Generator | int | None = None,
) -> EstimatorEvaluation:
    """Bias, variance, MSE and cosine of a gradient estimator against the exact gradient.

    Pass either the per-string terms (``score`` and ``value``, optionally ``pathwise``
    and ``value_second``: exact) or ``estimator`` (Monte Carlo).

    Parameters
    ----------
    target : tensor of shape (P,)
        The exact gradient g of the loss (e.g. :func:`bonmath.estimators.exact_gradient`),
        nonzero.
    probs : tensor of shape (S,)
        π_θ on the enumerated support (sums to 1); the k samples are i.i.d. from it.
    k : int
        Samples per estimate.
    score : tensor of shape (S, P), optional
        s(y) = ∇ log π_θ(y) per string (e.g. :func:`bonmath.estimator_moments.per_output_gradients`).
    value : tensor of shape (S,), optional
        f(y), the value the score is weighted by before the baseline (its mean, if f
        is random and shared by the k samples). The per-string terms must be finite
        where π_θ > 0; where π_θ = 0 they are never sampled and are ignored.
    pathwise : tensor of shape (S, P), optional
        v(y), a per-string vector averaged over the samples (default 0).
    value_second : tensor of shape (S, S), optional
        E[f(y) f(y')] for a random shared f (default: f deterministic).
    baseline : {"none", "loo", "mean"}
        How the k values are centred (:func:`bonmath.estimators.advantages`).
    estimator : callable, optional
        Monte Carlo path: maps a 1-D int64 tensor of k support indices (i.i.d. from
        ``probs``) to the estimate, a tensor of shape (P,).
    num_estimates : int, default 1000
        R, the estimates drawn on the Monte Carlo path (R >= 2).
    rng : numpy.random.Generator or int or None
        Random source of the sampled indices (a seed makes the run reproducible).

    Returns
    -------
    EstimatorEvaluation

    Notes
    -----
    Exact path: ĝ = (1/k) Σ_i v(y_i) + γ Σ_i s(y_i) f(y_i) + c Σ_{i≠j} s(y_i) f(y_j),
    with (γ, c) fixed by the baseline; E[ĝ] and E||ĝ||² are U-statistic sums over the
    support (:func:`bonmath.estimator_moments.exact_moments`), and
    E||ĝ - g||² = ||E ĝ - g||² + tr Cov(ĝ). Monte Carlo path: the sample mean and
    sample variances of R independent estimates; (mean - g) has noise of size
    sqrt(tr Cov / R), so only biases above a few times that are resolved
    (``relative_bias_standard_error``).

    Examples
    --------
    The vBoN score-function estimator with the mean-of-all-k baseline, on a
    three-string softmax policy: its expected gradient is (k-1)/k of the true one.

    >>> import torch, bonmath
    >>> from bonmath.estimators import exact_gradient, flat_gradient, vbon_surrogate
    >>> from bonmath.estimator_moments import per_output_gradients
    >>> logits = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    >>> policy = torch.log_softmax(logits, 0)
    >>> ref = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    >>> rewards, n, k = [0.0, 1.0, 1.0], 4, 4
    >>> target = exact_gradient("vbon", policy, ref, [logits], rewards=rewards, n=n)
    >>> score = per_output_gradients(policy, [logits])            # s(y) = ∇ log π_θ(y)
    >>> value = (policy - bonmath.bon_log_probs(ref, rewards, n)).detach()  # f(y)
    >>> exact = evaluate_estimator(target, policy.exp(), k, score=score, value=value, baseline="mean")
    >>> round(exact.relative_bias, 12), round(exact.cosine, 12)
    (0.25, 1.0)

    The same estimator as a black box, by Monte Carlo:

    >>> log_ratio = bonmath.bon_log_ratio(ref, rewards, n)
    >>> def my_estimator(index):
    ...     loss = vbon_surrogate(torch.log_softmax(logits, 0)[index], ref[index], log_ratio[index], "mean")
    ...     return flat_gradient(loss, [logits])
    >>> sampled = evaluate_estimator(target, policy.exp(), k, estimator=my_estimator, num_estimates=2000, rng=0)
    >>> abs(sampled.relative_bias - 0.25) < 5 * sampled.relative_bias_standard_error
    True
    """
    k = check_count(k, "k")
    num_estimates = check_count(num_estimates, "num_estimates", minimum=2)
    rng = check_rng(rng)
    if estimator is not None and not callable(estimator):
        raise TypeError(f"estimator must be None or a callable; got {estimator!r}")
    target = _vector(target, "target")
    target_norm = float(target.norm())
    if target_norm == 0.0:
        raise ValueError("target is the zero gradient: relative bias and MSE are undefined")
    probs = _probs(probs).to(target.dtype)
    if (score is None) == (estimator is None):
        raise ValueError("pass either score and value (exact) or estimator (Monte Carlo), not both")
    if estimator is not None:
        return _monte_carlo(target, probs, k, estimator, num_estimates, rng)
    if value is None:
        raise ValueError("the exact path needs value (f(y) per string) with score")
    num_strings, num_params = probs.shape[0], target.shape[0]
    positive = probs > 0
    score = _per_string(score, "score", (num_strings, num_params), positive, target.dtype)
    value = _per_string(value, "value", (num_strings,), positive, target.dtype)
    if pathwise is not None:
        pathwise = _per_string(pathwise, "pathwise", (num_strings, num_params), positive, target.dtype)
    if value_second is not None:
        value_second = _per_string(value_second, "value_second", (num_strings, num_strings), positive, target.dtype)
        value_second = torch.where(positive[None, :], value_second, 0.0)
    moments = exact_moments(probs, pathwise, score, value, value_second, k=k, baseline=baseline)
    bias_norm = float((moments.mean - target).norm())
    return EstimatorEvaluation(
        mean=moments.mean,
        target=target,
        relative_bias=bias_norm / target_norm,
        relative_mse=(bias_norm**2 + moments.total_variance) / target_norm**2,
        cosine=_cosine(moments.mean, target),
        total_variance=moments.total_variance,
    )


def _monte_carlo(target, probs, k, estimator, num_estimates, rng) -> EstimatorEvaluation:
    p = probs.cpu().numpy().astype(np.float64)
    index = torch.as_tensor(rng.choice(p.shape[0], size=(num_estimates, k), p=p / p.sum()))
    estimates = torch.empty(num_estimates, target.shape[0], dtype=target.dtype)
    for r in range(num_estimates):
        estimate = torch.as_tensor(estimator(index[r])).detach()
        if tuple(estimate.shape) != tuple(target.shape) or not bool(torch.isfinite(estimate).all()):
            raise ValueError(
                f"estimator returned {tuple(estimate.shape)} (finite: {bool(torch.isfinite(estimate).all())}) "
                f"for draw {r}; expected a finite vector of shape {tuple(target.shape)}"
            )
        estimates[r] = estimate
    mean = estimates.mean(0)
    variances = estimates.var(0, correction=1)
    total_variance = float(variances.sum())
    target_norm = float(target.norm())
    return EstimatorEvaluation(
        mean=mean,
        target=target,
        relative_bias=float((mean - target).norm()) / target_norm,
        relative_mse=float(((estimates - target) ** 2).sum(1).mean()) / target_norm**2,
        cosine=_cosine(mean, target),
        total_variance=total_variance,
        num_estimates=num_estimates,
        mean_standard_error=(variances / num_estimates).sqrt(),
        relative_bias_standard_error=math.sqrt(total_variance / num_estimates) / target_norm,
    )
