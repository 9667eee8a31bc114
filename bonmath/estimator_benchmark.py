"""Bias, variance and cost of the vBoN gradient estimators, exactly, on the zoo's pairs.

For each pair of :mod:`bonmath.zoo` (a TabularLM and a tiny GPT-2), each N, each
estimator of the registry :data:`ESTIMATORS` and each k samples per estimate,
:func:`run` reports

- the bias ‖E ĝ − g‖ of the estimate ĝ against the exact gradient g (autograd
  through the enumerated support: :func:`bonmath.estimators.exact_gradient`), and
  a Monte Carlo z-score of it;
- the total variance E‖ĝ − E ĝ‖² and the relative MSE E‖ĝ − g‖²/‖g‖²;
- the mean cosine E[cos(ĝ, g)], and cos(E ĝ, g);
- the wall time of one estimate of the real pipeline (sample k strings with the
  model, score them, build the surrogate loss, backward).

Exact where possible: every estimator except GRPO's std normalisation
(``scale_rewards``) has the form (1/k) Σ v(y_i) + (1/k) Σ s(y_i)(f(y_i) − b_i),
whose mean and variance are finite sums over the support
(:func:`bonmath.estimator_moments.exact_moments`) of the per-string
:class:`Basis`. The cosine, the z-scores and the GRPO rows use R Monte Carlo
estimates built from samples drawn with the models' own samplers. Every timed
estimate is rebuilt from the basis and the two are compared
(``pipeline_check_max_rel_err``), so the exact numbers describe the code that runs.

The target g is the gradient of the loss −J = KL(π_θ‖π_N) for every estimator
except the ``bound*`` rows, whose target is −∇L (the lower bound with the exact F).

This module is longer than the others (~770 lines, half of them docstrings) because
it is one computation read top to bottom: registry, configuration and size guard,
per-string basis, exact and Monte Carlo statistics, the timed pipeline and its check,
and the markdown tables of the results; ``benchmarks/estimator_variance.py`` is its
command line and ``paper_figs/fig_estimator_variance.py`` draws its JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import torch
from tqdm import tqdm

from bonmath.cdf_estimation import estimate_log_cdf, log_cdf_estimate_moments
from bonmath.cli import option
from bonmath.divergences import entropy, kl_divergence
from bonmath.estimator_moments import (
    estimate_coefficients,
    exact_moments,
    pair_scores,
    placement_vectors,
    shared_log_cdf_estimate_moments,
)
from bonmath.estimators import (
    analytic_token_kl,
    flat_gradient,
    kl_penalty_surrogate,
    reward_surrogate,
    vbon_bound_surrogate,
    vbon_surrogate,
)
from bonmath.validation import check_count
from bonmath.zoo import PolicyPair, gpt2_pair, pair_sizes, tabular_pair

__all__ = [
    "COLUMNS",
    "ESTIMATORS",
    "SMOKE",
    "Basis",
    "CostEstimate",
    "Estimator",
    "EstimatorBenchmarkConfig",
    "build_basis",
    "code_version",
    "estimate_cost",
    "markdown_tables",
    "preset_name",
    "run",
]

# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Estimator:
    """One gradient estimator: a reward part, a KL placement and a baseline.

    Attributes
    ----------
    name : str
        Row label, the same in every run.
    description : str
    target : {"vbon", "bound"}
        ``vbon``: the estimate targets −∇J = ∇KL(π_θ‖π_N); ``bound``: −∇L.
    placement : str
        Where KL(π_θ‖π_ref) enters (:data:`bonmath.estimators.KL_PLACEMENTS`);
        ``k1_reward`` with target ``vbon`` is :func:`bonmath.estimators.vbon_surrogate`
        (log π_θ − log π_N in the reward), otherwise R_N goes to
        :func:`bonmath.estimators.reward_surrogate` and the KL to
        :func:`bonmath.estimators.kl_penalty_surrogate`.
    baseline : {"none", "loo", "mean"}
    scale_rewards : {"none", "group"}
        ``group`` divides the advantages by the group's std (GRPO; TRL's ``scale_rewards``);
        the ``scale_rewards`` argument of :func:`bonmath.estimators.advantages`.
    estimated_cdf : bool
        F estimated from M reference samples (:func:`bonmath.estimate_log_cdf`)
        instead of the exact F (``bound`` target only).
    claimed_unbiased : bool
        Whether E ĝ = g holds (tested against the exact bias).

    Examples
    --------
    >>> rloo = next(e for e in ESTIMATORS if e.name == "rloo")
    >>> rloo.placement, rloo.baseline, rloo.claimed_unbiased
    ('k1_reward', 'loo', True)
    >>> rloo.needs(1), rloo.needs(2)  # leave-one-out needs a second sample
    (False, True)
    """

    name: str
    description: str
    target: Literal["vbon", "bound"]
    placement: str
    baseline: str
    scale_rewards: str = "none"
    estimated_cdf: bool = False
    claimed_unbiased: bool = True

    def needs(self, k: int) -> bool:
        """Whether the estimator is defined for k samples (leave-one-out needs k >= 2)."""
        return not (self.baseline == "loo" and k < 2)


ESTIMATORS: tuple[Estimator, ...] = (
    Estimator("reinforce", "score x (log pi - log pi_N), no baseline", "vbon", "k1_reward", "none"),
    Estimator("rloo", "RLOO: k1 in the reward, leave-one-out (TRL RLOO)", "vbon", "k1_reward", "loo"),
    Estimator("mean_baseline", "k1 in the reward, mean-of-k baseline", "vbon", "k1_reward", "mean",
              claimed_unbiased=False),
    Estimator("grpo", "GRPO: R_N mean/std-normalised + k3 per token in the loss (TRL GRPO)", "vbon",
              "k3_loss", "mean", scale_rewards="group", claimed_unbiased=False),
    Estimator("loo+k1_loss", "R_N with RLOO + k1 per token in the loss", "vbon", "k1_loss", "loo",
              claimed_unbiased=False),
    Estimator("loo+k2_loss", "R_N with RLOO + k2 per token in the loss", "vbon", "k2_loss", "loo",
              claimed_unbiased=False),
    Estimator("loo+k3_loss", "R_N with RLOO + k3 per token in the loss", "vbon", "k3_loss", "loo",
              claimed_unbiased=False),
    Estimator("loo+reward_to_go", "R_N with RLOO + per-token KL reward-to-go", "vbon", "reward_to_go", "loo"),
    Estimator("loo+analytic", "R_N with RLOO + analytic per-token KL (pathwise only)", "vbon", "analytic",
              "loo", claimed_unbiased=False),
    Estimator("loo+analytic_score", "R_N with RLOO + analytic per-token KL + score terms", "vbon",
              "analytic_score", "loo"),
    Estimator("bound_rloo", "bound reward (N-1) log F_lt, exact F, RLOO; target -grad L", "bound",
              "k1_reward", "loo"),
    Estimator("bound_rloo_Fhat", "bound with F-hat from M reference samples (add-one), RLOO; target -grad L",
              "bound", "k1_reward", "loo", estimated_cdf=True, claimed_unbiased=False),
)
"""Every estimator the benchmark measures, in table order."""

PLACEMENTS = tuple(sorted({e.placement for e in ESTIMATORS}))

# ------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CostEstimate:
    """What measuring one zoo pair would cost, estimated before anything is built.

    Attributes
    ----------
    model : str
    num_strings : int
        S, the strings of the enumerated support (the policy's support is at most this).
    num_params : int
        P, the policy's parameters.
    memory_bytes : float
        The largest arrays held at once, in float64: the per-token scores (S, T, P)
        twice while they are built, 7 per-string vectors (S, P), 13 Gram matrices
        (S, S) and 6 (R, S) arrays of the Monte Carlo rows; plus 0.5 GB for torch
        and the models.
    seconds : float
        An order of magnitude (one torch thread, constants measured on this
        project's 2-core machine): the per-token scores (one backward pass per
        token through a graph of S strings: ∝ S² (T+1)), the Gram contractions of
        the R estimates of each row (∝ R S²) and the exact moments (∝ S² P), the
        R·k_max pooled samples, and the timed pipeline estimates.

    Examples
    --------
    >>> print(CostEstimate("tabular", num_strings=100, num_params=40, memory_bytes=1.2e9, seconds=90.0))
    tabular: 100 strings, 40 parameters: about 1.2 GB and 1.5 min
    """

    model: str
    num_strings: int
    num_params: int
    memory_bytes: float
    seconds: float

    def __str__(self) -> str:
        if self.seconds < 60:
            duration = f"{self.seconds:.2g} s"
        else:
            duration = f"{self.seconds / 60:.2g} min" if self.seconds < 3600 else f"{self.seconds / 3600:.2g} h"
        return (f"{self.model}: {self.num_strings} strings, {self.num_params} parameters: about "
                f"{self.memory_bytes / 1e9:.2g} GB and {duration}")


class _CostConstants(TypedDict):
    base_memory: float
    scores: dict[str, float]
    contraction: float
    moments: float
    sample: dict[str, float]
    estimate: dict[str, tuple[float, float]]


_COST: _CostConstants = {
    "base_memory": 0.5e9,
    "scores": {"tabular": 5e-6, "gpt2": 2.5e-5},  # s per S² (T+1)
    "contraction": 5e-10,  # s per R S² per row
    "moments": 1e-10,  # s per S² P per exact moment
    "sample": {"tabular": 2e-6, "gpt2": 5e-5},  # s per pooled sample, looked up too
    "estimate": {"tabular": (2e-3, 5e-6), "gpt2": (2e-3, 5e-5)},  # s per estimate: a + b k T
}
"""Constants of :func:`estimate_cost`, measured with one thread on a 2-core machine."""


@dataclass(frozen=True)
class EstimatorBenchmarkConfig:
    """Bias, variance and cost of every vBoN gradient estimator, exactly, on a TabularLM and a tiny GPT-2.

    Examples
    --------
    >>> config = EstimatorBenchmarkConfig(model="tabular", n=[2, 8], k=[4])
    >>> config.n, config.k, config.models  # lists become tuples
    ((2, 8), (4,), ('tabular',))
    >>> EstimatorBenchmarkConfig(model="gpt3")
    Traceback (most recent call last):
    ...
    ValueError: model must be 'tabular', 'gpt2' or 'both'; got 'gpt3'
    """

    model: Literal["tabular", "gpt2", "both"] = option("which zoo pairs to measure", "both")
    n: tuple[int, ...] = option("BoN sample counts N", (2, 8, 32), minimum=1)
    k: tuple[int, ...] = option("samples per gradient estimate k", (2, 4, 8, 16, 64), minimum=1)
    reps: int = option("Monte Carlo estimates R per row (cosine, z-scores, GRPO rows)", 4000, minimum=2)
    num_ref_samples: int = option("M reference samples of the estimated-F row", 16, minimum=1)
    num_ref_samples_sweep: tuple[int, ...] = option(
        "M values of the exact bias-against-M table", (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), minimum=1)
    timing_reps: int = option("timed pipeline estimates per (model, estimator, k), the median reported; 0: no "
                              "timing and no pipeline check", 9, minimum=0)
    directions: int = option("random unit directions of the z-scores (besides the gradient's own)", 3,
                             minimum=0)
    seed: int = option("seed of models, rewards and samples", 0, minimum=0)
    threads: int = option("torch intra-op threads (1 is fastest for these tiny models)", 1, minimum=1)
    tabular_vocab: int = option("TabularLM vocabulary V (EOS included)", 4, minimum=2)
    tabular_len: int = option("TabularLM maximum length T", 4, minimum=1)
    gpt2_vocab: int = option("tiny GPT-2 vocabulary V (the last token is EOS)", 6, minimum=3)
    gpt2_len: int = option("tiny GPT-2 max_new_tokens L", 3, minimum=1)
    reward_levels: int = option("rewards 1..levels on strings the policy can start (0 on the others)", 4,
                                minimum=1)
    max_memory_gb: float = option("refuse configurations estimated to need more memory (GB)", 8.0,
                                  minimum=0)
    max_minutes: float = option("refuse configurations estimated to run longer (minutes)", 30.0, minimum=0)

    def __post_init__(self) -> None:
        for name in ("n", "k", "num_ref_samples_sweep"):
            values = tuple(check_count(v, name) for v in getattr(self, name))
            if not values:
                raise ValueError(f"{name} must hold at least one value")
            object.__setattr__(self, name, values)  # lists from callers become tuples
        for name, minimum in (("reps", 2), ("num_ref_samples", 1), ("timing_reps", 0), ("directions", 0),
                              ("threads", 1), ("tabular_vocab", 2), ("tabular_len", 1), ("gpt2_vocab", 3),
                              ("gpt2_len", 1), ("reward_levels", 1)):
            check_count(getattr(self, name), name, minimum=minimum)
        if self.model not in ("tabular", "gpt2", "both"):
            raise ValueError(f"model must be 'tabular', 'gpt2' or 'both'; got {self.model!r}")
        too_big = [c for c in estimate_cost(self)
                   if c.memory_bytes > self.max_memory_gb * 1e9 or c.seconds > 60 * self.max_minutes]
        if too_big:
            raise ValueError(
                "refusing a run this large: " + "; ".join(map(str, too_big)) + f" (limits: max_memory_gb="
                f"{self.max_memory_gb:g}, max_minutes={self.max_minutes:g}); lower the vocabulary or the length"
            )

    @property
    def models(self) -> tuple[str, ...]:
        return ("tabular", "gpt2") if self.model == "both" else (self.model,)


def estimate_cost(config: EstimatorBenchmarkConfig) -> list[CostEstimate]:
    """The :class:`CostEstimate` of each pair a configuration measures, without building anything.

    Examples
    --------
    >>> print(estimate_cost(EstimatorBenchmarkConfig(model="gpt2"))[0])
    gpt2: 156 strings, 6944 parameters: about 0.65 GB and 42 s
    >>> EstimatorBenchmarkConfig(gpt2_vocab=40)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: refusing a run this large: gpt2: 60880 strings, 7488 parameters: about 4.5e+02 GB and 1.2e+03 h (limits: ...
    """
    lengths = {"tabular": (config.tabular_vocab, config.tabular_len), "gpt2": (config.gpt2_vocab, config.gpt2_len)}
    rows = len(config.n) * sum(e.needs(k) for e in ESTIMATORS for k in config.k)
    out = []
    for model in config.models:
        vocab, length = lengths[model]
        S, P = pair_sizes(model, vocab, length)
        floats = 2 * S * length * P + 7 * S * P + 13 * S * S + 6 * config.reps * S
        a, b = _COST["estimate"][model]
        seconds = (_COST["scores"][model] * S * S * (length + 1)
                   + rows * (_COST["contraction"] * config.reps * S * S
                             + (config.directions + 2) * _COST["moments"] * S * S * P)
                   + _COST["sample"][model] * config.reps * max(config.k)
                   + (config.timing_reps + 1) * len(ESTIMATORS) * sum(a + b * k * length for k in config.k))
        out.append(CostEstimate(model, S, P, _COST["base_memory"] + 8.0 * floats, seconds))
    return out


SMOKE = EstimatorBenchmarkConfig(
    n=(2, 8), k=(2, 4), reps=300, num_ref_samples=4, num_ref_samples_sweep=(1, 4, 16), timing_reps=1,
    tabular_vocab=3, tabular_len=3, gpt2_vocab=4, gpt2_len=2,
)
"""Tiny settings for tests and smoke figures (seconds)."""


def preset_name(config: EstimatorBenchmarkConfig) -> str:
    """``"default"``, ``"smoke"`` or ``"custom"``: which preset a configuration is.

    Examples
    --------
    >>> import dataclasses
    >>> preset_name(SMOKE), preset_name(dataclasses.replace(SMOKE, seed=1))
    ('smoke', 'custom')
    """
    if config == EstimatorBenchmarkConfig():
        return "default"
    return "smoke" if config == SMOKE else "custom"


def code_version() -> str:
    """A hash of the modules that compute the benchmark's numbers (a results file's provenance).

    Examples
    --------
    >>> version = code_version()
    >>> len(version), set(version) <= set("0123456789abcdef"), version == code_version()
    (16, True, True)
    """
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("estimator_benchmark.py", "zoo.py", "estimators.py", "estimator_moments.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------ per-string basis


@dataclass
class Basis:
    """Everything per string on the policy's support (the S_θ strings with π_θ > 0).

    Every estimate is ĝ = Σ_y a(y) v(y) + Σ_y w(y) s(y) in these vectors
    (:func:`bonmath.estimator_moments.estimate_coefficients`).

    Attributes
    ----------
    keep : long tensor of shape (S_θ,)
        Positions in the full support.
    probs : tensor of shape (S_θ,)
        π_θ(y).
    score : tensor of shape (S_θ, P)
        s(y) = ∇ log π_θ(y).
    vectors : dict
        placement -> (v of shape (S_θ, P) or None, f_kl of shape (S_θ,)), from
        :func:`bonmath.estimator_moments.placement_vectors`.
    grams : dict
        placement -> (v vᵀ, v sᵀ) or None; ``"ss"`` -> s sᵀ.
    log_ratio : tensor of shape (S_θ,)
        log π_θ(y) − log π_ref(y).
    rewards : tensor of shape (S_θ,)
    position : int array of shape (S,)
        Full-support position -> basis position (−1 off the policy's support).

    Examples
    --------
    The 7 strings of a tiny TabularLM pair (V = 3, T = 2), one of them with π_θ = 0:

    >>> from bonmath.zoo import tabular_pair
    >>> basis = build_basis(tabular_pair(3, 2, seed=0), placements=("k1_reward",))
    >>> basis.position.tolist(), tuple(basis.score.shape)
    ([-1, 0, 1, 2, 3, 4, 5], (6, 9))
    >>> basis.vectors["k1_reward"][0] is None  # k1 in the reward: no pathwise vector v
    True
    """

    keep: torch.Tensor
    probs: torch.Tensor
    score: torch.Tensor
    vectors: dict
    grams: dict
    log_ratio: torch.Tensor
    rewards: torch.Tensor
    position: np.ndarray


def build_basis(case: PolicyPair, placements: tuple[str, ...] = PLACEMENTS) -> Basis:
    """The per-string :class:`Basis` of a zoo pair for the given KL placements.

    Examples
    --------
    >>> from bonmath.zoo import tabular_pair
    >>> basis = build_basis(tabular_pair(3, 2, seed=0))
    >>> round(float(basis.probs.sum()), 12), float((basis.probs @ basis.score).abs().max()) < 1e-12  # E[∇log π] = 0
    (1.0, True)
    """
    pair = case.pair
    log_probs = pair.policy_log_probs.detach()
    keep = case.support
    token_scores, kl_gradient = pair_scores(pair, case.params, keep)
    mask = torch.as_tensor(pair.mask)[keep]
    token_log_ratio = torch.where(mask, pair.token_log_probs[keep].detach() - pair.ref_token_log_probs[keep], 0.0)
    score = token_scores.sum(1)
    vectors = {}
    grams: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None] = {"ss": score @ score.T}
    for placement in placements:
        v, f = placement_vectors(placement, token_scores, mask, token_log_ratio,
                                 token_kl=pair.token_kl[keep].detach(), kl_gradient=kl_gradient)
        vectors[placement] = (v, f)
        grams[placement] = None if v is None else (v @ v.T, v @ score.T)
    position = np.full(pair.sequences.shape[0], -1)
    position[keep.numpy()] = np.arange(len(keep))
    return Basis(keep=keep, probs=log_probs[keep].exp(), score=score, vectors=vectors, grams=grams,
                 log_ratio=(log_probs - case.ref_log_probs)[keep], rewards=case.rewards[keep], position=position)


def _row_stats(a, w, basis: Basis, v, grams_v, g, proj):
    """Squared norms, dot products with g, projections and cosines of R estimates a_r V + w_r S."""
    sq = torch.einsum("ra,ab,rb->r", w, basis.grams["ss"], w)
    dot = w @ proj["sg"]
    projections = w @ proj["sU"]
    if v is not None:
        Gvv, Gvs = grams_v
        sq = sq + torch.einsum("ra,ab,rb->r", a, Gvv, a) + 2 * torch.einsum("ra,ab,rb->r", a, Gvs, w)
        dot = dot + a @ proj["vg"]
        projections = projections + a @ proj["vU"]
    norms = sq.clamp_min(0).sqrt()
    cos = torch.where(norms > 0, dot / (norms * float(g.norm())), torch.zeros_like(dot))
    return sq, dot, projections, cos


# -------------------------------------------------------------------- analysis


def _analyse(config, case: PolicyPair, basis: Basis, progress) -> tuple[list, list, dict]:
    """The rows (model, N, estimator, k) and the bias-against-M rows of one pair."""
    rewards_full = case.rewards
    S, P = basis.score.shape
    generator = torch.Generator().manual_seed(config.seed + 7)
    random_dirs = torch.randn(P, config.directions, generator=generator, dtype=torch.float64)
    random_dirs = random_dirs / random_dirs.norm(dim=0, keepdim=True)

    # one pool of samples from each model's own sampler, shared by all rows
    R, M = config.reps, config.num_ref_samples
    pool_strings = case.sample_policy(R * max(config.k), config.seed + 11)
    pool = torch.as_tensor(basis.position[case.pair.index(pool_strings)])
    ref_strings = case.sample_reference(R * M, config.seed + 13)
    ref_pool = rewards_full[case.pair.index(ref_strings)].reshape(R, M)
    log_cdf_hat_reps = estimate_log_cdf(ref_pool, basis.rewards)  # (R, S_θ)

    rows, cdf_rows = [], []
    info: dict[str, Any] = {"gradient_norms": {}}  # a JSON record, completed by the caller
    log_cdf_lt = case.log_cdf_lt()[basis.keep]
    for n in config.n:
        log_ratio_n = case.log_ratio(n)[basis.keep]
        targets = {"vbon": case.gradient("vbon", n=n), "bound": case.gradient("vbon_bound", n=n)}
        info["gradient_norms"][str(n)] = {t: float(g.norm()) for t, g in targets.items()}
        hat_mean, hat_second = shared_log_cdf_estimate_moments(log_cdf_lt, M)
        for spec in ESTIMATORS:
            g = targets[spec.target]
            v, f_kl = basis.vectors[spec.placement]
            U = torch.cat([(g / g.norm())[:, None], random_dirs], dim=1)
            proj = {"sg": basis.score @ g, "sU": basis.score @ U}
            if v is not None:
                proj.update(vg=v @ g, vU=v @ U)
            f_second, f_reps = None, None
            if spec.target == "vbon":
                f_mean = f_kl - log_ratio_n
            elif not spec.estimated_cdf:
                f_mean = basis.log_ratio - (n - 1) * log_cdf_lt
            else:
                lr = basis.log_ratio
                f_mean = lr - (n - 1) * hat_mean
                f_second = (torch.outer(lr, lr) - (n - 1) * (torch.outer(lr, hat_mean) + torch.outer(hat_mean, lr))
                            + (n - 1) ** 2 * hat_second)
                f_reps = lr[None, :] - (n - 1) * log_cdf_hat_reps  # (R, S_θ)
            for k in config.k:
                if not spec.needs(k):
                    continue
                index = pool[: R * k].reshape(R, k)
                f_values = f_mean[index] if f_reps is None else torch.gather(f_reps, 1, index)
                a, w = estimate_coefficients(index, f_values, S, baseline=spec.baseline,
                                             scale_rewards=spec.scale_rewards)
                sq, _, projections, cos = _row_stats(a, w, basis, v, basis.grams[spec.placement], g, proj)
                mc_mean_proj = projections.mean(0)
                exact = spec.scale_rewards == "none"
                row = dict(model=case.name, n=n, estimator=spec.name, k=k, exact=exact, reps=R,
                           claimed_unbiased=spec.claimed_unbiased, grad_norm=float(g.norm()),
                           mean_cosine=float(cos.mean()), mean_cosine_se=float(cos.std() / math.sqrt(R)))
                if exact:
                    moments = exact_moments(basis.probs, v, basis.score, f_mean, f_second, k=k,
                                            baseline=spec.baseline)
                    bias = moments.mean - g
                    var_u = torch.tensor([
                        exact_moments(basis.probs, None if v is None else v @ U[:, j:j + 1],
                                      basis.score @ U[:, j:j + 1], f_mean, f_second, k=k,
                                      baseline=spec.baseline).total_variance
                        for j in range(U.shape[1])
                    ])
                    se_u = (var_u / R).sqrt()
                    row.update(bias_norm=float(bias.norm()), bias_norm_se=0.0,
                               total_variance=moments.total_variance, total_variance_se=0.0,
                               mc_vs_exact_z=float(((mc_mean_proj - U.T @ moments.mean) / se_u).abs().max()))
                else:
                    mean_vec = w.mean(0) @ basis.score
                    if v is not None:
                        mean_vec = a.mean(0) @ v + mean_vec
                    var = float(R / (R - 1) * (sq.mean() - mean_vec @ mean_vec))
                    bias = mean_vec - g
                    bias_sq = max(float(bias @ bias) - var / R, 0.0)
                    se_u = projections.std(0) / math.sqrt(R)
                    e = bias / bias.norm()
                    along = (a @ (v @ e) if v is not None else 0.0) + w @ (basis.score @ e)
                    row.update(bias_norm=math.sqrt(bias_sq), bias_norm_se=float(along.std() / math.sqrt(R)),
                               total_variance=var, total_variance_se=float(sq.std() / math.sqrt(R)),
                               mc_vs_exact_z=None)
                row["bias_z"] = float(((mc_mean_proj - U.T @ g) / se_u).abs().max())
                gsq = float(g @ g)
                row["rel_bias"] = row["bias_norm"] / math.sqrt(gsq)
                row["rel_variance"] = row["total_variance"] / gsq
                row["rel_mse"] = (row["bias_norm"] ** 2 + row["total_variance"]) / gsq
                mean_vec = bias + g
                row["cos_of_mean"] = float(mean_vec @ g / (mean_vec.norm() * g.norm()))
                rows.append(row)
                progress.update(1)
        # exact bias of the estimated-F bound estimator against M (any k with RLOO)
        g = targets["bound"]
        for m in config.num_ref_samples_sweep:
            mean_hat, _ = log_cdf_estimate_moments(log_cdf_lt, m)
            mu = (basis.probs * (basis.log_ratio - (n - 1) * mean_hat)) @ basis.score
            bias = mu - g
            cdf_rows.append(dict(model=case.name, n=n, m=m, bias_norm=float(bias.norm()),
                                 rel_bias=float(bias.norm() / g.norm()),
                                 cosine=float(mu @ g / (mu.norm() * g.norm())),
                                 mean_log_cdf_bias=float(basis.probs @ (mean_hat - log_cdf_lt))))
    return rows, cdf_rows, info


# ------------------------------------------------------------- timed pipeline


def pipeline_estimate(spec: Estimator, case: PolicyPair, strings: list, sample_rewards: torch.Tensor,
                      n: int) -> torch.Tensor:
    """One estimate of the real pipeline: score k sampled strings, build the surrogate, backward.

    Parameters
    ----------
    spec : Estimator
    case : PolicyPair
    strings : list of k strings drawn by ``case.sample_policy``
    sample_rewards : tensor of shape (k,)
        The reward each sample's score is weighted by: R_N = log π_N/π_ref (target
        ``vbon``) or log F (target ``bound``; exact or estimated).
    n : int

    Returns
    -------
    tensor of shape (P,)
        ĝ, flattened.
    """
    if spec.placement in ("analytic", "analytic_score"):  # one forward per model gives both views
        dists, ref_dists = case.token_distributions(strings), case.ref_token_distributions(strings)
        token_kl = analytic_token_kl(dists, ref_dists)
        tokens = torch.as_tensor(case.pair.sequences)[case.pair.index(strings)][:, : dists.shape[1]]
        mask = tokens >= 0
        tokens = tokens.clamp_min(0)[..., None]
        values = torch.where(mask, dists.gather(-1, tokens)[..., 0], 0.0)
        ref_values = torch.where(mask, ref_dists.gather(-1, tokens)[..., 0], 0.0)
    else:
        token_kl = None
        values, mask = case.token_log_probs(strings)
        ref_values, _ = case.ref_token_log_probs(strings)
    lp, ref_lp = values.sum(-1), ref_values.sum(-1)
    if spec.target == "bound":
        loss = vbon_bound_surrogate(lp, ref_lp, sample_rewards, n, spec.baseline)
    elif spec.placement == "k1_reward":
        loss = vbon_surrogate(lp, ref_lp, sample_rewards, spec.baseline)
    else:
        loss = reward_surrogate(lp, sample_rewards, spec.baseline, spec.scale_rewards) + kl_penalty_surrogate(
            values, ref_values, mask, spec.placement, spec.baseline, token_kl)
    return flat_gradient(loss, case.params)


_TINY = float(np.finfo(np.float64).tiny)


def _time_estimates(config, case: PolicyPair, basis: Basis, progress) -> tuple[dict, float]:
    """Median seconds per pipeline estimate, and its largest deviation from the basis rebuild.

    The deviation ‖ĝ_pipeline − ĝ_basis‖ is relative to Σ_y |w(y)| ‖s(y)‖ + |a(y)| ‖v(y)‖,
    the size of the summands of ĝ_basis (an estimate can be small by cancellation).
    """
    n = config.n[0]
    log_cdf_full = case.log_cdf_lt()
    ratio_full = case.log_ratio(n)
    ratio_kept = ratio_full[basis.keep]
    seconds, worst = {}, 0.0
    for spec in ESTIMATORS:
        v, f_kl = basis.vectors[spec.placement]
        for k in config.k:
            if not spec.needs(k):
                continue
            times = []
            for rep in range(config.timing_reps + 1):  # the first run warms up and is not timed
                seed = config.seed + 1000 * rep + k
                start = time.perf_counter()
                strings = case.sample_policy(k, seed)
                full = case.pair.index(strings)
                if spec.target == "vbon":
                    sample_rewards = ratio_full[full]
                elif spec.estimated_cdf:
                    ref_strings = case.sample_reference(config.num_ref_samples, seed + 1)
                    sample_rewards = estimate_log_cdf(case.rewards[case.pair.index(ref_strings)], case.rewards[full])
                else:
                    sample_rewards = log_cdf_full[full]
                have = pipeline_estimate(spec, case, strings, sample_rewards, n)
                if rep > 0:
                    times.append(time.perf_counter() - start)
                # the same estimate rebuilt from the per-string basis
                index = torch.as_tensor(basis.position[full])[None]
                if spec.target == "vbon":
                    f_values = (f_kl - ratio_kept)[index]
                else:
                    f_values = basis.log_ratio[index] - (n - 1) * sample_rewards[None, :]
                a, w = estimate_coefficients(index, f_values, len(basis.keep), baseline=spec.baseline,
                                             scale_rewards=spec.scale_rewards)
                want = w[0] @ basis.score
                size = w[0].abs() @ basis.score.norm(dim=1)  # of the summands: the error's scale
                if v is not None:
                    want, size = want + a[0] @ v, size + a[0].abs() @ v.norm(dim=1)
                worst = max(worst, float((have - want).norm()) / max(float(size), _TINY))
            seconds[(spec.name, k)] = float(np.median(times))
            progress.update(1)
    return seconds, worst


# ------------------------------------------------------------------------ run


COLUMNS = ["model", "n", "estimator", "k", "exact", "bias_norm", "rel_bias", "bias_z", "total_variance",
           "rel_variance", "rel_mse", "mean_cosine", "seconds_per_estimate", "claimed_unbiased", "mc_vs_exact_z",
           "bias_norm_se", "total_variance_se", "mean_cosine_se", "cos_of_mean", "grad_norm", "reps"]
"""The fields of each row of the results (and the CSV columns)."""


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build(config: EstimatorBenchmarkConfig, model: str) -> PolicyPair:
    if model == "tabular":
        return tabular_pair(config.tabular_vocab, config.tabular_len, config.seed,
                            reward_levels=config.reward_levels)
    return gpt2_pair(config.gpt2_vocab, config.gpt2_len, config.seed, reward_levels=config.reward_levels)


def run(config: EstimatorBenchmarkConfig, progress: bool | None = None) -> dict[str, Any]:
    """Measure every estimator of :data:`ESTIMATORS` on the configured zoo pairs.

    Parameters
    ----------
    config : EstimatorBenchmarkConfig
    progress : bool, optional
        Show a tqdm bar (``None``: only on a terminal).

    Returns
    -------
    dict
        JSON-ready: ``config``, ``preset`` (:func:`preset_name`), ``code_version``,
        ``estimators``, ``models`` (sizes, KL and entropies of each pair), ``rows``
        (:data:`COLUMNS`), ``cdf_bias`` (the exact bias of ``bound_rloo_Fhat``
        against M), ``pipeline_check_max_rel_err`` (per model: the largest
        ‖ĝ_pipeline − ĝ_basis‖ of the timed estimates relative to the size of
        ĝ_basis's summands; empty with ``timing_reps=0``), ``runtime_seconds``,
        ``threads``, and the machine's ``load_average`` (1 minute, at the start and
        the end) and ``cpu_count``: timings mean little on a loaded machine.

    Examples
    --------
    The tabular pair alone (7 strings), N = 4 and k = 2, without the timed pipeline: the
    estimators claimed unbiased have zero exact bias, and the mean-of-k baseline (which
    contains each sample's own reward) keeps exactly 1 - 1/k of the gradient:

    >>> config = EstimatorBenchmarkConfig(model="tabular", n=[4], k=[2], reps=50, num_ref_samples_sweep=[4],
    ...                                   timing_reps=0, tabular_vocab=3, tabular_len=2)
    >>> results = run(config, progress=False)
    >>> results["preset"], results["models"]["tabular"]["num_strings"], len(results["rows"])
    ('custom', 7, 12)
    >>> all(row["rel_bias"] < FLOATING_FLOOR for row in results["rows"] if row["claimed_unbiased"])
    True
    >>> rows = {row["estimator"]: row for row in results["rows"]}
    >>> rows["mean_baseline"]["exact"], round(rows["mean_baseline"]["rel_bias"], 12)
    (True, 0.5)
    """
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    per_model = sum(e.needs(k) for e in ESTIMATORS for k in config.k) * (len(config.n) + (config.timing_reps > 0)) + 1
    bar = tqdm(total=len(config.models) * per_model, desc="estimator benchmark", unit="step",
               disable=None if progress is None else not progress)
    rows, cdf_rows, models, checks = [], [], {}, {}
    with _torch_threads(config.threads), bar:
        for model in config.models:
            bar.set_postfix_str(f"{model}: enumerating and building the per-string basis")
            t0 = time.perf_counter()
            case = _build(config, model)
            basis = build_basis(case)
            setup = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix_str(f"{model}: exact and Monte Carlo rows")
            model_rows, model_cdf_rows, info = _analyse(config, case, basis, bar)
            if config.timing_reps:
                bar.set_postfix_str(f"{model}: timed pipeline")
                seconds, checks[model] = _time_estimates(config, case, basis, bar)
                for row in model_rows:
                    row["seconds_per_estimate"] = seconds[(row["estimator"], row["k"])]
            rows += model_rows
            cdf_rows += model_cdf_rows
            policy_log_probs = case.pair.policy_log_probs.detach()
            info.update(
                description=case.description,
                num_strings=case.pair.sequences.shape[0],
                policy_support=len(basis.keep),
                num_params=case.num_params,
                kl_policy_ref=float(kl_divergence(policy_log_probs, case.ref_log_probs)),
                policy_entropy=float(entropy(policy_log_probs)),
                ref_entropy=float(entropy(case.ref_log_probs)),
                setup_seconds=setup,
            )
            models[model] = info
        threads = torch.get_num_threads()
    return {
        "config": asdict(config),
        "preset": preset_name(config),
        "code_version": code_version(),
        "estimators": [asdict(e) for e in ESTIMATORS],
        "models": models,
        "rows": [{c: row.get(c) for c in COLUMNS} for row in rows],
        "cdf_bias": cdf_rows,
        "pipeline_check_max_rel_err": checks,
        "runtime_seconds": time.perf_counter() - started,
        "threads": threads,
        "load_average": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
    }


# --------------------------------------------------------------------- tables

FLOATING_FLOOR = 1e-13
"""Relative biases of exactly computed rows below this are zero up to floating error (~1e-15,
varying from run to run); the tables print them as ``<1e-13``."""


def _rel_bias_cell(row: dict) -> str:
    if row["exact"] and row["rel_bias"] < FLOATING_FLOOR:
        return f"<{FLOATING_FLOOR:.0e}"
    return f"{row['rel_bias']:.2g}" + ("" if row["exact"] else "*")


def markdown_tables(results: dict, *, timing: bool = True) -> str:
    """Markdown tables of the results, as in ``docs/estimators.md``.

    Per model and N: relative MSE at the smallest k >= 4 and the largest k, the mean
    cosine, the relative bias and cos(E ĝ, g) at the largest k; then the exact bias
    of ``bound_rloo_Fhat`` against M; then (``timing``) the cost of one estimate.
    Everything but the cost table is a deterministic function of the configuration.

    Examples
    --------
    The first table of a small run (no timed pipeline, so no cost table):

    >>> config = EstimatorBenchmarkConfig(model="tabular", n=[4], k=[2], reps=50, num_ref_samples_sweep=[4],
    ...                                   timing_reps=0, tabular_vocab=3, tabular_len=2)
    >>> tables = markdown_tables(run(config, progress=False))
    >>> print("\\n".join(tables.splitlines()[2:7]))
    **tabular, N = 4**
    <BLANKLINE>
    | estimator | relMSE k=2 | E cos k=2 | rel. bias | cos(Eĝ, g) |
    |---|---:|---:|---:|---:|
    | reinforce | 1.29 | 0.70 | <1e-13 | 1.000 |
    >>> "Cost of one estimate" in tables
    False
    """
    rows = results["rows"]
    present = sorted({r["k"] for r in rows})
    ks = [min((k for k in present if k >= 4), default=present[0]), present[-1]]
    ks = list(dict.fromkeys(ks))
    config = results["config"]
    lines = [f"R = {config['reps']} Monte Carlo estimates per row, M = {config['num_ref_samples']} reference "
             f"samples in `bound_rloo_Fhat`, seed {config['seed']}. \\* marks Monte Carlo values (GRPO's std "
             f"normalisation); <{FLOATING_FLOOR:.0e}: zero up to floating error."]
    for model in dict.fromkeys(r["model"] for r in rows):
        for n in dict.fromkeys(r["n"] for r in rows if r["model"] == model):
            block = [r for r in rows if r["model"] == model and r["n"] == n]
            lines.append(f"\n**{model}, N = {n}**\n")
            lines.append("| estimator | " + " | ".join(f"relMSE k={k}" for k in ks)
                         + f" | E cos k={ks[-1]} | rel. bias | cos(Eĝ, g) |")
            lines.append("|---|" + "---:|" * (len(ks) + 3))
            for name in dict.fromkeys(r["estimator"] for r in block):
                by_k = {r["k"]: r for r in block if r["estimator"] == name}
                last = by_k[ks[-1]]
                cells = ["–" if k not in by_k else f"{by_k[k]['rel_mse']:.3g}" for k in ks]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {last['mean_cosine']:.2f} | "
                             f"{_rel_bias_cell(last)} | {last['cos_of_mean']:.3f} |")
    cdf = results["cdf_bias"]
    ms = sorted({r["m"] for r in cdf})
    lines.append("\n**Estimated F (add-one, M reference samples) in the bound estimator: exact relative bias "
                 "‖E ĝ − (−∇L)‖/‖∇L‖ (any k, RLOO)**\n")
    lines.append("| model | N | " + " | ".join(f"M={m}" for m in ms) + " |")
    lines.append("|---|---:|" + "---:|" * len(ms))
    for model in dict.fromkeys(r["model"] for r in cdf):
        for n in dict.fromkeys(r["n"] for r in cdf if r["model"] == model):
            by_m = {r["m"]: r for r in cdf if r["model"] == model and r["n"] == n}
            lines.append(f"| {model} | {n} | " + " | ".join(f"{by_m[m]['rel_bias']:.3g}" for m in ms) + " |")
    if timing and results["pipeline_check_max_rel_err"]:
        k = ks[-1]
        low, high = sorted(results["load_average"])
        lines.append(f"\n**Cost of one estimate, k = {k}, N = {results['config']['n'][0]}** (sample, score, "
                     f"surrogate, backward; median of {config['timing_reps']}, {results['threads']} torch "
                     f"thread(s), load average {low:.1f}–{high:.1f} on {results['cpu_count']} cores during the "
                     "run); the ratio to `reinforce` in the same run\n")
        models = list(dict.fromkeys(r["model"] for r in rows))
        lines.append("| estimator | " + " | ".join(f"{m} ms | {m} × reinforce" for m in models) + " |")
        lines.append("|---|" + "---:|---:|" * len(models))
        seconds = {(r["model"], r["estimator"]): r["seconds_per_estimate"] for r in rows if r["k"] == k}
        for name in dict.fromkeys(r["estimator"] for r in rows):
            cells = [f"{1000 * seconds[m, name]:.1f} | {seconds[m, name] / seconds[m, 'reinforce']:.2f}"
                     for m in models]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
