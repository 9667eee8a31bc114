"""Reward levels and the reward CDF under the reference model.

A *level* is the set of strings that share one reward value. Everything Best-of-N
does depends on the reference distribution only through the masses of the levels
and the CDF at each level (docs/math.md, "Reward CDF and levels"):

    F_lt(y) = P_ref(r(Y') < r(y)),   F_le(y) = P_ref(r(Y') <= r(y)),   q(y) = F_le(y) - F_lt(y).

Accuracy. The level mass q is a log-sum-exp *within* the level, never the
difference F_le - F_lt (an atom of 1e-300 next to F_lt = 0.3 would vanish in it).
F is a prefix sum from below where F < 1/2 and one minus a suffix sum from above
where F >= 1/2, so log F is accurate whether F is tiny or within 1e-15 of 1.

Speed. One sort; every other pass is linear. Per-level arrays have one slot per
level (not per string). Without ties level j is the j-th smallest reward, and
per-level values go back to the strings by undoing the sort once; with ties every
string carries its level's index, in the caller's order, so per-level values reach
the strings by a gather from a small array and nothing is unsorted.

Rewards may be ±inf: they are ordered like any other value (equal infinities tie).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bonmath.backend import (
    BLOCK,
    LOG_HALF,
    Array,
    blockwise,
    is_torch_namespace,
    linear_space_shift,
    log1mexp_where,
    log_boundary_sums,
    masked_ieee,
    running_count,
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
    level_of_string : int array of shape (..., k), or None
        Level of each string (caller's order) as a flat index into the level arrays
        (level + row · L, rows in C order); None when no rewards tie, and then the
        string ``order[..., j]`` is level ``j``.
    log_mass : array of shape (..., L)
        log q for each level.
    log_cdf_lt, log_cdf_le : arrays of shape (..., L)
        log F_lt and log F_le for each level.
    """

    order: Array
    level_of_string: Array | None
    log_mass: Array
    log_cdf_lt: Array
    log_cdf_le: Array

    def per_string(self, level_values: Array, xp) -> Array:
        """Per-level values spread to the strings, in the caller's order."""
        if self.level_of_string is None:
            return unsort(level_values, self.order, xp)
        return take_flat(level_values, self.level_of_string, xp)

    def level_logsumexp(self, values: Array, xp) -> Array:
        """log Σ e^values over the strings of each level (values in the caller's order;
        the rewards must tie, ``level_of_string`` is not None)."""
        return segment_logsumexp(values, self.level_of_string, self.log_mass.shape[-1], xp)


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
    # sorting the values again is faster than gathering them through ``order``
    new_level = _starts_new_level(xp.sort(rewards, axis=-1, stable=False))
    level_of_string, num_levels = _level_of_string(order, new_level, xp)
    if level_of_string is None:
        log_mass = take_last(ref_log_probs, order, xp)
    else:
        log_mass = segment_logsumexp(ref_log_probs, level_of_string, num_levels, xp)
    log_cdf = _log_cdf_at_boundaries(log_mass, xp)
    return RewardLevels(
        order=order,
        level_of_string=level_of_string,
        log_mass=log_mass,
        log_cdf_lt=log_cdf[..., :-1],
        log_cdf_le=log_cdf[..., 1:],
    )


def _starts_new_level(sorted_rewards: Array) -> Array:
    """Whether string j + 1 (in sorted order) has a larger reward than string j: shape (..., k-1)."""
    return sorted_rewards[..., 1:] != sorted_rewards[..., :-1]


def _level_of_string(order: Array, starts_new_level: Array, xp) -> tuple[Array | None, int]:
    """Flat level index of each string (see :class:`RewardLevels`) and the number of
    levels L; (None, k) when no rewards tie."""
    if bool(xp.all(starts_new_level)):
        return None, order.shape[-1]
    level = running_count(starts_new_level, xp)  # of the strings in sorted order
    num_levels = int(xp.max(level[..., -1])) + 1
    if level.ndim > 1:
        batch_shape = tuple(level.shape[:-1])
        first_level = xp.arange(math.prod(batch_shape), dtype=xp.int64, device=level.device) * num_levels
        level = level + xp.reshape(first_level, batch_shape + (1,))
    return unsort(level, order, xp), num_levels


def _log_cdf_at_boundaries(log_mass: Array, xp) -> Array:
    """log P(level < j) for j = 0..L: entry j is F_lt of level j and F_le of level j-1.

    From the sum of the levels below j where it is below 1/2 (accurate when small),
    else as log(1 - sum of the levels from j on) (accurate near 1).
    """
    if not is_torch_namespace(xp):
        log_cdf = _numpy_log_cdf_in_linear_space(log_mass)
        if log_cdf is not None:
            return log_cdf
    below, above = log_boundary_sums(log_mass, xp)
    return blockwise(
        lambda below, above: log1mexp_where(below >= LOG_HALF, above, below, xp),
        below, above, xp=xp, out=below,
    )


def _numpy_log_cdf_in_linear_space(log_mass: np.ndarray) -> np.ndarray | None:
    """:func:`_log_cdf_at_boundaries` for numpy with the sums in linear space, or None
    when a level mass would underflow there (more than e^700 below the largest).

    The same formula, fused: the prefix sums P are built in place in the output, then
    the suffix sums S block by block from the top (carrying the sum above the block),
    and each block becomes log P (F < 1/2) or log1p(-S) (F >= 1/2). Sums of positive
    terms in linear space round once per step, like a logaddexp scan, and no array
    of suffix sums is ever allocated.
    """
    rows = log_mass.reshape(-1, log_mass.shape[-1])
    num_rows, num_levels = rows.shape
    shift = linear_space_shift(rows)
    if shift is None:
        return None
    out = np.empty((num_rows, num_levels + 1))
    out[:, 0] = 0.0
    prefix = out[:, 1:]
    np.subtract(rows, shift, out=prefix)
    np.exp(prefix, out=prefix)
    np.cumsum(out, axis=-1, out=out)
    half, scale = 0.5 * np.exp(-shift), np.exp(shift)
    above = np.zeros((num_rows, 1))
    width = max(1, BLOCK // num_rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in reversed(range(0, num_levels, width)):
            block = slice(start, min(start + width, num_levels))
            terms = np.exp(rows[:, block] - shift)
            suffix = np.cumsum(terms[:, ::-1], axis=-1)[:, ::-1] + above
            above = suffix[:, :1]
            below = out[:, block]
            out[:, block] = np.where(below >= half, np.log1p(-suffix * scale), np.log(below) + shift)
    out[:, -1] = 0.0
    return out.reshape(log_mass.shape[:-1] + (num_levels + 1,))


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

    See Also
    --------
    bonmath.bon_log_probs : the BoN law, a function of these two CDFs.

    Notes
    -----
    .. math::

        F_{\\mathrm{lt}}(y) = P_{Y'\\sim\\pi_{\\mathrm{ref}}}\\big(r(Y') < r(y)\\big), \\qquad
        F_{\\mathrm{le}}(y) = P_{Y'\\sim\\pi_{\\mathrm{ref}}}\\big(r(Y') \\le r(y)\\big)

    (:ref:`math-levels`), each summed from the side where it is accurate
    (:ref:`math-stable`).

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
