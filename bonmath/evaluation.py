"""Exact evaluation of a policy on an enumerable task, and its place against the exact frontier.

Every number is computed on the whole enumerated support of a
:class:`bonmath.task.Task` from the core's functions, per prompt and averaged over
prompts: E[r] (``bonmath.backend.expectation``), KL(π||π_ref)
(:func:`bonmath.kl_divergence`), the win rate W(π, π_ref) (:func:`bonmath.win_rate`),
the entropy, KL(π||π_N) for a grid of N (J = -KL(π||π_N) is the vBoN objective) and
the finite lower bound L̃_N (:func:`bonmath.vbon_finite_lower_bound`). Beside them,
the usual sample estimates from a few draws: k1 and k3
(:func:`bonmath.estimators.token_kl_estimates`, applied to whole sequences) of
KL(π||π_ref), with their exact standard deviations.

Trained policies are compared by Pareto optimality (:func:`pareto_mask`) and by
their gap to the exact reward-KL frontier, the tilted policies π_ref e^{r/β}/Z
(:func:`exact_frontier`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch

from bonmath.backend import (
    NEG_INF,
    InputTypeError,
    expectation,
    log1mexp,
    logsumexp,
    masked_ieee,
    real_input,
    to_numpy,
)
from bonmath.divergences import entropy, kl_divergence, win_rate
from bonmath.estimators import token_kl_estimates
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.optimal import tilted_log_probs
from bonmath.task import Task, sample_indices
from bonmath.validation import (
    check_choice,
    check_count,
    check_positive,
    check_real,
    check_rng,
    prepare,
)

__all__ = [
    "FRONT_METRICS",
    "FrontPosition",
    "Frontier",
    "PolicyMetrics",
    "SampleKLEstimates",
    "exact_frontier",
    "front_positions",
    "pareto_mask",
    "policy_metrics",
]

FrontMetric = Literal["reward", "win_rate"]
FRONT_METRICS: tuple[FrontMetric, ...] = ("reward", "win_rate")
"""The metrics plotted against KL(π||π_ref) and compared by Pareto optimality."""


@dataclass
class SampleKLEstimates:
    """The k1 and k3 estimates of KL(π||π_ref) from ``num_samples`` draws per prompt.

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> from bonmath import tilted_log_probs
    >>> policy = tilted_log_probs(task.ref_log_probs, task.rewards, 1.0)
    >>> metrics = policy_metrics(task, policy, num_samples=8, rng=0)
    >>> abs(metrics.sample.k1 - metrics.kl_ref) < 3 * metrics.sample.k1_sd  # k1 is unbiased
    True
    >>> reference = policy_metrics(task, task.ref_log_probs, num_samples=8, rng=0).sample
    >>> reference.k1, reference.k3, reference.k1_sd, reference.k1_log_sd  # π = π_ref: no noise
    (0.0, 0.0, 0.0, None)
    """

    num_samples: int
    k1: float
    """Mean over prompts of the per-prompt mean of log π/π_ref."""
    k3: float
    """Mean over prompts of the per-prompt mean of ρ - 1 - log ρ, ρ = π_ref/π."""
    k1_sd: float | None
    """Exact sd of ``k1`` (None where it exceeds e^700)."""
    k3_sd: float | None
    """Exact sd of ``k3`` (None where it exceeds e^700, as under π_N at large N)."""
    k1_log_sd: float | None
    """log of ``k1_sd`` (None for sd 0)."""
    k3_log_sd: float | None
    k1_per_prompt: list[float]
    k3_per_prompt: list[float]
    reward: float
    """The sampled mean reward."""


@dataclass
class PolicyMetrics:
    """Exact metrics of one policy, means over prompts (``*_per_prompt``: each prompt's).

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> metrics = policy_metrics(task, task.ref_log_probs, ns=[1, 4], num_samples=0)
    >>> metrics.kl_to_bon(1), metrics.bound_at(1)  # π_1 = π_ref
    (0.0, 0.0)
    >>> metrics.kl_to_bon(4) > 0, metrics.sample is None
    (True, True)
    """

    reward: float
    kl_ref: float
    win_rate: float
    entropy: float
    reward_per_prompt: list[float]
    kl_ref_per_prompt: list[float]
    win_rate_per_prompt: list[float]
    entropy_per_prompt: list[float]
    ns: list[float]
    """The N grid of ``kl_bon`` and ``bound``."""
    kl_bon: list[float]
    """KL(π||π_N) at each N of ``ns``."""
    bound: list[float]
    """The finite bound L̃_N at each N of ``ns``."""
    sample: SampleKLEstimates | None

    def kl_to_bon(self, n: float) -> float:
        """KL(π||π_N) at an N of the grid."""
        return self.kl_bon[self._at(n)]

    def bound_at(self, n: float) -> float:
        """L̃_N at an N of the grid."""
        return self.bound[self._at(n)]

    def value(self, metric: FrontMetric) -> float:
        return {"reward": self.reward, "win_rate": self.win_rate}[metric]

    def _at(self, n: float) -> int:
        if float(n) not in self.ns:
            raise ValueError(f"N = {n} is not in the evaluated grid {self.ns}")
        return self.ns.index(float(n))


@masked_ieee
def _check_task(task) -> Task:
    if not isinstance(task, Task):
        raise InputTypeError(f"task must be a bonmath.task.Task; got {task!r}")
    return task


def _reals(values, name: str) -> list[float]:
    """A 1-D sequence of finite real numbers, as floats."""
    array = real_input(values, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of real numbers; got shape {tuple(array.shape)}")
    return [check_real(v, name) for v in array.tolist()]


def _log_k3(t: np.ndarray) -> np.ndarray:
    """log(e^t - 1 - t), k3 = ρ - 1 - log ρ at log ρ = t, finite for any finite t.

    For t > 1, e^t - 1 - t = e^t (1 - (1 + t) e^{-t}); below, expm1(t) - t directly
    (-inf at t = 0, where k3 = 0).
    """
    big = t > 1.0
    tb = np.where(big, t, 2.0)
    ts = np.where(big, 0.0, t)
    return np.where(big, tb + np.log1p(-(1.0 + tb) * np.exp(-tb)), np.log(np.expm1(ts) - ts))


def _log_sd_of_mean(log_var: np.ndarray, num_samples: int) -> tuple[float | None, float | None]:
    """(log sd, sd) of the mean over P prompts of per-prompt means of ``num_samples`` draws."""
    log_sd = 0.5 * (float(logsumexp(log_var, np)) - math.log(num_samples)) - math.log(log_var.shape[0])
    if log_sd == NEG_INF:  # zero variance (π = π_ref)
        return None, 0.0
    return log_sd, math.exp(log_sd) if log_sd < 700 else None


@masked_ieee
def _sample_estimates(task: Task, log_probs: np.ndarray, kl: np.ndarray, num_samples: int,
                      rng: np.random.Generator) -> SampleKLEstimates:
    ref = task.ref_log_probs
    idx = sample_indices(log_probs, num_samples, rng)
    sampled = torch.from_numpy(np.take_along_axis(log_probs, idx, -1))
    sampled_ref = torch.from_numpy(np.take_along_axis(ref, idx, -1))
    k1 = token_kl_estimates(sampled, sampled_ref, "k1").numpy()
    k3 = token_kl_estimates(sampled, sampled_ref, "k3").numpy()
    # exact variances: Var k1 = E[(log π/π_ref - KL)^2]; Var k3 = E[k3^2] - KL^2, in logs,
    # since ρ = π_ref/π can be e^1000 under π_N (a string BoN almost never returns).
    log_ratio = np.where(log_probs == NEG_INF, 0.0, log_probs - ref)
    log_var_k1 = np.log(expectation(log_probs, (log_ratio - kl[:, None]) ** 2, np))
    log_second = logsumexp(log_probs + 2.0 * _log_k3(-log_ratio), np)
    log_kl2 = 2.0 * np.log(kl)
    log_var_k3 = np.where(log_second == NEG_INF, NEG_INF,
                          log_second + log1mexp(np.minimum(log_kl2 - log_second, 0.0), np))
    k1_log_sd, k1_sd = _log_sd_of_mean(log_var_k1, num_samples)
    k3_log_sd, k3_sd = _log_sd_of_mean(log_var_k3, num_samples)
    return SampleKLEstimates(
        num_samples=num_samples, k1=float(k1.mean()), k3=float(k3.mean()), k1_sd=k1_sd, k3_sd=k3_sd,
        k1_log_sd=k1_log_sd, k3_log_sd=k3_log_sd, k1_per_prompt=k1.mean(-1).tolist(),
        k3_per_prompt=k3.mean(-1).tolist(), reward=float(np.take_along_axis(task.rewards, idx, -1).mean()),
    )


def policy_metrics(
    task: Task,
    log_probs: np.ndarray,
    ns: Sequence[float] = (),
    num_samples: int = 64,
    rng: np.random.Generator | int | None = None,
) -> PolicyMetrics:
    """Exact metrics of one policy per prompt, averaged over prompts, and sample estimates.

    Parameters
    ----------
    task : bonmath.task.Task
    log_probs : float64 array of shape (P, S)
        log π(y | x_p) on the task's support (e.g. ``task.enumerate_log_probs(model)``).
    ns : sequence of float
        N values (each >= 1) for KL(π||π_N) and the bound L̃_N.
    num_samples : int
        Draws per prompt for the k1/k3 estimates (0: none).
    rng : numpy Generator, seed or None

    Returns
    -------
    PolicyMetrics

    Notes
    -----
    L̃_N is :func:`bonmath.vbon_finite_lower_bound`: the bound L itself is -inf for
    any policy with mass on the lowest level. The k1/k3 standard deviations are of
    the mean over prompts of the per-prompt means, from the exact variances over the
    enumeration.

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> metrics = policy_metrics(task, task.ref_log_probs, ns=[1.0], num_samples=8, rng=0)
    >>> metrics.kl_ref, round(metrics.win_rate, 12), metrics.kl_bon  # π_ref against itself
    (0.0, 0.5, [0.0])
    """
    task = _check_task(task)
    _, (log_probs,) = prepare({"log_probs": to_numpy(log_probs)})  # in float64 numpy, a tensor too
    if log_probs.shape != task.ref_log_probs.shape:
        raise ValueError(f"log_probs must have shape {task.ref_log_probs.shape}; got {log_probs.shape}")
    num_samples = check_count(num_samples, "num_samples", minimum=0)
    ns = _reals(ns, "ns")
    if any(not n >= 1 for n in ns):
        raise ValueError(f"ns must be >= 1; got {ns}")
    rng = check_rng(rng)
    ref, rewards = task.ref_log_probs, task.rewards
    reward = expectation(log_probs, rewards, np)
    kl = kl_divergence(log_probs, ref)
    win = win_rate(log_probs, ref, rewards)
    ent = entropy(log_probs)
    sample = None
    if num_samples:
        sample = _sample_estimates(task, log_probs, kl, num_samples, rng)
    return PolicyMetrics(
        reward=float(reward.mean()), kl_ref=float(kl.mean()), win_rate=float(win.mean()),
        entropy=float(ent.mean()), reward_per_prompt=reward.tolist(), kl_ref_per_prompt=kl.tolist(),
        win_rate_per_prompt=win.tolist(), entropy_per_prompt=ent.tolist(), ns=ns,
        kl_bon=[float(kl_divergence(log_probs, task.bon_log_probs(n)).mean()) for n in ns],
        bound=[float(vbon_finite_lower_bound(log_probs, ref, rewards, n).mean()) for n in ns],
        sample=sample,
    )


# ----------------------------------------------------------------- Pareto, frontier


def pareto_mask(cost: Sequence[float], gain: Sequence[float]) -> np.ndarray:
    """Which points no other point dominates (cost <= and gain >=, one strictly).

    Parameters
    ----------
    cost, gain : sequences of length m
        E.g. KL(π||π_ref) and E[r].

    Returns
    -------
    bool array of shape (m,)

    Examples
    --------
    >>> pareto_mask([1.0, 2.0, 2.0, 3.0], [0.5, 0.4, 0.7, 0.7]).tolist()
    [True, False, True, False]
    """
    costs, gains = np.asarray(_reals(cost, "cost")), np.asarray(_reals(gain, "gain"))
    if costs.shape != gains.shape:
        raise ValueError(f"cost and gain must have one length; got {costs.size} and {gains.size}")
    le = costs[None, :] <= costs[:, None]
    ge = gains[None, :] >= gains[:, None]
    strict = (costs[None, :] < costs[:, None]) | (gains[None, :] > gains[:, None])
    # numpy's stubs type .any(axis=...) as a scalar or an array; a row-wise reduction of a 2-D array is an array
    return cast(np.ndarray, ~(le & ge & strict).any(axis=1))


@dataclass
class Frontier:
    """The exact reward-KL frontier: the tilted policies π_ref e^{r/β}/Z over a β sweep.

    Examples
    --------
    Three points of a sweep (β = 2, 1, 0.5), read between them by :meth:`Frontier.value_at`:

    >>> f = Frontier(beta=[2.0, 1.0, 0.5], kl_ref=[0.0, 1.0, 2.0], reward=[0.0, 0.5, 0.7],
    ...              win_rate=[0.5, 0.6, 0.7], entropy=[1.0, 0.5, 0.1])
    >>> f.value_at("win_rate", 0.5), f.value_at("reward", 2.5)
    (0.55, None)
    """

    beta: list[float]
    kl_ref: list[float]
    reward: list[float]
    win_rate: list[float]
    entropy: list[float]

    def value_at(self, metric: FrontMetric, kl: float) -> float | None:
        """The frontier's ``metric`` at KL ``kl`` (linear interpolation), or None outside the sweep.

        The frontier is concave in KL, so the interpolated reward is at most the
        true one: a trained point's gap to it is a slight underestimate of the true gap.

        Examples
        --------
        >>> f = Frontier([2.0, 1.0, 0.5], [0.0, 1.0, 2.0], [0.0, 0.5, 0.7], [0.5, 0.6, 0.7], [1.0, 0.5, 0.1])
        >>> f.value_at("reward", 1.5), f.value_at("reward", 3.0)
        (0.6, None)
        """
        x, y = np.asarray(self.kl_ref), np.asarray(getattr(self, metric))
        order = np.argsort(x)
        x, y = x[order], y[order]
        if not x[0] <= kl <= x[-1]:
            return None
        return float(np.interp(kl, x, y))


def exact_frontier(task: Task, betas: Iterable[float]) -> Frontier:
    """:class:`Frontier` of ``task`` at the tilted policies of each β (no sampling).

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> frontier = exact_frontier(task, [4.0, 2.0, 1.0, 0.5])
    >>> bool(np.all(np.diff(frontier.kl_ref) > 0) and np.all(np.diff(frontier.reward) > 0))  # smaller β: more KL, more reward
    True
    """
    task = _check_task(task)
    betas = [check_positive(b, "betas") for b in _reals(betas, "betas")]
    points = [(float(b), policy_metrics(task, tilted_log_probs(task.ref_log_probs, task.rewards, float(b)),
                                        num_samples=0)) for b in betas]
    return Frontier(beta=[b for b, _ in points], kl_ref=[m.kl_ref for _, m in points],
                    reward=[m.reward for _, m in points], win_rate=[m.win_rate for _, m in points],
                    entropy=[m.entropy for _, m in points])


@dataclass
class FrontPosition:
    """Where one policy stands among others on ``metric`` against KL(π||π_ref).

    Examples
    --------
    A policy at KL 1.5 with E[r] = 0.55, against the frontier of :class:`Frontier`'s example:

    >>> f = Frontier([2.0, 1.0, 0.5], [0.0, 1.0, 2.0], [0.0, 0.5, 0.7], [0.5, 0.6, 0.7], [1.0, 0.5, 0.1])
    >>> position = FrontPosition(pareto=True, frontier_value=f.value_at("reward", 1.5))
    >>> position, round(position.frontier_value - 0.55, 6)  # its reward gap to the frontier
    (FrontPosition(pareto=True, frontier_value=0.6), 0.05)
    """

    pareto: bool
    """No other policy of the set has lower-or-equal KL and higher-or-equal value (one strictly)."""
    frontier_value: float | None
    """The exact frontier's value at the policy's KL (None outside the β sweep)."""


def front_positions(metrics: Sequence[PolicyMetrics], frontier: Frontier,
                    metric: FrontMetric) -> list[FrontPosition]:
    """Each policy's :class:`FrontPosition` on ``metric`` within ``metrics``.

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> from bonmath import tilted_log_probs
    >>> frontier = exact_frontier(task, [4.0, 2.0, 1.0, 0.5])
    >>> tilted = policy_metrics(task, tilted_log_probs(task.ref_log_probs, task.rewards, 1.0), num_samples=0)
    >>> reference = policy_metrics(task, task.ref_log_probs, num_samples=0)
    >>> on_front, outside = front_positions([tilted, reference], frontier, "reward")
    >>> on_front.pareto, on_front.frontier_value == tilted.reward  # a point of the frontier itself
    (True, True)
    >>> outside.pareto, outside.frontier_value  # KL 0 is below the sweep's smallest KL
    (True, None)
    """
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence) or not all(
        isinstance(m, PolicyMetrics) for m in metrics
    ):
        raise InputTypeError(f"metrics must be a sequence of PolicyMetrics; got {metrics!r}")
    if not isinstance(frontier, Frontier):
        raise InputTypeError(f"frontier must be a Frontier; got {frontier!r}")
    check_choice(metric, "metric", FRONT_METRICS)
    kl = [m.kl_ref for m in metrics]
    mask: np.ndarray | list[bool] = pareto_mask(kl, [m.value(metric) for m in metrics]) if metrics else []
    return [FrontPosition(bool(on), frontier.value_at(metric, m.kl_ref)) for m, on in zip(metrics, mask)]
