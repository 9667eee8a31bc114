"""Best-of-Poisson: Best-of-N with a random N, N - 1 ~ Poisson(μ).

Derivation. Given N = n, BoN maps the level CDF F to F^n and is ∝ π_ref within a
level (REFERENCE.md, "The Best-of-N law"). Mixing over N = 1 + K, K ~ Poisson(μ),
keeps "∝ π_ref within a level" and maps F to

    G(F) = E[F^(1+K)] = F Σ_k e^(-μ) μ^k F^k / k! = F e^(μ(F-1)).

So, with b = F_lt(y), a = F_le(y) = b + q and q the level mass,

    π_μ(y) = π_ref(y)/q · (G(a) - G(b)) = π_ref(y) e^(μ(b-1)) (e^(μq) + b expm1(μq)/q),

a sum of positive terms: no cancellation in any regime. In the continuous limit
(q → 0) the ratio π_μ/π_ref at quantile u is G'(u) = (1 + μu) e^(μ(u-1)), the
quantile density of the REFERENCE ("Related results"). The mean number of draws is
1 + μ.
"""

from __future__ import annotations

import math

from bonmath.backend import NEG_INF, Array, log1mexp, logaddexp, masked_ieee
from bonmath.levels import reward_levels
from bonmath.validation import check_positive, prepare


def _log_expm1_over_x(log_x: Array, xp) -> Array:
    """log(expm1(x)/x) from log x, accurate for x from 0 (value 0) to large."""
    tiny = log_x < math.log(1e-8)
    x_tiny = xp.exp(xp.where(tiny, log_x, NEG_INF))
    log_x_big = xp.where(tiny, 0.0, log_x)
    x_big = xp.exp(log_x_big)
    return xp.where(tiny, x_tiny / 2.0, x_big + log1mexp(-x_big, xp) - log_x_big)


def _log_poisson_ratio(log_cdf_lt: Array, log_level_mass: Array, mu: float, xp) -> Array:
    """log[(G(a) - G(b))/(a - b)], G(F) = F e^(μ(F-1)), from log b and log q (per level)."""
    lowest = log_cdf_lt == NEG_INF
    log_b = xp.where(lowest, 0.0, log_cdf_lt)
    q = xp.exp(log_level_mass)
    log_mu = math.log(mu)
    second = log_b + log_mu + _log_expm1_over_x(log_mu + log_level_mass, xp)  # log(b expm1(μq)/q)
    second = xp.where(lowest, NEG_INF, second)
    shift = xp.where(lowest, -mu, mu * xp.expm1(log_b))  # μ(b - 1), accurate for b near 1
    return shift + logaddexp(mu * q, second, xp)


@masked_ieee
def best_of_poisson_log_probs(
    ref_log_probs: Array, rewards: Array, mu: float, *, normalize: bool = False
) -> Array:
    """The exact Best-of-Poisson law, N = 1 + Poisson(μ) draws, with ties.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties and ±inf allowed (ordered like any value).
    mu : float
        Poisson mean μ >= 0 (μ = 0 returns π_ref; the mean number of draws is 1 + μ).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log π_μ(y); -inf where π_ref(y) = 0.

    Notes
    -----
    π_μ(y) = π_ref(y) e^(μ(F_lt-1)) (e^(μq) + F_lt expm1(μq)/q): the level CDF maps to
    F e^(μ(F-1)) and π_μ ∝ π_ref within a level (module docstring). It equals the
    mixture Σ_k Poisson(k; μ) π_{k+1} of BoN laws, and in the continuous limit has
    quantile density (1 + μu) e^(μ(u-1)) (REFERENCE.md, "Related results").

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(best_of_poisson_log_probs(np.log([0.5, 0.5]), [0, 1], mu=1.0)).round(6).tolist()
    [0.303265, 0.696735]
    """
    mu = check_positive(mu, "mu", inclusive=True)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    if mu == 0.0:
        return ref_log_probs
    levels = reward_levels(ref_log_probs, rewards, xp)
    log_ratio = levels.per_string(_log_poisson_ratio(levels.log_cdf_lt, levels.log_mass, mu, xp), xp)
    zero_mass = ref_log_probs == NEG_INF
    return xp.where(zero_mass, NEG_INF, ref_log_probs + xp.where(zero_mass, 0.0, log_ratio))
