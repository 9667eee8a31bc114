"""Best-of-Poisson: Best-of-N with a random N, N - 1 ~ Poisson(μ).

Introduced by Khalaf, Verdun, Oesterling, Lakkaraju, Calmon (2025, "Inference-Time Reward
Hacking in Large Language Models", arXiv 2506.19248), the paper of HedgeTune. The
parametrisation N = 1 + Poisson(μ) and the quantile density below match the authors'
released code (``hskhalaf/hedging``); the paper's own statement was not read.

Derivation. Given N = n, BoN maps the level CDF F to F^n and is ∝ π_ref within a
level (docs/math.md, "The Best-of-N law"). Mixing over N = 1 + K, K ~ Poisson(μ),
keeps "∝ π_ref within a level" and maps F to

    G(F) = E[F^(1+K)] = F Σ_k e^(-μ) μ^k F^k / k! = F e^(μ(F-1)).

So, with b = F_lt(y), a = F_le(y) = b + q and q the level mass, the level's mass is

    G(a) - G(b) = e^(μ(a-1)) (a - b e^(-μq)) = e^(μ(a-1)) (q + b (1 - e^(-μq))),

and π_μ(y) = π_ref(y)/q · (G(a) - G(b)). In logs, μ(a-1) + log a + log(1 - e^(-(t + μq))),
t = log(a/b), is a sum of non-positive terms (accurate even where the level holds all but
1e-300 of the mass); where t + μq is below float64's normal range, the equal
μ(a-1) + log q + log1p(b (1 - e^(-μq))/q) is used instead (its two terms cannot cancel
there: the mass is below e^-600). Only μ(a-1) grows with μ, and F_le - 1 is accurate
(the levels compute F near 1 from the mass above it), so the law is right for μ up to
float64's maximum. In the continuous limit (q → 0) the ratio π_μ/π_ref at quantile u is
G'(u) = (1 + μu) e^(μ(u-1)), the quantile density of the REFERENCE ("Related results").
The mean number of draws is 1 + μ.
"""

from __future__ import annotations

import math

from bonmath.backend import NEG_INF, Array, log1mexp, masked_ieee, softplus, unsort
from bonmath.bon import _share_level_mass
from bonmath.levels import reward_levels
from bonmath.validation import check_positive, prepare

_TINY = 1e-290
"""Below this t + μq the non-positive-terms form would take the log of a number with few bits."""


def _log_one_minus_exp_neg_over_x(log_x: Array, xp) -> Array:
    """log((1 - e^(-x))/x) from log x: accurate for x from 0 (value 0) to float max."""
    tiny = log_x < math.log(1e-8)
    x_tiny = xp.exp(xp.where(tiny, log_x, NEG_INF))
    log_x_big = xp.where(tiny, 0.0, log_x)
    return xp.where(tiny, -x_tiny / 2.0, log1mexp(-xp.exp(log_x_big), xp) - log_x_big)


def _log_poisson_level_mass(log_cdf_lt: Array, log_level_mass: Array, log_cdf_le: Array, mu: float, xp) -> Array:
    """log(G(a) - G(b)), G(F) = F e^(μ(F-1)), per level (module docstring)."""
    lowest = log_cdf_lt == NEG_INF
    empty = log_level_mass == NEG_INF
    log_b = xp.where(lowest, 0.0, log_cdf_lt)
    log_q = xp.where(empty, 0.0, log_level_mass)
    log_mu_q = math.log(mu) + log_q
    t = xp.where(lowest, math.inf, softplus(log_q - log_b, xp))
    exponent = t + xp.exp(log_mu_q)  # log(a/b) + μq: b e^(-μq)/a = e^-exponent
    normal = exponent > _TINY
    mu_gap = mu * xp.expm1(log_cdf_le)  # μ(a-1): exactly 0 on the top level
    log_gap = log1mexp(-xp.where(normal, exponent, 1.0), xp)
    # log(b (1 - e^(-μq))/q), for the tiny form log q + log1p(b (1 - e^(-μq))/q)
    log_spread = xp.where(lowest, NEG_INF, log_b + math.log(mu) + _log_one_minus_exp_neg_over_x(log_mu_q, xp))
    mass = xp.where(normal, log_cdf_le + log_gap, log_q + softplus(log_spread, xp)) + mu_gap
    return xp.where(empty, NEG_INF, mass)


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
    π_μ(y) = π_ref(y)/q · e^(μ(F_le-1)) (q + F_lt (1 - e^(-μq))): the level CDF maps to
    F e^(μ(F-1)) and π_μ ∝ π_ref within a level (module docstring). It equals the
    mixture Σ_k Poisson(k; μ) π_{k+1} of BoN laws, and in the continuous limit has
    quantile density (1 + μu) e^(μ(u-1)) (docs/math.md, "Related results").

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
    level_mass = _log_poisson_level_mass(levels.log_cdf_lt, levels.log_mass, levels.log_cdf_le, mu, xp)
    if levels.level_of_string is None:  # every level is one string
        return unsort(level_mass, levels.order, xp)
    return _share_level_mass(ref_log_probs, levels, level_mass, xp)
