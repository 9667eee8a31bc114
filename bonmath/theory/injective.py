"""The vBoN paper's injective Best-of-N formula, in log space, and its error where strings tie.

Amini et al. (2025) write the BoN law as Σ_{i=1..N} C(N,i) F_lt^{N-i} π_ref^i, which
is the law only when no two strings share a reward. The exact rational version is
:func:`bonmath.testing.paper_bon` (the oracle of the tests); this is the float64
log-space one, finite for any N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonmath.backend import NEG_INF, log1mexp, masked_ieee, to_numpy
from bonmath.levels import reward_levels
from bonmath.validation import check_n, prepare

__all__ = ["InjectiveFormulaError", "injective_bon_log_probs", "injective_formula_error"]


@masked_ieee
def injective_bon_log_probs(ref_log_probs, rewards, n: float) -> np.ndarray:
    """log of the vBoN paper's BoN formula Σ_{i=1..N} C(N,i) F_lt^{N-i} π_ref^i.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
    rewards : array of shape (..., k)
    n : float
        N > 0.

    Returns
    -------
    float64 array of shape (..., k)
        log((F_lt + π_ref)^N - F_lt^N) per string; -inf where π_ref = 0.

    Notes
    -----
    The binomial sum is (F_lt + π_ref)^N - F_lt^N. In logs, with b = F_lt and
    p = π_ref: N log(b + p) + log1mexp(-N log(1 + p/b)) for b > 0 and N log p for
    b = 0: sums of non-positive terms, finite for any N (no C(N,i) overflows).
    It is the BoN law only without ties; where strings share a reward level it
    undercounts (docs/math.md, "The Best-of-N law"), and
    :func:`injective_formula_error` says by how much.

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(injective_bon_log_probs(np.log([0.5, 0.5]), [0.0, 1.0], 2)).tolist()  # no ties: BoN
    [0.25, 0.75]
    >>> np.exp(injective_bon_log_probs(np.log([0.5, 0.25, 0.25]), [0, 1, 1], 2)).round(6).tolist()
    [0.25, 0.3125, 0.3125]
    """
    n = check_n(n)
    _, (ref_log_probs, rewards) = prepare({"ref_log_probs": to_numpy(ref_log_probs)}, {"rewards": to_numpy(rewards)})
    levels = reward_levels(ref_log_probs, rewards, np)
    log_b = levels.per_string(levels.log_cdf_lt, np)
    log_p = ref_log_probs
    lowest = log_b == NEG_INF
    log_ratio = np.logaddexp(0.0, log_p - np.where(lowest, 0.0, log_b))  # log(1 + p/b)
    value = n * np.logaddexp(log_b, log_p) + log1mexp(-n * np.where(lowest, 1.0, log_ratio), np)
    value = np.where(lowest, n * log_p, value)
    return np.where(log_p == NEG_INF, NEG_INF, value)


@dataclass(frozen=True)
class InjectiveFormulaError:
    """How far the injective formula is from the exact π_N, per batch row (arrays of shape (...)).

    Examples
    --------
    Two tied strings: π_N = (1/4, 3/8, 3/8) against the formula's (1/4, 5/16, 5/16):

    >>> import numpy as np
    >>> import bonmath
    >>> ref, rewards = np.log([0.5, 0.25, 0.25]), [0, 1, 1]
    >>> error = injective_formula_error(ref, rewards, bonmath.bon_log_probs(ref, rewards, 2), 2)
    >>> round(float(error.tv), 6), round(float(error.max_log_ratio), 6)  # 1/16 and log(6/5)
    (0.0625, 0.182322)
    """

    total_mass: np.ndarray
    """Σ_y formula(y): 1 without ties, less with them."""
    missing_mass: np.ndarray
    """1 - total_mass, computed as Σ (π_N - formula) (each term >= 0, no cancellation against 1)."""
    tv: np.ndarray
    """½ Σ_y |formula(y) - π_N(y)| (= missing_mass / 2, since the formula never exceeds π_N)."""
    max_log_ratio: np.ndarray
    """max_y log(π_N(y) / formula(y)), the worst per-string underestimate."""


@masked_ieee
def injective_formula_error(ref_log_probs, rewards, bon_log_probs, n: float) -> InjectiveFormulaError:
    """How far the injective formula is from the exact tie-aware π_N.

    Parameters
    ----------
    ref_log_probs, rewards : arrays of shape (..., k)
    bon_log_probs : array of shape (..., k)
        The exact log π_N (:func:`bonmath.bon_log_probs`).
    n : float

    Returns
    -------
    InjectiveFormulaError

    Notes
    -----
    The formula never exceeds π_N: within a level, f(x) = (b + x)^N - b^N is convex
    with f(0) = 0, so f(π_ref(y)) <= π_ref(y)/q · f(q) = π_N(y); hence tv = missing_mass / 2.

    Examples
    --------
    >>> import numpy as np
    >>> import bonmath
    >>> ref, rewards = np.log([0.5, 0.25, 0.25]), [0, 1, 1]
    >>> error = injective_formula_error(ref, rewards, bonmath.bon_log_probs(ref, rewards, 2), 2)
    >>> round(float(error.missing_mass), 6)  # π_N = (1/4, 3/8, 3/8) against (1/4, 5/16, 5/16)
    0.125
    """
    log_have = injective_bon_log_probs(ref_log_probs, rewards, n)
    _, (log_want,) = prepare({"bon_log_probs": to_numpy(bon_log_probs)})
    if log_want.shape != log_have.shape:
        raise ValueError(f"bon_log_probs must have the shape {log_have.shape} of ref_log_probs; got {log_want.shape}")
    have, want = np.exp(log_have), np.exp(log_want)
    return InjectiveFormulaError(
        total_mass=have.sum(-1),
        missing_mass=(want - have).sum(-1),
        tv=0.5 * np.abs(have - want).sum(-1),
        max_log_ratio=np.max(np.where(log_want > NEG_INF, log_want - log_have, 0.0), axis=-1),
    )
