"""Divergences, entropy and win rate between distributions on one enumerated support.

All in nats, with 0 log 0 = 0 and KL = +inf where p has mass that q lacks
(docs/math.md, "Divergences, win rate").
"""

from __future__ import annotations

import math

from bonmath.backend import NEG_INF, Array, expectation, expm1mx, log1pmx, masked_ieee
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
        KL >= 0 in nats (never negative, even by rounding); +inf where p(y) > 0 = q(y).

    Notes
    -----
    Summed as Σ_y [p log(p/q) - p + q] (``bonmath.divergences.relative_entropy_terms``): the added
    Σ (q - p) is 0 on normalised inputs and makes every term >= 0, so the sum cannot
    round below 0 (Σ p log(p/q) has terms of both signs and came out as -7.5e-16 for
    BoN at n = 1 + 1e-12). Gradients are those of this sum: on the simplex (e.g.
    through a log-softmax) they equal the gradients of Σ p log(p/q).

    See Also
    --------
    bonmath.bon_kl_upper_bound : log N - (N-1)/N, the bound on KL(π_N || π_ref) (:ref:`math-divergences`).

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
    return xp.sum(relative_entropy_terms(p_log_probs, q_log_probs, xp), axis=-1)


def relative_entropy_terms(p_log_probs: Array, q_log_probs: Array, xp) -> Array:
    """The terms p log(p/q) - p + q >= 0 of KL(p || q), per string (scipy's ``rel_entr``
    plus q - p: on normalised p, q they add up to the KL, and none is negative).

    With ℓ = log p - log q the term is p φ(-ℓ), φ(t) = e^t - 1 - t (:func:`expm1mx`), for
    ℓ >= -1, and q (1 - e^ℓ (1 - ℓ)) below (where e^-ℓ could overflow); q where p = 0,
    0 where both are 0, +inf where p > 0 = q (even if p underflows in linear space).
    Masked entries see finite stand-ins, so torch gradients are finite (0 at ±inf terms).
    """
    p_zero = p_log_probs == NEG_INF
    q_zero = q_log_probs == NEG_INF
    regular = ~p_zero & ~q_zero
    log_p = xp.where(regular, p_log_probs, 0.0)
    log_q = xp.where(q_zero, 0.0, q_log_probs)
    log_ratio = log_p - xp.where(regular, log_q, 0.0)
    near = log_ratio >= -1.0
    ratio_near = xp.where(near, log_ratio, 0.0)
    ratio_far = xp.where(near, -2.0, log_ratio)
    q = xp.exp(log_q)
    term = xp.where(
        near,
        xp.exp(log_p) * expm1mx(-ratio_near, xp),
        q * -xp.expm1(ratio_far + xp.log1p(-ratio_far)),  # q (1 - e^ℓ (1 - ℓ))
    )
    term = xp.where(regular, term, xp.where(p_zero & ~q_zero, q, 0.0))
    return xp.where(~p_zero & q_zero, math.inf, term)


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

    Beirami et al. (2024, arXiv 2401.01879), Section 3. Equality holds only in the
    continuous limit (no atom carries mass); on a finite support the true KL is smaller
    (see :func:`bonmath.kl_divergence`).

    Examples
    --------
    >>> round(bon_kl_upper_bound(2), 4)
    0.1931
    """
    n = check_n(n)
    return log_n_minus_fraction(n)


def log_n_minus_fraction(n: float) -> float:
    """log n - (n-1)/n for n > 0, to relative precision also near n = 1 (where it is
    ~ (n-1)²/2): with m = (n-1)/n, log n = -log1p(-m), so it is -log1pmx(-m)."""
    m = (n - 1.0) / n
    return -log1pmx(-m) if abs(m) < 0.5 else math.log(n) - m
