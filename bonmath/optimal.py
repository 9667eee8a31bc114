"""Optimal policies: the KL-regularised RL optimum (exponential tilt) and the optimum of
the vBoN lower bound.

KL-RL maximises E_π[r] - β KL(π || π_ref); its optimum is π_β = π_ref e^(r/β) / Z
(docs/math.md, "vBoN"). As β sweeps (0, ∞) the tilted policies trace the exact
Pareto frontier of E[r] against KL(π || π_ref).
"""

from __future__ import annotations

from bonmath.backend import NEG_INF, Array, detach, difference_over, logsumexp, masked_ieee
from bonmath.levels import reward_levels
from bonmath.validation import check_n, check_positive, check_reward_numbers, prepare


@masked_ieee
def tilted_log_probs(
    ref_log_probs: Array, rewards: Array, beta: float, *, normalize: bool = False
) -> Array:
    """The KL-RL optimum log π_β(y) = log π_ref(y) + r(y)/β - log Z.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
    rewards : array of shape (..., k)
        Rewards, used as numbers: -inf is allowed (the string gets no mass); +inf is
        not, at a string with reference mass (Z would be infinite). Rewards of
        zero-mass strings are never used.
    beta : float
        KL coefficient, β > 0.

    Returns
    -------
    array of shape (..., k)

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(tilted_log_probs(np.log([0.5, 0.5]), [0.0, np.log(3.0)], beta=1.0)).round(6).tolist()
    [0.25, 0.75]
    """
    beta = check_positive(beta, "beta")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize, rewards_as_numbers=True
    )
    rewards = check_reward_numbers(
        rewards, ref_log_probs, "rewards", xp, why=": the tilt's normaliser Z would be infinite"
    )
    return _tilt(ref_log_probs, rewards, xp, divisor=beta)


def _tilt(ref_log_probs: Array, values: Array, xp, *, divisor: float = 1.0, scale: float = 1.0) -> Array:
    """log π_ref + v·scale/divisor - log Z, shifted by the largest value among strings with
    mass so that no term overflows.

    With m = max{v(y): π_ref(y) > 0} the tilt (v - m)/β is <= 0 and 0 on the best strings:
    r/β itself overflows for β = 1e-310 or rewards of 1e308, and inf - inf is NaN. A
    string whose (v - m)/β is below float range gets -inf (its probability is e^-huge).
    m is detached: the law does not depend on a common shift of the values.
    """
    zero = ref_log_probs == NEG_INF
    best = detach(xp.max(xp.where(zero, NEG_INF, values), axis=-1, keepdims=True))
    if bool(xp.any(best == NEG_INF)):
        raise ValueError("the tilted policy has no mass: every string has π_ref = 0 or reward -inf")
    safe_values = xp.where(zero, best, values)
    tilt = xp.astype(difference_over(safe_values, best, divisor, xp), ref_log_probs.dtype) * scale
    tilted = xp.where(zero, NEG_INF, ref_log_probs + xp.where(zero, 0.0, tilt))
    return tilted - logsumexp(tilted, xp, keepdims=True)


@masked_ieee
def vbon_bound_optimum(
    ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """The maximiser of the vBoN lower bound L: π_ref F_lt^(n-1) / Z (not π_N).

    It is the KL-RL optimum with reward log F_lt and β = 1/(n-1) (docs/math.md,
    "vBoN"; the training objective of the paper's released code). n = 1 gives π_ref.

    Raises ``ValueError`` when n > 1 and all reference mass lies on the lowest
    reward level (then L = -inf for every policy).

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(vbon_bound_optimum(np.log([0.5, 0.25, 0.25]), [0, 1, 2], n=2)).round(6).tolist()
    [0.0, 0.4, 0.6]
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 for the vBoN lower bound; got {n:g}")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    if n == 1:
        return ref_log_probs
    levels = reward_levels(ref_log_probs, rewards, xp)
    log_cdf_lt = levels.per_string(levels.log_cdf_lt, xp)
    zero = ref_log_probs == NEG_INF
    if bool(xp.any(xp.max(xp.where(zero, NEG_INF, log_cdf_lt), axis=-1) == NEG_INF)):
        raise ValueError("all reference mass is on the lowest reward level: L = -inf for every policy")
    return _tilt(ref_log_probs, log_cdf_lt, xp, scale=n - 1.0)
