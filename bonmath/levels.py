"""Reward levels and the reward CDF under the reference model.

A *level* is the set of strings that share one reward value. Everything Best-of-N
does depends on the reference distribution only through the masses of the levels
and the CDF at each level (REFERENCE.md, "Reward CDF and levels"):

    F_lt(y) = P_ref(r(Y') < r(y)),   F_le(y) = P_ref(r(Y') <= r(y)),   q(y) = F_le(y) - F_lt(y).

Accuracy. The level mass q is a log-sum-exp *within* the level, never the
difference F_le - F_lt (an atom of 1e-300 next to F_lt = 0.3 would vanish in it).
F is a prefix sum from below where F < 1/2 and one minus a suffix sum from above
where F >= 1/2, so log F is accurate whether F is tiny or within 1e-15 of 1.

Rewards may be ±inf: they are ordered like any other value (equal infinities tie).
"""

from __future__ import annotations

from dataclasses import dataclass

from bonmath.backend import (
    LOG_HALF,
    Array,
    log1mexp,
    logaddexp,
    logcumsumexp,
    masked_ieee,
    segment_logsumexp,
    unsort,
)
from bonmath.validation import prepare


@dataclass(frozen=True)
class RewardLevels:
    """The reward levels of a support, in increasing reward order.

    Level arrays have the support's shape ``(..., k)``; a row with L < k levels uses
    slots ``0..L-1`` and its remaining slots hold an empty level (mass 0).

    Attributes
    ----------
    order : int array of shape (..., k)
        Permutation sorting each row's rewards increasingly.
    level_of_sorted : int array of shape (..., k)
        Level index of the ``j``-th smallest-reward string.
    log_mass : array of shape (..., k)
        log q for each level.
    log_cdf_lt, log_cdf_le : arrays of shape (..., k)
        log F_lt and log F_le for each level.
    """

    order: Array
    level_of_sorted: Array
    log_mass: Array
    log_cdf_lt: Array
    log_cdf_le: Array

    def level_logsumexp(self, values: Array, xp) -> Array:
        """log Σ e^values over the strings of each level (values in the caller's order)."""
        sorted_values = xp.take_along_axis(values, self.order, axis=-1)
        return segment_logsumexp(sorted_values, self.level_of_sorted, xp)

    def per_string(self, level_values: Array, xp) -> Array:
        """Spread per-level values back to the strings, in the caller's order."""
        sorted_values = xp.take_along_axis(level_values, self.level_of_sorted, axis=-1)
        return unsort(sorted_values, self.order, xp)


def reward_levels(ref_log_probs: Array, rewards: Array, xp) -> RewardLevels:
    """Group a validated support into reward levels (see :class:`RewardLevels`).

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        Validated reference log-probabilities.
    rewards : array of shape (..., k)
        Validated rewards, broadcast to the same shape.
    """
    order = xp.argsort(rewards, axis=-1, stable=False)
    sorted_rewards = xp.take_along_axis(rewards, order, axis=-1)
    sorted_log_probs = xp.take_along_axis(ref_log_probs, order, axis=-1)
    new_level = sorted_rewards[..., 1:] != sorted_rewards[..., :-1]
    level_of_sorted = xp.concat(
        [xp.zeros_like(order[..., :1]), xp.cumulative_sum(xp.astype(new_level, order.dtype), axis=-1)],
        axis=-1,
    )
    log_mass = segment_logsumexp(sorted_log_probs, level_of_sorted, xp)
    log_below = logcumsumexp(log_mass, xp, exclusive=True)  # P(r < level)
    log_above = logcumsumexp(log_mass, xp, reverse=True, exclusive=True)  # P(r > level)
    log_at_most = logaddexp(log_below, log_mass, xp)
    log_at_least = logaddexp(log_above, log_mass, xp)
    return RewardLevels(
        order=order,
        level_of_sorted=level_of_sorted,
        log_mass=log_mass,
        log_cdf_lt=_accurate_log_cdf(log_below, log_at_least, xp),
        log_cdf_le=_accurate_log_cdf(log_at_most, log_above, xp),
    )


def _accurate_log_cdf(log_from_below: Array, log_complement: Array, xp) -> Array:
    """log F from a prefix sum (accurate for F < 1/2) or from 1 - suffix (F >= 1/2)."""
    small = log_from_below < LOG_HALF
    complement = xp.where(small, LOG_HALF, log_complement)
    return xp.where(small, log_from_below, log1mexp(xp.minimum(complement, 0.0), xp))


@masked_ieee
def reward_cdf(
    ref_log_probs: Array, rewards: Array, *, normalize: bool = False
) -> tuple[Array, Array]:
    """Log of the reward CDF under the reference model, for every string.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref(y) over an enumerated support (last axis); leading axes are a batch.
    rewards : array of shape (..., k)
        r(y); broadcast against ``ref_log_probs``. Ties (equal rewards) are expected.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    log_cdf_lt, log_cdf_le : arrays of shape (..., k)
        log P_ref(r(Y') < r(y)) and log P_ref(r(Y') <= r(y)); -inf where the CDF is 0.

    Examples
    --------
    >>> import numpy as np
    >>> lt, le = reward_cdf(np.log([0.5, 0.25, 0.25]), [1.0, 0.0, 1.0])
    >>> np.exp(lt).round(6).tolist(), np.exp(le).round(6).tolist()
    ([0.25, 0.0, 0.25], [1.0, 0.25, 1.0])
    """
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    levels = reward_levels(ref_log_probs, rewards, xp)
    return levels.per_string(levels.log_cdf_lt, xp), levels.per_string(levels.log_cdf_le, xp)
