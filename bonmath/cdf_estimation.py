"""Estimating the reward CDF from M reference samples, and the exact bias of doing so.

For a model whose support cannot be enumerated, vBoN estimates F_lt(y) from M
rewards of reference samples drawn for the same prompt. The paper's released code
uses F̂ = (1 + #{m: r_m < r}) / (M + 1). The count C = #{m: r_m < r} is
Binomial(M, F_lt), so E[log F̂] is a finite sum computed exactly here
(docs/math.md, "Estimating F from M reference samples").
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from bonmath.backend import (
    NEG_INF,
    Array,
    expectation,
    float_array,
    is_torch,
    is_torch_namespace,
    log1mexp_where,
    masked_ieee,
    namespace,
)
from bonmath.validation import (
    check_choice,
    check_count,
    check_log_values,
    check_values,
    reward_arrays,
)

METHODS = ("add_one", "empirical", "empirical_le")
"""``add_one``: (1 + #{r_m < r})/(M+1); ``empirical``: #{r_m < r}/M; ``empirical_le``: #{r_m <= r}/M."""


def _log_estimate(counts: Array, m: int, method: str, xp) -> Array:
    """log F̂ for counts C of reference rewards below (or at most) r."""
    if method == "add_one":
        return xp.log(counts + 1.0) - math.log(m + 1)
    with np.errstate(divide="ignore"):
        return xp.log(counts) - math.log(m)


@masked_ieee
def estimate_log_cdf(reference_rewards: Array, rewards: Array, method: str = "add_one") -> Array:
    """log F̂(r) from the rewards of M reference samples, per prompt.

    Parameters
    ----------
    reference_rewards : array of shape (..., M)
        Rewards of M samples from π_ref for each prompt (leading axes).
    rewards : array of shape (..., k)
        Rewards at which to estimate the CDF, for the same prompts.
    method : {"add_one", "empirical", "empirical_le"}
        ``add_one`` (the paper's released code) never returns -inf; ``empirical``
        estimates F_lt and is -inf below every reference reward; ``empirical_le``
        estimates F_le.

    Returns
    -------
    array of shape (..., k)
        log F̂, float64 (a tensor for tensor input; not differentiable: counts).

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(estimate_log_cdf([0.1, 0.5, 0.5, 0.9], [0.5, 1.0])).round(6).tolist()
    [0.4, 1.0]
    >>> np.exp(estimate_log_cdf([0.1, 0.5, 0.5, 0.9], [0.5, 0.0], "empirical_le")).tolist()
    [0.75, 0.0]
    """
    check_choice(method, "method", METHODS)
    xp = namespace(reference_rewards, rewards)
    like = next((a for a in (reference_rewards, rewards) if is_torch(a)), None)
    reference_rewards, rewards = reward_arrays(
        {"reference_rewards": reference_rewards, "rewards": rewards}, xp, like
    )
    reference_rewards = check_values(reference_rewards, "reference_rewards", xp)
    rewards = check_values(rewards, "rewards", xp)
    try:
        batch = np.broadcast_shapes(tuple(reference_rewards.shape[:-1]), tuple(rewards.shape[:-1]))
    except ValueError:
        raise ValueError(
            f"batch shapes do not broadcast: reference_rewards{tuple(reference_rewards.shape)}, "
            f"rewards{tuple(rewards.shape)}"
        ) from None
    m = reference_rewards.shape[-1]
    reference_rewards = xp.broadcast_to(reference_rewards, batch + (m,))
    rewards = xp.broadcast_to(rewards, batch + (rewards.shape[-1],))
    side: Literal["left", "right"] = "right" if method == "empirical_le" else "left"
    sorted_reference = xp.sort(reference_rewards, axis=-1)
    if is_torch_namespace(xp):
        import torch

        counts: Array = torch.searchsorted(sorted_reference.contiguous(), rewards.contiguous(), side=side)
    else:
        flat_ref = sorted_reference.reshape(-1, m)
        flat_rewards = rewards.reshape(-1, rewards.shape[-1])
        counts = np.empty(flat_rewards.shape, dtype=np.int64)  # (0, k) for an empty batch
        for row, (s, r) in enumerate(zip(flat_ref, flat_rewards)):
            counts[row] = np.searchsorted(s, r, side=side)
        counts = counts.reshape(rewards.shape)
    counts = float_array(counts, xp, like if like is not None and like.is_floating_point() else None)
    return _log_estimate(counts, m, method, xp)


@masked_ieee
def log_cdf_estimate_moments(
    log_cdf: Array, num_ref_samples: int, method: str = "add_one"
) -> tuple[Array, Array]:
    """Exact mean and variance of log F̂ when the count is Binomial(M, F).

    Parameters
    ----------
    log_cdf : array of shape (...)
        log F, the probability that one reference sample counts: F_lt for
        ``add_one`` and ``empirical``, F_le for ``empirical_le``.
    num_ref_samples : int
        Number of reference samples M >= 1.
    method : {"add_one", "empirical", "empirical_le"}

    Returns
    -------
    mean, variance : arrays of shape (...)
        E[log F̂] and Var[log F̂], by summing over the M + 1 binomial outcomes
        (-inf mean and inf variance when F̂ = 0 has positive probability). torch
        gradients are finite everywhere: 0 where the moments are infinite, and at
        F = 1 the one-sided derivative.

    Examples
    --------
    >>> import numpy as np
    >>> mean, var = log_cdf_estimate_moments(np.log(0.5), 1)
    >>> float(mean)  # (log 1/2 + log 1) / 2
    -0.346573590279
    """
    check_choice(method, "method", METHODS)
    m = check_count(num_ref_samples, "num_ref_samples")
    xp = namespace(log_cdf)
    log_cdf = float_array(log_cdf, xp, name="log_cdf")
    check_log_values(log_cdf, "log_cdf", xp)
    counts = xp.arange(m + 1, dtype=log_cdf.dtype)
    if is_torch_namespace(xp):
        counts = counts.to(log_cdf.device)
    log_cdf = log_cdf[..., None]
    at_one = log_cdf == 0.0
    log_complement = log1mexp_where(~at_one, log_cdf, NEG_INF, xp)  # log(1 - F), zero gradient at F = 1
    log_binomial = _log_binomial(m, counts, xp)
    log_pmf = (
        log_binomial
        + xp.where(counts > 0, counts * xp.where(counts > 0, log_cdf, 0.0), 0.0)
        + xp.where(counts < m, (m - counts) * xp.where(counts < m, log_complement, 0.0), 0.0)
    )
    log_estimate = _log_estimate(counts, m, method, xp)
    # F̂ = 0 (log F̂ = -inf) with positive probability: mean -inf, variance inf, zero gradients
    never = log_estimate == NEG_INF
    unbounded = xp.any((log_pmf > NEG_INF) & never, axis=-1)
    estimate = xp.where(never, 0.0, log_estimate)
    # At F = 1 the count M - 1 has probability M F^(M-1) (1 - F) = 0 but derivative -M per
    # unit log F; in log space that term is e^(-inf) with no gradient, so it is added in
    # linear space (value 0): the gradient at F = 1 is the one-sided derivative.
    edge = xp.where(at_one, m * xp.exp((m - 1.0) * log_cdf) * -xp.expm1(log_cdf), 0.0)[..., 0]
    mean = expectation(log_pmf, estimate, xp) + edge * estimate[..., m - 1]
    centred = estimate - mean[..., None]
    variance = expectation(log_pmf, centred**2, xp) + edge * centred[..., m - 1] ** 2
    return xp.where(unbounded, NEG_INF, mean), xp.where(unbounded, math.inf, variance)


@masked_ieee
def log_cdf_estimate_bias(log_cdf: Array, num_ref_samples: int, method: str = "add_one") -> Array:
    """Exact bias E[log F̂] - log F of the estimator ``method`` with M samples.

    At F = 0 an estimator that can return F̂ = 0 has bias -inf (its limit as F → 0+,
    where E[log F̂] = -inf), not -inf - (-inf).

    Examples
    --------
    >>> import numpy as np
    >>> bias = log_cdf_estimate_bias(np.log([1e-3, 0.5]), 32)
    >>> bias.round(3).tolist()  # add-one overestimates a small CDF by a lot
    [3.433, 0.015]
    """
    mean, _ = log_cdf_estimate_moments(log_cdf, num_ref_samples, method)
    xp = namespace(mean)
    log_cdf = float_array(log_cdf, xp, mean if is_torch(mean) else None, name="log_cdf")
    both = (mean == NEG_INF) & (log_cdf == NEG_INF)  # F = 0 with F̂ = 0: the limit F → 0+, -inf
    return xp.where(both, NEG_INF, mean - xp.where(both, 0.0, log_cdf))


def _log_binomial(m: int, counts: Array, xp) -> Array:
    if is_torch_namespace(xp):
        import torch

        lgamma = torch.lgamma
    else:
        from scipy.special import gammaln

        lgamma = gammaln
    return math.lgamma(m + 1) - lgamma(counts + 1.0) - lgamma(m - counts + 1.0)
