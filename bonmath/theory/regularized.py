"""Regularised Best-of-N: BoN ranked by the score s(y) = r(y) + β log π_ref(y).

Penalising (β < 0) or favouring (β > 0) likely strings inside the ranking is still
Best-of-N, only with a score that depends on π_ref. So the law is the core BoN law
of that score, exactly with ties: two strings tie when their *scores* are equal
(equal reward and equal π_ref, or a coincidence r(y) - r(y') = β log(π_ref(y')/π_ref(y))),
and within a score level BoN is ∝ π_ref.

Ties are decided on the float64 score (also for float32 tensors): a coincidence that holds in exact
arithmetic can be missed after rounding (round the score yourself if that matters).
Where β log π_ref would overflow, the equivalent score r/|β| + sign(β) log π_ref is
ranked instead.
"""

from __future__ import annotations

import math

from bonmath.backend import NEG_INF, Array, masked_ieee
from bonmath.bon import bon_log_probs
from bonmath.validation import check_n, check_real, prepare


def _regularized_score(ref_log_probs: Array, rewards: Array, log_ref_weight: float, xp) -> Array:
    """s = r + β log π_ref on a validated support; -inf for zero-mass strings (never drawn).

    Where β log π_ref overflows (|β| near float max), the score r/|β| + sign(β) log π_ref
    ranks the strings the same way (BoN depends on the ranking only) and stays finite.
    """
    zero = ref_log_probs == NEG_INF
    log_ref = xp.where(zero, 0.0, ref_log_probs)
    score = rewards + log_ref_weight * log_ref
    if bool(xp.any(xp.isinf(score) & xp.isfinite(rewards))):
        score = rewards / abs(log_ref_weight) + math.copysign(1.0, log_ref_weight) * log_ref
    return xp.where(zero, NEG_INF, score)


@masked_ieee
def regularized_bon_log_probs(
    ref_log_probs: Array, rewards: Array, n: float, log_ref_weight: float, *, normalize: bool = False
) -> Array:
    """The exact law of BoN ranked by r(y) + β log π_ref(y), with ties.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties and ±inf allowed.
    n : float
        Number of BoN samples, any real n > 0.
    log_ref_weight : float
        β, the weight of log π_ref in the score; any finite real (β = 0 is plain BoN).
        For β > 0 it is the coefficient of KL(δ_y || π_ref) = -log π_ref(y) in
        Jinnai et al.'s (2024) RBoN_KL score; a ranking weight, not a KL(π || π_ref)
        coefficient, hence not called ``beta``.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log π(y) = log π_ref(y) + R_n(level of s(y)), with R_n the core BoN log ratio.

    Notes
    -----
    :func:`bonmath.bon_log_probs` applied to the score s = r + β log π_ref. The law
    is a function of the ranking only, so it changes with β only where the order of
    the scores changes.

    Examples
    --------
    With β = -1 the less likely of two equally rewarded strings ranks first:

    >>> import numpy as np
    >>> ref = np.log([0.75, 0.25])
    >>> np.exp(regularized_bon_log_probs(ref, [1, 1], 2, log_ref_weight=-1.0)).round(6).tolist()
    [0.5625, 0.4375]
    """
    n = check_n(n)
    log_ref_weight = check_real(log_ref_weight, "log_ref_weight")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize, rewards_as_numbers=True
    )
    # the score in float64 whatever the dtype: float32 would create ties (a different law) at β = 1e-10
    score = _regularized_score(xp.astype(ref_log_probs, xp.float64), xp.astype(rewards, xp.float64), log_ref_weight, xp)
    return bon_log_probs(ref_log_probs, score, n)
