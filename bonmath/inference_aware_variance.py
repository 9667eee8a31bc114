"""Exact bias, variance and MSE of the max@k and pass@k gradient estimators on enumerable policies.

The computation behind ``benchmarks/inference_aware_variance.py`` (which only parses
arguments and writes files). For a policy π_θ whose strings can all be enumerated (a
:class:`~bonmath.TabularLM` with torch logits, or a tiny GPT-2 from
:func:`bonmath.zoo.tiny_gpt2_policy_pair`), each estimator of
:mod:`bonmath.estimators_at_k` with n samples and each k gives one row with

- ``relative_bias`` ‖E ĝ - g‖/‖g‖, ``relative_variance`` tr Cov(ĝ)/‖g‖², ``relative_mse``
  E‖ĝ - g‖²/‖g‖² (1 is what ĝ = 0 scores) and ``cosine`` cos(E ĝ, g),

all exact: g = ∇_θ max@k or ∇_θ pass@k by autograd through the enumerated support
(:func:`bonmath.max_at_k`, :func:`bonmath.pass_at_k`), and the moments of ĝ are finite sums
over reward multisets (:func:`bonmath.estimators_at_k.exact_weight_moments`) with the
per-string scores ∇ log π_θ(y) (:func:`bonmath.estimator_moments.per_output_gradients`).
No sampling anywhere.

Conventions: ĝ = Σ_i w_i ∇log π_θ(y_i) over the n samples of the group. PKPO's weights and
Tang et al.'s leave-one-out advantages (verl's ``grpo_passk``) are sums in their papers and
enter as published; Chen et al.'s advantages are GRPO-style (a mean over the group) and
enter as w = (k/n) A, the scale at which their σ-free numerators are the mean-centred PKPO
weights exactly.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch

import bonmath
from bonmath.enumeration import enumerate_pair
from bonmath.estimator_moments import per_output_gradients
from bonmath.estimators import flat_gradient
from bonmath.estimators_at_k import (
    MAX_CONFIGURATIONS,
    exact_weight_moments,
    grpo_passk_advantages,
    passk_training_advantages,
    pkpo_weights,
)
from bonmath.inference_aware import max_at_k, pass_at_k
from bonmath.tabular import TabularLM, num_sequences

__all__ = ["ESTIMATORS", "SMOKE", "TARGETS", "EstimatorSpec", "VarianceConfig", "markdown_summary", "run"]

TARGETS = ("max@k", "pass@k")

MODELS = ("tabular", "gpt2")

MAX_STRINGS = 20_000
"""Size guard: refuse enumerated supports larger than this (the scores need one backward pass per string)."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class VarianceConfig:
    """One run of the inference-aware estimator benchmark.

    Examples
    --------
    >>> cfg = VarianceConfig(models=("tabular",), n=(4,), k=(1, 2)).validate()
    >>> cfg.models, cfg.n, cfg.k, cfg.reward_levels
    (('tabular',), (4,), (1, 2), 4)
    >>> VarianceConfig(n=(1, 4)).validate()
    Traceback (most recent call last):
    ...
    ValueError: every n must be >= 2; got (1, 4)
    """

    models: tuple[str, ...] = _help("policies: tabular and/or gpt2", MODELS)
    n: tuple[int, ...] = _help("samples per group n", (4, 8, 16, 32))
    k: tuple[int, ...] = _help("k of max@k / pass@k (rows with k <= n)", (1, 2, 4, 8, 16, 32))
    reward_levels: int = _help("max@k rewards are integers 0..reward_levels-1 (ties)", 4)
    pass_rate: float = _help("pass@k: the policy mass of the strings with reward 1 (about)", 0.2)
    seed: int = _help("seed of the models and rewards", 0)
    tabular_vocab: int = _help("TabularLM vocabulary V (EOS included)", 4)
    tabular_len: int = _help("TabularLM maximum length T", 4)
    gpt2_vocab: int = _help("tiny GPT-2 vocabulary V (the last token is EOS)", 6)
    gpt2_len: int = _help("tiny GPT-2 max_new_tokens", 3)
    threads: int = _help("torch intra-op threads", 1)
    smoke: bool = _help("tiny, fast settings (< 20 s)", False)

    def validate(self) -> VarianceConfig:
        """Raise ValueError naming the first bad setting (the script turns it into exit status 2)."""
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {MODELS}; got {self.models}")
        if not self.n or any(n < 2 for n in self.n):
            raise ValueError(f"every n must be >= 2; got {self.n}")
        if not self.k or any(k < 1 for k in self.k):
            raise ValueError(f"every k must be >= 1; got {self.k}")
        if self.reward_levels < 2:
            raise ValueError(f"reward_levels must be >= 2; got {self.reward_levels}")
        if not 0 < self.pass_rate < 1:
            raise ValueError(f"pass_rate must lie in (0, 1); got {self.pass_rate}")
        for name in ("tabular_vocab", "gpt2_vocab"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2; got {getattr(self, name)}")
        for name in ("tabular_len", "gpt2_len", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        strings = {"tabular": num_sequences(self.tabular_vocab, self.tabular_len),
                   "gpt2": num_sequences(self.gpt2_vocab, self.gpt2_len)}
        for model in self.models:
            if strings[model] > MAX_STRINGS:
                raise ValueError(f"the {model} policy would have {strings[model]} strings, more than {MAX_STRINGS}")
        configurations = math.comb(max(self.n) + self.reward_levels - 1, self.reward_levels - 1)
        if configurations > MAX_CONFIGURATIONS:
            raise ValueError(f"n={max(self.n)} with {self.reward_levels} reward levels has {configurations} reward "
                             f"multisets, more than {MAX_CONFIGURATIONS}")
        return self


SMOKE = dict(n=(4, 8), k=(1, 2, 4), tabular_vocab=3, tabular_len=3, gpt2_vocab=4, gpt2_len=2)
"""Settings that ``--smoke`` changes (unless given explicitly)."""


# ----------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator row: its weights w(g) for ĝ = Σ_i w_i ∇log π(y_i), and where it applies.

    Examples
    --------
    The rows of the benchmark are ``ESTIMATORS``; PKPO's leave-one-out baseline needs n > k:

    >>> spec = next(s for s in ESTIMATORS if s.name == "pkpo_loo")
    >>> spec.targets, spec.applies(4, 2), spec.applies(2, 2), spec.claim
    (('max@k', 'pass@k'), True, False, 'unbiased')
    """

    name: str
    label: str
    targets: tuple[str, ...]
    weights: Callable  # (rewards (C, n), n, k) -> (C, n)
    applies: Callable[[int, int], bool]  # (n, k)
    claim: str


ESTIMATORS = (
    EstimatorSpec("pkpo", "PKPO s (no baseline)", TARGETS,
                  lambda g, n, k: pkpo_weights(g, k, "plain"), lambda n, k: True,
                  "unbiased"),
    EstimatorSpec("pkpo_loo", "PKPO s - k/(n-1) rho(n-1,k) (eq. 29)", TARGETS,
                  lambda g, n, k: pkpo_weights(g, k, "loo"), lambda n, k: n > k, "unbiased"),
    EstimatorSpec("pkpo_loo_minus_one", "PKPO s - k/n rho(n-1,k-1) (eq. 33)", TARGETS,
                  lambda g, n, k: pkpo_weights(g, k, "loo_minus_one"), lambda n, k: k >= 2, "unbiased"),
    EstimatorSpec("pkpo_mean_centred", "PKPO s - mean(s) (own sample in the baseline)", TARGETS,
                  lambda g, n, k: pkpo_weights(g, k, "mean_centred"), lambda n, k: True,
                  "biased: E = (1 - k/n) grad"),
    EstimatorSpec("grpo_passk", "verl grpo_passk, no std (Tang et al. LOO)", TARGETS,
                  lambda g, n, k: grpo_passk_advantages(g, scale_rewards="none"), lambda n, k: True,
                  "unbiased for grad max@n: biased when k < n"),
    EstimatorSpec("grpo_passk_std", "verl grpo_passk, / (std + 1e-6) (default)", TARGETS,
                  lambda g, n, k: grpo_passk_advantages(g), lambda n, k: True, "biased"),
    EstimatorSpec("passk_training", "Chen et al. analytic advantage (paper), w = (k/n) A", ("pass@k",),
                  lambda g, n, k: passk_training_advantages(g, k, "paper") * (k / n), lambda n, k: True, "biased"),
    EstimatorSpec("passk_training_code", "Chen et al. released code (sigma + 1e-6), w = (k/n) A", ("pass@k",),
                  lambda g, n, k: passk_training_advantages(g, k, "code") * (k / n), lambda n, k: True, "biased"),
)


# --------------------------------------------------------------------------- models


@dataclass
class EnumeratedPolicy:
    """A policy with every string enumerated: log-probabilities with graph, scores, rewards per target."""

    name: str
    description: str
    log_probs: torch.Tensor  # (S,), with autograd graph
    params: list
    keep: np.ndarray  # strings with positive mass
    scores: torch.Tensor  # (len(keep), P): ∇ log π_θ(y)
    rewards: dict  # target -> (S,) float64 numpy

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs.detach().numpy()[self.keep])


def _rewards(probs: np.ndarray, cfg: VarianceConfig, rng: np.random.Generator) -> dict:
    """max@k: integers 0..L-1 at random (ties); pass@k: 1 on random strings until about pass_rate of the mass."""
    levels = rng.integers(0, cfg.reward_levels, size=len(probs)).astype(np.float64)
    order = rng.permutation(np.nonzero(probs > 0)[0])
    correct = np.zeros(len(probs))
    correct[order[np.cumsum(probs[order]) <= cfg.pass_rate]] = 1.0
    correct[order[0]] = 1.0  # at least one string with mass
    return {"max@k": levels, "pass@k": correct}


def _enumerated(name, description, log_probs, params, cfg, rng) -> EnumeratedPolicy:
    keep = np.nonzero(log_probs.detach().numpy() > -math.inf)[0]
    scores = per_output_gradients(log_probs[torch.as_tensor(keep)], params)
    probs = np.exp(log_probs.detach().numpy())
    return EnumeratedPolicy(name, description, log_probs, params, keep, scores, _rewards(probs, cfg, rng))


def tabular_policy(cfg: VarianceConfig) -> EnumeratedPolicy:
    """TabularLM.random's tables as torch logits (the parameters θ)."""
    lm = TabularLM.random(cfg.tabular_vocab, cfg.tabular_len, rng=cfg.seed)
    params = [torch.tensor(table, requires_grad=True) for table in lm.tables]
    policy = TabularLM.from_logits(params, eos_id=lm.eos_id)
    _, log_probs = policy.enumerate()
    description = f"TabularLM.random(V={cfg.tabular_vocab}, T={cfg.tabular_len}, rng={cfg.seed}), torch logits"
    return _enumerated("tabular", description, log_probs, params, cfg, np.random.default_rng(cfg.seed + 1))


def gpt2_policy(cfg: VarianceConfig) -> EnumeratedPolicy:
    """The trainable top-k policy of :func:`bonmath.zoo.tiny_gpt2_policy_pair`."""
    from bonmath.zoo import tiny_gpt2_policy_pair

    policy, ref = tiny_gpt2_policy_pair(cfg.gpt2_vocab, cfg.gpt2_len, cfg.seed)
    log_probs = enumerate_pair(policy, ref).policy_log_probs
    description = (f"GPT-2 (2 layers, d=16, float64) V={cfg.gpt2_vocab}, L={cfg.gpt2_len}, top_k={cfg.gpt2_vocab - 1},"
                   f" seed={cfg.seed}")
    return _enumerated("gpt2", description, log_probs, list(policy.model.parameters()), cfg,
                       np.random.default_rng(cfg.seed + 1))


BUILDERS = {"tabular": tabular_policy, "gpt2": gpt2_policy}


# ------------------------------------------------------------------------- analysis


def _target_gradient(policy: EnumeratedPolicy, target: str, k: int) -> torch.Tensor:
    rewards = torch.as_tensor(policy.rewards[target])
    objective = max_at_k if target == "max@k" else pass_at_k
    return flat_gradient(objective(policy.log_probs, rewards, k), policy.params)


def row_statistics(moments, target_gradient: torch.Tensor) -> dict:
    """relative_bias, relative_variance, relative_mse and cosine of exact moments against g."""
    g, mean = target_gradient, moments.mean
    g_sq = float(g @ g)
    bias_sq = float((mean - g) @ (mean - g))
    variance = moments.total_variance
    mean_norm = float(mean.norm())
    return {
        "relative_bias": math.sqrt(bias_sq / g_sq),
        "relative_variance": variance / g_sq,
        "relative_mse": (bias_sq + variance) / g_sq,
        "cosine": float(mean @ g) / (mean_norm * math.sqrt(g_sq)) if mean_norm > 0 else 0.0,
    }


def _rows(policy: EnumeratedPolicy, cfg: VarianceConfig, progress) -> list[dict]:
    rows = []
    probs = policy.probs
    for target in TARGETS:
        rewards = policy.rewards[target][policy.keep]
        for k in sorted(set(cfg.k)):
            g = _target_gradient(policy, target, k)
            for n in sorted(set(cfg.n)):
                if k > n:
                    continue
                for spec in ESTIMATORS:
                    if target not in spec.targets or not spec.applies(n, k):
                        continue
                    moments = exact_weight_moments(partial(spec.weights, n=n, k=k), probs, rewards, policy.scores, n)
                    rows.append(dict(estimator=spec.name, label=spec.label, model=policy.name, target=target,
                                     n=n, k=k, **row_statistics(moments, g)))
                    progress.update(1)
    return rows


def _row_count(cfg: VarianceConfig) -> int:
    pairs = [(n, k) for n in set(cfg.n) for k in set(cfg.k) if k <= n]
    per_model = sum(1 for t in TARGETS for n, k in pairs for s in ESTIMATORS if t in s.targets and s.applies(n, k))
    return per_model * len(cfg.models)


def _versions() -> dict:
    versions = {"bonmath": bonmath.__version__, "numpy": np.__version__, "torch": torch.__version__,
                "python": platform.python_version()}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:
        pass
    return versions


def run(cfg: VarianceConfig, progress: bool = True) -> dict:
    """Every row of the benchmark, with its meta data: ``{"meta": {...}, "rows": [...]}``.

    Parameters
    ----------
    cfg : VarianceConfig
        Validated here (``ValueError`` for bad settings).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``rows``: dicts with keys estimator, label, model, target, n, k, relative_bias,
        relative_variance, relative_mse, cosine (floats). ``meta``: versions, smoke, the
        configuration, each model's size and realised pass rate, each estimator's label
        and claim, the conventions, the run time.

    Examples
    --------
    The tabular policy alone (7 strings), n = 4 samples per group and k = 2: PKPO's
    weights are unbiased, and centring them on the group mean (own sample included)
    keeps exactly 1 - k/n of the gradient, for max@k and pass@k alike:

    >>> results = run(VarianceConfig(models=("tabular",), n=(4,), k=(2,), tabular_vocab=3, tabular_len=2),
    ...               progress=False)
    >>> results["meta"]["models"]["tabular"]["strings"], len(results["rows"])
    (7, 14)
    >>> rows = {(row["estimator"], row["target"]): row for row in results["rows"]}
    >>> [round(rows[name, "max@k"]["relative_bias"], 12) for name in ("pkpo", "pkpo_mean_centred")]
    [0.0, 0.5]
    >>> round(rows["pkpo_mean_centred", "pass@k"]["relative_bias"], 12), rows["pkpo", "pass@k"]["cosine"] > 0.999
    (0.5, True)
    """
    from tqdm import tqdm

    cfg.validate()
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        bar = tqdm(total=_row_count(cfg), desc="inference_aware_variance", unit="row", disable=not progress)
        rows, models = [], {}
        for name in cfg.models:
            policy = BUILDERS[name](cfg)
            rows += _rows(policy, cfg, bar)
            probs = np.exp(policy.log_probs.detach().numpy())
            models[name] = dict(description=policy.description, strings=len(probs), strings_with_mass=len(policy.keep),
                                parameters=int(policy.scores.shape[1]),
                                pass_rate=float(probs @ policy.rewards["pass@k"]))
        bar.close()
    finally:
        torch.set_num_threads(threads)
    meta = dict(
        versions=_versions(), smoke=cfg.smoke, config=asdict(cfg), models=models,
        estimators={s.name: dict(label=s.label, targets=list(s.targets), claim=s.claim) for s in ESTIMATORS},
        conventions=("g_hat = sum_i w_i grad log pi(y_i) over the group; relative_* against g = exact grad of the "
                     "target (autograd); cosine = cos(E g_hat, g), exact (0 when E g_hat = 0); Chen et al.'s "
                     "advantages enter as w = (k/n) A"),
        runtime_seconds=time.perf_counter() - started,
    )
    return {"meta": meta, "rows": rows}


def markdown_summary(results: dict) -> str:
    """Per model and target, at the largest n: relative MSE and relative bias for each k (markdown tables).

    Examples
    --------
    >>> row = dict(model="tabular", target="max@k", estimator="pkpo", n=4, k=1, relative_mse=1.5, relative_bias=0.0)
    >>> print(markdown_summary({"rows": [row, dict(row, k=2, relative_mse=2.25, relative_bias=0.125)]}))
    <BLANKLINE>
    **tabular, max@k, n = 4: relative MSE (relative bias)**
    <BLANKLINE>
    | estimator | k=1 | k=2 |
    |---|---:|---:|
    | pkpo | 1.5 (0) | 2.25 (0.12) |
    <BLANKLINE>
    """
    rows = results["rows"]
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for target in TARGETS:
            block = [r for r in rows if r["model"] == model and r["target"] == target]
            if not block:
                continue
            n = max(r["n"] for r in block)
            block = [r for r in block if r["n"] == n]
            ks = sorted({r["k"] for r in block})
            lines.append(f"\n**{model}, {target}, n = {n}: relative MSE (relative bias)**\n")
            lines.append("| estimator | " + " | ".join(f"k={k}" for k in ks) + " |")
            lines.append("|---|" + "---:|" * len(ks))
            present = {r["estimator"] for r in block}
            for name in [s.name for s in ESTIMATORS if s.name in present]:
                by_k = {r["k"]: r for r in block if r["estimator"] == name}
                cells = [f"{by_k[k]['relative_mse']:.3g} ({by_k[k]['relative_bias']:.2g})" if k in by_k else "–"
                         for k in ks]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
