"""BoNBoN (Gui, Gârbacea, Veitch 2024, "BoNBoN alignment for large language models
and the sweetness of best-of-n sampling").

**The win-rate-optimal tilt.** With ties counted one half, the win rate against the
reference is linear in the policy:

    W(π, π_ref) = Σ_y π(y) F_mid(y),   F_mid = (F_lt + F_le)/2   (the mid-CDF),

so maximising W - (1/c) KL(π || π_ref) over *all* policies is KL-regularised RL with
reward F_mid, whose optimum is the tilt π_c = π_ref e^(c F_mid)/Z
(:func:`bonmath.tilted_log_probs`). As c sweeps [0, ∞) these tilts trace the exact
win-rate-vs-KL frontier on any finite support, ties included: no policy (BoN,
soft BoN, Best-of-Poisson, ...) wins more often at the same KL. This is why the
tilt here uses F_mid: tilting by F_lt (or F_le) optimises the strict win
probability P(r(Y) > r(Y')) (or P(r(Y) >= r(Y'))) instead, and on a tied support it
is beaten by the F_mid tilt at matched KL. In the continuous limit all three are the
quantile u and the paper's result is recovered (BoNBoN, Theorem 1).

**Continuous limit.** With u = F uniform, π_c has density c e^(cu)/(e^c - 1), so

    W(c) = 1/(1 - e^(-c)) - 1/c,   KL(c) = c W(c) - log((e^c - 1)/c)

(BoNBoN, Section 3). BoN has W = n/(n+1) at KL = log n - (n-1)/n, within 0.01 of
the optimum at matched KL (BoNBoN, Section 3): the gap peaks at 0.0095 near n = 1.78.
That is a continuous-limit fact: on finite tied supports the exact gap can exceed
0.01 (0.0110 for reference masses (1, 1, 1, 14, 3)/20 on five levels, n = 2; see
``tests/test_theory.py``).

**β*.** In the continuous limit the BoN log ratio is R_n(u) = log n + (n-1) log u, the
best of n draws has E[log u] = -1/n and the worst E[log u] = -H_n, so the expected
best-vs-worst margin is (n-1)(H_n - 1/n) = (n-1) H_{n-1}; BoNBoN's IPO-style loss
targets the margin 1/(2β), hence β* = 1/(2 (n-1) H_{n-1}) (BoNBoN, Section 4).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, zeta

from bonmath.backend import (
    Array,
    expectation,
    float_array,
    log1mexp,
    logsumexp,
    masked_ieee,
    namespace,
    to_numpy,
)
from bonmath.bon import bon_log_probs, bon_log_ratio
from bonmath.levels import reward_levels
from bonmath.optimal import tilted_log_probs
from bonmath.validation import check_count, check_n, check_positive, prepare

_SERIES_BELOW = 0.05
"""Below this c the continuous curves use their Taylor series (the closed forms cancel)."""


def _mid_cdf(ref_log_probs: Array, rewards: Array, xp) -> Array:
    """F_mid(y) = (F_lt(y) + F_le(y))/2 for every string of a validated support."""
    levels = reward_levels(ref_log_probs, rewards, xp)
    mid = (xp.exp(levels.log_cdf_lt) + xp.exp(levels.log_cdf_le)) / 2.0
    return levels.per_string(mid, xp)


@masked_ieee
def bonbon_tilt_log_probs(
    ref_log_probs: Array, rewards: Array, c: float, *, normalize: bool = False
) -> Array:
    """The win-rate-optimal policy at its KL: log π_c = log π_ref + c F_mid - log Z.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed (they are why F_mid, not F_lt, is used).
    c : float
        Tilt strength c >= 0 (c = 0 returns π_ref; c → ∞ gives π_ref restricted to
        the top reward level).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)

    Notes
    -----
    F_mid = (F_lt + F_le)/2, so W(π, π_ref) = E_π[F_mid] exactly with ties counting
    one half, and π_c maximises W - KL/c over all policies (KL-RL with reward F_mid,
    :func:`bonmath.tilted_log_probs` with β = 1/c). BoNBoN (Gui et al. 2024,
    Theorem 1) states the continuous case, π_ref e^(cF)/Z.

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(bonbon_tilt_log_probs(np.log([0.5, 0.5]), [0, 1], c=2.0)).round(4).tolist()
    [0.2689, 0.7311]
    """
    c = check_positive(c, "c", inclusive=True)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    if c == 0.0:
        return ref_log_probs
    return tilted_log_probs(ref_log_probs, _mid_cdf(ref_log_probs, rewards, xp), beta=1.0 / c)


def _check_c(c, xp) -> Array:
    c = float_array(c, xp, name="c")
    if bool(xp.any(xp.isnan(c))) or bool(xp.any(c < 0)):
        raise ValueError("c must be >= 0 (and not NaN)")
    return c


def _scalar_or_array(x: Array, like) -> float | Array:
    """A Python float for a Python-number input, else the array."""
    return float(x) if isinstance(like, numbers.Real) else x


@masked_ieee
def bonbon_win_rate(c: float | Array) -> float | Array:
    """Continuous-limit win rate of the optimal tilt: W(c) = 1/(1 - e^(-c)) - 1/c.

    Parameters
    ----------
    c : float or array of shape (...)
        c >= 0; W(0) = 1/2, W(∞) = 1.

    Returns
    -------
    float or array of shape (...)

    Notes
    -----
    BoNBoN (Gui et al. 2024), Section 3. Evaluated as 1 + e^-c/(1 - e^-c) - 1/c, and by
    its Taylor series 1/2 + c/12 - c^3/720 + c^5/30240 below c = 0.05, accurate to
    a few ulps for all c >= 0.

    Examples
    --------
    >>> bonbon_win_rate(0.0), round(bonbon_win_rate(1.0), 6)
    (0.5, 0.581977)
    """
    xp = namespace(c)
    x = _check_c(c, xp)
    small = x < _SERIES_BELOW
    xs = xp.where(small, x, 0.0)
    xb = xp.where(small, 1.0, x)
    series = 0.5 + xs / 12.0 - xs**3 / 720.0 + xs**5 / 30240.0
    closed = 1.0 + _over_expm1(xb, xp) - 1.0 / xb
    return _scalar_or_array(xp.where(small, series, closed), c)


def _over_expm1(c: Array, xp) -> Array:
    """1/(e^c - 1) = e^-c/(1 - e^-c) for c > 0: no overflow, and a finite gradient (0 at c = ∞)."""
    return xp.exp(-c) / -xp.expm1(-c)


@masked_ieee
def bonbon_kl(c: float | Array) -> float | Array:
    """Continuous-limit KL of the optimal tilt: KL(c) = c W(c) - log((e^c - 1)/c).

    Parameters
    ----------
    c : float or array of shape (...)
        c >= 0 (inf allowed); KL(0) = 0 and KL grows like log c - 1 (KL(∞) = ∞).

    Returns
    -------
    float or array of shape (...)
        KL(π_c || π_ref) in nats.

    Notes
    -----
    BoNBoN (Gui et al. 2024), Section 3. Rewritten without cancellation as
    KL = log c - 1 + c/expm1(c) - log(1 - e^(-c)), and by its Taylor series
    c^2/24 - c^4/960 + c^6/36288 below c = 0.05.

    Examples
    --------
    >>> bonbon_kl(0.0), round(bonbon_kl(1.0), 6)
    (0.0, 0.040652)
    """
    xp = namespace(c)
    x = _check_c(c, xp)
    small = x < _SERIES_BELOW
    xs = xp.where(small, x, 0.0)
    xb = xp.where(small, 1.0, x)
    series = xs**2 / 24.0 - xs**4 / 960.0 + xs**6 / 36288.0
    closed = xp.log(xb) - 1.0 + _over_expm1(xb, xp) * xp.minimum(xb, 1e300) - log1mexp(-xb, xp)
    return _scalar_or_array(xp.where(small, series, closed), c)


def _solve_increasing(f, target: float, guess: float = 1.0) -> float:
    """The root of f(c) = target for an increasing f with f(0) = 0, by bracketing and Brent.

    A target at or below the computed f(0) (0 up to rounding) has the root c = 0. The
    bracket [lo, hi] grows from ``guess`` by factors of 2 (so a root of 1e-99 is found
    from a guess near it, not by bisecting [0, 1]); +inf when f stays below the target
    up to float64's maximum (the root is beyond float range).
    """
    if target <= f(0.0):
        return 0.0
    lo = hi = guess
    while f(lo) > target:
        lo /= 2.0
    while f(hi) < target:
        if hi > np.finfo(float).max / 2.0:
            return math.inf if f(np.finfo(float).max) < target else _brent(f, target, hi, np.finfo(float).max)
        lo, hi = hi, 2.0 * hi
    return _brent(f, target, lo, hi)


def _brent(f, target: float, lo: float, hi: float) -> float:
    return brentq(lambda c: f(c) - target, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def bonbon_c_for_kl(kl: float) -> float:
    """The continuous-limit tilt c whose KL(c) equals ``kl``.

    Parameters
    ----------
    kl : float
        Target KL(π_c || π_ref) >= 0 in nats.

    Returns
    -------
    float
        c >= 0 with :func:`bonbon_kl` (c) = kl (Brent's method; KL(c) is increasing);
        +inf for kl above KL(float max) ≈ 708.4, whose c is beyond float range.

    Examples
    --------
    Matched to BoN with n = 4 (KL = log 4 - 3/4), the optimal win rate beats 4/5 by
    less than 0.01:

    >>> c = bonbon_c_for_kl(math.log(4) - 3 / 4)
    >>> round(bonbon_win_rate(c), 4)
    0.804
    """
    kl = check_positive(kl, "kl", inclusive=True)
    return _solve_increasing(bonbon_kl, kl, guess=math.sqrt(24.0 * kl) if kl < 1.0 else 1.0)


@masked_ieee
def bonbon_tilt_c_for_kl(ref_log_probs: Array, rewards: Array, kl: float, *, normalize: bool = False) -> float:
    """On one enumerated support, the c whose tilt :func:`bonbon_tilt_log_probs` has KL ``kl``.

    Parameters
    ----------
    ref_log_probs : array of shape (k,)
        log π_ref of a single support (no batch axes; tensors are detached).
    rewards : array of shape (k,)
    kl : float
        Target KL(π_c || π_ref), 0 <= kl < -log q_top (q_top: the reference mass of the
        top reward level; -log q_top is the KL of the limit c → ∞).

    Returns
    -------
    float
        c >= 0 (Brent's method; KL(π_c || π_ref) is increasing in c since its derivative
        is c Var_c(F_mid)).

    Examples
    --------
    At BoN's KL, the optimal tilt of a two-string support is BoN itself:

    >>> import numpy as np
    >>> import bonmath
    >>> ref = np.log([0.5, 0.5])
    >>> kl = float(bonmath.kl_divergence(bonmath.bon_log_probs(ref, [0, 1], 2), ref))
    >>> np.exp(bonbon_tilt_log_probs(ref, [0, 1], bonbon_tilt_c_for_kl(ref, [0, 1], kl))).round(12).tolist()
    [0.25, 0.75]
    """
    kl = check_positive(kl, "kl", inclusive=True)
    ref_log_probs, rewards = to_numpy(ref_log_probs), to_numpy(rewards)
    batched = {name: a.shape for name, a in (("ref_log_probs", ref_log_probs), ("rewards", rewards)) if a.ndim > 1}
    if batched:
        raise ValueError(f"{' and '.join(batched)} must be one support of shape (k,); got {batched}")
    _, (ref, rewards) = prepare({"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize)
    mid = _mid_cdf(ref, rewards, np)
    top = mid[ref > -np.inf].max()
    sup = -float(logsumexp(np.where(mid == top, ref, -np.inf), np))
    if kl >= sup and kl > 0:
        raise ValueError(f"kl must be < -log q_top = {sup:.6g}, the KL of the limit c → ∞; got {kl:g}")

    def tilt_kl(c: float) -> float:
        tilted = ref + c * mid
        tilted = tilted - logsumexp(tilted, np)
        return float(expectation(tilted, tilted - ref, np))

    return _solve_increasing(tilt_kl, kl)



@masked_ieee
def bon_expected_margin(ref_log_probs: Array, rewards: Array, n: int, *, normalize: bool = False) -> Array:
    """E[R_n(best of n) - R_n(worst of n)]: the BoN log-ratio margin, exactly, with ties.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    n : int
        Number of draws, n >= 1.

    Returns
    -------
    array of shape (...)
        The expected gap between the BoN log ratio R_n = log π_n/π_ref of the best
        and of the worst of n reference draws; (n-1) H_{n-1} in the continuous limit.

    Notes
    -----
    R_n depends on a string only through its level, so tie-breaking does not matter;
    the worst of n draws is BoN of -r. Hence the margin is
    E_{π_n}[R_n] - E_{π_n^worst}[R_n] = KL(π_n || π_ref) - E_{π_n^worst}[R_n], with
    π_n^worst = :func:`bonmath.bon_log_probs` (π_ref, -r, n). BoNBoN (Gui et al.
    2024, Section 4) uses the continuous value to set β.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(bon_expected_margin(np.log([0.5, 0.5]), [0, 1], 2)), 6)  # (1/2) log 3
    0.549306
    """
    n = check_count(n, "n")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    log_ratio = bon_log_ratio(ref_log_probs, rewards, n)
    best = bon_log_probs(ref_log_probs, rewards, n)
    worst = bon_log_probs(ref_log_probs, -rewards, n)
    return expectation(best, log_ratio, xp) - expectation(worst, log_ratio, xp)


def bonbon_margin(n: float) -> float:
    """The continuous-limit best-vs-worst BoN log-ratio margin (n-1) H_{n-1}.

    H_x = ψ(x+1) + γ is the harmonic number (real n >= 1 allowed).

    Examples
    --------
    >>> bonbon_margin(2), round(bonbon_margin(8), 6)
    (1.0, 18.15)
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n:g}")
    return (n - 1.0) * _harmonic(n - 1.0)


def bonbon_beta(n: float) -> float:
    """BoNBoN's implied KL coefficient β* = 1/(2 (n-1) H_{n-1}) (Gui et al. 2024, Section 4).

    The IPO-style BoNBoN loss pushes log π(y_w)/π_ref(y_w) - log π(y_l)/π_ref(y_l)
    towards 1/(2β); matching BoN's continuous-limit margin (n-1) H_{n-1} gives β*.

    Examples
    --------
    >>> bonbon_beta(2), round(bonbon_beta(8), 6)
    (0.5, 0.027548)
    """
    n = check_n(n)
    if n <= 1:
        raise ValueError(f"n must be > 1 (at n = 1 the margin is 0 and β* infinite); got {n:g}")
    return 0.5 / (n - 1.0) / _harmonic(n - 1.0)  # the margin itself overflows for n near float max


def _harmonic(x: float) -> float:
    """H_x = Σ_{k<=x} 1/k for integers (exact summation), ψ(x+1) + γ otherwise.

    For x < 0.05, ψ(x+1) + γ cancels (H_x ~ ζ(2) x): there the series
    H_x = Σ_{j>=2} (-1)^j ζ(j) x^(j-1) is summed instead.
    """
    if float(x).is_integer() and x < 10**6:
        return math.fsum(1.0 / k for k in range(1, int(x) + 1))
    if x < 0.05:
        return math.fsum((-1) ** j * float(zeta(j)) * x ** (j - 1) for j in range(2, 16))
    return float(digamma(x + 1.0) + np.euler_gamma)
