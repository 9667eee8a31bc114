"""The Best-of-N law, exactly, with ties; and a Monte Carlo BoN sampler to check it.

BoN draws Y_1..Y_N i.i.d. from π_ref and returns a draw of maximal reward, the
tie broken uniformly at random among the maximising draws. Its law
(docs/math.md, "The Best-of-N law"; BOND, Sessa et al. 2024, eq. 4) is

    π_N(y) = π_ref(y) / q(y) · (F_le(y)^N - F_lt(y)^N),

so the log ratio R_N(y) = log π_N(y) - log π_ref(y) = log[(a^N - b^N)/(a - b)],
with a = F_le, b = F_lt, depends on y only through its level. Breaking ties by the
first maximising index gives the same law (the draws are exchangeable); a rule
that prefers particular *strings* does not. The formula is a distribution for any
real N > 0 (the level CDF F becomes F^N).

The vBoN paper's Proposition, π_N(y) = Σ_i C(N,i) F_lt^{N-i} π_ref(y)^i = F_le^N - F_lt^N,
is the special case without ties; with ties it does not sum to 1.

(Over 400 lines on purpose: the law, its log ratio, the CDF form and the sampler share
one tie-aware level construction; half of the file is docstrings with runnable
examples.)
"""

from __future__ import annotations

import math

import numpy as np

from bonmath.backend import (
    LOG_HALF,
    NEG_INF,
    Array,
    blockwise,
    detach,
    float_array,
    is_torch,
    log1mexp,
    log1mexp_where,
    logaddexp,
    masked_ieee,
    namespace,
    needs_float64,
    softplus,
    take_flat,
    to_numpy,
    unsort,
)
from bonmath.levels import reward_levels
from bonmath.validation import (
    broadcast_batch,
    check_choice,
    check_count,
    check_log_values,
    check_n,
    check_rng,
    normalization_tolerance,
    prepare,
)

TIES = ("uniform", "first_index")
"""Tie-breaking rules with the same law: uniform among maximising draws, or the first of them."""


def _log_ratio_small_x(log_x: Array, n: float, xp) -> Array:
    """h = R_N - (n-1) log b = log n + (n-1) x / 2 for x = q/b with n x < 1e-8 (error
    O((n x)^2)); ``log_x`` may be -inf (a zero-mass level: h = log n)."""
    return math.log(n) + (n - 1.0) * xp.exp(log_x) / 2.0


def _is_small_x(log_x: Array, n: float) -> Array:
    """Where n x < 1e-8, so that :func:`_log_ratio_small_x` is exact to rounding."""
    return log_x < math.log(1e-8) - max(math.log(n), 0.0)


def _log_bon_ratio(log_cdf_lt: Array, log_level_mass: Array, log_cdf_le: Array, n: float, xp) -> Array:
    """R_N = log[(a^n - b^n)/(a - b)] with b = F_lt, a = F_le, a - b = q, from log b, log q
    and log a (log a = 0 exactly marks the top level).

    With t = log(a/b) = softplus(log q - log b) > 0,

        R = (n-1) log a + D,  D = log[(1 - e^(-nt))/(1 - e^(-t))] = log1p(-expm1(-(n-1)t)/expm1(t)),

    the second form of D exact for every n > 0 and t > 0, and evaluated in logs:
    D = softplus(L) for n > 1 and log1mexp(L) for n < 1, with
    L = log|expm1(-(n-1)t)| - log expm1(t). No large terms cancel: |D| <= |log n|,
    and (n-1) log a is as accurate as log a. (The form (n-1) log b + log expm1(nt) - log x
    cancels two terms of size n t.) On the top level (a = 1) t = -log b is taken from
    the smaller of b and q (the other is 1 minus it). When n x < 1e-8, x = q/b,
    D = log n - (n-1) t/2 to O((n t)^2) (t is then too small to scale by n - 1 exactly).
    The lowest level (b = 0) has R = (n-1) log q; an empty level (q = 0) the limit
    log(n b^(n-1)).
    """
    if n == 1.0:
        return xp.zeros_like(log_level_mass + log_cdf_lt)
    lowest = log_cdf_lt == NEG_INF
    top = (log_cdf_le == 0.0) & ~lowest
    log_b = xp.where(lowest, -1.0, log_cdf_lt)
    log_q = xp.where(lowest, -1.0, log_level_mass)  # the lowest level's q is used below only
    log_x = log_q - log_b
    small = _is_small_x(log_x, n)
    from_q = top & (log_q <= log_b)
    t = xp.where(
        top,
        -xp.where(from_q, log1mexp_where(from_q, log_q, 0.0, xp), log_b),
        softplus(log_x, xp),
    )
    t_big = xp.where(small, 1.0, t)
    log1mexp_t = log1mexp(-t_big, xp)
    if n < 0.5:  # D lies in (log n, 0), far from 0 where the logs of the numerator and denominator meet
        d = log1mexp(-n * t_big, xp) - log1mexp_t
    else:
        s = (n - 1.0) * t_big
        log_numerator = log1mexp(-s, xp) if n > 1.0 else -s + log1mexp(s, xp)
        log_ratio = log_numerator - t_big - log1mexp_t
        d = softplus(log_ratio, xp) if n > 1.0 else log1mexp(xp.minimum(log_ratio, LOG_HALF), xp)
    d = xp.where(small, math.log(n) - (n - 1.0) * xp.where(small, t, 0.0) / 2.0, d)
    log_a = xp.where(lowest, 0.0, log_cdf_le)
    return xp.where(lowest, (n - 1.0) * log_level_mass, (n - 1.0) * log_a + d)


def _log_bon_level_mass(log_cdf_lt: Array, log_cdf_le: Array, log_level_mass: Array, n: float, xp) -> Array:
    """log(F_le^n - F_lt^n): the BoN mass of a level, as a sum of non-positive terms.

    F_le^n - F_lt^n = a^n (1 - (b/a)^n) and log(a/b) = softplus(log q - log b), so
    log(F_le^n - F_lt^n) = n log a + log1mexp(-n softplus(log q - log b)) (n log a when
    b = 0). No term cancels another, so log π_N keeps its relative precision even
    where π_N is within 1e-300 of 1 (adding R_N to log π_ref would cancel there).
    Where x = q/b is below float64's normal range (x = e^-760 is 0), softplus(log x)
    loses x; there the mass is q e^(R_N) with R_N's small-x form, and is far below 1.
    """
    lowest = log_cdf_lt == NEG_INF
    empty = log_level_mass == NEG_INF
    log_b = xp.where(lowest, 0.0, log_cdf_lt)
    log_x = log_level_mass - log_b
    small = (log_x < -690.0) & _is_small_x(log_x, n) & ~lowest  # empty levels too: log x = -inf
    log_x_big = xp.where(small | lowest, 0.0, log_x)
    mass = n * log_cdf_le + xp.where(lowest, 0.0, log1mexp(-n * softplus(log_x_big, xp), xp))
    small = small & ~empty
    if bool(xp.any(small)):
        log_x_small = xp.where(small, log_x, NEG_INF)
        mass = xp.where(small, log_level_mass + (n - 1.0) * log_b + _log_ratio_small_x(log_x_small, n, xp), mass)
    return xp.where(empty, NEG_INF, mass)


@masked_ieee
def bon_log_ratio(
    ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """The exact vBoN reward R_N(y) = log π_N(y) - log π_ref(y).

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support (last axis); leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards r(y), broadcast against ``ref_log_probs``; ties and ±inf allowed.
    n : float
        Number of BoN samples, any real n > 0.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        R_N(y), a function of y's reward level only. For a zero-mass string it is
        the limit log(n F_lt^(n-1)) of an infinitesimal atom at its reward.

    Notes
    -----
    R_N = log[(F_le^N - F_lt^N)/(F_le - F_lt)] (BOND, Sessa et al. 2024; vBoN,
    Amini et al. 2025, eq. 5 without ties), computed stably in log space
    (:ref:`math-bon-law`, :ref:`math-stable`).

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(bon_log_ratio(np.log([0.5, 0.5]), [0.0, 1.0], n=2)).tolist()
    [0.5, 1.5]
    """
    n = check_n(n)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    dtype = ref_log_probs.dtype
    if needs_float64(n, ref_log_probs, xp):  # n log F would be 0 or NaN in float32: compute in float64
        ref_log_probs = xp.astype(ref_log_probs, xp.float64)
    levels = reward_levels(ref_log_probs, rewards, xp)
    log_ratio = blockwise(
        lambda lt, q, le: _log_bon_ratio(lt, q, le, n, xp),
        levels.log_cdf_lt, levels.log_mass, levels.log_cdf_le, xp=xp,
    )
    return xp.astype(levels.per_string(log_ratio, xp), dtype)


@masked_ieee
def bon_log_probs(
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    ties: str = "uniform",
    *,
    normalize: bool = False,
) -> Array:
    """The exact Best-of-N law log π_N(y), with ties.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support (last axis); leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards, broadcast against ``ref_log_probs``. Ties are handled exactly;
        ±inf rewards are ordered like any other value.
    n : float
        Number of samples; any real n > 0 (n = 1 returns π_ref).
    ties : {"uniform", "first_index"}
        How tied maximising draws are broken. Both give the same law: the draws
        are exchangeable, so taking the first maximiser is as good as a uniform pick.
        The option exists to document (and test) that fact for first-index samplers
        (docs/math.md, "The Best-of-N law"); a rule that prefers particular strings
        has a different law.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log π_N(y); -inf where π_ref(y) = 0. Finite even where π_N underflows in
        linear space (large n).

    Notes
    -----
    π_N(y) = π_ref(y)/q(y) · (F_le(y)^N - F_lt(y)^N), that is

    .. math::

        \\pi_N(y) = \\frac{\\pi_{\\mathrm{ref}}(y)}{q(y)}
        \\left(F_{\\mathrm{le}}(y)^N - F_{\\mathrm{lt}}(y)^N\\right),
        \\qquad q(y) = F_{\\mathrm{le}}(y) - F_{\\mathrm{lt}}(y):

    the level's BoN mass, shared in
    proportion to π_ref inside the level (across levels the CDF F becomes F^N).
    The law and its stable evaluation: :ref:`math-bon-law`, :ref:`math-stable`.
    Its logarithm is evaluated as a sum of non-positive terms, so it is accurate
    to relative precision even for a level whose BoN mass is within 1e-300 of 1.

    Examples
    --------
    Two equally likely strings with distinct rewards, N = 2:

    >>> import numpy as np
    >>> np.exp(bon_log_probs(np.log([0.5, 0.5]), [0.0, 1.0], n=2)).tolist()
    [0.25, 0.75]

    With a tie, BoN cannot separate the tied strings:

    >>> np.exp(bon_log_probs(np.log([0.5, 0.25, 0.25]), [0, 1, 1], n=2)).tolist()
    [0.25, 0.375, 0.375]
    """
    n = check_n(n)
    check_choice(ties, "ties", TIES)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    if n == 1.0:
        return ref_log_probs
    if needs_float64(n, ref_log_probs, xp):  # n log F would be 0 or NaN in float32: compute in float64
        return xp.astype(_bon_log_probs(xp.astype(ref_log_probs, xp.float64), rewards, n, xp), ref_log_probs.dtype)
    return _bon_log_probs(ref_log_probs, rewards, n, xp)


def _bon_log_probs(ref_log_probs: Array, rewards: Array, n: float, xp) -> Array:
    levels = reward_levels(ref_log_probs, rewards, xp)
    has_ties = levels.level_of_string is not None
    level_bon_mass = blockwise(
        lambda lt, le, q: _log_bon_level_mass(lt, le, q, n, xp),
        levels.log_cdf_lt, levels.log_cdf_le, levels.log_mass, xp=xp,
        out=None if has_ties else levels.log_mass,  # without ties q is read here only: overwrite it
    )
    if has_ties:
        return _share_level_mass(ref_log_probs, levels, level_bon_mass, xp)
    order = levels.order  # every level is one string: π_N(y) is its level's mass
    del levels  # its per-level arrays are freed before the unsort allocates (a lower peak)
    return unsort(level_bon_mass, order, xp)


def _share_level_mass(ref_log_probs: Array, levels, log_level_bon_mass: Array, xp) -> Array:
    """log π_N: each level's BoN mass shared in proportion to π_ref.

    log π_N(y) = log π_ref(y) + (log BoN mass - log q) of y's level. The sum is
    accurate unless π_ref(y)/q is near 1 (then log π_N can be near 0 while its terms
    are not). Only one string of a level can hold more than e^(-1/2) ≈ 0.61 of it
    (the margin above 1/2 keeps two exact halves from both qualifying after
    rounding); for it, log π_N = log BoN mass + log(1 - (sum of the others)/q).
    """
    log_mass = xp.where(levels.log_mass == NEG_INF, 0.0, levels.log_mass)
    log_ratio = log_level_bon_mass - log_mass
    level = levels.level_of_string
    log_probs = blockwise(lambda lp, j: lp + take_flat(log_ratio, j, xp), ref_log_probs, level, xp=xp)
    dominant = blockwise(lambda lp, j: lp - take_flat(log_mass, j, xp) > -0.5, ref_log_probs, level, xp=xp)
    if not bool(xp.any(dominant)):
        return log_probs
    others = levels.level_logsumexp(xp.where(dominant, NEG_INF, ref_log_probs), xp)
    share = log1mexp_where(dominant, levels.per_string(others - log_mass, xp), 0.0, xp)
    return xp.where(dominant, levels.per_string(log_level_bon_mass, xp) + share, log_probs)


@masked_ieee
def bon_log_ratio_from_cdf(log_cdf_lt: Array, log_level_mass: Array, n: float) -> Array:
    """R_N from per-sample (log F_lt, log level mass) pairs, for supports too large to enumerate.

    Parameters
    ----------
    log_cdf_lt : array of shape (...)
        log P_ref(r(Y') < r(y)) for each sample (e.g. estimated from reference samples).
    log_level_mass : array of shape (...)
        log P_ref(r(Y') = r(y)); equal to log π_ref(y) when rewards do not tie.
    n : float
        Number of BoN samples, n > 0.

    Returns
    -------
    array of shape (...)
        R_N = log[(a^n - b^n)/(a - b)] with b = F_lt, a = F_lt + q.

    Notes
    -----
    Accurate to ~1e-12 relative (1e-16 absolute near 0) for n from 1e-3 to 1e15 and
    masses down to 1e-300, where the binomial sum Σ_i C(n,i) F^(n-i) q^(i-1) of the
    paper's released code overflows. A pair whose F_lt + q is 1 to within the rounding
    of its inputs (or above 1 within the normalisation tolerance) is the top level:
    F_le = 1 exactly, with the smaller of F_lt and q kept and the other taken as one
    minus it (two floats cannot place F_le closer to 1, and at n = 1e12 the difference
    would decide R_N).

    Examples
    --------
    >>> import numpy as np
    >>> float(bon_log_ratio_from_cdf(np.log(0.5), np.log(0.5), n=2))  # log 1.5
    0.405465108108
    >>> float(bon_log_ratio_from_cdf(np.log(0.3), -690.0, n=10**6)) > -1.3e6
    True
    """
    n = check_n(n)
    xp = namespace(log_cdf_lt, log_level_mass)
    like = next((a for a in (log_cdf_lt, log_level_mass) if is_torch(a)), None)
    log_cdf_lt = check_log_values(float_array(log_cdf_lt, xp, like, name="log_cdf_lt"), "log_cdf_lt", xp)
    log_level_mass = check_log_values(
        float_array(log_level_mass, xp, like, name="log_level_mass"), "log_level_mass", xp
    )
    log_cdf_lt, log_level_mass = broadcast_batch({"log_cdf_lt": log_cdf_lt, "log_level_mass": log_level_mass}, xp)
    dtype = log_cdf_lt.dtype
    if needs_float64(n, log_cdf_lt, xp):  # n log F would be 0 or NaN in float32: compute in float64
        log_cdf_lt, log_level_mass = xp.astype(log_cdf_lt, xp.float64), xp.astype(log_level_mass, xp.float64)
    log_cdf_le = logaddexp(log_cdf_lt, log_level_mass, xp)
    if bool(xp.any(log_cdf_le > normalization_tolerance(dtype))):  # the inputs' dtype: their rounding
        raise ValueError("log_cdf_lt and log_level_mass: F_lt + q exceeds 1")
    # F_le = 1 up to the rounding of its inputs: the top level (the pair cannot say more)
    rounding = 4.0 * float(xp.finfo(dtype).eps) * xp.maximum(xp.abs(log_cdf_lt), xp.abs(log_level_mass))
    top = detach(log_cdf_le) >= -xp.where(xp.isfinite(rounding), rounding, 0.0)
    log_cdf_le = xp.where(top, 0.0, log_cdf_le)
    return xp.astype(_log_bon_ratio(log_cdf_lt, log_level_mass, log_cdf_le, n, xp), dtype)


@masked_ieee
def sample_bon(
    ref_log_probs: Array,
    rewards: Array,
    n: int,
    size: int,
    rng: np.random.Generator | int | None = None,
    *,
    normalize: bool = False,
) -> Array:
    """Monte Carlo Best-of-N: indices of the best of ``n`` reference draws, ``size`` times.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards, broadcast against ``ref_log_probs``.
    n : int
        Draws per BoN sample, n >= 1.
    size : int
        Number of BoN samples per batch row.
    rng : numpy.random.Generator or int or None
        Random source (a seed makes it reproducible).

    Returns
    -------
    int array of shape (..., size)
        Support indices; a torch tensor when the inputs are tensors.

    Notes
    -----
    Ties among the maximising draws are broken uniformly at random.

    Examples
    --------
    >>> import numpy as np
    >>> idx = sample_bon(np.log([0.5, 0.5]), [0.0, 1.0], n=2, size=10_000, rng=0)
    >>> bool(abs((idx == 1).mean() - 0.75) < 0.02)
    True
    """
    n = check_count(n, "n")
    size = check_count(size, "size", minimum=0)
    rng = check_rng(rng)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    k = ref_log_probs.shape[-1]
    batch_shape = tuple(ref_log_probs.shape[:-1])
    probs = np.exp(to_numpy(ref_log_probs).reshape(-1, k))
    values = to_numpy(rewards).reshape(-1, k)
    out = np.empty((probs.shape[0], size), dtype=np.int64)
    for row, (p, r) in enumerate(zip(probs, values)):
        draws = rng.choice(k, size=(size, n), p=p / p.sum())
        drawn_rewards = r[draws]
        is_best = drawn_rewards == drawn_rewards.max(axis=-1, keepdims=True)
        keys = np.where(is_best, rng.random(draws.shape), -1.0)
        out[row] = np.take_along_axis(draws, keys.argmax(axis=-1)[:, None], axis=-1)[:, 0]
    out = out.reshape(batch_shape + (size,))
    if is_torch(ref_log_probs):
        import torch

        return torch.as_tensor(out, device=ref_log_probs.device)
    return out
