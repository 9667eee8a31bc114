"""χ² and Rényi divergences, and their Best-of-N bounds from the continuous case.

In the continuous limit (no atoms) the BoN ratio in quantile space is
π_N/π_ref = n u^(n-1), u ~ Uniform(0, 1) under π_ref, so

    E_ref[(n u^(n-1))^α] = n^α / (α(n-1) + 1),

    χ²(π_N || π_ref) = n²/(2n-1) - 1 = (n-1)²/(2n-1),
    D_α(π_N || π_ref) = (1/(α-1)) log(n^α / (α(n-1) + 1)),   D_∞ = log n,

and D_α → log n - (n-1)/n (Beirami et al.'s KL bound) as α → 1.

These are *upper bounds* on every finite support, ties included: BoN acts on the
level CDF only (F ↦ F^n, uniform within a level), so the discrete pair
(π_N, π_ref) is the image of the continuous pair under the map u ↦ level of u, and
every f-divergence and Rényi divergence can only shrink under such a map (data
processing). Equality holds in the continuous limit.
"""

from __future__ import annotations

import math

import numpy as np

from bonmath.backend import NEG_INF, Array, logsumexp, masked_ieee
from bonmath.divergences import kl_divergence
from bonmath.validation import check_n, check_positive, prepare


@masked_ieee
def chi2_divergence(p_log_probs: Array, q_log_probs: Array, *, normalize: bool = False) -> Array:
    """Pearson χ²(p || q) = Σ_y p(y)²/q(y) - 1 over the last axis.

    Parameters
    ----------
    p_log_probs, q_log_probs : arrays of shape (..., k)
        Log-probabilities on one support; leading axes broadcast.
    normalize : bool, default False
        Renormalise both instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)
        χ² >= 0; +inf where p(y) > 0 = q(y).

    Notes
    -----
    Computed as expm1(logsumexp(2 log p - log q)), so χ² near 0 keeps its relative
    accuracy only to ~1e-16 absolute.

    Examples
    --------
    >>> import numpy as np
    >>> float(chi2_divergence(np.log([0.25, 0.75]), np.log([0.5, 0.5])))
    0.25
    """
    xp, (p_log_probs, q_log_probs) = prepare(
        {"p_log_probs": p_log_probs, "q_log_probs": q_log_probs}, normalize=normalize
    )
    return xp.expm1(logsumexp(_power_terms(p_log_probs, q_log_probs, 2.0, xp), xp))


def _power_terms(p_log_probs: Array, q_log_probs: Array, alpha: float, xp) -> Array:
    """log(p^α q^(1-α)) per string, with p = 0 giving 0 and q = 0 < p giving +inf (α > 1) or 0 (α < 1)."""
    p_zero = p_log_probs == NEG_INF
    q_zero = q_log_probs == NEG_INF
    p_safe = xp.where(p_zero, 0.0, p_log_probs)
    q_safe = xp.where(q_zero, 0.0, q_log_probs)
    terms = alpha * p_safe + (1.0 - alpha) * q_safe
    missing = math.inf if alpha > 1 else NEG_INF
    terms = xp.where(q_zero, missing, terms)
    return xp.where(p_zero, NEG_INF, terms)


@masked_ieee
def renyi_divergence(
    p_log_probs: Array, q_log_probs: Array, alpha: float, *, normalize: bool = False
) -> Array:
    """Rényi divergence D_α(p || q) = (1/(α-1)) log Σ_y p(y)^α q(y)^(1-α).

    Parameters
    ----------
    p_log_probs, q_log_probs : arrays of shape (..., k)
        Log-probabilities on one support; leading axes broadcast.
    alpha : float
        Order α > 0; α = 1 is KL(p || q) and α = inf is log max_{p(y)>0} p(y)/q(y).
    normalize : bool, default False
        Renormalise both instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)
        D_α in nats, non-decreasing in α; +inf where α >= 1 and p has mass q lacks.

    Notes
    -----
    D_2 = log(1 + χ²). Rényi (1961); van Erven and Harremoës (2014) for the
    conventions at α = 1 and α = ∞.

    Examples
    --------
    >>> import numpy as np
    >>> p, q = np.log([0.25, 0.75]), np.log([0.5, 0.5])
    >>> round(float(renyi_divergence(p, q, 2.0)), 6)  # log 1.25
    0.223144
    >>> round(float(renyi_divergence(p, q, np.inf)), 6)  # log 1.5
    0.405465
    """
    alpha = _check_order(alpha)
    xp, (p_log_probs, q_log_probs) = prepare(
        {"p_log_probs": p_log_probs, "q_log_probs": q_log_probs}, normalize=normalize
    )
    if alpha == 1.0:
        return kl_divergence(p_log_probs, q_log_probs)
    if alpha == math.inf:
        p_zero = p_log_probs == NEG_INF
        ratio = xp.where(p_zero, NEG_INF, p_log_probs - xp.where(p_zero, 0.0, q_log_probs))
        return xp.max(ratio, axis=-1)
    return logsumexp(_power_terms(p_log_probs, q_log_probs, alpha, xp), xp) / (alpha - 1.0)


def _check_order(alpha) -> float:
    """The Rényi order: a real α > 0, or inf."""
    if isinstance(alpha, (float, np.floating)) and alpha == math.inf:
        return math.inf
    return check_positive(alpha, "alpha")


def bon_chi2_upper_bound(n: float) -> float:
    """χ²(π_N || π_ref) <= (n-1)²/(2n-1), the continuous-limit value (tight there).

    Parameters
    ----------
    n : float
        Number of BoN samples, any real n > 0 (+inf for n <= 1/2, where the
        continuous χ² diverges).

    Examples
    --------
    >>> bon_chi2_upper_bound(2), bon_chi2_upper_bound(1)
    (0.3333333333333333, 0.0)
    """
    n = check_n(n)
    if 2.0 * n - 1.0 <= 0.0:
        return math.inf
    return (n - 1.0) ** 2 / (2.0 * n - 1.0)


def bon_renyi_upper_bound(n: float, alpha: float) -> float:
    """D_α(π_N || π_ref) <= (1/(α-1)) log(n^α / (α(n-1) + 1)), the continuous-limit value.

    Parameters
    ----------
    n : float
        Number of BoN samples, n > 0.
    alpha : float
        Order α > 0, or inf (bound log n). α = 1 gives log n - (n-1)/n.

    Returns
    -------
    float
        The bound; +inf where α(n-1) + 1 <= 0 (possible only for n < 1) or α = inf
        with n < 1.

    Notes
    -----
    E_ref[(n u^(n-1))^α] = n^α ∫_0^1 u^(α(n-1)) du = n^α/(α(n-1) + 1); the bound holds
    on tied finite supports by data processing (module docstring). D_2 = log(1 + χ²)
    matches :func:`bon_chi2_upper_bound`.

    Examples
    --------
    >>> round(bon_renyi_upper_bound(2, 2.0), 6), round(bon_renyi_upper_bound(2, 1.0), 6)
    (0.287682, 0.193147)
    >>> bon_renyi_upper_bound(4, float("inf")) == math.log(4)
    True
    """
    n = check_n(n)
    alpha = _check_order(alpha)
    if alpha == math.inf:
        return math.log(n) if n >= 1 else math.inf
    if alpha == 1.0:
        return math.log(n) - (n - 1.0) / n
    denominator = alpha * (n - 1.0) + 1.0
    if denominator <= 0.0:
        return math.inf
    return (alpha * math.log(n) - math.log(denominator)) / (alpha - 1.0)
