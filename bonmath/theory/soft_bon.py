"""Soft Best-of-n (Verdun, Oesterling, Lakkaraju, Calmon 2025, "Soft Best-of-n Sampling
for Model Alignment", arXiv 2505.03156).

Draw Y_1..Y_n i.i.d. from π_ref and return Y_i with probability softmax(r(Y)/λ)_i.
With w(y) = e^(r(y)/λ) and S_{n-1} the sum of n-1 i.i.d. copies of w(Y'), Y' ~ π_ref,
exchangeability gives the law

    π_{n,λ}(y) = n π_ref(y) E[ w(y) / (w(y) + S_{n-1}) ].

Exact method. S_{n-1} is determined by how many of the n-1 other draws fall in each
reward level (strings of one level share w), a multinomial count vector
c = (c_1..c_L) with Σ c = n-1. So

    π_{n,λ}(y) = n π_ref(y) Σ_c Mult(c; n-1, q) w(y)/(w(y) + Σ_l c_l w_l),

a finite sum, evaluated in log space. Cost: M = C(n+L-2, L-1) count vectors, O(M L)
time and memory per batch row, L = the number of reward levels with positive mass;
polynomial in n for fixed L (~ n^(L-1)/(L-1)!), exponential in L. Within a level the
law is ∝ π_ref.

Limits (Verdun et al. 2025; checked in ``tests/test_theory.py``): n = 1 gives π_ref;
λ → 0 gives Best-of-n with ties broken uniformly (tied maxima share equal softmax
weights); n → ∞ gives the tilt π_ref e^(r/λ)/Z (:func:`bonmath.tilted_log_probs`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from bonmath.backend import (
    NEG_INF,
    Array,
    as_constant,
    as_index,
    count_vectors,
    difference_over,
    logsumexp,
    masked_ieee,
    put,
    softplus,
    to_numpy,
)
from bonmath.levels import reward_levels
from bonmath.validation import check_count, check_positive, check_reward_numbers, prepare

MAX_TERMS = 5_000_000
"""Default cap on the count vectors per batch row (memory ~ 16 · MAX_TERMS · L bytes)."""


def soft_bon_num_terms(n: int, num_levels: int) -> int:
    """M = C(n+L-2, L-1): the count vectors the exact soft-BoN sum runs over."""
    return math.comb(n - 1 + num_levels - 1, num_levels - 1)


@masked_ieee
def soft_bon_log_probs(
    ref_log_probs: Array,
    rewards: Array,
    n: int,
    temperature: float,
    *,
    normalize: bool = False,
    max_terms: int = MAX_TERMS,
) -> Array:
    """The exact soft Best-of-n law: n draws from π_ref, return draw i w.p. softmax(r/λ)_i.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards, used as numbers (weights e^(r/λ)): finite at every string with
        reference mass (an infinite one makes the softmax over draws undefined);
        those of zero-mass strings are never used. Ties allowed (a level shares its weight).
    n : int
        Number of draws, an integer >= 1.
    temperature : float
        Temperature λ > 0 (λ → 0: Best-of-n; λ → ∞: π_ref).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.
    max_terms : int, default MAX_TERMS
        Refuse (``ValueError``) rows needing more than this many count vectors.

    Returns
    -------
    array of shape (..., k)
        log π_{n,λ}(y); -inf where π_ref(y) = 0. Differentiable in π_ref and in the
        rewards for torch inputs (a tied level's reward gradient goes to one of its strings).

    Notes
    -----
    π_{n,λ}(y) = n π_ref(y) Σ_c Mult(c; n-1, q) e^(r(y)/λ) / (e^(r(y)/λ) + Σ_l c_l e^(r_l/λ)),
    the sum over the count vectors c of the other n-1 draws across the L reward levels
    (Verdun et al. 2025 define the sampler; the exact finite sum is bonmath's). Cost
    O(L · C(n+L-2, L-1)) per row; see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.5, 0.5])
    >>> np.exp(soft_bon_log_probs(ref, [0.0, np.log(3.0)], n=2, temperature=1.0)).round(6).tolist()
    [0.375, 0.625]
    >>> np.exp(soft_bon_log_probs(ref, [0, 1], n=2, temperature=1e-3)).round(6).tolist()  # ~ BoN
    [0.25, 0.75]
    """
    n = check_count(n, "n")
    temperature = check_positive(temperature, "temperature")
    max_terms = check_count(max_terms, "max_terms")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize, rewards_as_numbers=True
    )
    rewards = check_reward_numbers(
        rewards, ref_log_probs, "rewards", xp, allow=(), why=": softmax(r/λ) over the draws is undefined"
    )
    if n == 1 or math.prod(ref_log_probs.shape) == 0:  # π_ref, or an empty batch
        return ref_log_probs
    levels = reward_levels(ref_log_probs, rewards, xp)
    k, num_slots = ref_log_probs.shape[-1], levels.log_mass.shape[-1]
    batch_shape = tuple(ref_log_probs.shape[:-1])
    # Each string's level slot, through the levels' own level -> string map.
    slots = as_constant(np.arange(num_slots), levels.log_mass, xp)
    slot_of_string = to_numpy(levels.per_string(slots + xp.zeros_like(levels.log_mass), xp))
    slot_of_string = np.rint(slot_of_string).astype(np.int64).reshape(-1, k)
    flat_rewards = xp.reshape(rewards, (-1, k))
    log_mass = xp.reshape(levels.log_mass, (-1, num_slots))
    rows = [
        _soft_level_log_ratio(flat_rewards[row], temperature, log_mass[row], slot_of_string[row], n, max_terms, xp)
        for row in range(log_mass.shape[0])
    ]
    per_level = xp.reshape(xp.stack(rows), batch_shape + (num_slots,))
    log_ratio = levels.per_string(per_level, xp)
    zero_mass = ref_log_probs == NEG_INF
    return xp.where(zero_mass, NEG_INF, ref_log_probs + xp.where(zero_mass, 0.0, log_ratio))


def _soft_level_log_ratio(
    rewards: Array, temperature: float, log_mass: Array, slot_of_string: np.ndarray, n: int, max_terms: int, xp
) -> Array:
    """log[π_{n,λ}(y)/π_ref(y)] for every level slot of one row (0 for slots without strings).

    ``rewards`` holds r(y) per string, ``log_mass`` log q per level slot and
    ``slot_of_string`` each string's slot.

    The weight of y against the other draws is 1/(1 + e^z), z = log(S_{n-1}/w(y)) =
    (r_m - r(y))/λ + log Σ_l c_l e^((r_l - r_m)/λ), with m the highest level among the
    other draws: only reward *differences* are divided by λ (r/λ itself may be 1e16, where
    its ulp is 2, or overflow), each clipped to ±finfo.max/4 (e^-(max/4) is 0 either way),
    and the log-sum holds a term e^0 = 1, so it lies in [0, log(n-1)].
    """
    num_slots = log_mass.shape[0]
    slots, first_string = np.unique(slot_of_string, return_index=True)
    slot_rewards = as_constant(np.zeros(num_slots), rewards, xp)
    slot_rewards = put(slot_rewards, slots, rewards[as_index(first_string, rewards, xp)], xp)
    positive = np.flatnonzero(np.isfinite(to_numpy(log_mass)))
    terms_needed = soft_bon_num_terms(n, len(positive))
    if terms_needed > max_terms:
        raise ValueError(
            f"soft BoN with n={n} over {len(positive)} reward levels needs {terms_needed} count "
            f"vectors, more than max_terms={max_terms}"
        )
    counts = count_vectors(n - 1, len(positive))  # (M, L+), levels in increasing reward order
    top = counts.shape[1] - 1 - np.argmax(counts[:, ::-1] > 0, axis=1)  # m per count vector
    log_q = log_mass[as_index(positive, log_mass, xp)]
    log_mult = as_constant(gammaln(n) - gammaln(counts + 1.0).sum(axis=1), log_mass, xp)
    log_mult = log_mult + as_constant(counts, log_mass, xp) @ log_q
    with np.errstate(divide="ignore"):
        log_counts = as_constant(np.log(counts), log_mass, xp)
    positive_rewards = slot_rewards[as_index(positive, slot_rewards, xp)]
    # (r_l - r_m)/λ for l, m positive levels, and (r_m - r_y)/λ for every slot y
    below_top = _scaled_difference(positive_rewards[None, :], positive_rewards[:, None], temperature, log_mass, xp)
    above_y = _scaled_difference(positive_rewards[None, :], slot_rewards[:, None], temperature, log_mass, xp)
    top_index = as_index(top, log_mass, xp)
    present = as_constant(counts > 0, log_mass, xp) > 0
    log_others = logsumexp(xp.where(present, log_counts + below_top[top_index], NEG_INF), xp, axis=-1)  # (M,)
    z = above_y[:, top_index].T + log_others[:, None]  # (M, slots)
    terms = log_mult[:, None] - softplus(z, xp)
    return math.log(n) + logsumexp(terms, xp, axis=0)  # (slots,)


def _scaled_difference(minuend: Array, subtrahend: Array, temperature: float, like: Array, xp) -> Array:
    """(minuend - subtrahend)/λ in ``like``'s dtype, clipped to ±finfo.max/4 (no inf);
    minuend/λ - subtrahend/λ where the difference itself overflows (rewards ±1e308)."""
    scaled = difference_over(minuend, subtrahend, temperature, xp)
    bound = float(xp.finfo(like.dtype).max) / 4.0
    return xp.clip(xp.astype(scaled, like.dtype), -bound, bound)
