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
    as_constant,
    expectation,
    expm1mx,
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
    dtype = log_cdf.dtype
    if is_torch_namespace(xp):  # the sum over M + 1 outcomes needs float64 (float32 is off by 30% at M = 10^6)
        log_cdf = xp.astype(log_cdf, xp.float64)
    counts = as_constant(np.arange(m + 1), log_cdf, xp)
    log_cdf = log_cdf[..., None]
    at_one = log_cdf == 0.0
    log_complement = log1mexp_where(~at_one, log_cdf, NEG_INF, xp)  # log(1 - F), zero gradient at F = 1
    log_pmf = _log_binomial_pmf(m, log_cdf, log_complement, xp)
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
    mean, variance = xp.where(unbounded, NEG_INF, mean), xp.where(unbounded, math.inf, variance)
    return (xp.astype(mean, dtype), xp.astype(variance, dtype)) if is_torch_namespace(xp) else (mean, variance)


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


STIRLING_REMAINDERS = (
    0.08106146679532726, 0.0413406959554093, 0.02767792568499834, 0.020790672103765093,
    0.016644691189821193, 0.013876128823070748, 0.01189670994589177, 0.010411265261972096,
    0.009255462182712733, 0.00833056343336287, 0.007573675487951841, 0.00694284010720953,
    0.006408994188004207, 0.0059513701127588475, 0.005554733551962801,
)
"""δ(n) = log n! - (n + 1/2) log n + n - log(2π)/2 for n = 1..15 (40-digit mpmath, rounded)."""


def _stirling_remainder(n: np.ndarray) -> np.ndarray:
    """δ(n) for integers n >= 1: the table up to 15, else its asymptotic series (error < 1e-17)."""
    table = np.asarray(STIRLING_REMAINDERS)[np.clip(n, 1, 15).astype(np.int64) - 1]
    inverse_square = 1.0 / (n * n)
    series = (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - inverse_square / 1188) * inverse_square)
                        * inverse_square) * inverse_square) / n
    return np.where(n <= 15, table, series)


def _log_binomial_pmf(m: int, log_cdf: Array, log_complement: Array, xp) -> Array:
    """log P(C = c), c = 0..m, for C ~ Binomial(m, F), to ~1e-15 absolute at any m.

    ``log_cdf`` and ``log_complement`` are log F and log(1 - F) of shape (..., 1); the
    result has shape (..., m + 1). Loader's (2000) saddle-point form: for 0 < c < m,

        log P = K_c - c φ(log(mF/c)) - (m - c) φ(log(m(1 - F)/(m - c))),  φ(t) = e^t - 1 - t,

    K_c = δ(m) - δ(c) - δ(m - c) + log(m/(2π c (m - c)))/2 with δ the Stirling remainder;
    P(0) = (1 - F)^m and P(m) = F^m. Every term is small or non-negative: the textbook
    log C(m, c) + c log F + (m - c) log(1 - F) cancels terms of size m log m (9 of 16
    digits at m = 10^6).
    """
    counts = np.arange(m + 1, dtype=np.float64)
    interior = counts[1:-1]
    log_constant = np.zeros(m + 1)
    log_constant[1:-1] = (
        _stirling_remainder(np.array(float(m))) - _stirling_remainder(interior) - _stirling_remainder(m - interior)
        + 0.5 * (math.log(m / (2 * math.pi)) - np.log(interior) - np.log(m - interior))
    )
    like = log_cdf
    c = as_constant(counts, like, xp)
    rest = as_constant(m - counts, like, xp)
    inside = (c > 0) & (rest > 0)
    log_c = xp.where(inside, xp.log(xp.where(inside, c, 1.0)), 0.0)
    log_rest = xp.where(inside, xp.log(xp.where(inside, rest, 1.0)), 0.0)
    deviation = c * expm1mx(math.log(m) + log_cdf - log_c, xp) + rest * expm1mx(
        math.log(m) + log_complement - log_rest, xp
    )
    ends = xp.where(c == 0, m * log_complement, m * log_cdf)
    return xp.where(inside, as_constant(log_constant, like, xp) - xp.where(inside, deviation, 0.0), ends)
