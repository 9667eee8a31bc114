"""Exact mean and variance of the score-function gradient estimators of :mod:`bonmath.estimators`.

On an enumerated support every estimator of :mod:`bonmath.estimators` has the form

    ĝ(y_1..y_k) = (1/k) Σ_i v(y_i) + (1/k) Σ_i s(y_i) (f(y_i) - b_i),

with s(y) = ∇ log π_θ(y) the score, v(y) a per-string vector (the pathwise part
of a per-token loss, or a reward-to-go correction; 0 for a plain score function),
f(y) the value the score is weighted by, and b_i the baseline of
:func:`bonmath.estimators.advantages` (``none``, ``loo`` or ``mean``; the GRPO std
normalisation is not of this form and is only sampled). Writing it as

    ĝ = α Σ_i v_i + γ Σ_i s_i f_i + c Σ_{i≠j} s_i f_j,   α = 1/k,

(``none``: γ = 1/k, c = 0; ``loo``: γ = 1/k, c = -1/(k(k-1)); ``mean``:
γ = (k-1)/k², c = -1/k²), its mean and E||ĝ||² are finite sums over the support
(U-statistics of order 2), computed here from Gram matrices of v and s: no
sampling, any k. f may be random, independent of the samples and shared by
them (F̂ from one set of M reference samples): only its mean m(y) and its
two-point function K(y, y') = E[f(y) f(y')] enter.

The decomposition (v, s, f) of each KL placement is :func:`placement_vectors`;
``tests/test_estimators.py`` checks it, and these moments, against enumeration
of every k-tuple of samples pushed through the real surrogate losses.

(Over 400 lines on purpose: every estimator's exact moments share the per-string
coefficient machinery; about 40 % is docstrings.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from bonmath.backend import InputTypeError, to_numpy
from bonmath.enumeration import EnumeratedPair
from bonmath.estimators import BASELINES, KL_PLACEMENTS, advantages
from bonmath.validation import (
    check_choice,
    check_count,
    check_dims,
    check_one_dtype,
    check_parameters,
    check_tensor,
    normalization_tolerance,
)

__all__ = [
    "Moments",
    "baseline_coefficients",
    "estimate_coefficients",
    "exact_moments",
    "pair_scores",
    "per_output_gradients",
    "placement_vectors",
    "shared_log_cdf_estimate_moments",
]


def baseline_coefficients(k: int, baseline: str) -> tuple[float, float]:
    """(γ, c) of ĝ = (1/k) Σ v_i + γ Σ_i s_i f_i + c Σ_{i≠j} s_i f_j for a baseline.

    Examples
    --------
    >>> baseline_coefficients(4, "loo")
    (0.25, -0.08333333333333333)
    """
    k = check_count(k, "k")
    check_choice(baseline, "baseline", BASELINES)
    if baseline == "none":
        return 1.0 / k, 0.0
    if baseline == "loo":
        if k < 2:
            raise ValueError("baseline='loo' needs k >= 2")
        return 1.0 / k, -1.0 / (k * (k - 1))
    return (k - 1.0) / k**2, -1.0 / k**2


@dataclass(frozen=True)
class Moments:
    """Exact first and second moments of a gradient estimator.

    Attributes
    ----------
    mean : tensor of shape (P,)
        E[ĝ].
    second_moment : float
        E||ĝ||².

    Examples
    --------
    >>> import torch
    >>> Moments(mean=torch.tensor([3.0, 4.0]), second_moment=30.0).total_variance  # 30 - 3² - 4²
    5.0
    """

    mean: torch.Tensor
    second_moment: float

    @property
    def total_variance(self) -> float:
        """E||ĝ - E ĝ||² = tr Cov(ĝ) (clipped at 0 against rounding)."""
        return max(self.second_moment - float(self.mean @ self.mean), 0.0)


def exact_moments(
    probs: torch.Tensor,
    v: torch.Tensor | None,
    s: torch.Tensor,
    f_mean: torch.Tensor,
    f_second: torch.Tensor | None = None,
    *,
    k: int,
    baseline: str,
) -> Moments:
    """Exact E[ĝ] and E||ĝ||² for k i.i.d. samples from ``probs``.

    Parameters
    ----------
    probs : tensor of shape (S,)
        π_θ on the support (sums to 1).
    v : tensor of shape (S, P) or None
        Per-string pathwise vector (None: 0).
    s : tensor of shape (S, P)
        Per-string score ∇ log π_θ(y).
    f_mean : tensor of shape (S,)
        E[f(y)] (f itself when deterministic).
    f_second : tensor of shape (S, S), optional
        K(y, y') = E[f(y) f(y')] for a random f shared by the k samples;
        default ``outer(f_mean, f_mean)`` (deterministic f).
    k : int
        Samples per estimate.
    baseline : {"none", "loo", "mean"}

    Returns
    -------
    Moments

    Notes
    -----
    Projecting v and s on a direction u (``v @ u[:, None]``) gives the mean and
    variance of ⟨ĝ, u⟩.

    Examples
    --------
    π_θ = softmax(0, 0), target p = (1/4, 3/4), f = log π_θ - log p (the reverse-KL
    estimator of :func:`bonmath.estimators.reverse_kl_surrogate`), k = 2 with ``loo``: the
    estimate is (log 3 / 2)(±1, ∓1) when the samples differ (probability 1/2), else 0.

    >>> import torch
    >>> probs = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> scores = torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=torch.float64)
    >>> f = probs.log() - torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    >>> moments = exact_moments(probs, None, scores, f, k=2, baseline="loo")
    >>> moments.mean.tolist(), moments.second_moment  # ∇KL = (log 3 / 4)(1, -1); (log 3)² / 4
    ([0.274653072167, -0.274653072167], 0.301737)
    """
    gamma, c = baseline_coefficients(k, baseline)
    arrays = {"probs": (probs, "S"), "v": (v, "S P"), "s": (s, "S P"), "f_mean": (f_mean, "S"),
              "f_second": (f_second, "S S")}
    check_dims({name: (check_tensor(a, name, finite=True), axes) for name, (a, axes) in arrays.items()
                if a is not None or name not in ("v", "f_second")})
    check_one_dtype({name: a for name, (a, _) in arrays.items() if a is not None})
    if bool((probs < 0).any()) or abs(float(probs.sum()) - 1.0) > normalization_tolerance(probs.dtype):
        raise ValueError("probs must be a distribution on the support: non-negative, summing to 1")
    alpha = 1.0 / k
    p, m = probs, f_mean
    K = torch.outer(m, m) if f_second is None else f_second
    dK = torch.diagonal(K)
    pm = p @ m
    Kp = K @ p
    pKp = p @ Kp
    k1, k2, k3, k4 = k, k * (k - 1), k * (k - 1) * (k - 2), k * (k - 1) * (k - 2) * (k - 3)

    Es = p @ s
    mean = k1 * gamma * ((p * m) @ s) + k2 * c * pm * Es
    Gss = s @ s.T
    dss = torch.diagonal(Gss)
    Gss_p = Gss @ p
    pGssp = p @ Gss_p
    pdss = p @ dss
    pdK = p @ dK

    BB = gamma**2 * (k1 * (p @ (dss * dK)) + k2 * (p @ ((Gss * K) @ p)))
    BC = gamma * c * (
        k2 * ((p * dss) @ Kp) + k2 * ((p * dK) @ Gss_p) + k3 * (p @ (Gss_p * Kp))
    )
    CC = c**2 * (
        k2 * pdss * pdK
        + k2 * (p @ ((Gss * K.T) @ p))
        + k3 * pdss * pKp
        + k3 * pGssp * pdK
        + 2 * k3 * (p @ (Gss_p * Kp))
        + k4 * pGssp * pKp
    )
    second = BB + CC + 2 * BC
    if v is not None:
        mean = mean + k1 * alpha * (p @ v)
        Gvv = v @ v.T
        Gvs = v @ s.T  # Gvs[y, y'] = <v(y), s(y')>
        dvs = torch.diagonal(Gvs)
        AA = alpha**2 * (k1 * (p @ torch.diagonal(Gvv)) + k2 * (p @ Gvv @ p))
        AB = alpha * gamma * (k1 * (p @ (dvs * m)) + k2 * (p @ Gvs @ (p * m)))
        AC = alpha * c * (k2 * (p @ dvs) * pm + k2 * ((p * m) @ Gvs @ p) + k3 * (p @ Gvs @ p) * pm)
        second = second + AA + 2 * (AB + AC)
    return Moments(mean=mean, second_moment=float(second))


def estimate_coefficients(
    index: torch.Tensor,
    f_values: torch.Tensor,
    num_strings: int,
    *,
    baseline: str,
    scale_rewards: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled estimates as coefficients on the per-string vectors.

    ĝ_r = Σ_y a_r(y) v(y) + Σ_y w_r(y) s(y) with a_r = (counts of y in sample r)/k
    and w_r(y) = Σ_{i: y_i = y} A_{r,i}/k, A = :func:`bonmath.estimators.advantages`
    of the sampled values (so GRPO's ``scale_rewards="group"`` is covered too).

    Parameters
    ----------
    index : int tensor of shape (R, k)
        Support indices of R independent draws of k samples.
    f_values : tensor of shape (R, k)
        The value each sample's score is weighted by.
    num_strings : int
    baseline, scale_rewards
        As :func:`bonmath.estimators.advantages`.

    Returns
    -------
    a, w : tensors of shape (R, S)

    Examples
    --------
    Two draws of k = 2 samples on 3 strings: (0, 1) with values (1, 3), and (2, 2):

    >>> import torch
    >>> index = torch.tensor([[0, 1], [2, 2]])
    >>> a, w = estimate_coefficients(index, torch.tensor([[1.0, 3.0], [5.0, 5.0]]), 3, baseline="loo")
    >>> a.tolist(), w.tolist()  # leave-one-out advantages (-2, 2) and (0, 0), over k
    ([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], [[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    """
    check_choice(baseline, "baseline", BASELINES)
    num_strings = check_count(num_strings, "num_strings")
    check_dims({"index": (check_tensor(index, "index", "int"), "R k"),
                "f_values": (check_tensor(f_values, "f_values", finite=True), "R k")})
    if bool(((index < 0) | (index >= num_strings)).any()):
        raise ValueError(f"index must hold support indices in [0, num_strings = {num_strings})")
    R, k = index.shape
    dtype = f_values.dtype
    ones = torch.full((R, k), 1.0 / k, dtype=dtype)
    a = torch.zeros(R, num_strings, dtype=dtype).scatter_add_(1, index, ones)
    weights = advantages(f_values, baseline, scale_rewards) / k
    w = torch.zeros(R, num_strings, dtype=dtype).scatter_add_(1, index, weights)
    return a, w


def placement_vectors(
    placement: str | None,
    token_scores: torch.Tensor,
    mask: torch.Tensor,
    token_log_ratio: torch.Tensor,
    *,
    token_kl: torch.Tensor | None = None,
    kl_gradient: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The (v, f) of :func:`bonmath.estimators.kl_penalty_surrogate` on each string.

    Parameters
    ----------
    placement : one of :data:`bonmath.estimators.KL_PLACEMENTS`, or None (no KL term)
    token_scores : tensor of shape (S, T, P)
        ∇ log π_θ(y_t | y_<t) per string and position (0 at padding).
    mask : bool tensor of shape (S, T)
    token_log_ratio : tensor of shape (S, T)
        log π_θ(y_t|y_<t) - log π_ref(y_t|y_<t) (0 at padding).
    token_kl : tensor of shape (S, T), optional
        Analytic next-token KL at each position (``analytic*`` placements).
    kl_gradient : tensor of shape (S, P), optional
        ∇ Σ_t token_kl[y, t] (the pathwise part of ``analytic*``).

    Returns
    -------
    v : tensor of shape (S, P) or None
    f : tensor of shape (S,)
        The value multiplying the whole-sequence score, before the baseline.

    Examples
    --------
    One string of two tokens with scores 1 and 2 (P = 1) and log ratios 0.5 and 0.25:
    ``k1_reward`` weights the whole score by 0.75; ``reward_to_go`` weights the second
    token's by 0.25 only, i.e. f = 0.75 plus v = (0.25 - 0.75) · 2:

    >>> import torch
    >>> scores = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    >>> mask, log_ratio = torch.tensor([[True, True]]), torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    >>> placement_vectors("k1_reward", scores, mask, log_ratio)
    (None, tensor([0.7500], dtype=torch.float64))
    >>> v, f = placement_vectors("reward_to_go", scores, mask, log_ratio)
    >>> v.tolist(), f.tolist()
    ([[-1.0]], [0.75])
    """
    if placement is not None:
        check_choice(placement, "placement", KL_PLACEMENTS)
    arrays = {"token_scores": (token_scores, "S T P"), "token_log_ratio": (token_log_ratio, "S T"),
              "token_kl": (token_kl, "S T"), "kl_gradient": (kl_gradient, "S P")}
    checked = {name: (check_tensor(a, name, finite=True), axes) for name, (a, axes) in arrays.items()
               if a is not None or name not in ("token_kl", "kl_gradient")}
    check_dims({**checked, "mask": (check_tensor(mask, "mask", "bool"), "S T")})
    S = token_scores.shape[0]
    zero = torch.zeros(S, dtype=token_scores.dtype)
    lr = torch.where(mask, token_log_ratio, 0.0)
    score = token_scores.sum(1)
    if placement is None:
        return None, zero
    if placement == "k1_reward":
        return None, lr.sum(1)
    if placement == "k1_loss":
        return score, zero
    if placement == "k2_loss":
        return torch.einsum("st,stp->sp", lr, token_scores), zero
    if placement == "k3_loss":
        return torch.einsum("st,stp->sp", torch.where(mask, -torch.expm1(-lr), 0.0), token_scores), zero
    if placement == "reward_to_go":
        to_go = torch.flip(torch.cumsum(torch.flip(lr, (1,)), 1), (1,))
        v = torch.einsum("st,stp->sp", to_go, token_scores) - to_go[:, :1] * score
        return v, to_go[:, 0]
    if token_kl is None or kl_gradient is None:
        raise ValueError(f"placement {placement!r} needs token_kl and kl_gradient")
    kl = torch.where(mask, token_kl, 0.0)
    if placement == "analytic":
        return kl_gradient, zero
    after = torch.flip(torch.cumsum(torch.flip(kl, (1,)), 1), (1,)) - kl
    v = kl_gradient + torch.einsum("st,stp->sp", after, token_scores) - after[:, :1] * score
    return v, after[:, 0]


def shared_log_cdf_estimate_moments(
    log_cdf_lt: torch.Tensor, num_ref_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and two-point function of log F̂ ("add_one") from ONE set of M reference samples.

    F̂(y) = (1 + #{j: r_j < r(y)})/(M + 1) with the same M reference rewards for
    every y, so F̂ at two strings are dependent: for F_a <= F_b the counts are
    C_a ~ Binomial(M, F_a) and C_b = C_a + D with D | C_a = c ~ Binomial(M - c,
    (F_b - F_a)/(1 - F_a)).

    Parameters
    ----------
    log_cdf_lt : tensor of shape (S,)
        log F_lt(y) (exact) for each string.
    num_ref_samples : int
        M >= 1 reference samples.

    Returns
    -------
    mean : tensor of shape (S,)
        E[log F̂(y)] (equals :func:`bonmath.log_cdf_estimate_moments`).
    second : tensor of shape (S, S)
        E[log F̂(y) log F̂(y')].

    Examples
    --------
    With M = 1, log F̂(y) is -log 2 unless the one reference reward is below r(y) (then 0):

    >>> import torch
    >>> mean, second = shared_log_cdf_estimate_moments(torch.tensor([0.25, 0.75], dtype=torch.float64).log(), 1)
    >>> mean.tolist()  # -log 2 · (3/4, 1/4)
    [-0.519860385420, -0.173286795140]
    >>> second[0, 1].item()  # (log 2)² · P(the reference reward is above both) = (log 2)² / 4
    0.120113253480
    """
    m = check_count(num_ref_samples, "num_ref_samples")
    check_dims({"log_cdf_lt": (check_tensor(log_cdf_lt, "log_cdf_lt", log_probs=True), "S")})
    if log_cdf_lt.shape[0] == 0:
        raise ValueError("log_cdf_lt has an empty support (S = 0)")
    cdf = np.exp(to_numpy(log_cdf_lt).astype(np.float64))
    values, inverse = np.unique(cdf, return_inverse=True)
    counts = np.arange(m + 1)
    g = np.log1p(counts) - np.log(m + 1.0)
    pmf = binom.pmf(counts[None, :], m, values[:, None])  # (L, M+1)
    mean_levels = pmf @ g
    L = len(values)
    second_levels = np.empty((L, L))
    for a in range(L):
        second_levels[a, a] = pmf[a] @ g**2
        for b in range(a + 1, L):
            q = min(max((values[b] - values[a]) / (1.0 - values[a]), 0.0), 1.0) if values[a] < 1 else 0.0
            # inner[c] = E[g(c + D)], D ~ Binomial(M - c, q)
            d = counts[None, :]
            n_rest = (m - counts)[:, None]
            cond = binom.pmf(d, n_rest, q) * (d <= n_rest)
            shifted = np.where(d <= n_rest, g[np.minimum(counts[:, None] + d, m)], 0.0)
            inner = (cond * shifted).sum(1)
            second_levels[a, b] = second_levels[b, a] = pmf[a] @ (g * inner)
    mean = torch.as_tensor(mean_levels[inverse], dtype=log_cdf_lt.dtype)
    second = torch.as_tensor(second_levels[np.ix_(inverse, inverse)], dtype=log_cdf_lt.dtype)
    return mean, second


def per_output_gradients(outputs: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Jacobian rows ∇ outputs[j] w.r.t. ``params`` (flattened), one backward pass each.

    Parameters
    ----------
    outputs : tensor of shape (n,)
        With autograd graph; infinite entries (the -inf log-probability of a zero-mass
        string) give zero rows.
    params : sequence of tensors

    Returns
    -------
    tensor of shape (n, P)

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> outputs = torch.cat([torch.log_softmax(logits, 0), torch.tensor([-torch.inf], dtype=torch.float64)])
    >>> per_output_gradients(outputs, [logits]).tolist()  # ∇ log softmax; a zero row for -inf
    [[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0]]
    """
    check_dims({"outputs": (check_tensor(outputs, "outputs"), "n")})
    if not outputs.requires_grad:
        raise ValueError("outputs has no autograd graph (requires_grad is False)")
    params = check_parameters(params)
    total = sum(p.numel() for p in params)
    rows = torch.zeros(outputs.shape[0], total, dtype=outputs.dtype)
    for j in range(outputs.shape[0]):
        if not bool(torch.isfinite(outputs[j])):
            continue
        grads = torch.autograd.grad(outputs[j], params, retain_graph=True, allow_unused=True)
        rows[j] = torch.cat([
            (gr if gr is not None else torch.zeros_like(p)).reshape(-1) for gr, p in zip(grads, params)
        ])
    return rows


# ------------------------------------------------- per-string scores of an enumerated pair


def pair_scores(
    pair: EnumeratedPair, params: Sequence[torch.Tensor], keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scores and the pathwise analytic-KL gradient on the strings ``keep`` of a pair.

    Parameters
    ----------
    pair : bonmath.EnumeratedPair
        Unbatched, from :func:`bonmath.enumerate_pair` (policy with autograd graph).
    params : sequence of tensors
        The policy's parameters.
    keep : long tensor of shape (K,)
        Support positions (e.g. the strings with π_θ > 0).

    Returns
    -------
    token_scores : tensor of shape (K, T, P)
        ∇ log π_θ(y_t|y_<t) (0 at padding).
    kl_gradient : tensor of shape (K, P)
        ∇ Σ_t KL_t(y_<t), the gradient of :attr:`bonmath.EnumeratedPair.token_kl` summed over positions.

    Examples
    --------
    A two-token policy equal to its reference, on the strings (EOS), (1, EOS), (1, 1): the
    per-token scores add up to the sequence scores, and the KL is at its minimum:

    >>> import torch, bonmath
    >>> logits = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    >>> policy = bonmath.TabularLM.from_logits([logits[:1], logits[1:]])
    >>> pair = bonmath.enumerate_pair(policy, bonmath.TabularLM.from_logits([logits.detach()[:1]] * 2))
    >>> token_scores, kl_gradient = pair_scores(pair, [logits], torch.arange(3))
    >>> bool(torch.allclose(token_scores.sum(1), per_output_gradients(pair.policy_log_probs, [logits])))
    True
    >>> kl_gradient.abs().max().item()
    0.0
    """
    if not isinstance(pair, EnumeratedPair):
        raise InputTypeError(f"pair must be a bonmath.EnumeratedPair; got {pair!r}")
    params = check_parameters(params)
    keep = check_tensor(keep, "keep", "int")
    num_strings = pair.mask.shape[0]
    if keep.ndim != 1 or keep.numel() == 0 or bool((keep < 0).any()) or bool((keep >= num_strings).any()):
        raise ValueError(f"keep must be a non-empty 1-D tensor of support positions in [0, {num_strings}); got {keep!r}")
    T = pair.mask.shape[1]
    sub_mask = torch.as_tensor(pair.mask)[keep]
    flat = per_output_gradients(pair.token_log_probs[keep][sub_mask], params)
    token_scores = torch.zeros(len(keep), T, flat.shape[1], dtype=flat.dtype)
    token_scores[sub_mask] = flat
    kl_gradient = per_output_gradients(pair.token_kl[keep].sum(-1), params)
    return token_scores, kl_gradient
