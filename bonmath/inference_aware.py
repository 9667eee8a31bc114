"""Inference-aware objectives, exactly: max@k, pass@k, and the true reward of BoN under a proxy.

Training "for Best-of-N at inference" (PKPO, Walder & Karkhanis 2025; Pass@k Training,
Chen et al. 2025; Tang et al. 2025) maximises a function of the tie-aware BoN law:

- max@k(π) = E[max of k draws from π] = E_{BoN_k(π)}[r] = Σ_v v (F_le(v)^k - F_lt(v)^k),
  with F the reward CDF under π (docs/math.md, "Inference-aware objectives");
- pass@k(π) = 1 - (1 - p)^k for binary rewards, p = P_π(r = 1);
- E_{BoN_n(proxy)}[r_true]: BoN ranks by a proxy reward and is judged by a true one
  (the reward-hacking curve of Khalaf et al. 2025, whose HedgeTune picks n).

Every function takes an enumerated support on the last axis (leading axes a batch),
numpy or torch (differentiable: autograd through an enumerated policy gives the exact
gradients that the estimators of :mod:`bonmath.estimators_at_k` estimate).

(Over 400 lines on purpose: half of the file is docstrings with runnable examples.)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from bonmath.backend import (
    LOG_HALF,
    NEG_INF,
    Array,
    expectation,
    log1mexp,
    log1mexp_where,
    logsumexp,
    masked_ieee,
    softplus,
    to_numpy,
)
from bonmath.bon import bon_log_probs
from bonmath.levels import reward_levels
from bonmath.validation import broadcast_support, check_count, check_n, prepare, reward_arrays

__all__ = [
    "bon_true_reward",
    "bon_true_reward_dn",
    "hedgetune_n",
    "max_at_k",
    "pass_at_k",
]

MAX_EXACT_N = 2**53
"""Largest n_max of :func:`hedgetune_n`: every integer up to it is a float64."""


def _check_finite_where_mass(log_probs: Array, values: Array, name: str, xp) -> Array:
    """``values`` as numbers in the dtype of ``log_probs``; ±inf only where there is no mass."""
    if bool(xp.any(xp.isinf(values) & (log_probs > NEG_INF))):
        raise ValueError(f"{name} must be finite where the distribution has mass; it is ±inf at a string with mass")
    return xp.astype(values, log_probs.dtype)


@masked_ieee
def max_at_k(log_probs: Array, rewards: Array, k: float, *, normalize: bool = False) -> Array:
    """max@k = E[max of k i.i.d. draws from π] of the reward, with ties, for real k > 0.

    Parameters
    ----------
    log_probs : array of shape (..., S)
        log π over an enumerated support (last axis); leading axes are a batch.
    rewards : array of shape (..., S)
        Rewards; ties expected. Finite where π has mass (elsewhere anything but NaN).
    k : float
        Number of draws, any real k > 0 (k = 1 is E_π[r]).
    normalize : bool, default False
        Renormalise ``log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)

    Notes
    -----
    max@k = Σ_v v (F_le(v)^k - F_lt(v)^k) = E_{BoN_k(π)}[r]: BoN returns a draw of
    maximal reward (docs/math.md, "Inference-aware objectives"; PKPO's maxg@k,
    Walder & Karkhanis 2025). Computed as the expectation of r under the
    exact BoN law :func:`bonmath.bon_log_probs`, a sum of non-negative masses.

    Examples
    --------
    Two equally likely rewards 0 and 1: the best of two draws is 1 unless both are 0.

    >>> import numpy as np
    >>> float(max_at_k(np.log([0.5, 0.5]), [0.0, 1.0], k=2))
    0.75
    >>> float(max_at_k(np.log([0.5, 0.25, 0.25]), [3.0, 1.0, 1.0], k=1))  # E_π[r]
    2.0
    """
    k = check_n(k, "k")
    xp, (log_probs, rewards) = prepare({"log_probs": log_probs}, {"rewards": rewards}, normalize=normalize)
    values = _check_finite_where_mass(log_probs, rewards, "rewards", xp)
    return expectation(bon_log_probs(log_probs, rewards, k), values, xp)


def _check_binary(rewards: Array, xp) -> None:
    if not bool(xp.all((rewards == 0) | (rewards == 1))):
        raise ValueError("rewards must be binary (every entry 0 or 1) for pass@k")


@masked_ieee
def pass_at_k(log_probs: Array, rewards: Array, k: float, *, normalize: bool = False) -> Array:
    """pass@k = 1 - (1 - p)^k with p = P_π(r = 1), for binary rewards and real k > 0.

    Parameters
    ----------
    log_probs : array of shape (..., S)
        log π over an enumerated support (last axis).
    rewards : array of shape (..., S)
        Every entry 0 or 1 (``ValueError`` otherwise).
    k : float
        Any real k > 0; stable up to k = 10^15 and beyond.
    normalize : bool, default False

    Returns
    -------
    array of shape (...)

    Notes
    -----
    pass@k = -expm1(k log(1 - p)) (Chen et al. 2021's pass@k of a policy; PKPO,
    Walder & Karkhanis 2025). log p and log(1 - p) are log-sums of the masses
    with r = 1 and r = 0; log(1 - p) is log1mexp(log p) while p < 1/2 and the
    log-sum of the r = 0 masses otherwise, so p = 1e-300 and 1 - p = 1e-300 are both
    exact; below the smallest normal p (log p < -708 in float64, -87 in float32),
    where -log(1 - p) = p would be subnormal, k log(1 - p) = -e^(log k + log p). It equals :func:`max_at_k` on {0, 1} rewards, and
    ∇pass@k = k (1 - p)^(k-1) ∇p.

    Examples
    --------
    >>> import numpy as np
    >>> float(pass_at_k(np.log([0.5, 0.5]), [0, 1], k=3))  # 1 - 1/8
    0.875
    >>> float(pass_at_k([0.0, -700.0], [0, 1], k=1e15)) > 0  # p = e^-700, k p ≈ 1e-289
    True
    """
    k = check_n(k, "k")
    xp, (log_probs, rewards) = prepare({"log_probs": log_probs}, {"rewards": rewards}, normalize=normalize)
    _check_binary(rewards, xp)
    log_p = logsumexp(xp.where(rewards == 1, log_probs, NEG_INF), xp)
    log_q = logsumexp(xp.where(rewards == 0, log_probs, NEG_INF), xp)
    log_one_minus_p = log1mexp_where(log_p < LOG_HALF, log_p, log_q, xp)
    # Below the smallest normal p, -log(1 - p) = p would be subnormal (or 0): k p = e^(log k + log p).
    subnormal = log_p < math.log(float(xp.finfo(log_p.dtype).smallest_normal))
    k_times_p = xp.exp(math.log(k) + xp.where(subnormal, log_p, NEG_INF))
    return -xp.expm1(xp.where(subnormal, -k_times_p, k * log_one_minus_p))


def _prepare_proxy_true(ref_log_probs, proxy_rewards, true_rewards, normalize):
    xp, (ref_log_probs, proxy_rewards, _) = prepare(
        {"ref_log_probs": ref_log_probs},
        {"proxy_rewards": proxy_rewards, "true_rewards": true_rewards},
        normalize=normalize,
    )
    # The proxy rewards are only ordered (huge integers ranked); the true ones are numbers.
    (true_rewards,) = reward_arrays({"true_rewards": true_rewards}, xp, ref_log_probs, as_numbers=True)
    true_rewards = broadcast_support({"proxy_rewards": proxy_rewards, "true_rewards": true_rewards}, xp)[1]
    true_values = _check_finite_where_mass(ref_log_probs, true_rewards, "true_rewards", xp)
    return xp, ref_log_probs, proxy_rewards, true_values


@masked_ieee
def bon_true_reward(
    ref_log_probs: Array, proxy_rewards: Array, true_rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """E_{BoN_n(proxy)}[r_true]: the true reward of Best-of-n ranked by a proxy reward.

    Parameters
    ----------
    ref_log_probs : array of shape (..., S)
        log π_ref over an enumerated support.
    proxy_rewards : array of shape (..., S)
        The reward BoN ranks by; ties expected (broken uniformly).
    true_rewards : array of shape (..., S)
        The reward BoN is judged by; finite where π_ref has mass.
    n : float
        Any real n > 0.
    normalize : bool, default False

    Returns
    -------
    array of shape (...)

    Notes
    -----
    Σ_y π_N(y) r_true(y) with π_N the tie-aware BoN law of the proxy. Within a proxy
    level π_N ∝ π_ref, so only each level's π_ref-weighted mean of r_true enters:
    E = Σ_v m_v (F_le(v)^n - F_lt(v)^n) (the f(n) of Khalaf et al. 2025 for BoN).

    Examples
    --------
    The proxy prefers the string the true reward dislikes:

    >>> import numpy as np
    >>> float(bon_true_reward(np.log([0.5, 0.5]), [0, 1], [1.0, 0.0], n=2))
    0.25
    """
    n = check_n(n)
    xp, ref_log_probs, proxy_rewards, true_values = _prepare_proxy_true(
        ref_log_probs, proxy_rewards, true_rewards, normalize
    )
    return expectation(bon_log_probs(ref_log_probs, proxy_rewards, n), true_values, xp)


def _log_log1p_exp(t: Array, xp) -> Array:
    """log(log(1 + e^t)), accurate for very negative t (where log(1 + e^t) ≈ e^t underflows)."""
    small = t < -30.0
    t_small = xp.where(small, t, -31.0)
    t_big = xp.where(small, 0.0, t)
    return xp.where(small, t_small - xp.exp(t_small) / 2.0, xp.log(softplus(t_big, xp)))


@masked_ieee
def bon_true_reward_dn(
    ref_log_probs: Array, proxy_rewards: Array, true_rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """d/dn E_{BoN_n(proxy)}[r_true], the derivative HedgeTune finds the root of.

    Parameters
    ----------
    ref_log_probs, proxy_rewards, true_rewards : arrays of shape (..., S)
        As :func:`bon_true_reward`.
    n : float
        Any real n > 0.
    normalize : bool, default False

    Returns
    -------
    array of shape (...)

    Notes
    -----
    d/dn Σ_v m_v (F_le^n - F_lt^n) = Σ_v m_v (F_le^n log F_le - F_lt^n log F_lt) at the
    proxy's levels, m_v the level's π_ref-weighted mean of r_true (HedgeTune's
    derivative for BoN, Khalaf et al. 2025, arXiv 2506.19248). Each level's bracket is
    evaluated as (F_le^n - F_lt^n) log F_le + F_lt^n log(F_le/F_lt), both terms
    to relative precision (the first from the exact BoN mass, the second with
    log(F_le/F_lt) = log1p(q/F_lt)), instead of a difference of two nearly equal
    powers; the second is 0 on the lowest level (F_lt = 0).

    Examples
    --------
    >>> import numpy as np
    >>> d = bon_true_reward_dn(np.log([0.5, 0.5]), [0, 1], [0.0, 1.0], n=1)
    >>> bool(abs(float(d) - math.log(2) / 2) < 1e-15)  # d/dn (1 - 2^-n) = 2^-n log 2 at n = 1
    True
    """
    n = check_n(n)
    xp, ref_log_probs, proxy_rewards, true_values = _prepare_proxy_true(
        ref_log_probs, proxy_rewards, true_rewards, normalize
    )
    levels = reward_levels(ref_log_probs, proxy_rewards, xp)
    log_cdf_lt = levels.per_string(levels.log_cdf_lt, xp)
    log_cdf_le = levels.per_string(levels.log_cdf_le, xp)
    log_mass = levels.per_string(levels.log_mass, xp)
    has_mass = ref_log_probs > NEG_INF
    # (F_le^n - F_lt^n) log F_le, spread over the level as π_N
    log_cdf_le_safe = xp.where(has_mass, log_cdf_le, 0.0)
    first = expectation(bon_log_probs(ref_log_probs, proxy_rewards, n), true_values * log_cdf_le_safe, xp)
    # F_lt^n log(F_le / F_lt), spread over the level as π_ref / q
    inner = has_mass & (log_cdf_lt > NEG_INF)
    lt = xp.where(inner, log_cdf_lt, 0.0)
    lq = xp.where(inner, log_mass, 0.0)
    log_weight = xp.where(inner, ref_log_probs - lq + n * lt + _log_log1p_exp(lq - lt, xp), NEG_INF)
    return first + expectation(log_weight, true_values, xp)


# ------------------------------------------------------------------------ HedgeTune


def _level_exponential_sum(ref_log_probs: np.ndarray, proxy: np.ndarray, true: np.ndarray):
    """f(n) = top mean + Σ_j d_j e^(λ_j n) for one row: (d, λ) over the interior level
    boundaries B_j = F_lt of level j (λ_j = log B_j < 0), d_j = m_{j-1} - m_j."""
    keep = ref_log_probs > NEG_INF
    lp, proxy, true = ref_log_probs[keep], proxy[keep], true[keep]
    levels = reward_levels(lp, proxy, np)
    level_lp = levels.per_string(levels.log_mass, np)
    weights = np.exp(lp - level_lp)  # π_ref within the level: sums to 1 per level
    means = np.zeros(levels.log_mass.shape[-1])
    index = levels.per_string(np.arange(len(means)), np)
    np.add.at(means, index, weights * true)
    d = means[:-1] - means[1:]
    lam = levels.log_cdf_lt[1:]
    useful = (d != 0) & (lam < 0)
    return d[useful], lam[useful]


def _signed_log_sum_sign(x: float, log_abs: np.ndarray, signs: np.ndarray, rates: np.ndarray) -> float:
    """Σ_j signs_j e^(log_abs_j + rates_j x) divided by its largest term (same sign, no overflow)."""
    exponents = log_abs + rates * x
    return float(np.sum(signs * np.exp(exponents - np.max(exponents))))


def _sign_changes(log_abs: np.ndarray, signs: np.ndarray, rates: np.ndarray, lo: float, hi: float) -> list[float]:
    """Points in (lo, hi) where g(x) = Σ_j signs_j e^(log_abs_j + rates_j x) changes sign.

    Rolle's theorem, terms ordered by increasing rate μ_0 < μ_1 < ...: with
    G_t(x) = Σ_{j>=t} signs_j (Π_{i<t} (μ_j - μ_i)) e^(log_abs_j + μ_j x), one has
    d/dx [e^(-μ_t x) G_t] = e^(-μ_t x) G_{t+1}, so between consecutive sign changes of
    G_{t+1} the function e^(-μ_t x) G_t is monotone and G_t changes sign at most once.
    Solving from the last G (one term, no root) up to G_0 = g finds every sign change;
    G_t has none while signs_t.. has none (Descartes' rule for exponential sums).
    Returns a sorted list (possibly with extra points where G touches 0: harmless).
    """
    order = np.argsort(rates)
    log_abs, signs, rates = log_abs[order], signs[order], rates[order]
    T = len(rates)
    # the last t whose tail of signs changes sign at all: G_t for larger t has no root
    changes_after = np.concatenate([np.cumsum((signs[1:] != signs[:-1])[::-1])[::-1], [0]])
    start = int(np.max(np.nonzero(changes_after > 0)[0], initial=-1))
    if start < 0:
        return []
    # P_j = Σ_{i<t} log(μ_j - μ_i) for t = start, then peeled back one i at a time
    prefix = np.array([np.sum(np.log(rates[j] - rates[: min(j, start)])) for j in range(T)])
    roots: list[float] = []
    for t in range(start, -1, -1):
        tail = slice(t, T)
        a, s, mu = log_abs[tail] + prefix[tail], signs[tail], rates[tail]
        points = [lo, *roots, hi]
        values = [_signed_log_sum_sign(x, a, s, mu) for x in points]
        found = []
        for (x0, v0), (x1, v1) in zip(zip(points, values), zip(points[1:], values[1:])):
            if v0 == 0.0:
                found.append(x0)
            elif v0 * v1 < 0:
                found.append(brentq(_signed_log_sum_sign, x0, x1, args=(a, s, mu), xtol=1e-12, rtol=1e-15))
        roots = sorted(x for x in found if lo < x < hi)
        if t > 0:  # G_{t-1} needs P with i < t - 1: drop the i = t - 1 factor
            prefix[t:] -= np.log(rates[t:] - rates[t - 1])
    return roots


def _improves(d: np.ndarray, lam: np.ndarray, incumbent: int, challenger: int) -> bool:
    """Whether f(challenger) - f(incumbent) > 0 beyond its float64 rounding error.

    f(a) - f(b) = Σ_j d_j B_j^b (B_j^(a-b) - 1), each term to relative precision in log
    space (B^(a-b) - 1 = expm1((a-b) λ)); the sum's sign is read after dividing by its
    largest term, so it is decided even where every term underflows.
    """
    step = (challenger - incumbent) * lam  # < 0 for challenger > incumbent
    log_abs = np.log(np.abs(d)) + incumbent * lam + log1mexp(step, np)
    signs = -np.sign(d)
    scaled = signs * np.exp(log_abs - np.max(log_abs))
    return bool(float(np.sum(scaled)) > (len(d) + 4) * np.finfo(np.float64).eps * float(np.sum(np.abs(scaled))))


def _hedgetune_row(ref_log_probs: np.ndarray, proxy: np.ndarray, true: np.ndarray, n_max: int) -> int:
    d, lam = _level_exponential_sum(ref_log_probs, proxy, true)
    if len(d) == 0:  # E_n[r_true] does not depend on n
        return 1
    # f'(x) = Σ_j d_j λ_j e^(λ_j x): sign of d_j λ_j is -sign(d_j)
    roots = _sign_changes(np.log(np.abs(d)) + np.log(-lam), -np.sign(d), lam, 1.0, float(n_max))
    candidates = {1, n_max}
    for root in roots:  # f is monotone between sign changes: the integer optimum is next to one
        candidates.update(c for c in range(math.floor(root) - 1, math.ceil(root) + 2) if 1 <= c <= n_max)
    best, *others = sorted(candidates)
    for challenger in others:
        if _improves(d, lam, best, challenger):
            best = challenger
    return best


def hedgetune_n(ref_log_probs: Array, proxy_rewards: Array, true_rewards: Array, n_max: int,
                *, normalize: bool = False) -> int | np.ndarray:
    """The integer N <= n_max that maximises E_{BoN_N(proxy)}[r_true] (HedgeTune for BoN).

    Parameters
    ----------
    ref_log_probs, proxy_rewards, true_rewards : arrays of shape (..., S)
        As :func:`bon_true_reward` (numpy or torch; no gradient flows through N).
    n_max : int
        Largest N considered, 1 <= n_max <= 2^53.
    normalize : bool, default False

    Returns
    -------
    int, or int64 array of shape (...) for batched input
        N*. Ties go to the smallest N (the cheapest BoN among the best): an N replaces a
        smaller one only if its E[r_true] is larger by more than the float64 rounding
        error of the difference; if E_n[r_true] does not depend on n, N* = 1.

    Notes
    -----
    Khalaf et al. (2025, arXiv 2506.19248: HedgeTune) find the root of d/dn E_n[r_true]; here
    the root finding is exhaustive. On a finite support E_n[r_true] = m_top + Σ_j d_j B_j^n,
    an exponential sum over the interior proxy-level boundaries B_j (d_j = m_{j-1} - m_j,
    m the levels' π_ref-weighted means of r_true), so its derivative Σ_j d_j log B_j B_j^n
    has at most as many sign changes as its coefficients (Descartes' rule for exponential
    sums). Every sign change in (1, n_max) is located (Rolle's theorem, one term at a
    time); between them E_n is monotone, so N* is 1, n_max or an integer next to one.
    Those few candidates are compared through their differences
    f(a) - f(b) = Σ_j d_j B_j^b expm1((a - b) log B_j), which keep their relative precision
    where the values themselves agree to 16 digits (near an optimum at N ~ 10^12).
    Several interior optima are possible (the curve need not be single-peaked on a finite
    support).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.4, 0.3, 0.2, 0.1])
    >>> int(hedgetune_n(ref, [0, 1, 2, 3], [0.0, 1.0, 2.0, -0.5], n_max=100))
    3
    """
    n_max = check_count(n_max, "n_max")
    if n_max > MAX_EXACT_N:
        raise ValueError(f"n_max must be <= 2^53 = {MAX_EXACT_N} (integers above are not all float64); got {n_max}")
    _, ref_log_probs, proxy_rewards, true_values = _prepare_proxy_true(
        ref_log_probs, proxy_rewards, true_rewards, normalize
    )
    ref_np, proxy_np, true_np = (to_numpy(a).astype(np.float64) for a in (ref_log_probs, proxy_rewards, true_values))
    if ref_np.ndim == 1:
        return _hedgetune_row(ref_np, proxy_np, true_np, n_max)
    size = ref_np.shape[-1]
    rows = zip(ref_np.reshape(-1, size), proxy_np.reshape(-1, size), true_np.reshape(-1, size))
    best = np.array([_hedgetune_row(r, p, t, n_max) for r, p, t in rows], dtype=np.int64)
    return best.reshape(ref_np.shape[:-1])

