"""Monte Carlo gradient estimators for vBoN and KL-regularised RL, as surrogate losses.

Every estimator here takes quantities computed on k samples y_1..y_k ~ π_θ (the
last axis; leading axes are a batch of prompts) and returns a *surrogate loss*:
a tensor whose gradient, in expectation over the samples, is the gradient of a
named quantity to be minimised (or a documented biased version of it). Values
that only weight a score ∇ log π_θ(y) are detached inside, so callers pass
log-probabilities with their autograd graph and call ``loss.sum().backward()``.

The exact gradients they estimate are :func:`exact_gradient` (autograd through an
enumerated support and the core functions). docs/math.md, "Gradients", states
the facts used below:

- ∇ KL(π_θ || p) = E_θ[∇ log π_θ(y) · (log π_θ(y) - log p(y))] (score function);
- a leave-one-out baseline (RLOO, Kool et al. 2019) keeps it unbiased; the mean
  of all k scales it by (k-1)/k; dividing by the group std (GRPO) changes it;
- as per-token *losses*, E[∇k1] = 0, E[∇k2] = ∇KL(π_θ||π_ref), E[∇k3] =
  ∇KL(π_ref||π_θ) for one token; on sequences the per-token placements drop the
  future terms, while the sequence-level score function, reward-to-go and the
  analytic per-token KL with its score terms are unbiased.

Conventions: log-probabilities are float tensors; ``-inf`` policy log-probability
at a *sampled* string is impossible and rejected. torch only (this module
imports torch; ``import bonmath`` does not import this module).

(Over 400 lines on purpose: every surrogate loss shares the baselines, KL placements and
reward scaling defined at its top; half of the file is docstrings.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bonmath.backend import NEG_INF, InputTypeError, expectation, namespace, scaled_group_std
from bonmath.bon import bon_log_probs
from bonmath.divergences import kl_divergence
from bonmath.enumeration import unwrap
from bonmath.objectives import kl_rl_objective, vbon_lower_bound
from bonmath.tabular import TabularLM
from bonmath.validation import (
    check_choice,
    check_n,
    check_parameters,
    check_positive,
    check_reward_numbers,
    check_tensor,
    prepare,
)

__all__ = [
    "BASELINES",
    "GRPO_STD_EPS",
    "KL_PLACEMENTS",
    "OBJECTIVES",
    "advantages",
    "analytic_token_kl",
    "exact_gradient",
    "flat_gradient",
    "kl_penalty_surrogate",
    "objective_loss",
    "reverse_kl_surrogate",
    "reward_surrogate",
    "tabular_token_distributions",
    "tabular_token_log_probs",
    "token_kl_estimates",
    "vbon_bound_surrogate",
    "vbon_surrogate",
]

BASELINES = ("none", "loo", "mean")
"""``none``; ``loo``: mean of the other k-1 values (RLOO, unbiased); ``mean``: mean of all k
(biased: the expected gradient is (k-1)/k times the true one)."""

GRPO_STD_EPS = 1e-4
"""TRL's GRPOTrainer: ``advantages / (std_grouped_rewards + 1e-4)``."""

KL_PLACEMENTS = ("k1_reward", "k1_loss", "k2_loss", "k3_loss", "reward_to_go", "analytic", "analytic_score")
"""Where a KL(π_θ||π_ref) penalty enters the loss; see :func:`kl_penalty_surrogate`."""

OBJECTIVES = ("vbon", "vbon_bound", "vbon_bound_kl_rl", "kl", "kl_rl", "reward")
"""Losses with exact gradients; see :func:`objective_loss`."""

TOKEN_KL_ESTIMATORS = ("k1", "k2", "k3")


# --------------------------------------------------------------------------- checks


def _samples(x, name: str, **checks) -> torch.Tensor:
    """A floating tensor with a non-empty sample axis (the last); ``checks`` as :func:`check_tensor`."""
    x = check_tensor(x, name, **checks)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty sample axis (the last axis); got shape {tuple(x.shape)}")
    return x


def _log_probs_at_samples(x, name: str, whose: str) -> torch.Tensor:
    """log-probabilities at sampled strings: <= 0 and finite (-inf: ``whose`` cannot draw the sample)."""
    x = _samples(x, name, log_probs=True)
    if bool(torch.isinf(x).any()):
        raise ValueError(f"{name} is -inf at a sample: {whose}")
    return x


def _policy_at_samples(policy_log_probs) -> torch.Tensor:
    return _log_probs_at_samples(
        policy_log_probs, "policy_log_probs", "samples must have positive policy mass"
    )


def _one_shape(arrays: dict[str, torch.Tensor]) -> None:
    if len({tuple(a.shape) for a in arrays.values()}) > 1:
        names, shapes = list(arrays), ", ".join(f"{name}{tuple(a.shape)}" for name, a in arrays.items())
        raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} must have one shape; got {shapes}")


# ------------------------------------------------------------------------ baselines


def advantages(
    values: torch.Tensor, baseline: str = "loo", scale_rewards: str = "none", eps: float = GRPO_STD_EPS
) -> torch.Tensor:
    """Detached advantages A_i = v_i - b_i of k sampled values (last axis).

    Parameters
    ----------
    values : tensor of shape (..., k)
        The value (return) of each sample, e.g. a reward or a log ratio.
    baseline : {"none", "loo", "mean"}
        ``none``: b_i = 0. ``loo``: b_i = (Σ_{j≠i} v_j)/(k-1), independent of sample i,
        so the score-function estimate stays unbiased (RLOO, Kool et al. 2019;
        TRL's ``RLOOTrainer``: ``(rlhf_reward.sum(0) - rlhf_reward) / (rloo_k - 1)``).
        ``mean``: b_i = (Σ_j v_j)/k, which contains v_i: the expected score-function
        gradient becomes (k-1)/k times the true one (GRPO's centring).
    scale_rewards : {"none", "group"}
        ``group`` divides by the group's sample standard deviation (Bessel-corrected,
        like ``torch.std``) plus ``eps``: GRPO's per-group scaling (TRL's
        ``GRPOConfig.scale_rewards="group"``). Not a constant, so it changes the
        expected gradient. ``none``: no scaling (TRL's ``"none"``).
    eps : float
        Added to the standard deviation (TRL uses 1e-4).

    Returns
    -------
    tensor of shape (..., k), detached.

    Examples
    --------
    >>> import torch
    >>> v = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
    >>> advantages(v, "loo").tolist()
    [-3.0, -1.5, 4.5]
    >>> advantages(v, "mean").tolist()
    [-2.0, -1.0, 3.0]
    """
    check_choice(baseline, "baseline", BASELINES)
    check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    eps = check_positive(eps, "eps", inclusive=True)
    values = _samples(values, "values", finite=True).detach()
    k = values.shape[-1]
    if baseline == "loo" and k < 2:
        raise ValueError("baseline='loo' needs k >= 2 samples on the last axis")
    if scale_rewards == "group" and k < 2:
        raise ValueError("scale_rewards='group' needs k >= 2 samples on the last axis")
    if baseline == "none":
        out = values
    elif baseline == "loo":
        out = values - (values.sum(-1, keepdim=True) - values) / (k - 1)
    else:
        out = values - values.mean(-1, keepdim=True)
    if scale_rewards == "group":  # in units of a power of two s: the std neither overflows nor underflows
        scale, std = scaled_group_std(values, namespace(values))
        out = (out / scale) / (std + eps / scale)
    return out


# ---------------------------------------------------------------- sequence level


def reverse_kl_surrogate(
    policy_log_probs: torch.Tensor, target_log_probs: torch.Tensor, baseline: str = "loo"
) -> torch.Tensor:
    """Score-function surrogate whose expected gradient is ∇_θ KL(π_θ || target).

    Parameters
    ----------
    policy_log_probs : tensor of shape (..., k)
        log π_θ(y_i) of k samples y_i ~ π_θ, with autograd graph.
    target_log_probs : tensor of shape (..., k)
        log p(y_i) of the target (detached inside). May be unnormalised: a
        constant offset changes no expectation, since E_θ[∇ log π_θ] = 0.
    baseline : {"none", "loo", "mean"}
        See :func:`advantages`.

    Returns
    -------
    tensor of shape (...)
        (1/k) Σ_i log π_θ(y_i) · A_i with A = advantages(log π_θ - log p).

    Notes
    -----
    ∇ KL(π_θ||p) = E_θ[∇ log π_θ(y) (log π_θ(y) - log p(y))] (docs/math.md,
    "Gradients"). Expected gradient: exactly ∇ KL(π_θ||p) for ``none`` and ``loo``;
    (k-1)/k ∇ KL(π_θ||p) for ``mean``.

    With p = π_N (log p = log π_ref + R_N) this is the vBoN gradient -∇J
    (:func:`vbon_surrogate`). With p = π_ref and ``loo`` it is TRL's RLOO
    treatment of the KL penalty: k1 = log π_θ - log π_ref summed over tokens and
    put into the reward, then leave-one-out advantages (``RLOOTrainer``:
    ``non_score_reward = (-kl_coef * kl).sum(1)``); ``tests/test_estimators.py``
    pins the equivalence.

    Examples
    --------
    Two strings, π_θ = (1/2, 1/2), target (1/4, 3/4), samples y = (0, 1):

    >>> import torch
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> policy = torch.log_softmax(logits, 0)
    >>> target = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    >>> y = torch.tensor([0, 1])
    >>> reverse_kl_surrogate(policy[y], target[y]).backward()
    >>> logits.grad.tolist()  # this pair's estimate (log 3 / 2)(1, -1); exact: (log 3 / 4)(1, -1)
    [0.549306144334, -0.549306144334]
    """
    policy_log_probs = _policy_at_samples(policy_log_probs)
    target_log_probs = _samples(target_log_probs, "target_log_probs")
    if bool(torch.isinf(target_log_probs).any()):
        raise ValueError(
            "target_log_probs is not finite at a sample: the target has no mass at a sampled string "
            "(the KL is infinite)"
        )
    _one_shape({"policy_log_probs": policy_log_probs, "target_log_probs": target_log_probs})
    values = (policy_log_probs - target_log_probs).detach()
    return (policy_log_probs * advantages(values, baseline)).mean(-1)


def reward_surrogate(
    policy_log_probs: torch.Tensor,
    rewards: torch.Tensor,
    baseline: str = "loo",
    scale_rewards: str = "none",
    eps: float = GRPO_STD_EPS,
) -> torch.Tensor:
    """REINFORCE surrogate whose expected gradient is -∇_θ E_θ[r] (or a biased version).

    Parameters
    ----------
    policy_log_probs : tensor of shape (..., k)
        log π_θ(y_i) of k samples from π_θ, with autograd graph.
    rewards : tensor of shape (..., k)
        r(y_i) (detached inside); finite.
    baseline, scale_rewards, eps
        See :func:`advantages`.

    Returns
    -------
    tensor of shape (...)
        -(1/k) Σ_i log π_θ(y_i) · A_i.

    Notes
    -----
    Expected gradient: -∇E_θ[r] for ``none``/``loo`` without normalisation;
    -(k-1)/k ∇E_θ[r] for ``mean``. ``scale_rewards="group"`` is GRPO's advantage
    (Shao et al. 2024; TRL ``GRPOTrainer``: ``(rewards - mean) / (std + 1e-4)``):
    its expected gradient is not proportional to ∇E_θ[r] in general (it
    down-weights groups with spread-out rewards), so it is biased; the bias is
    measured in ``tests/test_estimators.py`` and ``benchmarks/estimator_variance.py``.

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> policy = torch.log_softmax(logits, 0)
    >>> y = torch.tensor([0, 1, 1])
    >>> reward_surrogate(policy[y], torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)).backward()
    >>> logits.grad.tolist()  # this triple's estimate; exact -∇E[r] = (1/4, -1/4)
    [0.333333333333, -0.333333333333]
    """
    policy_log_probs = _policy_at_samples(policy_log_probs)
    rewards = _samples(rewards, "rewards", finite=True).detach()
    _one_shape({"policy_log_probs": policy_log_probs, "rewards": rewards})
    return -(policy_log_probs * advantages(rewards, baseline, scale_rewards, eps)).mean(-1)


def vbon_surrogate(
    policy_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    log_ratio: torch.Tensor,
    baseline: str = "loo",
) -> torch.Tensor:
    """The vBoN gradient estimator: expected gradient -∇J = ∇ KL(π_θ || π_N).

    Parameters
    ----------
    policy_log_probs : tensor of shape (..., k)
        log π_θ(y_i), with autograd graph.
    ref_log_probs : tensor of shape (..., k)
        log π_ref(y_i).
    log_ratio : tensor of shape (..., k)
        R_N(y_i) = log π_N(y_i) - log π_ref(y_i) with the *exact* CDF
        (:func:`bonmath.bon_log_ratio`, or :func:`bonmath.bon_log_ratio_from_cdf`).
    baseline : {"none", "loo", "mean"}

    Returns
    -------
    tensor of shape (...)

    Notes
    -----
    J = E_θ[R_N] - KL(π_θ||π_ref) = -KL(π_θ||π_N) (docs/math.md, "vBoN"): KL-RL
    with reward R_N and β = 1, here with the KL as k1 in the reward. This is
    :func:`reverse_kl_surrogate` with target log π_ref + R_N. Unbiased for
    ``none`` and ``loo``; ``mean`` gives (k-1)/k of it.

    Examples
    --------
    π_θ = π_ref = (1/2, 1/2), rewards (0, 1), N = 2. Averaged over every pair of samples
    (weighted by its probability), the estimate is the exact gradient of :func:`exact_gradient`:

    >>> import torch, bonmath
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> policy, ref = torch.log_softmax(logits, 0), torch.full((2,), 0.5, dtype=torch.float64).log()
    >>> log_ratio = bonmath.bon_log_ratio(ref, torch.tensor([0.0, 1.0], dtype=torch.float64), 2)
    >>> y = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])  # every pair of k = 2 samples
    >>> (policy[y].sum(-1).exp().detach() @ vbon_surrogate(policy[y], ref[y], log_ratio[y])).backward()
    >>> logits.grad.tolist()  # exact: (log 3 / 4)(1, -1)
    [0.274653072167, -0.274653072167]
    """
    policy_log_probs = _policy_at_samples(policy_log_probs)
    ref_log_probs = _log_probs_at_samples(ref_log_probs, "ref_log_probs", "π_ref has no mass at a sampled string")
    log_ratio = _samples(log_ratio, "log_ratio", finite=True)
    _one_shape({"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs, "log_ratio": log_ratio})
    return reverse_kl_surrogate(policy_log_probs, ref_log_probs + log_ratio, baseline)


def vbon_bound_surrogate(
    policy_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    log_cdf_lt: torch.Tensor,
    n: float,
    baseline: str = "loo",
    scale: str = "bound",
) -> torch.Tensor:
    """The vBoN lower-bound estimator: expected gradient -∇L (or -∇L/(N-1)).

    Parameters
    ----------
    policy_log_probs : tensor of shape (..., k)
        log π_θ(y_i), with autograd graph.
    ref_log_probs : tensor of shape (..., k)
        log π_ref(y_i).
    log_cdf_lt : tensor of shape (..., k)
        log F_lt(y_i) = log P_ref(r(Y') < r(y_i)), exact (:func:`bonmath.reward_cdf`)
        or estimated from M reference samples (:func:`bonmath.estimate_log_cdf`
        with ``"add_one"``, the paper's practice). Must be finite at the samples.
    n : float
        N >= 1 (``scale="kl_rl"`` needs N > 1).
    baseline : {"none", "loo", "mean"}
    scale : {"bound", "kl_rl"}
        ``bound``: values log π_θ - log π_ref - (N-1) log F, expected gradient -∇L.
        ``kl_rl``: the same divided by N-1: expected gradient -∇L/(N-1), the
        gradient of -(E_θ[log F_lt] - β KL(π_θ||π_ref)) with β = 1/(N-1), which
        is how the vBoN paper's released code trains (n = 1/β + 1).

    Returns
    -------
    tensor of shape (...)

    Notes
    -----
    L = log N + (N-1) E_θ[log F_lt] - KL(π_θ||π_ref) <= J (Amini et al. 2025;
    docs/math.md, "vBoN"); -∇L = ∇ KL(π_θ || π_ref F_lt^(N-1)/Z), so this is
    :func:`reverse_kl_surrogate` with an unnormalised target. L = -inf when
    π_θ has mass on the lowest reward level (F_lt = 0) and N > 1.

    With the exact F the estimate is unbiased (``none``/``loo``). With F̂ from M
    reference samples it is biased even with ``loo``: given the reference
    samples the estimate is unbiased for the gradient with log F̂ in place of
    log F_lt, so its expectation is -∇L + (N-1) E_θ[∇ log π_θ(y) (E[log F̂(y)] -
    log F_lt(y))], where E[log F̂] is the Binomial(M, F_lt) sum of
    :func:`bonmath.log_cdf_estimate_moments`. The benchmark
    ``benchmarks/estimator_variance.py`` reports its size against M.

    Examples
    --------
    Three equally likely strings with rewards (0, 1, 2); π_θ has no mass on the lowest
    (where F_lt = 0 and L = -inf). Averaged over every pair of samples (weighted by its
    probability), the estimate with the exact F_lt is the exact gradient -∇L:

    >>> import torch, bonmath
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> policy = torch.cat([torch.tensor([-torch.inf], dtype=torch.float64), torch.log_softmax(logits, 0)])
    >>> ref, rewards = torch.full((3,), 1 / 3, dtype=torch.float64).log(), torch.tensor([0.0, 1.0, 2.0])
    >>> log_cdf_lt, _ = bonmath.reward_cdf(ref, rewards)
    >>> y = torch.tensor([[1, 1], [1, 2], [2, 1], [2, 2]])  # every pair of k = 2 samples from π_θ
    >>> losses = vbon_bound_surrogate(policy[y], ref[y], log_cdf_lt[y], 4)
    >>> flat_gradient(policy[y].sum(-1).exp().detach() @ losses, [logits]).tolist()
    [0.519860385420, -0.519860385420]
    >>> exact_gradient("vbon_bound", policy, ref, [logits], rewards=rewards, n=4).tolist()
    [0.519860385420, -0.519860385420]
    """
    n = check_n(n)
    check_choice(scale, "scale", ("bound", "kl_rl"))
    if n < 1:
        raise ValueError(f"n must be >= 1 for the vBoN lower bound; got {n:g}")
    if scale == "kl_rl" and n == 1:
        raise ValueError("scale='kl_rl' divides by N - 1: it needs n > 1")
    policy_log_probs = _policy_at_samples(policy_log_probs)
    ref_log_probs = _log_probs_at_samples(ref_log_probs, "ref_log_probs", "π_ref has no mass at a sampled string")
    log_cdf_lt = _samples(log_cdf_lt, "log_cdf_lt", log_probs=True).detach()
    _one_shape({"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs, "log_cdf_lt": log_cdf_lt})
    if n > 1 and bool((log_cdf_lt == NEG_INF).any()):
        raise ValueError(
            "log_cdf_lt is -inf at a sample (a string on the lowest reward level, F_lt = 0): "
            "L = -inf there; estimate F with estimate_log_cdf(..., 'add_one') or use a policy "
            "without mass on that level"
        )
    bonus = (n - 1.0) * log_cdf_lt if n > 1 else torch.zeros_like(log_cdf_lt)
    values = (policy_log_probs - ref_log_probs - bonus).detach()
    if scale == "kl_rl":
        values = values / (n - 1.0)
    return (policy_log_probs * advantages(values, baseline)).mean(-1)


# ------------------------------------------------------------------- token level


def token_kl_estimates(
    token_log_probs: torch.Tensor, ref_token_log_probs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """Schulman's per-token KL estimators, with ρ = π_ref(y_t|y_<t) / π_θ(y_t|y_<t).

    Parameters
    ----------
    token_log_probs, ref_token_log_probs : tensors of the same shape
        log π_θ and log π_ref of the sampled tokens (policy with autograd graph).
    estimator : {"k1", "k2", "k3"}
        k1 = -log ρ; k2 = (log ρ)²/2; k3 = ρ - 1 - log ρ (computed as
        expm1(log ρ) - log ρ; TRL's GRPO writes ``exp(x) - x - 1``).

    Returns
    -------
    tensor of the same shape, differentiable through ``token_log_probs``.

    Notes
    -----
    As values (samples from π_θ) k1 and k3 are unbiased for KL(π_θ||π_ref) on one
    token and k2 is biased. As *losses* their gradients are
    ∇k1 = ∇log π_θ, ∇k2 = -log ρ · ∇log π_θ, ∇k3 = (1 - ρ) ∇log π_θ, so
    E[∇k1] = 0, E[∇k2] = ∇KL(π_θ||π_ref), E[∇k3] = ∇KL(π_ref||π_θ) (docs/math.md).

    Examples
    --------
    >>> import torch
    >>> x = torch.log(torch.tensor([0.5], dtype=torch.float64))
    >>> [round(float(token_kl_estimates(x, x - 1.0, e)), 6) for e in ("k1", "k2", "k3")]
    [1.0, 0.5, 0.367879]
    """
    check_choice(estimator, "estimator", TOKEN_KL_ESTIMATORS)
    token_log_probs = _log_probs_at_samples(token_log_probs, "token_log_probs", "the policy cannot draw that token")
    ref_token_log_probs = _log_probs_at_samples(
        ref_token_log_probs, "ref_token_log_probs", "π_ref has no mass at a sampled token (the KL is infinite)"
    )
    _one_shape({"token_log_probs": token_log_probs, "ref_token_log_probs": ref_token_log_probs})
    log_rho = ref_token_log_probs.detach() - token_log_probs
    if estimator == "k1":
        return -log_rho
    if estimator == "k2":
        return 0.5 * log_rho**2
    return torch.expm1(log_rho) - log_rho


def analytic_token_kl(token_dists: torch.Tensor, ref_token_dists: torch.Tensor) -> torch.Tensor:
    """KL(π_θ(·|y_<t) || π_ref(·|y_<t)) over the whole vocabulary at every position.

    Parameters
    ----------
    token_dists, ref_token_dists : tensors of shape (..., T, V)
        Next-token log-distributions (e.g. ``CausalLMPolicy.token_distributions``
        or :func:`tabular_token_distributions`); the policy's with autograd graph.

    Returns
    -------
    tensor of shape (..., T)
        Σ_v π_θ(v)(log π_θ(v) - log π_ref(v)) with 0 log 0 = 0 (a token outside a
        top-k set contributes 0 and a zero gradient). Rows at padded positions
        are whatever the inputs hold there; mask them.

    Examples
    --------
    >>> import torch
    >>> policy = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64).log()
    >>> ref = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64).log()
    >>> analytic_token_kl(policy, ref).tolist()  # (log(4/3) / 2, log 2)
    [0.143841036226, 0.693147180560]
    """
    token_dists = _samples(token_dists, "token_dists", log_probs=True)
    ref_token_dists = _samples(ref_token_dists, "ref_token_dists", log_probs=True)
    _one_shape({"token_dists": token_dists, "ref_token_dists": ref_token_dists})
    return expectation(token_dists, token_dists - ref_token_dists.detach(), namespace(token_dists))


def kl_penalty_surrogate(
    token_log_probs: torch.Tensor,
    ref_token_log_probs: torch.Tensor,
    mask: torch.Tensor,
    placement: str = "k1_reward",
    baseline: str = "loo",
    token_kl: torch.Tensor | None = None,
) -> torch.Tensor:
    """Surrogate for the gradient of KL(π_θ || π_ref) on sequences, by placement.

    Parameters
    ----------
    token_log_probs : tensor of shape (..., k, T)
        log π_θ(y_t | y_<t) of k sampled sequences, with autograd graph.
    ref_token_log_probs : tensor of shape (..., k, T)
        log π_ref(y_t | y_<t).
    mask : bool tensor of shape (..., k, T)
        True at real tokens (EOS included), False at padding.
    placement : str
        One of :data:`KL_PLACEMENTS`:

        ``k1_reward``
            Sequence level, in the reward (TRL ``RLOOTrainer``): the score
            ∇log π_θ(y) times the summed log ratio Σ_t log(π_θ/π_ref), with
            ``baseline``. **Unbiased** (``none``/``loo``).
        ``k1_loss``, ``k2_loss``, ``k3_loss``
            Per token, in the loss (TRL ``GRPOTrainer`` uses k3): Σ_t k_x(ρ_t)
            with the gradient flowing through π_θ(y_t|y_<t). Expected gradients
            E[Σ_t ∇log π_t] = 0 (k1), E[Σ_t log(π_θ/π_ref)_t ∇log π_t] (k2) and
            E[Σ_t ∇KL(π_ref(·|y_<t)||π_θ(·|y_<t))] (k3): each drops the future
            terms E[∇log π_t Σ_{t'>t} (...)] of the sequence gradient, and k3
            also replaces reverse by forward KL per token. **Biased** on
            sequences (k2 is exact for one-token sequences).
        ``reward_to_go``
            Σ_t ∇log π_θ(y_t|y_<t) · (Σ_{t'>=t} log(π_θ/π_ref)_{t'} - b): each
            token's score times the log ratio still to come. **Unbiased**.
        ``analytic``
            Σ_t KL_t(y_<t), the exact next-token KL over the vocabulary, with
            the gradient through it only. Its expected gradient is exactly that
            of ``k2_loss`` (∇KL_t = E_{y_t}[log(π_θ/π_ref)_t ∇log π_t]: it is k2
            Rao-Blackwellised over the last token) and drops how the prefix
            distribution moves: **biased**.
        ``analytic_score``
            ``analytic`` plus the score terms Σ_t ∇log π_θ(y_t|y_<t) ·
            (Σ_{t'>t} KL_{t'}(y_<t') - b). **Unbiased**: KL(π_θ||π_ref) =
            E_θ[Σ_t KL_t(y_<t)] and these are its pathwise and score parts.
    baseline : {"none", "loo", "mean"}
        For the score terms (``k1_reward``, ``reward_to_go``, ``analytic_score``):
        b is computed by :func:`advantages` from each sequence's whole return
        (the first token's weight), and subtracted at every token; ``loo`` keeps
        them unbiased. The per-token losses (``k*_loss``, ``analytic``) have no
        score term and ignore it.
    token_kl : tensor of shape (..., k, T), optional
        :func:`analytic_token_kl` of the sampled prefixes, with autograd graph;
        required by ``analytic`` and ``analytic_score``.

    Returns
    -------
    tensor of shape (...)
        The surrogate, averaged over the k samples. Multiply by β for a penalty β KL.

    Notes
    -----
    KL(π_θ||π_ref) = E_θ[Σ_t log(π_θ/π_ref)(y_t|y_<t)] for sequences ended by EOS
    or the length limit, and its gradient is
    E_θ[Σ_t ∇log π_θ(y_t|y_<t) Σ_{t'>=t} log(π_θ/π_ref)_{t'}] (past terms have
    zero mean). docs/math.md, "Gradients"; Schulman (2020), "Approximating KL
    divergence"; TRL's GRPO k3 placement is pinned in ``tests/test_estimators.py``.

    Examples
    --------
    A two-token policy and a uniform reference on the strings (EOS), (1, EOS), (1, 1).
    Averaged over every pair of samples (weighted by its probability), the unbiased
    ``k1_reward`` gives the exact ∇KL(π_θ||π_ref) of :func:`exact_gradient`; GRPO's
    ``k3_loss`` does not:

    >>> import torch, bonmath
    >>> logits = torch.tensor([[0.0, 1.0], [0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    >>> uniform = TabularLM.from_logits([torch.zeros(1, 2, dtype=torch.float64)] * 2)
    >>> pair = bonmath.enumerate_pair(TabularLM.from_logits([logits[:1], logits[1:]]), uniform)
    >>> y = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # every pair of k = 2 samples
    >>> def mean_gradient(placement):
    ...     losses = kl_penalty_surrogate(pair.token_log_probs[y], pair.ref_token_log_probs[y], pair.mask[y], placement)
    ...     return flat_gradient(pair.policy_log_probs[y].sum(-1).exp().detach() @ losses, [logits]).tolist()
    >>> exact_gradient("kl", pair.policy_log_probs, pair.ref_log_probs, [logits]).tolist()
    [-0.2184, 0.2184, 0.1437, -0.1437]
    >>> mean_gradient("k1_reward")
    [-0.2184, 0.2184, 0.1437, -0.1437]
    >>> mean_gradient("k3_loss")
    [-0.2311, 0.2311, 0.1689, -0.1689]
    """
    check_choice(placement, "placement", KL_PLACEMENTS)
    check_choice(baseline, "baseline", BASELINES)
    token_log_probs = _samples(token_log_probs, "token_log_probs", log_probs=True)
    if token_log_probs.ndim < 2:
        raise ValueError(f"token_log_probs must have shape (..., k, T); got {tuple(token_log_probs.shape)}")
    arrays = {
        "token_log_probs": token_log_probs,
        "ref_token_log_probs": check_tensor(ref_token_log_probs, "ref_token_log_probs", log_probs=True),
        "mask": check_tensor(mask, "mask", "bool"),
    }
    if token_kl is not None:
        arrays["token_kl"] = check_tensor(token_kl, "token_kl", finite=True)
    _one_shape(arrays)
    zero = torch.zeros((), dtype=token_log_probs.dtype, device=token_log_probs.device)
    lp = torch.where(mask, token_log_probs, zero)
    ref = torch.where(mask, ref_token_log_probs.detach(), zero)
    if bool((lp == NEG_INF).any()):
        raise ValueError("token_log_probs is -inf at a real token: samples must have positive policy mass")
    if bool((ref == NEG_INF).any()):
        raise ValueError("ref_token_log_probs is -inf at a real token: π_ref has no mass at a sampled token "
                         "(the KL is infinite)")

    if placement in ("k1_loss", "k2_loss", "k3_loss"):
        per_token = token_kl_estimates(lp, ref, placement[:2])
        return torch.where(mask, per_token, zero).sum(-1).mean(-1)

    if placement in ("analytic", "analytic_score"):
        if token_kl is None:
            raise ValueError(f"placement={placement!r} needs token_kl of shape {tuple(token_log_probs.shape)}")
        kl = torch.where(mask, token_kl, zero)
        pathwise = kl.sum(-1)
        if placement == "analytic":
            return pathwise.mean(-1)
        weights = _suffix_sum(kl.detach()) - kl.detach()  # Σ_{t'>t} KL_t'
        return (pathwise + _score_terms(lp, weights, mask, baseline)).mean(-1)

    log_ratio = (lp - ref).detach()
    if placement == "k1_reward":
        values = log_ratio.sum(-1)
        return (lp.sum(-1) * advantages(values, baseline)).mean(-1)
    return _score_terms(lp, _suffix_sum(log_ratio), mask, baseline).mean(-1)  # reward_to_go


def _suffix_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ_{t'>=t} x_t' along the last axis."""
    return torch.flip(torch.cumsum(torch.flip(x, (-1,)), -1), (-1,))


def _score_terms(lp: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, baseline: str) -> torch.Tensor:
    """Σ_t log π_t · (w_t - b) with b the baseline of the sequences' first-token weights w_0."""
    baseline_value = weights[..., 0] - advantages(weights[..., 0], baseline)
    centred = torch.where(mask, weights - baseline_value[..., None], torch.zeros_like(weights))
    return (lp * centred).sum(-1)


# --------------------------------------------------------------- exact gradients


def objective_loss(
    objective: str,
    policy_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    *,
    rewards=None,
    n: float | None = None,
    beta: float = 1.0,
) -> torch.Tensor:
    """The exact loss (negated objective) on an enumerated support, differentiable.

    Parameters
    ----------
    objective : str
        One of :data:`OBJECTIVES`:

        ``vbon``: -J = KL(π_θ || π_N) (needs ``rewards``, ``n``).
        ``vbon_bound``: -L (needs ``rewards``, ``n``); raises when L = -inf.
        ``vbon_bound_kl_rl``: -L/(N-1), i.e. -(E_θ[log F_lt] - KL(π_θ||π_ref)/(N-1)) + const.
        ``kl``: KL(π_θ || π_ref).
        ``kl_rl``: -(E_θ[r] - β KL(π_θ||π_ref)) (rewards as in :func:`bonmath.kl_rl_objective`).
        ``reward``: -E_θ[r] (likewise: +inf refused where π_θ > 0).
    policy_log_probs, ref_log_probs : tensors of shape (..., S), or bonmath.Enumeration
        On one enumerated support (e.g. ``pair.policy`` and ``pair.reference`` of
        :func:`bonmath.enumerate_pair`), the policy's with autograd graph.
        Enumerations must hold the same strings (checked).
    rewards : array of shape (..., S)
    n : float
    beta : float

    Returns
    -------
    tensor of shape (...)

    Examples
    --------
    >>> import torch, bonmath
    >>> policy = torch.log_softmax(torch.zeros(2, dtype=torch.float64, requires_grad=True), 0)
    >>> ref = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    >>> objective_loss("kl", policy, ref).item()  # log(4/3) / 2
    0.143841036226
    >>> objective_loss("reward", policy, ref, rewards=[0.0, 1.0]).item()  # -E_θ[r]
    -0.5
    >>> objective_loss("vbon", policy, policy.detach(), rewards=[0.0, 1.0], n=2).item()  # KL(π_θ || π_2)
    0.143841036226
    """
    check_choice(objective, "objective", OBJECTIVES)
    beta = check_positive(beta, "beta")
    policy_log_probs, ref_log_probs = unwrap(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs}
    ).values()
    if objective in ("vbon", "vbon_bound", "vbon_bound_kl_rl", "kl_rl", "reward") and rewards is None:
        raise ValueError(f"objective {objective!r} needs rewards")
    if objective in ("vbon", "vbon_bound", "vbon_bound_kl_rl") and n is None:
        raise ValueError(f"objective {objective!r} needs n")
    xp, (policy_log_probs, ref_log_probs) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs}
    )
    if objective == "vbon":
        assert n is not None  # refused above: narrows the type
        return kl_divergence(policy_log_probs, bon_log_probs(ref_log_probs, rewards, n))
    if objective in ("vbon_bound", "vbon_bound_kl_rl"):
        assert n is not None  # refused above: narrows the type
        bound = vbon_lower_bound(policy_log_probs, ref_log_probs, rewards, n)
        if bool((bound == NEG_INF).any()):
            raise ValueError("the vBoN bound is -inf: π_θ has mass on the lowest reward level (F_lt = 0)")
        if objective == "vbon_bound":
            return -bound
        if n <= 1:
            raise ValueError("vbon_bound_kl_rl divides by N - 1: it needs n > 1")
        return -bound / (n - 1.0)
    if objective == "kl":
        return kl_divergence(policy_log_probs, ref_log_probs)
    if objective == "kl_rl":
        return -kl_rl_objective(policy_log_probs, ref_log_probs, rewards, beta)
    _, (policy_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs}, {"rewards": rewards}, rewards_as_numbers=True
    )
    rewards = check_reward_numbers(rewards, policy_log_probs, "rewards", xp, why=": E_θ[r] would be +inf")
    return -expectation(policy_log_probs, xp.astype(rewards, policy_log_probs.dtype), xp)


def flat_gradient(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """∇ loss w.r.t. ``params``, flattened and concatenated (zeros for unused parameters).

    The graph is kept (``retain_graph=True``) so several gradients can be taken.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> b = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    >>> unused = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    >>> flat_gradient((w**2).sum() + 5 * b, [w, b, unused]).tolist()
    [2.0, 4.0, 5.0, 0.0]
    """
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.requires_grad:
        raise InputTypeError(f"loss must be a 0-d tensor with an autograd graph; got {loss!r}")
    params = check_parameters(params)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)
    ])


def exact_gradient(
    objective: str,
    policy_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    params: Sequence[torch.Tensor],
    *,
    rewards=None,
    n: float | None = None,
    beta: float = 1.0,
) -> torch.Tensor:
    """∇ of the LOSS, the negated objective (:func:`objective_loss`), w.r.t. ``params``, flattened.

    Autograd through the enumerated policy log-probabilities and bonmath's exact
    formulas; this is what the surrogates in this module estimate. Returns a 1-D
    tensor of length Σ p.numel().

    Notes
    -----
    The sign convention: g is the gradient of the loss (-J for ``"vbon"``), so the
    descent step θ - η g increases the objective. Score-function estimators of it and their exact
    bias: :ref:`math-gradients`.

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    >>> policy = torch.log_softmax(logits, 0)
    >>> ref = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    >>> exact_gradient("vbon", policy, ref, [logits], rewards=[0.0, 1.0], n=2).tolist()
    [0.274653072167, -0.274653072167]
    """
    params = check_parameters(params)
    policy_log_probs, ref_log_probs = unwrap(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs}
    ).values()
    if not (check_tensor(policy_log_probs, "policy_log_probs").requires_grad
            or check_tensor(ref_log_probs, "ref_log_probs").requires_grad):
        raise ValueError("policy_log_probs and ref_log_probs have no autograd graph: the loss cannot depend on params")
    loss = objective_loss(objective, policy_log_probs, ref_log_probs, rewards=rewards, n=n, beta=beta)
    return flat_gradient(loss.sum(), params)


# --------------------------------------------------- per-token views of TabularLM


def tabular_token_distributions(lm: TabularLM, sequences) -> torch.Tensor:
    """``lm.token_distributions(sequences)`` for a TabularLM with torch tables (autograd kept).

    See :meth:`bonmath.TabularLM.token_distributions`; shape (S, T, V).

    Examples
    --------
    >>> import torch
    >>> lm = TabularLM.from_logits([torch.zeros(1, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)])
    >>> dists = tabular_token_distributions(lm, [[1, 2], [0, -1]])
    >>> tuple(dists.shape), dists[0].exp().tolist()  # uniform next tokens at both positions of (1, 2)
    ((2, 2, 3), [[0.333333333333, 0.333333333333, 0.333333333333], [0.333333333333, 0.333333333333, 0.333333333333]])
    """
    _check_torch_tables(lm)
    return lm.token_distributions(sequences)


def tabular_token_log_probs(lm: TabularLM, sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """``lm.token_log_probs(sequences)`` for a TabularLM with torch tables (autograd kept).

    See :meth:`bonmath.TabularLM.token_log_probs`; shapes (S, T) and (S, T).

    Examples
    --------
    >>> import torch
    >>> lm = TabularLM.from_logits([torch.zeros(1, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)])
    >>> values, mask = tabular_token_log_probs(lm, [[0, -1], [1, 2]])
    >>> bool(torch.allclose(values.sum(-1), lm.log_prob([[0, -1], [1, 2]])))
    True
    """
    _check_torch_tables(lm)
    return lm.token_log_probs(sequences)


def _check_torch_tables(lm: TabularLM) -> None:
    if not isinstance(lm, TabularLM):
        raise InputTypeError(f"lm must be a TabularLM; got {lm!r}")
    if not isinstance(lm.tables[0], torch.Tensor):
        raise ValueError("lm must have torch tables (TabularLM of tensors) for the estimators")


# The inference-aware (max@k, pass@k) estimators and SCALE_REWARDS (shared with advantages above; defined
# there, below this module, so that it needs no torch) live in bonmath.estimators_at_k; reachable from here too.
from bonmath.estimators_at_k import (  # noqa: E402
    SCALE_REWARDS,
    exact_weight_moments,
    grpo_passk_advantages,
    max_at_k_estimate,
    pass_at_k_estimate,
    passk_training_advantages,
    pkpo_weights,
)

__all__ += [
    "SCALE_REWARDS",
    "exact_weight_moments",
    "grpo_passk_advantages",
    "max_at_k_estimate",
    "pass_at_k_estimate",
    "passk_training_advantages",
    "pkpo_weights",
]
