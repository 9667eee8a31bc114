"""Reward levels and the reward CDF under the reference model.

A *level* is the set of strings that share one reward value. Everything Best-of-N
does depends on the reference distribution only through the masses of the levels
and the CDF at each level (REFERENCE.md, "Reward CDF and levels"):

    F_lt(y) = P_ref(r(Y') < r(y)),   F_le(y) = P_ref(r(Y') <= r(y)),   q(y) = F_le(y) - F_lt(y).

Accuracy. The level mass q is a log-sum-exp *within* the level, never the
difference F_le - F_lt (an atom of 1e-300 next to F_lt = 0.3 would vanish in it).
F is a prefix sum from below where F < 1/2 and one minus a suffix sum from above
where F >= 1/2, so log F is accurate whether F is tiny or within 1e-15 of 1.

Speed. One sort; every other pass is linear. Per-level arrays have one slot per
level (not per string), and callers work on strings in sorted order and undo the
sort once, at the end.

Rewards may be ±inf: they are ordered like any other value (equal infinities tie).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bonmath.backend import (
    LOG_HALF,
    Array,
    blockwise,
    log1mexp_where,
    log_boundary_sums,
    masked_ieee,
    segment_logsumexp,
    take_flat,
    take_last,
    unsort,
)
from bonmath.validation import prepare


@dataclass(frozen=True)
class RewardLevels:
    """The reward levels of a support, in increasing reward order.

    Level arrays have shape ``(..., L)`` with L the largest number of levels in any
    batch row; a row with fewer levels pads with empty levels (mass 0) at the top.

    Attributes
    ----------
    order : int array of shape (..., k)
        Permutation sorting each row's rewards increasingly.
    sorted_log_probs : array of shape (..., k)
        log π_ref in sorted order.
    level_of_sorted : int array of shape (..., k), or None
        Level of the ``j``-th smallest-reward string, as a flat index into the
        level arrays (level + row · L, rows in C order); None when no rewards tie
        (then string ``j`` is level ``j``).
    log_mass : array of shape (..., L)
        log q for each level.
    log_cdf_lt, log_cdf_le : arrays of shape (..., L)
        log F_lt and log F_le for each level.
    """

    order: Array
    sorted_log_probs: Array
    level_of_sorted: Array | None
    log_mass: Array
    log_cdf_lt: Array
    log_cdf_le: Array

    def to_sorted(self, level_values: Array, xp) -> Array:
        """Per-level values spread to the strings, in sorted order."""
        if self.level_of_sorted is None:
            return level_values
        return take_flat(level_values, self.level_of_sorted, xp)

    def unsort(self, sorted_values: Array, xp) -> Array:
        """Values of the sorted strings, back in the caller's order."""
        return unsort(sorted_values, self.order, xp)

    def per_string(self, level_values: Array, xp) -> Array:
        """Per-level values spread to the strings, in the caller's order."""
        return self.unsort(self.to_sorted(level_values, xp), xp)

    def level_logsumexp(self, sorted_values: Array, xp) -> Array:
        """log Σ e^values over the strings of each level (values in sorted order; the
        levels must tie, ``level_of_sorted`` is not None)."""
        return segment_logsumexp(sorted_values, self.level_of_sorted, self.log_mass.shape[-1], xp)


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
    sorted_log_probs = take_last(ref_log_probs, order, xp)
    level_of_sorted, num_levels = _level_of_sorted(take_last(rewards, order, xp), xp)
    if level_of_sorted is None:
        log_mass = sorted_log_probs
    else:
        log_mass = segment_logsumexp(sorted_log_probs, level_of_sorted, num_levels, xp)
    log_cdf = _log_cdf_at_boundaries(log_mass, xp)
    return RewardLevels(
        order=order,
        sorted_log_probs=sorted_log_probs,
        level_of_sorted=level_of_sorted,
        log_mass=log_mass,
        log_cdf_lt=log_cdf[..., :-1],
        log_cdf_le=log_cdf[..., 1:],
    )


def _level_of_sorted(sorted_rewards: Array, xp) -> tuple[Array | None, int]:
    """Flat level index of each string in sorted order (see :class:`RewardLevels`) and
    the number of levels L; (None, k) when no rewards tie."""
    new_level = sorted_rewards[..., 1:] != sorted_rewards[..., :-1]
    if bool(xp.all(new_level)):
        return None, sorted_rewards.shape[-1]
    level = xp.cumulative_sum(new_level, axis=-1, dtype=xp.int64, include_initial=True)
    num_levels = int(xp.max(level[..., -1])) + 1
    if level.ndim > 1:
        batch_shape = tuple(level.shape[:-1])
        first_level = xp.arange(math.prod(batch_shape), dtype=xp.int64, device=level.device) * num_levels
        level = level + xp.reshape(first_level, batch_shape + (1,))
    return level, num_levels


def _log_cdf_at_boundaries(log_mass: Array, xp) -> Array:
    """log P(level < j) for j = 0..L: entry j is F_lt of level j and F_le of level j-1.

    From the sum of the levels below j where it is below 1/2 (accurate when small),
    else as log(1 - sum of the levels from j on) (accurate near 1).
    """
    below, above = log_boundary_sums(log_mass, xp)
    return blockwise(
        lambda below, above: log1mexp_where(below >= LOG_HALF, above, below, xp),
        below, above, xp=xp, out=below,
    )


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
