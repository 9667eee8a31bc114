"""Divergences, entropy and win rate between distributions on one enumerated support.

All in nats, with 0 log 0 = 0 and KL = +inf where p has mass that q lacks
(REFERENCE.md, "Divergences, win rate").
"""

from __future__ import annotations

import math

from bonmath.backend import Array, expectation, masked_ieee
from bonmath.levels import reward_levels
from bonmath.validation import check_n, prepare


@masked_ieee
def kl_divergence(p_log_probs: Array, q_log_probs: Array, *, normalize: bool = False) -> Array:
    """KL(p || q) = Σ_y p(y) (log p(y) - log q(y)) over the last axis.

    Parameters
    ----------
    p_log_probs, q_log_probs : arrays of shape (..., k)
        Log-probabilities on the same support; leading axes broadcast.
    normalize : bool, default False
        Renormalise both instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)
        KL in nats; +inf where p(y) > 0 = q(y). Terms with p(y) = 0 contribute 0
        (and zero gradient).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(kl_divergence(np.log([0.25, 0.75]), np.log([0.5, 0.5]))), 4)
    0.1308
    >>> float(kl_divergence(np.log([0.5, 0.5]), [0.0, -np.inf]))
    inf
    """
    xp, (p_log_probs, q_log_probs) = prepare(
        {"p_log_probs": p_log_probs, "q_log_probs": q_log_probs}, normalize=normalize
    )
    return expectation(p_log_probs, p_log_probs - q_log_probs, xp)


@masked_ieee
def entropy(log_probs: Array, *, normalize: bool = False) -> Array:
    """Shannon entropy H(p) = -Σ_y p(y) log p(y) in nats, over the last axis.

    Examples
    --------
    >>> import numpy as np
    >>> float(entropy(np.log([0.5, 0.5]) + [0.0, 0.0]))  # log 2
    0.693147180559
    """
    xp, (log_probs,) = prepare({"log_probs": log_probs}, normalize=normalize)
    return -expectation(log_probs, log_probs, xp)


@masked_ieee
def win_rate(
    p_log_probs: Array, q_log_probs: Array, rewards: Array, *, normalize: bool = False
) -> Array:
    """Win rate W(p, q) = P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')), Y ~ p, Y' ~ q independent.

    Parameters
    ----------
    p_log_probs, q_log_probs : arrays of shape (..., k)
        The two distributions on one support.
    rewards : array of shape (..., k)
        Rewards; ties count one half.

    Returns
    -------
    array of shape (...)
        W in [0, 1]; W(p, p) = 1/2.

    Notes
    -----
    W = Σ_y p(y) · ½ (F^q_lt(y) + F^q_le(y)), with the reward CDF of q: one sort,
    O(k log k).

    Examples
    --------
    >>> import numpy as np
    >>> float(win_rate(np.log([0.25, 0.75]), np.log([0.5, 0.5]), [0.0, 1.0]))
    0.625
    """
    xp, (p_log_probs, q_log_probs, rewards) = prepare(
        {"p_log_probs": p_log_probs, "q_log_probs": q_log_probs},
        {"rewards": rewards},
        normalize=normalize,
    )
    levels = reward_levels(q_log_probs, rewards, xp)
    beats = (xp.exp(levels.log_cdf_lt) + xp.exp(levels.log_cdf_le)) / 2.0
    return xp.sum(xp.exp(p_log_probs) * levels.per_string(beats, xp), axis=-1)


def bon_kl_upper_bound(n: float) -> float:
    """Beirami et al. (2024)'s bound KL(π_N || π_ref) <= log n - (n-1)/n.

    Equality holds only in the continuous limit (no atom carries mass); on a
    finite support the true KL is smaller (see :func:`bonmath.kl_divergence`).

    Examples
    --------
    >>> round(bon_kl_upper_bound(2), 4)
    0.1931
    """
    n = check_n(n)
    return math.log(n) - (n - 1.0) / n
