"""InferenceTimePessimism (Huang, Block, Liu, Jiang, Foster, Krishnamurthy 2025, "Is
Best-of-N the Best of Them? Coverage, Scaling, and Optimality in Inference-Time
Alignment", arXiv 2503.21878), exactly, with ties.

**Population limit.** χ²-regularised alignment, max_π E_π[r] - (β/2) χ²(π || π_ref) with
χ² = E_ref[(π/π_ref - 1)²], has the optimum (KKT; bonmath's derivation)

    π_β(y) = π_ref(y) · max(0, (r(y) - λ)/β),   λ solving E_ref[max(0, (r - λ)/β)] = 1.

(With the unhalved regulariser β χ², replace β by 2β.) λ is found exactly: for any
set S of strings, (Σ_S π_ref r - β)/Σ_S π_ref <= λ, with equality for the strings above
λ, so λ is the largest of these values over the suffixes of the strings sorted by
decreasing reward.

**The finite-n sampler.** Draw y_1..y_n from π_ref; compute λ̂ from the *empirical*
normalisation (1/n) Σ_i max(0, (r(y_i) - λ̂)/β) = 1; weight w_i = max(0, (r(y_i) - λ̂)/β);
for i = 1..n accept y_i with probability min(1, w_i/M) and return the first accepted;
if none is, fall back. The envelope M is either the largest weight among the draws
(``reward_bound=None``; then the largest draw is always accepted and the fallback
never happens) or (R - λ̂)/β for a known reward bound R >= max r. The fallback returns
a uniform pick among the n draws (``"candidate"``, which has the law of returning the
last draw y_n) or a fresh π_ref draw (``"reference"``). The paper's Algorithm 1 could
not be read here (only its abstract); these choices follow the two public
reimplementations ``ishi3144/Differential-Privacy-in-Best-of-n-Alignment`` (``ITP.py``:
same draws, M = largest weight, uniform fallback) and
``NandiniBhattad13/Privacy-Without-Regret-...`` (same draws, M = largest weight; a
π_ref fallback in its accounting). As n → ∞ the sampler's law tends to π_β.

**Its exact law.** The sampler depends on the draws only through their reward levels,
and given the multiset of levels the order is a uniform permutation, so the returned
draw is a uniform pick among the accepted ones. With level counts c (a multinomial
vector), acceptance probabilities a_l and A_l ~ Binomial(c_l, a_l) accepted draws,

    P(level l | c) = E[A_l / A; A > 0] = c_l a_l ∫_0^1 (1 - a_l + a_l s)^(c_l - 1) Π_{m≠l} (1 - a_m + a_m s)^(c_m) ds,

using 1/A = ∫_0^1 s^(A-1) ds and the binomial generating function. The integrand is a
polynomial of degree n - 1 with positive terms, so ceil(n/2)-point Gauss-Legendre
quadrature is exact; the sum over the C(n+L-1, L-1) count vectors runs in log space.
Within a level the law is ∝ π_ref.

**The claim.** The paper proves that InferenceTimePessimism's performance guarantee
does not degrade as n grows ("scaling-monotonic"), while Best-of-N's does (reward
hacking). ``tests/test_theory_inference_aware.py`` shows, with exact rationals, that
the sampler's *exact* expected reward -- true or proxy -- is not monotone in n on
small supports (it overshoots the limit and comes back), while on a proxy/true pair
where BoN's true reward rises and then collapses, the sampler's stays near its limit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import gammaln, roots_legendre

from bonmath.backend import (
    NEG_INF,
    Array,
    as_constant,
    as_index,
    count_vectors,
    expectation,
    logaddexp,
    logsumexp,
    masked_ieee,
    needs_float64,
    put,
    safe_log,
    to_numpy,
)
from bonmath.bon import bon_log_probs
from bonmath.levels import reward_levels
from bonmath.theory.poisson import best_of_poisson_log_probs
from bonmath.theory.soft_bon import MAX_TERMS
from bonmath.validation import check_choice, check_count, check_positive, prepare

FALLBACKS = ("candidate", "reference")
"""What the sampler returns when no draw is accepted: a uniform pick among the draws, or a fresh π_ref draw."""

_QUADRATURE_BLOCK = 1 << 20
"""Count vectors × levels × nodes evaluated at once by the exact sampler law."""


def _excess(ref_log_probs: Array, rewards: Array, chi2_coefficient: float, xp) -> Array:
    """r - λ with λ of the population limit: the largest (Σ_S π_ref r - β)/Σ_S π_ref over
    the suffixes S of the strings in decreasing reward order. Rewards are shifted by the top
    one with mass, so the sums have terms of one sign and the top level's excess β/Σ_S π_ref is not
    lost next to the top reward (β = 1e-20, r = 5: λ + 5 - 5 = 0)."""
    order = xp.argsort(-rewards, axis=-1)
    probs = xp.exp(xp.take_along_axis(ref_log_probs, order, axis=-1))
    ordered = xp.take_along_axis(xp.astype(rewards, ref_log_probs.dtype), order, axis=-1)
    top = xp.max(xp.where(probs > 0, ordered, NEG_INF), axis=-1, keepdims=True)  # the top reward with mass
    mass = xp.cumulative_sum(probs, axis=-1)
    shifted_sum = xp.cumulative_sum(probs * (ordered - top), axis=-1)
    candidates = xp.where(mass > 0, (shifted_sum - chi2_coefficient) / xp.where(mass > 0, mass, 1.0), NEG_INF)
    return (xp.astype(rewards, ref_log_probs.dtype) - top) - xp.max(candidates, axis=-1, keepdims=True)


@masked_ieee
def pessimism_log_probs(
    ref_log_probs: Array, rewards: Array, chi2_coefficient: float, *, normalize: bool = False
) -> Array:
    """The χ²-regularised optimum π_ref · max(0, (r - λ)/β): InferenceTimePessimism's limit.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Finite rewards; ties allowed.
    chi2_coefficient : float
        Regularisation β > 0 (β → 0: π_ref restricted to the top reward level; β → ∞: π_ref).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log π_β; -inf where π_ref = 0 or r <= λ. Differentiable in both inputs (torch).

    Notes
    -----
    The maximiser of E_π[r] - (β/2) E_ref[(π/π_ref - 1)²]; λ solves
    E_ref[max(0, (r - λ)/β)] = 1 (module docstring; Huang et al. 2025, the population
    version of InferenceTimePessimism).

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(pessimism_log_probs(np.log([0.5, 0.25, 0.25]), [0, 1, 2], chi2_coefficient=1.0)).tolist()  # λ = -1/4
    [0.125, 0.3125, 0.5625]
    >>> np.exp(pessimism_log_probs(np.log([0.5, 0.5]), [0, 1], chi2_coefficient=2.0)).round(6).tolist()
    [0.375, 0.625]
    """
    chi2_coefficient = check_positive(chi2_coefficient, "chi2_coefficient")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize, finite_rewards=True
    )
    dtype = ref_log_probs.dtype
    if needs_float64(chi2_coefficient, ref_log_probs, xp):  # β = 1e40 is inf in float32
        ref_log_probs = xp.astype(ref_log_probs, xp.float64)
    excess = _excess(ref_log_probs, rewards, chi2_coefficient, xp)
    kept = (excess > 0) & (ref_log_probs > NEG_INF)
    log_weight = xp.log(xp.where(kept, excess, 1.0)) - math.log(chi2_coefficient)
    tilted = xp.where(kept, ref_log_probs + log_weight, NEG_INF)
    return xp.astype(tilted - logsumexp(tilted, xp, keepdims=True), dtype)  # E_ref[w] = 1 up to rounding


def _sampler_level_log_probs(
    log_q: Array, level_rewards: Array, n: int, chi2_coefficient: float, reward_bound: float | None, fallback: str, xp
) -> Array:
    """log P(the sampler returns level l), for the L positive-mass levels of one support.

    ``log_q`` and ``level_rewards`` have shape (L,), rewards increasing.
    """
    num_levels = log_q.shape[0]
    counts_int = count_vectors(n, num_levels)  # (M, L)
    counts = as_constant(counts_int, log_q, xp)
    at_or_above = as_constant(np.triu(np.ones((num_levels, num_levels))).T, log_q, xp)  # [l, m] = l >= m
    present = counts > 0
    # rewards shifted by the top level drawn, (M, L): r - λ̂ is taken in them, so the excess
    # n β / c_top of that level is not rounded away next to its reward (β = 1e-17)
    top = xp.max(xp.where(present, level_rewards, NEG_INF), axis=-1, keepdims=True)
    draws_at_or_above = counts @ at_or_above  # (M, L): draws in levels >= m
    shifted_at_or_above = (counts * (level_rewards - top)) @ at_or_above
    some = draws_at_or_above > 0
    candidates = xp.where(some, (shifted_at_or_above - n * chi2_coefficient) / xp.where(some, draws_at_or_above, 1.0), NEG_INF)
    shifted_threshold = xp.max(candidates, axis=-1, keepdims=True)  # λ̂ - top per count vector, (M, 1)
    weights = xp.maximum(((level_rewards - top) - shifted_threshold) / chi2_coefficient, 0.0)  # (M, L)
    if reward_bound is None:
        envelope = xp.max(xp.where(present, weights, 0.0), axis=-1, keepdims=True)
    else:
        envelope = ((reward_bound - top) - shifted_threshold) / chi2_coefficient
    accept = xp.minimum(weights / envelope, 1.0)

    nodes, node_weights = roots_legendre(max(1, (n + 1) // 2))
    s = as_constant((nodes + 1.0) / 2.0, log_q, xp)
    log_node_weights = as_constant(np.log(node_weights / 2.0), log_q, xp)
    log_mult = as_constant(gammaln(n + 1.0) - gammaln(counts_int + 1.0).sum(axis=1), log_q, xp) + counts @ log_q
    log_prefactor = safe_log(xp.where(present, counts * accept, 0.0), xp)  # log(c_l a_l)
    # log P(no draw accepted); log(1 - a) has absolute error ~1e-16: relative in the probability
    no_accept = xp.sum(xp.where(present, counts * safe_log(1.0 - accept, xp), 0.0), axis=-1)
    if fallback == "candidate":
        log_fallback = no_accept[:, None] + xp.log(counts / n)
    else:
        log_fallback = no_accept[:, None] + log_q

    block = max(1, _QUADRATURE_BLOCK // (num_levels * s.shape[0]))
    per_block = []
    for start in range(0, counts.shape[0], block):
        rows = slice(start, start + block)
        # log(1 - a + a s) per count vector, level and node; nodes are interior, so it is finite
        log_factor = xp.log1p(accept[rows, :, None] * (s - 1.0))
        log_product = xp.sum(counts[rows, :, None] * log_factor, axis=1)  # log Π_m (...)^(c_m), (B, G)
        integral = logsumexp(log_product[:, None, :] - log_factor + log_node_weights, xp, axis=-1)
        given_counts = logaddexp(log_prefactor[rows] + integral, log_fallback[rows], xp)  # (B, L)
        per_block.append(logsumexp(log_mult[rows, None] + given_counts, xp, axis=0))
    return logsumexp(xp.stack(per_block), xp, axis=0)


@masked_ieee
def pessimism_sampler_log_probs(
    ref_log_probs: Array,
    rewards: Array,
    n: int,
    chi2_coefficient: float,
    *,
    reward_bound: float | None = None,
    fallback: str = "candidate",
    normalize: bool = False,
    max_terms: int = MAX_TERMS,
) -> Array:
    """The exact law of the InferenceTimePessimism rejection sampler with n draws.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Finite rewards (the proxy the sampler sees); ties allowed.
    n : int
        Draws from π_ref, n >= 1 (n = 1 returns π_ref unless a bound and the "reference"
        fallback are given).
    chi2_coefficient : float
        Regularisation β > 0.
    reward_bound : float or None, default None
        None: the envelope M is the largest weight among the draws. A number R >= every
        reward with positive mass: M = (R - λ̂)/β.
    fallback : {"candidate", "reference"}, default "candidate"
        If no draw is accepted: a uniform pick among the draws, or a fresh π_ref draw.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.
    max_terms : int, default MAX_TERMS
        Refuse (``ValueError``) rows needing more than this many count vectors.

    Returns
    -------
    array of shape (..., k)
        log of the sampler's output law; -inf where π_ref = 0. Differentiable in π_ref and
        in the rewards for torch inputs (a tied level's reward gradient goes to one of its strings).

    Notes
    -----
    The sampler and the exact sum are described in the module docstring (Huang et al.
    2025 define InferenceTimePessimism; the closed form over level counts is
    bonmath's). Cost O(C(n+L-1, L-1) · L · n/2) per row, L = the number of reward
    levels with positive mass.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.5, 0.5])
    >>> np.exp(pessimism_sampler_log_probs(ref, [0, 1], n=2, chi2_coefficient=1.0)).round(6).tolist()
    [0.333333, 0.666667]
    >>> np.exp(pessimism_sampler_log_probs(ref, [0, 1], n=200, chi2_coefficient=1.0)).round(4).tolist()
    [0.2503, 0.7497]
    >>> np.exp(pessimism_log_probs(ref, [0, 1], chi2_coefficient=1.0)).round(4).tolist()  # the n → ∞ limit
    [0.25, 0.75]
    """
    n = check_count(n, "n")
    chi2_coefficient = check_positive(chi2_coefficient, "chi2_coefficient")
    check_choice(fallback, "fallback", FALLBACKS)
    max_terms = check_count(max_terms, "max_terms")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize, finite_rewards=True
    )
    if reward_bound is not None:
        if isinstance(reward_bound, bool) or not isinstance(reward_bound, numbers.Real) or not math.isfinite(reward_bound):
            raise ValueError(f"reward_bound must be a finite real number or None; got {reward_bound!r}")
        reward_bound = float(reward_bound)
        top = float(to_numpy(xp.max(xp.where(ref_log_probs > NEG_INF, rewards, -math.inf))))
        if reward_bound < top:
            raise ValueError(f"reward_bound must be >= every reward with positive mass ({top:g}); got {reward_bound:g}")
    if math.prod(ref_log_probs.shape[:-1]) == 0:
        return ref_log_probs  # an empty batch
    if n == 1 and (reward_bound is None or fallback == "candidate"):
        return ref_log_probs  # the one draw is returned (a fresh-draw fallback would differ)
    levels = reward_levels(ref_log_probs, rewards, xp)
    k, num_slots = ref_log_probs.shape[-1], levels.log_mass.shape[-1]
    slots = as_constant(np.arange(num_slots), levels.log_mass, xp)
    slot_of_string = to_numpy(levels.per_string(slots + xp.zeros_like(levels.log_mass), xp))
    slot_of_string = np.rint(slot_of_string).astype(np.int64).reshape(-1, k)
    flat_rewards = xp.reshape(xp.astype(rewards, ref_log_probs.dtype), (-1, k))
    log_mass = xp.reshape(levels.log_mass, (-1, num_slots))
    rows = []
    for row in range(log_mass.shape[0]):
        positive = np.flatnonzero(np.isfinite(to_numpy(log_mass[row])))
        terms = math.comb(n + len(positive) - 1, len(positive) - 1)
        if terms > max_terms:
            raise ValueError(
                f"the sampler law with n={n} over {len(positive)} reward levels needs {terms} count "
                f"vectors, more than max_terms={max_terms}"
            )
        first_string = [np.flatnonzero(slot_of_string[row] == slot)[0] for slot in positive]
        level_rewards = flat_rewards[row][as_index(np.array(first_string), log_mass, xp)]
        log_q = log_mass[row][as_index(positive, log_mass, xp)]
        # in float64 for every dtype: in float32 β = 1e40 or a reward bound of 1e300 is inf
        level_law = _sampler_level_log_probs(xp.astype(log_q, xp.float64), xp.astype(level_rewards, xp.float64), n,
                                             chi2_coefficient, reward_bound, fallback, xp)
        level_law = xp.astype(level_law, log_q.dtype)
        rows.append(put(xp.zeros_like(log_mass[row]), positive, level_law - log_q, xp))
    per_level = xp.reshape(xp.stack(rows), tuple(levels.log_mass.shape))
    log_ratio = levels.per_string(per_level, xp)
    zero_mass = ref_log_probs == NEG_INF
    return xp.where(zero_mass, NEG_INF, ref_log_probs + xp.where(zero_mass, 0.0, log_ratio))


class TrueRewardCurves(NamedTuple):
    """E[r_true] against the number of draws N for three proxy-reward samplers, one support.

    Returned by :func:`true_reward_curves`.

    Examples
    --------
    Two equally likely strings whose proxy and true rewards disagree: Best-of-2 picks the
    proxy's favourite (true reward 0) with probability 3/4.

    >>> import numpy as np
    >>> curves = true_reward_curves(np.log([0.5, 0.5]), [0, 1], [1, 0], [1, 2], chi2_coefficient=1.0)
    >>> curves.n.tolist(), curves.bon.tolist()
    ([1, 2], [0.5, 0.25])
    """

    n: np.ndarray
    """The draw counts N, shape (m,)."""
    bon: np.ndarray
    """E_{BoN_N(proxy)}[r_true]."""
    pessimism: np.ndarray
    """E[r_true] under the InferenceTimePessimism sampler with N draws."""
    poisson: np.ndarray
    """E[r_true] under Best-of-Poisson with N - 1 ~ Poisson(N - 1): mean draw count N."""
    pessimism_limit: float
    """E[r_true] under the sampler's n → ∞ limit π_ref max(0, (proxy - λ)/β)."""


def _expected(log_probs: np.ndarray, values: np.ndarray) -> float:
    """E_p[v] (stands in for ``bonmath.bon_true_reward`` until that lands)."""
    return float(expectation(log_probs, values, np))


@masked_ieee
def true_reward_curves(
    ref_log_probs: Array,
    proxy_rewards: Array,
    true_rewards: Array,
    ns: Sequence[int],
    chi2_coefficient: float,
    *,
    reward_bound: float | None = None,
    fallback: str = "candidate",
    normalize: bool = False,
) -> TrueRewardCurves:
    """E[r_true] vs N for BoN, InferenceTimePessimism and Best-of-Poisson, all ranking by a proxy.

    Parameters
    ----------
    ref_log_probs : array of shape (k,)
        log π_ref of one support (tensors are detached).
    proxy_rewards : array of shape (k,)
        The reward the samplers see (finite; ties allowed).
    true_rewards : array of shape (k,)
        The reward they are judged by (finite).
    ns : sequence of int
        Draw counts N >= 1.
    chi2_coefficient : float
        InferenceTimePessimism's β > 0.
    reward_bound, fallback
        As in :func:`pessimism_sampler_log_probs`.
    normalize : bool, default False

    Returns
    -------
    TrueRewardCurves
        Exact values, for a figure of reward hacking: BoN's curve can rise and then
        fall as N grows; the other two at matched mean draw count N.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.3, 0.3, 0.2, 0.15, 0.05])
    >>> curves = true_reward_curves(ref, [0, 1, 2, 3, 4], [0, 1, 2, 3, -2], [1, 3, 32], chi2_coefficient=1.0)
    >>> curves.bon.round(3).tolist(), curves.pessimism.round(3).tolist()
    ([1.05, 1.532, -1.032], [1.05, 1.441, 1.503])
    >>> curves.poisson.round(3).tolist(), round(curves.pessimism_limit, 3)
    ([1.05, 1.418, -0.993], 1.525)
    """
    check_choice(fallback, "fallback", FALLBACKS)
    if isinstance(ns, (str, bytes)) or not isinstance(ns, Sequence) or not len(ns):
        raise TypeError(f"ns must be a non-empty sequence of integers; got {ns!r}")
    counts = np.asarray([check_count(n, "ns") for n in ns], dtype=np.int64)
    _, (ref, proxy, true) = prepare(
        {"ref_log_probs": to_numpy(ref_log_probs)},
        {"proxy_rewards": to_numpy(proxy_rewards), "true_rewards": to_numpy(true_rewards)},
        normalize=normalize,
        finite_rewards=True,
    )
    if ref.ndim != 1:
        raise ValueError(f"ref_log_probs must be one support of shape (k,); got {ref.shape}")
    bon = [_expected(bon_log_probs(ref, proxy, int(n)), true) for n in counts]
    pessimism = [
        _expected(pessimism_sampler_log_probs(ref, proxy, int(n), chi2_coefficient, reward_bound=reward_bound, fallback=fallback), true)
        for n in counts
    ]
    poisson = [_expected(best_of_poisson_log_probs(ref, proxy, float(n - 1)), true) for n in counts]
    limit = _expected(pessimism_log_probs(ref, proxy, chi2_coefficient), true)
    return TrueRewardCurves(counts, np.array(bon), np.array(pessimism), np.array(poisson), limit)
