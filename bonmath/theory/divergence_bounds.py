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

from bonmath.backend import NEG_INF, Array, detach, expm1mx, log1pmx, logsumexp, masked_ieee
from bonmath.divergences import kl_divergence, log_n_minus_fraction, relative_entropy_terms
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
    χ² = Σ_y (p - q)²/q, summed from terms >= 0 that keep their relative accuracy
    even for χ² near 0 (``_power_gap_terms`` at α = 2), and as
    expm1(log Σ p²/q) once Σ p²/q > e^(1/2).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(chi2_divergence(np.log([0.25, 0.75]), np.log([0.5, 0.5]))), 12)
    0.25
    """
    xp, (p_log_probs, q_log_probs) = prepare(
        {"p_log_probs": p_log_probs, "q_log_probs": q_log_probs}, normalize=normalize
    )
    infinite, p_log_probs, q_log_probs = _split_infinite(p_log_probs, q_log_probs, 2.0, xp)
    log_sum = logsumexp(_power_terms(p_log_probs, q_log_probs, 2.0, xp), xp)
    large = log_sum > _LOG_SUM_BRANCH
    gap = xp.sum(_power_gap_terms(p_log_probs, q_log_probs, 2.0, xp), axis=-1)
    chi2 = xp.where(large, xp.expm1(xp.where(large, log_sum, 0.0)), gap)
    return xp.where(infinite, math.inf, chi2)


_LOG_SUM_BRANCH = 0.5
"""Where |log Σ p^α q^(1-α)| exceeds this, D_α = log Σ/(α-1) is accurate as it stands;
below it D_α = log1p((α-1) g)/(α-1) with g summed from terms >= 0."""


def _split_infinite(p_log_probs: Array, q_log_probs: Array, alpha: float, xp) -> tuple[Array, Array, Array]:
    """Rows whose D_α (α > 1) is +inf (p > 0 = q somewhere), and the inputs with those rows
    replaced by p = q (finite stand-ins: the masked rows must not give NaN gradients)."""
    missing = (p_log_probs > NEG_INF) & (q_log_probs == NEG_INF)
    infinite = xp.any(missing, axis=-1) if alpha > 1 else xp.zeros_like(missing[..., 0])
    p_safe = xp.where(infinite[..., None], q_log_probs, p_log_probs)
    return infinite, p_safe, q_log_probs


def _power_terms(p_log_probs: Array, q_log_probs: Array, alpha: float, xp) -> Array:
    """log(p^α q^(1-α)) = log p + (α-1)(log p - log q) per string; p = 0 gives -inf and
    q = 0 < p gives +inf (α > 1) or -inf (α < 1)."""
    p_zero = p_log_probs == NEG_INF
    q_zero = q_log_probs == NEG_INF
    p_safe = xp.where(p_zero, 0.0, p_log_probs)
    q_safe = xp.where(q_zero, 0.0, q_log_probs)
    terms = p_safe + (alpha - 1.0) * (p_safe - q_safe)
    missing = math.inf if alpha > 1 else NEG_INF
    terms = xp.where(q_zero, missing, terms)
    return xp.where(p_zero, NEG_INF, terms)


def _power_gap_terms(p_log_probs: Array, q_log_probs: Array, alpha: float, xp) -> Array:
    """Per-string terms >= 0 that sum to g = (Σ p^α q^(1-α) - 1)/(α - 1) for normalised p, q.

    The term is q h_α(p/q), h_α(ρ) = (ρ^α - αρ + α - 1)/(α - 1) >= 0 (convex for α > 1,
    concave over a negative denominator for α < 1), and h_1(ρ) = ρ log ρ - ρ + 1 (the KL
    term). With ℓ = log(p/q), ε = α - 1 and φ(t) = e^t - 1 - t:

        q h_α(p/q) = p φ(-ℓ) + p φ(εℓ)/ε,

    the KL term plus a term of the sign of ε that is O(ε) smaller near α = 1 (no
    cancellation for α >= 1/2; for α < 1/2 the skew symmetry
    g_α(p, q) = α/(1-α) g_{1-α}(q, p) is used). Σ q h sums to the Rényi sum of the
    *renormalised* p and q to first order in their normalisation error, so
    log1p(ε g)/ε is continuous through α = 1. p φ(εℓ)/ε is taken as e^(log p + εℓ)/ε
    where εℓ > 700 (capped at e^700: such rows are evaluated from the log-sum instead).
    Terms where q = 0 < p are +inf for α > 1 and pα/(1-α) for α < 1.
    """
    if alpha < 0.5:
        return alpha / (1.0 - alpha) * _power_gap_terms(q_log_probs, p_log_probs, 1.0 - alpha, xp)
    terms = relative_entropy_terms(p_log_probs, q_log_probs, xp)
    if alpha == 1.0:
        return terms
    eps = alpha - 1.0
    p_zero = p_log_probs == NEG_INF
    q_zero = q_log_probs == NEG_INF
    regular = ~p_zero & ~q_zero
    log_p = xp.where(regular, p_log_probs, 0.0)
    x = eps * (log_p - xp.where(regular, q_log_probs, 0.0))
    big = x > 700.0
    x_small = xp.where(big, 0.0, x)
    x_big = xp.where(big, x, 0.0)
    small_form = xp.exp(log_p) * expm1mx(x_small, xp) / eps
    big_form = math.copysign(1.0, eps) * xp.exp(xp.minimum(log_p + x_big - math.log(abs(eps)), 700.0))
    terms = terms + xp.where(regular, xp.where(big, big_form, small_form), 0.0)
    if alpha < 1.0:
        missing = ~p_zero & q_zero
        p_missing = xp.exp(xp.where(missing, p_log_probs, NEG_INF))
        terms = xp.where(missing, p_missing * (alpha / (1.0 - alpha)), terms)
    return terms


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
    conventions at α = 1 and α = ∞. Where |log Σ p^α q^(1-α)| < 1/2 (α near 1, or p
    near q) D_α = log1p((α-1) g)/(α-1), g the sum of the terms >= 0 of
    ``_power_gap_terms``, so D_α >= 0 and is continuous through α = 1 (the log of
    the sum divided by α - 1 = 1e-15 would amplify its rounding by 1e15).

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
    eps = alpha - 1.0
    infinite, p_log_probs, q_log_probs = _split_infinite(p_log_probs, q_log_probs, alpha, xp)
    from_log_sum = _renyi_from_log_sum(p_log_probs, q_log_probs, alpha, xp)
    large = from_log_sum * abs(eps) > _LOG_SUM_BRANCH
    gap = xp.sum(_power_gap_terms(p_log_probs, q_log_probs, alpha, xp), axis=-1)
    near = xp.log1p(eps * xp.where(large, 0.0, gap)) / eps
    return xp.where(infinite, math.inf, xp.where(large, from_log_sum, near))


def _renyi_from_log_sum(p_log_probs: Array, q_log_probs: Array, alpha: float, xp) -> Array:
    """log Σ p^α q^(1-α) / (α - 1); for α > 2 as M + log Σ e^(ε(v - M))/ε with
    v = log(p/q) + log p/ε and M = max v, so that ε log(p/q) cannot overflow (α = 1e308)."""
    eps = alpha - 1.0
    if eps <= 1.0:
        return logsumexp(_power_terms(p_log_probs, q_log_probs, alpha, xp), xp) / eps
    p_zero = p_log_probs == NEG_INF  # no q = 0 < p is left here (infinite rows are split off)
    log_p = xp.where(p_zero, 0.0, p_log_probs)
    v = log_p - xp.where(p_zero, 0.0, q_log_probs) + log_p / eps
    v = xp.where(p_zero, NEG_INF, v)  # log(p/q) + log p/ε
    top = detach(xp.max(v, axis=-1, keepdims=True))
    top = xp.where(xp.isfinite(top), top, 0.0)
    return xp.squeeze(top, axis=-1) + logsumexp(eps * (v - top), xp) / eps


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
    if n <= 0.5:
        return math.inf
    return (n - 1.0) * ((n - 1.0) / (n - 0.5)) / 2.0  # (n-1)^2 itself overflows for n > 1e154


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
    matches :func:`bon_chi2_upper_bound`. Evaluated as log n - log1p(ε m)/ε with
    ε = α - 1 and m = (n-1)/n (the same value), split as
    (log n - m) - (log1p(εm) - εm)/ε: continuous through α = 1, where it is
    log n - m, accurate near n = 1 (where it is ~ α m²/2), and free of n^α, which
    overflows for n = 1e308. For α < 1/2, where those two terms cancel as α → 0, it is
    (α log n - log1p(α(n-1)))/(α - 1), near n = 1 with both parts minus their linear terms.

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
    eps, m = alpha - 1.0, (n - 1.0) / n
    if alpha == 1.0:
        return log_n_minus_fraction(n)
    if eps * m <= -1.0:  # α(n-1) + 1 <= 0
        return math.inf
    if alpha < 0.5:  # (α log n - log1p(α(n-1)))/(α-1); near n = 1 each part minus its linear term
        if abs(alpha * (n - 1.0)) < 0.5:
            return (alpha * log1pmx(n - 1.0) - log1pmx(alpha * (n - 1.0))) / eps
        return (alpha * math.log(n) - math.log1p(alpha * (n - 1.0))) / eps
    # log n - log1p(εm)/ε = (log n - m) - (log1p(εm) - εm)/ε: two terms >= 0 for α > 1
    return log_n_minus_fraction(n) - log1pmx(eps * m) / eps
