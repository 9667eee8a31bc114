"""Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment policy",
arXiv 2401.01879 (sections as numbered in v3, the ICML 2025 version).

The KL upper bound KL(π_N || π_ref) <= log n - (n-1)/n is core
(:func:`bonmath.bon_kl_upper_bound`). This module adds the paper's KL estimate and
its win-rate bound.

The estimate, as a function of one probability ε,

    KL̂_n(ε) = (1-ε)^n (log n + (n-1) log(1-ε) - (n-1)/n) + (1 - (1-ε)^n) log((1 - (1-ε)^n)/ε),

is the *exact* KL(π_N || π_ref) of a reference law made of an atom of mass ε at the
top reward and no atoms below it: the atom gets π_N = 1 - (1-ε)^n, and the
continuous part, in quantile u ∈ [0, 1-ε), has ratio n u^(n-1), contributing
∫_0^(1-ε) n u^(n-1) log(n u^(n-1)) du = (1-ε)^n (log n + (n-1) log(1-ε) - (n-1)/n).

Consequences checked in ``tests/test_theory.py`` (exact on tied supports):

* KL̂_n(ε) decreases from log n - (n-1)/n (ε → 0) to 0 (ε = 1).
* With ε = q_top, the reference mass of the top reward level, KL(π_N || π_ref) <=
  KL̂_n(q_top) <= log n - (n-1)/n: the discrete (level) law is a coarse-graining of
  "atom q_top on top, continuum below", and KL only decreases under coarse-graining
  (data processing). This refines the bound.
"""

from __future__ import annotations

import math

from bonmath.backend import (
    NEG_INF,
    Array,
    expectation,
    float_array,
    log1mexp,
    masked_ieee,
    namespace,
)
from bonmath.bon import bon_log_probs
from bonmath.validation import check_n, prepare


def _log_estimate(log_eps: Array, n: float, xp) -> Array:
    """KL̂_n(ε) from log ε (ε in (0, 1]); the 0 · (-inf) of ε = 1 is taken as 0."""
    if n == 1.0:  # BoN of one draw is the reference: exactly 0, not a rounding residue
        return xp.zeros_like(log_eps)
    at_one = log_eps >= 0.0
    log_eps = xp.where(at_one, -1.0, log_eps)
    log_rest = log1mexp(log_eps, xp)  # log(1 - ε), accurate for ε near 0 and near 1
    log_stay = n * log_rest  # log (1-ε)^n
    vanishes = log_stay < -800.0  # (1-ε)^n underflows and the bracket may overflow: 0, not 0·inf
    log_rest_kept = xp.where(vanishes, 0.0, log_rest)
    continuous = xp.where(
        vanishes, 0.0, xp.exp(n * log_rest_kept) * (math.log(n) + (n - 1.0) * log_rest_kept - (n - 1.0) / n)
    )
    top = -xp.expm1(log_stay)  # 1 - (1-ε)^n
    atom = top * (log1mexp(log_stay, xp) - log_eps)
    return xp.where(at_one, 0.0, continuous + atom)


@masked_ieee
def beirami_kl_estimate(eps: Array, n: float) -> Array:
    """Beirami et al.'s KL estimate KL̂_n(ε) for BoN, from one reference probability ε.

    Parameters
    ----------
    eps : float or array of shape (...)
        ε in (0, 1]: the reference probability of the returned sample (or of the top
        reward level, which makes it an upper bound on KL(π_N || π_ref)).
    n : float
        Number of BoN samples, n >= 1.

    Returns
    -------
    array of shape (...)
        KL̂_n(ε) in nats; 0 at ε = 1, and log n - (n-1)/n in the limit ε → 0.

    Notes
    -----
    KL̂_n(ε) = (1-ε)^n (log n + (n-1) log(1-ε) - (n-1)/n)
    + (1-(1-ε)^n) log((1-(1-ε)^n)/ε) (Beirami et al. 2024, Section 4). It is the
    exact KL(π_N || π_ref) for an atom of mass ε on top of an atomless remainder
    (see the module docstring). Evaluated with log1p / expm1, so it is accurate for
    ε down to 1e-300 and up to 1.

    Examples
    --------
    Two equally likely strings, n = 2 (true KL 0.1308, bound 0.1931):

    >>> round(float(beirami_kl_estimate(0.5, 2)), 4)
    0.1791
    >>> float(beirami_kl_estimate(1.0, 8)), round(float(beirami_kl_estimate(1e-300, 2)), 4)
    (0.0, 0.1931)
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 for the KL estimate; got {n:g}")
    xp = namespace(eps)
    eps = float_array(eps, xp, name="eps")
    if bool(xp.any(xp.isnan(eps))) or bool(xp.any(eps <= 0)) or bool(xp.any(eps > 1)):
        raise ValueError("eps must lie in (0, 1]")
    return _log_estimate(xp.log(eps), n, xp)


@masked_ieee
def expected_beirami_kl_estimate(
    ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """E_{y ~ π_N}[KL̂_n(π_ref(y))]: the mean of the estimate over BoN samples.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    n : float
        Number of BoN samples, n >= 1.

    Returns
    -------
    array of shape (...)
        Σ_y π_N(y) KL̂_n(π_ref(y)), what averaging the estimate over BoN outputs
        converges to.

    Notes
    -----
    On every tied support bonmath's tests have tried this mean is >= the exact
    KL(π_N || π_ref) (and <= log n - (n-1)/n, since KL̂_n is), but no proof is
    given here. Beirami et al. conjecture it for distinct rewards (Conjecture 4.4
    of the ICML 2025 version, supported there numerically).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(expected_beirami_kl_estimate(np.log([0.5, 0.5]), [0, 1], 2)), 4)
    0.1791
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 for the KL estimate; got {n:g}")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    bon = bon_log_probs(ref_log_probs, rewards, n)
    zero = ref_log_probs == NEG_INF
    estimate = _log_estimate(xp.where(zero, -1.0, ref_log_probs), n, xp)
    return expectation(bon, estimate, xp)


def bon_win_rate_upper_bound(n: float) -> float:
    """Beirami et al.'s bound W(π_N, π_ref) <= n/(n+1) on the BoN win rate.

    Beirami et al. (2024), Section 5. Equality holds in the continuous limit (no atoms);
    ties count one half, and on a finite support the win rate is smaller. At n = 1 it
    is 1/2.

    Examples
    --------
    >>> bon_win_rate_upper_bound(3)
    0.75
    """
    n = check_n(n)
    return n / (n + 1.0)
