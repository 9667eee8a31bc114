"""Estimators of max@k and pass@k and of their gradients from n >= k samples, with exact moments.

Every function here takes the rewards g_1..g_n of n i.i.d. samples y_i ~ π_θ of one
prompt on the last axis (leading axes: a batch of groups), numpy or torch, and returns
per-sample **weights** w (same shape) for the score-function estimate

    ĝ = Σ_i w_i ∇ log π_θ(y_i)      (a sum over the group, PKPO's convention),

or, for advantages from the literature, the advantages exactly as published (their
scale convention is stated). As a surrogate loss: ``-(w.detach() * log_probs).sum(-1)``;
:func:`bonmath.estimators.reward_surrogate` averages over the group instead (w = A/n).

The estimators (docs/math.md, "Inference-aware objectives"), with sorted rewards
g_(1) <= ... <= g_(n):

- :func:`max_at_k_estimate`: (1/C(n,k)) Σ_{i>=k} C(i-1,k-1) g_(i), the mean of the maxima
  of all k-subsets: unbiased for max@k (PKPO, Walder & Karkhanis 2025, arXiv 2505.15201, eq. 12;
  equation numbers checked against the paper's text, v3/v4);
- :func:`pkpo_weights`: s_i = (1/C(n,k)) Σ_{k-subsets I ∋ i} max_I g, i.e.
  [C(i-1,k-1) g_(i) + Σ_{j>i} C(j-2,k-2) g_(j)]/C(n,k) (PKPO eq. 19), unbiased for
  ∇max@k, and its baselined variants (see there);
- :func:`passk_training_advantages`: Chen et al. (2025)'s analytic Pass@k Training advantages;
- :func:`grpo_passk_advantages`: verl's ``grpo_passk`` (Tang et al. 2025): only the group's
  best sample gets r_max - r_2nd.

Tied rewards: every weight is a function of the sample's reward and the multiset of the
group's rewards, so tied samples get identical weights whatever order a sort puts them in.

Binomial coefficients are exact Python integers (``math.comb`` and exact recurrences);
each ratio is one correctly rounded division, so the weights are accurate to rounding
for any n (10^4 and beyond) and tiny ratios underflow gracefully instead of overflowing.

:func:`exact_weight_moments` gives the exact mean and second moment of ĝ for *any*
weight function of the rewards, on an enumerated support.

(Over 400 lines on purpose: the pass@k / max@k estimators and their exact moments share
the coefficient tables; almost half is docstrings.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammaln

from bonmath.backend import (
    Array,
    InputTypeError,
    as_constant,
    as_index,
    count_vectors,
    float_array,
    is_torch_namespace,
    namespace,
    scaled_group_std,
    take_last,
    to_numpy,
    unsort,
)
from bonmath.validation import (
    check_choice,
    check_count,
    check_positive,
    check_values,
    reward_arrays,
)

if TYPE_CHECKING:
    from bonmath.estimator_moments import Moments

__all__ = [
    "GRPO_PASSK_EPS",
    "MAX_CONFIGURATIONS",
    "PASSK_TRAINING_CODE_EPS",
    "PASSK_TRAINING_VARIANTS",
    "PKPO_VARIANTS",
    "SCALE_REWARDS",
    "exact_weight_moments",
    "grpo_passk_advantages",
    "max_at_k_estimate",
    "pass_at_k_estimate",
    "passk_training_advantages",
    "pkpo_weights",
]

PKPO_VARIANTS = ("plain", "loo", "loo_minus_one", "mean_centred")
"""Baselines for :func:`pkpo_weights`."""

PASSK_TRAINING_VARIANTS = ("paper", "code")
"""Chen et al. (2025): the README/paper formula, or the released code (``σ + 1e-6``)."""

PASSK_TRAINING_CODE_EPS = 1e-6
"""RUCAIBox/Passk_Training ``code/passk_adv.py``: ``(...) / (sigma + 1e-6)``."""

SCALE_REWARDS = ("none", "group")
"""``none``: advantages as they are; ``group``: divided by the group's standard deviation plus
``eps`` (GRPO; biased). The values of TRL's ``GRPOConfig.scale_rewards`` covered by
:func:`bonmath.estimators.advantages` and :func:`grpo_passk_advantages`."""

GRPO_PASSK_EPS = 1e-6
"""verl ``compute_grpo_passk_outcome_advantage``: ``advantage / (std + epsilon)``, epsilon = 1e-6."""

MAX_CONFIGURATIONS = 10**7
"""Largest number of reward multisets :func:`exact_weight_moments` enumerates."""

_CHUNK = 1 << 22
"""Weights evaluated per chunk of configurations in :func:`exact_weight_moments` (entries)."""

_EQUIVARIANCE_ROWS = 1024
"""Reward multisets on which :func:`exact_weight_moments` checks that ``weight_fn`` is permutation-equivariant."""


# ------------------------------------------------------------------ binomial ratios


def _comb_ratios(size: int, r: int, denominator: int) -> np.ndarray:
    """[C(m, r) / denominator for m = 0..size-1], each one correctly rounded division of integers."""
    out = np.zeros(size)
    if r < 0:
        return out
    c = 1  # C(r, r)
    for m in range(r, size):
        out[m] = c / denominator
        c = c * (m + 1) // (m + 1 - r)  # C(m+1, r)
    return out


@functools.lru_cache(maxsize=256)
def _pkpo_coefficients(n: int, k: int) -> dict[str, np.ndarray]:
    """Rank coefficients (rank i = 1..n at index i-1) of PKPO's estimators for (n, k).

    diagonal[i]   = C(i-1, k-1)/C(n, k)        (max@k estimate; s_i's own term)
    off[j]        = C(j-2, k-2)/C(n, k)        (s_i's term for each j > i; 0 at j = 1)
    loo[m]        = C(m-1, k-1)/C(n-1, k)      (max@k estimate of n - 1 samples, m = 1..n-1)
    loo_minus[m]  = C(m-1, k-2)/C(n-1, k-1)    (max@(k-1) estimate of n - 1 samples)
    """
    total = math.comb(n, k)
    out = {
        "diagonal": _comb_ratios(n, k - 1, total),
        "off": np.concatenate([[0.0], _comb_ratios(n - 1, k - 2, total)]),
    }
    if n > k:
        out["loo"] = _comb_ratios(n - 1, k - 1, math.comb(n - 1, k))
    if k >= 2:
        out["loo_minus"] = _comb_ratios(n - 1, k - 2, math.comb(n - 1, k - 1))
    for value in out.values():
        value.flags.writeable = False
    return out


def _sqrt_ratio(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator) of positive integers, to about one rounding: the ratio is
    scaled by 4^shift to >= 2^126 before the integer square root, so it never underflows early."""
    shift = max(0, (denominator.bit_length() - numerator.bit_length()) // 2 + 64)
    return math.ldexp(math.isqrt((numerator << (2 * shift)) // denominator), -shift)


@functools.lru_cache(maxsize=256)
def _pass_at_k_table(n: int, k: int) -> dict[str, np.ndarray]:
    """Per number of correct samples c = 0..n, exactly rounded:

    rho[c]      = 1 - C(n-c, k)/C(n, k)            (the unbiased pass@k estimate)
    fail[c]     = C(n-c, k)/C(n, k) = 1 - rho[c]
    neg_gap[c]  = C(n-c-1, k-1)/C(n-1, k-1)        (1 - rho(n-1, c, k-1); 0 at c = n)
    sqrt_odds[c]      = sqrt(fail/rho)             (fail/σ with σ = sqrt(rho fail); 0 where σ = 0)
    neg_sqrt_odds[c]  = (c/(n-c)) sqrt(fail/rho)   ((c/n) neg_gap/σ, as fail = ((n-c)/n) neg_gap)
    """
    total, total_minus = math.comb(n, k), math.comb(n - 1, k - 1)
    rho, fail, neg_gap = np.zeros(n + 1), np.zeros(n + 1), np.zeros(n + 1)
    sqrt_odds, neg_sqrt_odds = np.zeros(n + 1), np.zeros(n + 1)
    fails, gaps = total, total_minus  # C(n-c, k) and C(n-c-1, k-1) at c = 0
    for c in range(n + 1):
        rho[c], fail[c] = (total - fails) / total, fails / total
        if 0 < fails < total:  # σ > 0, possibly below the float64 range while the ratios are not
            sqrt_odds[c] = _sqrt_ratio(fails, total - fails)
            neg_sqrt_odds[c] = _sqrt_ratio(c * c * fails, (n - c) ** 2 * (total - fails))
        if c < n:
            neg_gap[c] = gaps / total_minus
            m = n - c  # C(m-1, k) = C(m, k) (m-k)/m, C(m-2, k-1) = C(m-1, k-1) (m-k)/(m-1)
            fails = fails * (m - k) // m if m > k else 0
            gaps = gaps * (m - k) // (m - 1) if m > k else 0
    out = {"rho": rho, "fail": fail, "neg_gap": neg_gap, "sqrt_odds": sqrt_odds, "neg_sqrt_odds": neg_sqrt_odds}
    for value in out.values():
        value.flags.writeable = False
    return out


# ------------------------------------------------------------------------- checks


def _check_group(rewards, name: str = "rewards"):
    xp = namespace(rewards)
    (rewards,) = reward_arrays({name: rewards}, xp, as_numbers=True)
    return xp, check_values(rewards, name, xp, finite=True)


def _check_k(k, n: int) -> int:
    k = check_count(k, "k")
    if k > n:
        raise ValueError(f"k must be <= n, the number of samples on the last axis; got k={k}, n={n}")
    return k


def _binary(rewards, xp) -> None:
    if not bool(xp.all((rewards == 0) | (rewards == 1))):
        raise ValueError("rewards must be binary (every entry 0 or 1) here")


def _exclusive_suffix_sum(x, xp):
    """Σ_{j>i} x_j along the last axis (summed from the top: no cancellation)."""
    inclusive = xp.flip(xp.cumulative_sum(xp.flip(x, axis=-1), axis=-1), axis=-1)
    return xp.concat([inclusive[..., 1:], xp.zeros_like(x[..., :1])], axis=-1)


def _exclusive_prefix_sum(x, xp):
    """Σ_{j<i} x_j along the last axis."""
    inclusive = xp.cumulative_sum(x, axis=-1)
    return xp.concat([xp.zeros_like(x[..., :1]), inclusive[..., :-1]], axis=-1)


def _tie_block_top(sorted_values, xp):
    """For each sorted position, the last position holding the same value (its tie block's top)."""
    n = sorted_values.shape[-1]
    positions = xp.arange(n, device=getattr(sorted_values, "device", None))
    ends = xp.concat([sorted_values[..., 1:] != sorted_values[..., :-1],
                      xp.ones_like(sorted_values[..., :1], dtype=xp.bool)], axis=-1)
    marked = xp.where(ends, positions, n)
    if is_torch_namespace(xp):
        import torch

        return torch.flip(torch.cummin(torch.flip(marked, (-1,)), dim=-1).values, (-1,))
    return np.minimum.accumulate(marked[..., ::-1], axis=-1)[..., ::-1]


# --------------------------------------------------------------------- estimates


def max_at_k_estimate(rewards: Array, k: int) -> Array:
    """The unbiased max@k estimate from n >= k samples: the mean maximum over all k-subsets.

    Parameters
    ----------
    rewards : array of shape (..., n)
        Rewards of n i.i.d. samples (last axis), finite; ties allowed.
    k : int
        1 <= k <= n.

    Returns
    -------
    array of shape (...)
        (1/C(n,k)) Σ_{i>=k} C(i-1,k-1) g_(i) with g sorted increasingly.

    Notes
    -----
    PKPO (Walder & Karkhanis 2025), eq. 12: averaging max over every k-subset is
    unbiased because each subset is k i.i.d. draws; C(i-1,k-1) subsets have g_(i) as
    their maximum. With ties any sort order gives the same value. On {0, 1} rewards it
    is :func:`pass_at_k_estimate`.

    Examples
    --------
    >>> float(max_at_k_estimate([3.0, 1.0, 2.0], k=2))  # subsets' maxima 2, 3, 3
    2.666666666667
    """
    xp, rewards = _check_group(rewards)
    n = rewards.shape[-1]
    k = _check_k(k, n)
    diagonal = as_constant(_pkpo_coefficients(n, k)["diagonal"], rewards, xp)
    return xp.sum(xp.sort(rewards, axis=-1) * diagonal, axis=-1)


def pass_at_k_estimate(rewards: Array, k: int) -> Array:
    """The unbiased pass@k estimate 1 - C(n-c, k)/C(n, k) from n >= k binary samples, c correct.

    Parameters
    ----------
    rewards : array of shape (..., n)
        0 or 1.
    k : int
        1 <= k <= n.

    Returns
    -------
    array of shape (...)
        Correctly rounded (exact integers, one division) for any n.

    Notes
    -----
    Chen et al. (2021, Codex)'s estimator; PKPO's ρ(n, c, k) (Walder & Karkhanis 2025, eq. 3);
    the value of :func:`max_at_k_estimate` on {0, 1} rewards.

    Examples
    --------
    >>> float(pass_at_k_estimate([0, 1, 0, 0], k=2))  # 1 - C(3,2)/C(4,2)
    0.5
    """
    xp, rewards = _check_group(rewards)
    _binary(rewards, xp)
    n = rewards.shape[-1]
    k = _check_k(k, n)
    correct = xp.astype(xp.sum(rewards, axis=-1), xp.int64)
    return as_constant(_pass_at_k_table(n, k)["rho"], rewards, xp)[correct]


def pkpo_weights(rewards: Array, k: int, variant: str = "loo_minus_one") -> Array:
    """PKPO's per-sample weights for ∇max@k (or ∇pass@k on binary rewards).

    Parameters
    ----------
    rewards : array of shape (..., n)
        Rewards of n i.i.d. samples, finite; ties allowed.
    k : int
        1 <= k <= n.
    variant : {"plain", "loo", "loo_minus_one", "mean_centred"}
        ``plain``: s_i = (1/C(n,k)) Σ_{k-subsets I ∋ i} max_I g (PKPO eq. 19).
        ``loo``: s_i - (k/(n-1)) ρ(n-1, k; g_{-i}), with ρ the max@k estimate of the other
        n - 1 samples (PKPO eq. 29: s_i minus the mean over j ≠ i of the s_j computed
        without sample i); needs n > k. The baseline is on the scale of n - 1 samples, not
        of s_i's n: at k = 1 it is g_i/n - mean_{j≠i} g_j/(n-1), not RLOO's
        (g_i - mean_{j≠i} g_j)/n, and at n = 2 it doubles the other sample's reward.
        ``loo_minus_one`` (the default): s_i - (k/n) ρ(n-1, k-1; g_{-i}) (PKPO eq. 33): for
        each k-subset I ∋ i the baseline is max_{I∖i} g, the best of the other k - 1, so each
        subset contributes max_I g - max_{I∖i} g >= 0; needs k >= 2.
        ``mean_centred``: s_i - (1/n) Σ_j s_j, a baseline that includes sample i itself.
        Biased: E[ĝ] = (1 - k/n) ∇max@k (planted; at k = 1 it is GRPO's centring).

    Returns
    -------
    array of shape (..., n)
        w with ĝ = Σ_i w_i ∇log π(y_i); E[ĝ] = ∇max@k for ``plain``, ``loo`` and
        ``loo_minus_one`` (the baselines do not depend on sample i).

    Notes
    -----
    Unbiasedness: ∇max@k = Σ_{i<=k} E[max_{j<=k} g(y_j) ∇log π(y_i)] over k i.i.d.
    draws; averaging over all k-subsets of n draws gives
    (1/C(n,k)) Σ_I Σ_{i∈I} max_I g ∇log π(y_i) = Σ_i s_i ∇log π(y_i).
    On binary rewards s_i = k/n for a correct sample and (k/n) ρ(n-1, c, k-1) for a
    failed one (PKPO eq. 8): the continuous formula, not a separate case.
    The baselines are the paper's definitions (eqs. 29 and 33, with b^(m)_i of its
    eq. 30); their computed forms match Listing 1 as reproduced in public
    reimplementations (``sloo``: s - b^(k)/(n-1); ``sloo_minus_one``: s - b^(k-1) k/((k-1) n),
    the paper's eq. 34), with b^(m)_i = Σ_{j≠i} s_j(g_{-i}, m) = m ρ(n-1, m; g_{-i}).

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([0.0, 1.0, 3.0])
    >>> pkpo_weights(g, k=2, variant="plain").round(12).tolist()  # subsets {0,1}: 1, {0,3}: 3, {1,3}: 3
    [1.333333333333, 1.333333333333, 2.0]
    >>> pkpo_weights(g, k=2).round(12).tolist()  # each subset credits its best by its margin
    [0.0, 0.333333333333, 1.666666666667]
    """
    check_choice(variant, "variant", PKPO_VARIANTS)
    xp, rewards = _check_group(rewards)
    n = rewards.shape[-1]
    k = _check_k(k, n)
    if variant == "loo" and n <= k:
        raise ValueError(f"variant='loo' needs n > k (its baseline is a max@k estimate of n - 1 samples); "
                         f"got n={n}, k={k}")
    if variant == "loo_minus_one" and k < 2:
        raise ValueError("variant='loo_minus_one' needs k >= 2 (its baseline is the best of k - 1 others); "
                         "at k = 1 use variant='loo' (PKPO eq. 29)")
    coefficients = _pkpo_coefficients(n, k)
    order = xp.argsort(rewards, axis=-1)
    g = take_last(rewards, order, xp)
    diagonal, off = (as_constant(coefficients[name], rewards, xp) for name in ("diagonal", "off"))
    weights = diagonal * g + _exclusive_suffix_sum(off * g, xp)
    if variant in ("loo", "loo_minus_one"):
        rho = as_constant(coefficients["loo" if variant == "loo" else "loo_minus"], rewards, xp)
        # ranks of the others after removing sample i: j < i keep rank j, j > i move to j - 1
        others = _exclusive_prefix_sum(rho * g[..., :-1], xp)
        others = xp.concat([others, xp.sum(rho * g[..., :-1], axis=-1, keepdims=True)], axis=-1)
        others = others + _exclusive_suffix_sum(xp.concat([xp.zeros_like(g[..., :1]), rho * g[..., 1:]], axis=-1), xp)
        scale = k / (n - 1) if variant == "loo" else k / n
        weights = weights - scale * others
    elif variant == "mean_centred":
        weights = weights - xp.mean(weights, axis=-1, keepdims=True)
    weights = take_last(weights, _tie_block_top(g, xp), xp)
    return unsort(weights, order, xp)


def passk_training_advantages(rewards: Array, k: int, variant: str = "paper") -> Array:
    """Chen et al. (2025)'s analytic Pass@k Training advantages for binary rewards.

    Parameters
    ----------
    rewards : array of shape (..., n)
        0 or 1 (N_rollout = n samples of one prompt, N_neg = n - c failures).
    k : int
        1 <= k <= n.
    variant : {"paper", "code"}
        ``paper``: the formula of the paper and README, R̄ = 1 - C(N_neg,k)/C(n,k),
        σ = sqrt(R̄(1 - R̄)), A_pos = (1 - R̄)/σ, A_neg = (1 - R̄ - C(N_neg-1,k-1)/C(n-1,k-1))/σ;
        where σ = 0 (every sample fails, or every k-subset has a success) both numerators
        are exactly 0 and the advantages are 0. Evaluated as A_pos = sqrt(fail/R̄) and
        A_neg = -(c/N_neg) A_pos from exact integers, so they stay exact where fail and σ
        are below the float64 range (n = 2000, k = 1000, c = 999: A_pos = 2.2e-299). ``code``: the released
        ``code/passk_adv.py``, which divides by σ + 1e-6 (:data:`PASSK_TRAINING_CODE_EPS`):
        the same where σ >> 1e-6, damped where σ is small (σ = 7e-10 at n = 64, k = 32,
        N_neg = 32).

    Returns
    -------
    array of shape (..., n)
        The advantages A_i as published (GRPO-style: the loss averages A_i ∇log π over
        the group's responses).

    Notes
    -----
    Identity (derived, and pinned in ``tests/test_inference_aware.py``): σ A_i =
    (n/k)(s_i - s̄) with s PKPO's plain weights (:func:`pkpo_weights`) and s̄ their group
    mean, i.e. the numerators are the mean-centred PKPO weights scaled by n/k, and
    A_neg σ = -(c/n) C(N_neg-1,k-1)/C(n-1,k-1). So Σ_i (k/n) σ A_i ∇log π(y_i) has
    expectation (1 - k/n) ∇pass@k; the division by the group's σ changes the
    expected direction. Binomial ratios are exact (the code uses floating
    ``scipy.special.comb``: C(1030, 515) is inf).

    Examples
    --------
    >>> import numpy as np
    >>> a = passk_training_advantages(np.array([1, 0, 0, 0]), k=2)
    >>> [round(float(x), 6) for x in a]  # R̄ = 1/2, σ = 1/2: A_pos = 1, A_neg = (1/2 - 2/3)·2
    [1.0, -0.333333, -0.333333, -0.333333]
    """
    check_choice(variant, "variant", PASSK_TRAINING_VARIANTS)
    xp, rewards = _check_group(rewards)
    _binary(rewards, xp)
    n = rewards.shape[-1]
    k = _check_k(k, n)
    table = _pass_at_k_table(n, k)
    if variant == "code":
        denominator = np.sqrt(table["rho"] * table["fail"]) + PASSK_TRAINING_CODE_EPS
        positive_np = table["fail"] / denominator
        negative_np = -(np.arange(n + 1) / n) * table["neg_gap"] / denominator
    else:  # (1 - R̄)/σ = sqrt(fail/rho): no σ below the float64 range (C(n-c, k)/C(n, k) < 1e-308)
        positive_np, negative_np = table["sqrt_odds"], -table["neg_sqrt_odds"]
    positive, negative = (as_constant(x, rewards, xp) for x in (positive_np, negative_np))
    c = xp.astype(xp.sum(rewards, axis=-1, keepdims=True), xp.int64)
    return xp.where(rewards == 1, positive[c], negative[c])


def grpo_passk_advantages(rewards: Array, scale_rewards: str = "group", eps: float = GRPO_PASSK_EPS) -> Array:
    """verl's ``grpo_passk`` advantages: only the group's best sample gets r_max - r_2nd.

    Parameters
    ----------
    rewards : array of shape (..., n)
        n >= 2 rewards of one group, finite.
    scale_rewards : {"group", "none"}, default "group"
        ``group`` divides by the group's standard deviation (Bessel-corrected, ``torch.std``)
        plus ``eps`` (verl's ``norm_adv_by_std_in_grpo=True``, its default); ``none`` does not.
    eps : float, default 1e-6

    Returns
    -------
    array of shape (..., n)
        r_(n) - r_(n-1) (over the std + eps) at one sample of maximal reward, 0 elsewhere.
        With a tie at the top the margin is 0, so which tied sample verl's
        ``torch.topk`` picks never matters: every advantage is 0.

    Notes
    -----
    Tang et al. (2025, arXiv 2503.19595) estimate ∇E[max of the n samples] with a
    leave-one-out baseline: sample i's advantage is max_j g_j - max_{j≠i} g_j, which is
    0 except at the argmax (verl ``compute_grpo_passk_outcome_advantage``). It is PKPO's
    ``loo_minus_one`` at k = n, so with ``scale_rewards="none"`` Σ_i A_i ∇log π(y_i) is
    unbiased for ∇max@n (not for ∇max@k with k < n); the std normalisation changes its
    expectation.

    Examples
    --------
    >>> grpo_passk_advantages([1.0, 3.0, 2.0], scale_rewards="none").tolist()
    [0.0, 1.0, 0.0]
    >>> grpo_passk_advantages([3.0, 1.0, 3.0], scale_rewards="none").tolist()
    [0.0, 0.0, 0.0]
    """
    check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    eps = check_positive(eps, "eps", inclusive=True)
    xp, rewards = _check_group(rewards)
    n = rewards.shape[-1]
    if n < 2:
        raise ValueError(f"grpo_passk needs n >= 2 samples on the last axis; got {n}")
    top_two = xp.sort(rewards, axis=-1)[..., -2:]
    if scale_rewards == "group":  # in units of a power of two s: the std neither overflows nor underflows
        scale, std = scaled_group_std(rewards, xp)
        margin = top_two[..., 1] / scale[..., 0] - top_two[..., 0] / scale[..., 0]
        denominator = std[..., 0] + eps / scale[..., 0]
        margin = xp.where(margin > 0, margin / xp.where(margin > 0, denominator, 1.0), 0.0)  # std = 0: margin 0
    else:
        margin = top_two[..., 1] - top_two[..., 0]
    best = xp.argmax(rewards, axis=-1)
    positions = xp.arange(n, device=getattr(rewards, "device", None))
    return xp.where(positions == best[..., None], margin[..., None], xp.zeros_like(rewards))


# ------------------------------------------------------------------- exact moments


def _level_sums(values, level_index: np.ndarray, levels: int, xp):
    """Σ_i values[c, i] over the samples i of each level: shape (C, levels)."""
    rows = values.shape[0]
    flat = (level_index + levels * np.arange(rows)[:, None]).reshape(-1)
    if is_torch_namespace(xp):
        import torch

        index = torch.as_tensor(flat, device=values.device)
        out = torch.zeros(rows * levels, dtype=values.dtype, device=values.device)
        return out.scatter_add(0, index, values.reshape(-1)).reshape(rows, levels)
    return np.bincount(flat, weights=values.reshape(-1), minlength=rows * levels).reshape(rows, levels)


def exact_weight_moments(
    weight_fn: Callable[[Array], Array],
    probs: Array,
    rewards: Array,
    scores: Array,
    n: int,
) -> Moments:
    """Exact E[ĝ] and E‖ĝ‖² of ĝ = Σ_i w_i ∇log π(y_i) for n i.i.d. samples and any weights w(rewards).

    Parameters
    ----------
    weight_fn : callable
        Maps rewards of shape (C, n) (C groups, in the namespace and dtype of ``scores``)
        to weights of shape (C, n), e.g. ``lambda g: pkpo_weights(g, k)``. It must be
        permutation-equivariant (permuting a group's rewards permutes its weights, up to
        how tied samples share them); this is checked on the first 1024 multisets, with
        each group's order reversed.
    probs : array of shape (S,)
        π on the enumerated support (sums to 1).
    rewards : array of shape (S,)
        Reward of each string; finite where ``probs`` > 0.
    scores : array of shape (S, P)
        ∇ log π(y) of each string (e.g. :func:`bonmath.estimator_moments.per_output_gradients`).
    n : int
        Samples per group.

    Returns
    -------
    bonmath.estimator_moments.Moments
        ``mean`` (P,) = E[ĝ], ``second_moment`` = E‖ĝ‖² (``total_variance`` = tr Cov ĝ).

    Notes
    -----
    The weights depend on the samples only through their rewards, and given the rewards
    the strings are independent, y_i ~ π(· | r = r_i). With m_v = E[s | r = v] and
    τ_v = E[‖s‖² | r = v] per reward level v, and W_v, Q_v the sums of w_i and w_i² over
    the samples on level v:

        E[ĝ | rewards] = Σ_v W_v m_v,   E[‖ĝ‖² | rewards] = Σ_v Q_v (τ_v - ‖m_v‖²) + ‖Σ_v W_v m_v‖².

    The reward multiset is multinomial over the L levels, so both moments are finite sums
    over its C(n+L-1, L-1) values (refused above :data:`MAX_CONFIGURATIONS`): exact for
    any estimator, including normalised and non-linear ones.

    Examples
    --------
    π = softmax(θ) = (1/2, 1/2) with rewards (0, 1), so ∇_θ log π(y) = e_y - π; PKPO's
    weights with n = k = 2 are unbiased for ∇max@2 = 2 (1 - p) ∇p = (-1/4, 1/4). Only the
    pair (1, 1) gives a non-zero estimate, (-1, 1), with chance 1/4: E‖ĝ‖² = 1/2.

    >>> import numpy as np
    >>> scores = np.eye(2) - 0.5
    >>> moments = exact_weight_moments(lambda g: pkpo_weights(g, 2, "plain"), np.array([0.5, 0.5]),
    ...                                np.array([0.0, 1.0]), scores, n=2)
    >>> moments.mean.tolist(), round(moments.total_variance, 12)
    ([-0.25, 0.25], 0.375)
    """
    if not callable(weight_fn):
        raise InputTypeError(f"weight_fn must be a callable rewards -> weights; got {weight_fn!r}")
    n = check_count(n, "n")
    xp = namespace(scores)
    scores = float_array(scores, xp, name="scores")
    if bool(xp.any(~xp.isfinite(scores))):
        raise ValueError("scores must be finite (no NaN or ±inf)")
    probs_np = to_numpy(float_array(probs, namespace(probs), name="probs")).astype(np.float64)
    rewards_np = to_numpy(reward_arrays({"rewards": rewards}, namespace(rewards), as_numbers=True)[0]).astype(np.float64)
    for name, values in (("probs", probs_np), ("rewards", rewards_np)):
        if np.isnan(values).any():
            raise ValueError(f"{name} contains NaN")
    if scores.ndim != 2 or probs_np.shape != (scores.shape[0],) or rewards_np.shape != probs_np.shape:
        raise ValueError(f"probs (S,), rewards (S,) and scores (S, P) must agree; got {probs_np.shape}, "
                         f"{rewards_np.shape}, {tuple(scores.shape)}")
    if np.any(probs_np < 0) or abs(probs_np.sum() - 1.0) > 1e-9:
        raise ValueError("probs must be non-negative and sum to 1")
    keep = probs_np > 0
    if not np.all(np.isfinite(rewards_np[keep])):
        raise ValueError("rewards must be finite where probs > 0")
    values, level_of = np.unique(rewards_np[keep], return_inverse=True)
    L = len(values)
    count = math.comb(n + L - 1, L - 1)
    if count > MAX_CONFIGURATIONS:
        raise ValueError(f"{count} reward multisets (n={n}, {L} reward levels) exceed MAX_CONFIGURATIONS="
                         f"{MAX_CONFIGURATIONS}")
    keep_index = np.nonzero(keep)[0]
    p = as_constant(probs_np[keep], scores, xp)
    s = scores[as_index(keep_index, scores, xp)]
    level_probs = np.bincount(level_of, weights=probs_np[keep], minlength=L)
    onehot = as_constant((level_of[None, :] == np.arange(L)[:, None]).astype(np.float64), scores, xp)  # (L, S)
    level_p = as_constant(level_probs, scores, xp)
    means = (onehot * p) @ s / level_p[:, None]  # m_v, (L, P)
    tau = (onehot * p) @ xp.sum(s * s, axis=-1) / level_p  # τ_v
    gram = means @ means.T
    within = tau - xp.sum(means * means, axis=-1)  # E[‖s‖² | v] - ‖m_v‖²
    level_values = as_constant(values, scores, xp)
    with np.errstate(divide="ignore"):
        log_level_probs = np.log(level_probs)
    total_w = xp.zeros_like(level_p)
    second = 0.0
    all_counts = count_vectors(n, L)
    rows = max(1, _CHUNK // max(n, 1))
    for chunk, start in enumerate(range(0, len(all_counts), rows)):
        counts = all_counts[start:start + rows]
        log_prob = gammaln(n + 1) - gammaln(counts + 1).sum(1) + np.where(counts > 0, counts * log_level_probs, 0.0).sum(1)
        prob = as_constant(np.exp(log_prob), scores, xp)
        level_index = (np.arange(n)[None, :, None] >= np.cumsum(counts, axis=1)[:, None, :]).sum(-1)
        w = weight_fn(level_values[as_index(level_index, scores, xp)])
        if tuple(w.shape) != (len(counts), n):
            raise ValueError(f"weight_fn returned shape {tuple(w.shape)}; expected {(len(counts), n)}")
        W = _level_sums(w, level_index, L, xp)
        Q = _level_sums(w * w, level_index, L, xp)
        if chunk == 0:
            _check_equivariant(weight_fn, level_values, level_index[:_EQUIVARIANCE_ROWS], W[:_EQUIVARIANCE_ROWS],
                               Q[:_EQUIVARIANCE_ROWS], L, xp)
        total_w = total_w + prob @ W
        second = second + float(prob @ (Q @ within + xp.sum((W @ gram) * W, axis=-1)))
    from bonmath.estimator_moments import Moments  # imports torch: only here

    return Moments(mean=total_w @ means, second_moment=second)


def _check_equivariant(weight_fn, level_values, level_index: np.ndarray, W, Q, L: int, xp) -> None:
    """The per-level sums of w and w² must not depend on the order of a group's samples."""
    reversed_index = level_index[:, ::-1].copy()
    w = weight_fn(level_values[as_index(reversed_index, W, xp)])
    scale = float(xp.max(xp.abs(W))) + float(xp.max(xp.abs(Q))) + 1e-300
    gap = max(float(xp.max(xp.abs(_level_sums(w, reversed_index, L, xp) - W))),
              float(xp.max(xp.abs(_level_sums(w * w, reversed_index, L, xp) - Q))))
    if gap > 1e-9 * scale:
        raise ValueError("weight_fn is not permutation-equivariant: reversing each group's order changed the "
                         f"weights each reward level receives (by {gap:.3g})")
