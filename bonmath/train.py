"""Fine-tuning a causal LM with vBoN, its lower bound, KL-RL and BoN-SFT, on an enumerable task.

The vBoN sentiment experiment (Amini et al. 2025, Sec. 5) at a scale where every
number is exact: a :class:`bonmath.task.Task` enumerates each prompt's
continuations once. Training itself only ever sees *samples*: k continuations per
prompt per step, drawn from the policy being trained with
:meth:`bonmath.hf.CausalLMPolicy.sample`, scored by the reward, and turned into a
surrogate loss by :mod:`bonmath.estimators`. The enumerated reference supplies what
the methods assume known: log π_ref(y), r(y) (a lookup of the cached reward), the
exact reward CDF and the exact BoN law.

Each method is one entry of :data:`METHODS`: its configuration dataclass (shared
fields in :class:`TrainConfig`, each validated in ``__post_init__``) and the loss it
builds (docs/math.md, "vBoN"):

``vbon`` (:class:`VBoNConfig`)
    Minimise KL(π_θ || π_N) with the exact log π_N = log π_ref + R_N
    (:func:`bonmath.estimators.vbon_surrogate`, RLOO baseline).
``vbon_bound`` (:class:`VBoNBoundConfig`)
    Maximise the lower bound L: KL-RL with reward log F_lt and β = 1/(N-1)
    (:func:`bonmath.estimators.vbon_bound_surrogate` with ``scale="kl_rl"``, as the
    paper's released code trains). F is exact (``num_ref_samples=None``) or
    estimated from M reference samples per prompt, drawn once before training, with
    the released code's add-one estimator (:func:`bonmath.estimate_log_cdf`). With
    the exact F the lowest level's per-string value log N + (N-1) log F_lt = -inf is
    replaced by the exact R_N = (N-1) log q (the finite bound L̃,
    :meth:`bonmath.task.Task.bound_log_cdf`): still a lower bound on R_N, equal to
    L's value elsewhere.
``kl_rl`` (:class:`KLRLConfig`)
    Maximise E[r] - β KL(π_θ||π_ref) with the raw reward. The paper uses PPO; here
    it is RLOO with the KL as k1 in the reward (TRL's ``RLOOTrainer``):
    :func:`~bonmath.estimators.reward_surrogate` +
    β :func:`~bonmath.estimators.reverse_kl_surrogate`, both leave-one-out.
``bon_sft`` (:class:`BoNSFTConfig`)
    Maximum likelihood on BoN samples (minimises KL(π_N || π_θ)); the samples are
    drawn exactly from the enumerated π_N, which is the law of
    :func:`bonmath.sample_bon`.

All parameters of a copy of the reference model are trained, with Adam, a linearly
decaying learning rate (optional linear warm-up) and optional gradient-norm
clipping (TRL's ``max_grad_norm``), in float64. Runs are deterministic given the
seed (and torch's thread count, which can change float reductions).
:func:`train_cached` stores each trained model's enumerated log-probabilities and
state_dict under a cache directory keyed by the configuration and the task.

(The module is ~470 lines on purpose: each method's config and loss sit beside the
table and the loop that use them, so one file shows the whole of training.)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from bonmath.cache import fingerprint, write_once
from bonmath.cdf_estimation import estimate_log_cdf
from bonmath.cli import option
from bonmath.estimators import (
    reverse_kl_surrogate,
    reward_surrogate,
    vbon_bound_surrogate,
    vbon_surrogate,
)
from bonmath.hf import CausalLMPolicy
from bonmath.task import Task, sample_indices
from bonmath.validation import check_count, check_positive

__all__ = [
    "CACHE_FORMAT",
    "METHODS",
    "BoNSFTConfig",
    "KLRLConfig",
    "Method",
    "TrainConfig",
    "TrainResult",
    "TrainedPolicy",
    "VBoNBoundConfig",
    "VBoNConfig",
    "cache_key",
    "cache_path",
    "make_config",
    "train",
    "train_cached",
]

CACHE_FORMAT = 2
"""Bump when the meaning of a cached trained model changes (trainer code, evaluation format)."""

StepLoss = Callable[[int, CausalLMPolicy], tuple[torch.Tensor, torch.Tensor]]
"""(prompt index, policy) -> (surrogate loss with graph, sample estimate of the objective)."""


# --------------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Fields shared by every training method (use a method's subclass).

    Examples
    --------
    The shared fields and their defaults, in a method's configuration:

    >>> KLRLConfig(beta=0.05, steps=10).to_json()
    {'method': 'kl_rl', 'steps': 10, 'k': 16, 'lr': 0.003, 'warmup_steps': 0, 'max_grad_norm': None, 'seed': 0, 'beta': 0.05}
    >>> TrainConfig()
    Traceback (most recent call last):
    ...
    TypeError: TrainConfig is a base: use VBoNConfig, VBoNBoundConfig, KLRLConfig or BoNSFTConfig
    """

    method: ClassVar[str] = ""

    steps: int = option("optimizer steps", 300, minimum=0)
    k: int = option("samples per prompt per step (RLOO needs k >= 2)", 16, minimum=2)
    lr: float = option("Adam learning rate (decays linearly to 0 over the steps)", 3e-3)
    warmup_steps: int = option("linear learning-rate warm-up steps", 0, minimum=0)
    max_grad_norm: float | None = option("clip the global gradient norm to this (None: no clipping)", None)
    seed: int = option("seed of the policy samples and of the reference samples for F-hat", 0)

    def __post_init__(self) -> None:
        if not self.method:
            raise TypeError("TrainConfig is a base: use VBoNConfig, VBoNBoundConfig, KLRLConfig or BoNSFTConfig")
        check_count(self.steps, "steps", minimum=0)
        check_count(self.k, "k", minimum=2)
        check_count(self.warmup_steps, "warmup_steps", minimum=0)
        check_count(self.seed, "seed", minimum=0)
        check_positive(self.lr, "lr")
        if self.max_grad_norm is not None:
            check_positive(self.max_grad_norm, "max_grad_norm")

    @property
    def label(self) -> str:
        """Short name, e.g. ``vbon_bound_N8_M32``."""
        return self.method

    def to_json(self) -> dict[str, Any]:
        """The method and every field, JSON-ready (what the cache key hashes)."""
        return {"method": self.method, **dataclasses.asdict(self)}


@dataclass(frozen=True, kw_only=True)
class _BoNTargetConfig(TrainConfig):
    """Methods whose only own field is the BoN N they learn (a base, like TrainConfig)."""

    n: int = option("BoN N", 4, minimum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.n, "n", minimum=1)

    @property
    def label(self) -> str:
        return f"{self.method}_N{self.n}"


@dataclass(frozen=True, kw_only=True)
class VBoNConfig(_BoNTargetConfig):
    """vBoN: minimise KL(π_θ || π_N) with the exact BoN law.

    Examples
    --------
    >>> VBoNConfig(n=8, steps=10).label
    'vbon_N8'
    """

    method: ClassVar[str] = "vbon"


@dataclass(frozen=True, kw_only=True)
class VBoNBoundConfig(TrainConfig):
    """The vBoN lower bound L: KL-RL with reward log F_lt and beta = 1/(N-1).

    Examples
    --------
    >>> VBoNBoundConfig(n=8, num_ref_samples=32).label, VBoNBoundConfig(n=8).label
    ('vbon_bound_N8_M32', 'vbon_bound_N8_exactF')
    """

    method: ClassVar[str] = "vbon_bound"
    n: int = option("BoN N (beta = 1/(N-1))", 4, minimum=2)
    num_ref_samples: int | None = option(
        "M reference samples per prompt for the add-one F-hat; None: the exact F", None
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count(self.n, "n", minimum=2)
        if self.num_ref_samples is not None:
            check_count(self.num_ref_samples, "num_ref_samples", minimum=1)

    @property
    def label(self) -> str:
        m = "exactF" if self.num_ref_samples is None else f"M{self.num_ref_samples}"
        return f"{self.method}_N{self.n}_{m}"


@dataclass(frozen=True, kw_only=True)
class KLRLConfig(TrainConfig):
    """KL-regularised RL: maximise E[r] - beta KL(π_θ || π_ref) (RLOO).

    Examples
    --------
    >>> KLRLConfig(beta=0.05).label
    'kl_rl_beta0.05'
    """

    method: ClassVar[str] = "kl_rl"
    beta: float = option("KL coefficient", 0.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.beta, "beta")

    @property
    def label(self) -> str:
        return f"{self.method}_beta{self.beta:g}"


@dataclass(frozen=True, kw_only=True)
class BoNSFTConfig(_BoNTargetConfig):
    """BoN-SFT: maximum likelihood on exact BoN samples.

    Examples
    --------
    >>> BoNSFTConfig(n=4).to_json()["method"], BoNSFTConfig(n=4).label
    ('bon_sft', 'bon_sft_N4')
    """

    method: ClassVar[str] = "bon_sft"


# ------------------------------------------------------------------------ the losses


def _on_policy(task: Task, policy: CausalLMPolicy, k: int, generator: torch.Generator):
    """k samples of ``policy``, their support indices and their log-probabilities (with graph)."""
    samples = policy.sample(k, generator)
    return torch.from_numpy(task.lookup(samples)), policy.log_prob(samples)


def _vbon_loss(task: Task, cfg: VBoNConfig, generator: torch.Generator, rng: np.random.Generator) -> StepLoss:
    ref, log_ratio = torch.from_numpy(task.ref_log_probs), torch.from_numpy(task.bon_log_ratio(cfg.n))

    def step(p: int, policy: CausalLMPolicy):
        idx, log_probs = _on_policy(task, policy, cfg.k, generator)
        ref_lp, ratio = ref[p, idx], log_ratio[p, idx]
        return vbon_surrogate(log_probs, ref_lp, ratio), (log_probs.detach() - ref_lp - ratio).mean()

    return step


def _reference_log_cdf_hat(task: Task, size: int, generator: torch.Generator) -> np.ndarray:
    """log F̂ (add-one) at every string from ``size`` reference samples per prompt, shape (P, S)."""
    rows = []
    for p in range(task.num_prompts):
        samples = task.policy(task.model, p).sample(size, generator)
        rows.append(estimate_log_cdf(task.rewards[p, task.lookup(samples)], task.rewards[p], "add_one"))
    return np.stack(rows)


def _vbon_bound_loss(task: Task, cfg: VBoNBoundConfig, generator: torch.Generator,
                     rng: np.random.Generator) -> StepLoss:
    n = float(cfg.n)
    ref = torch.from_numpy(task.ref_log_probs)
    if cfg.num_ref_samples is None:
        log_cdf = torch.from_numpy(task.bound_log_cdf(n))
    else:
        log_cdf = torch.from_numpy(_reference_log_cdf_hat(task, cfg.num_ref_samples, generator))

    def step(p: int, policy: CausalLMPolicy):
        idx, log_probs = _on_policy(task, policy, cfg.k, generator)
        ref_lp, lf = ref[p, idx], log_cdf[p, idx]
        loss = vbon_bound_surrogate(log_probs, ref_lp, lf, n, scale="kl_rl")
        return loss, (-lf + (log_probs.detach() - ref_lp) / (n - 1.0)).mean()

    return step


def _kl_rl_loss(task: Task, cfg: KLRLConfig, generator: torch.Generator, rng: np.random.Generator) -> StepLoss:
    ref, rewards = torch.from_numpy(task.ref_log_probs), torch.from_numpy(task.rewards)

    def step(p: int, policy: CausalLMPolicy):
        idx, log_probs = _on_policy(task, policy, cfg.k, generator)
        ref_lp, r = ref[p, idx], rewards[p, idx]
        loss = reward_surrogate(log_probs, r) + cfg.beta * reverse_kl_surrogate(log_probs, ref_lp)
        return loss, (-r + cfg.beta * (log_probs.detach() - ref_lp)).mean()

    return step


def _bon_sft_loss(task: Task, cfg: BoNSFTConfig, generator: torch.Generator, rng: np.random.Generator) -> StepLoss:
    bon = task.bon_log_probs(cfg.n)

    def step(p: int, policy: CausalLMPolicy):
        idx = sample_indices(bon[p : p + 1], cfg.k, rng)[0]
        loss = -policy.log_prob([task.sequences[i] for i in idx]).mean()
        return loss, loss.detach()

    return step


@dataclass(frozen=True)
class Method:
    """A training method: its configuration class and the loss it trains on.

    Examples
    --------
    >>> METHODS["vbon_bound"].config is VBoNBoundConfig
    True
    """

    config: type[TrainConfig]
    loss: Callable[[Task, Any, torch.Generator, np.random.Generator], StepLoss]
    """(task, config, torch generator, numpy rng) -> per-prompt step loss; set-up work
    (e.g. drawing the reference samples of F̂) happens here, once."""


METHODS: dict[str, Method] = {
    "vbon": Method(VBoNConfig, _vbon_loss),
    "vbon_bound": Method(VBoNBoundConfig, _vbon_bound_loss),
    "kl_rl": Method(KLRLConfig, _kl_rl_loss),
    "bon_sft": Method(BoNSFTConfig, _bon_sft_loss),
}
"""Method name -> :class:`Method`; see the module docstring."""


def make_config(method: str, **fields: Any) -> TrainConfig:
    """The configuration of ``method`` with ``fields``.

    Examples
    --------
    >>> make_config("vbon", n=8, steps=10).label
    'vbon_N8'
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return METHODS[method].config(**fields)


# ------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> result = train(task, VBoNConfig(n=4, steps=2, k=4), progress=False)
    >>> len(result.objective), len(result.loss), result.model is task.model  # a trained copy
    (2, 2, False)
    """

    model: torch.nn.Module
    objective: list[float]
    """Per step, the sample estimate (averaged over prompts) of the quantity minimised."""
    loss: list[float]
    """Per step, the surrogate loss."""
    seconds: float


def _method(cfg: TrainConfig) -> Method:
    if not isinstance(cfg, TrainConfig) or cfg.method not in METHODS or type(cfg) is not METHODS[cfg.method].config:
        raise TypeError(f"cfg must be one of the configs of METHODS; got {type(cfg).__name__}")
    return METHODS[cfg.method]


def train(task: Task, cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Fine-tune a copy of ``task.model`` with ``cfg``'s method, from samples.

    Parameters
    ----------
    task : Task
    cfg : VBoNConfig, VBoNBoundConfig, KLRLConfig or BoNSFTConfig
    progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    TrainResult
        The trained copy (eval mode, float64, ``requires_grad`` off) and per-step logs.

    Notes
    -----
    Each step draws ``k`` continuations per prompt from the current policy
    (``bon_sft``: from the exact π_N), computes their log-probabilities with the
    autograd graph, builds the method's surrogate per prompt, averages over
    prompts and takes one Adam step. No step uses the enumerated support of the
    policy being trained.

    Examples
    --------
    Two steps of vBoN on the tiny task of :func:`bonmath.zoo.tiny_task`; the copy is
    trained, ``task.model`` is untouched:

    >>> import torch
    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> before = [p.clone() for p in task.model.parameters()]
    >>> result = train(task, VBoNConfig(n=4, steps=2, k=4), progress=False)
    >>> all(torch.equal(a, b) for a, b in zip(before, task.model.parameters()))
    True
    >>> any(not torch.equal(a, b) for a, b in zip(before, result.model.parameters()))
    True
    """
    method = _method(cfg)
    started = time.perf_counter()
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to): mypy then types the bound
    # method as still taking self, so the dtype is reported as the wrong first argument
    model = copy.deepcopy(task.model).to(torch.float64)  # type: ignore[arg-type]
    model.eval()  # the distribution must not depend on dropout
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (cfg.warmup_steps + 1)) * (1.0 - step / max(cfg.steps, 1))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    step_loss = method.loss(task, cfg, generator, np.random.default_rng(cfg.seed))
    policies = [task.policy(model, p) for p in range(task.num_prompts)]

    objective, losses = [], []
    bar = tqdm(range(cfg.steps), desc=cfg.label, disable=not progress, leave=False, mininterval=1.0)
    for _ in bar:
        optimizer.zero_grad()
        total_loss, total_objective = 0.0, 0.0
        for p, policy in enumerate(policies):
            loss, value = step_loss(p, policy)
            (loss / task.num_prompts).backward()
            total_loss += float(loss.detach()) / task.num_prompts
            total_objective += float(value) / task.num_prompts
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(total_loss)
        objective.append(total_objective)
        if progress:
            bar.set_postfix(objective=f"{total_objective:.4g}", refresh=False)
    bar.close()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return TrainResult(model, objective, losses, time.perf_counter() - started)


# ---------------------------------------------------------------------------- cache


@dataclass
class TrainedPolicy:
    """A trained model as cached: its config, exact log-probabilities and training log.

    Examples
    --------
    Trained without a cache on the tiny task of :func:`bonmath.zoo.tiny_task` (21 strings),
    the policy is a normalised distribution over the support, and has no weights on disk:

    >>> import numpy as np
    >>> from bonmath.zoo import tiny_task
    >>> policy = train_cached(tiny_task(), VBoNConfig(n=4, steps=2, k=4), None, progress=False)
    >>> policy.config.label, policy.log_probs.shape, np.exp(policy.log_probs).sum(-1).round(12), len(policy.objective)
    ('vbon_N4', (1, 21), array([1.]), 2)
    >>> policy.state_dict()
    Traceback (most recent call last):
    ...
    ValueError: this TrainedPolicy has no cache entry
    """

    config: TrainConfig
    log_probs: np.ndarray
    """log π_θ(y | x_p) on the task's support, float64 of shape (P, S)."""
    objective: list[float]
    seconds: float
    path: Path | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights (loaded from the cache entry)."""
        if self.path is None:
            raise ValueError("this TrainedPolicy has no cache entry")
        return torch.load(self.path / "state_dict.pt", weights_only=True)


def cache_key(task: Task, cfg: TrainConfig) -> str:
    """sha256 over the training config, the task's fingerprint, torch's version and :data:`CACHE_FORMAT`.

    Examples
    --------
    The tiny task of :func:`bonmath.zoo.tiny_task` (a random 1-layer GPT-2, 21 strings):

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> key = cache_key(task, VBoNConfig(n=4, steps=2, k=4))
    >>> len(key), key == cache_key(task, VBoNConfig(n=4, steps=2, k=4)), key == cache_key(task, VBoNConfig(n=4, steps=2, k=4, seed=1))
    (64, True, False)
    """
    return fingerprint({"format": CACHE_FORMAT, "config": cfg.to_json(), "task": task.fingerprint(),
                        "torch": torch.__version__.split("+")[0]})


def cache_path(task: Task, cfg: TrainConfig, cache_dir: str | os.PathLike) -> Path:
    """The cache entry of :func:`train_cached` for ``cfg`` on ``task``: ``cache_dir/<label>_<key[:20]>``.

    Examples
    --------
    >>> from bonmath.zoo import tiny_task
    >>> cache_path(tiny_task(), VBoNConfig(n=4, steps=2, k=4), "cache").name.startswith("vbon_N4_")
    True
    """
    return Path(cache_dir) / f"{cfg.label}_{cache_key(task, cfg)[:20]}"


def _load_entry(path: Path, cfg: TrainConfig) -> TrainedPolicy:
    meta = json.loads((path / "meta.json").read_text())
    if meta["config"] != cfg.to_json():
        raise RuntimeError(f"cache entry {path} holds config {meta['config']}, not {cfg.to_json()}; "
                           "it is stale or damaged: delete it to retrain")
    log_probs = np.load(path / "log_probs.npy", allow_pickle=False)
    return TrainedPolicy(cfg, log_probs, meta["objective"], meta["seconds"], path)


def train_cached(
    task: Task, cfg: TrainConfig, cache_dir: str | os.PathLike | None, progress: bool = True
) -> TrainedPolicy:
    """:func:`train`, then enumerate; or read both from ``cache_dir``.

    An entry is the directory :func:`cache_path` (``cache_dir/<label>_<key[:20]>``, key:
    :func:`cache_key`) with ``meta.json``, ``log_probs.npy`` (float64, (P, S)) and
    ``state_dict.pt``, written by :func:`bonmath.cache.write_once`: a reader never
    sees half an entry, and an entry that appears meanwhile (another process) with
    different log-probabilities is a ``RuntimeError``. ``cache_dir=None`` trains
    without caching.

    Examples
    --------
    The first call trains and writes the entry; the second reads it back:

    >>> import tempfile
    >>> import numpy as np
    >>> from bonmath.zoo import tiny_task
    >>> task, cfg = tiny_task(), VBoNConfig(n=4, steps=2, k=4)
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     trained = train_cached(task, cfg, cache, progress=False)
    ...     read = train_cached(task, cfg, cache, progress=False)
    ...     files = sorted(path.name for path in trained.path.iterdir())
    ...     weights = read.state_dict()
    >>> files, read.path == trained.path == cache_path(task, cfg, cache)
    (['log_probs.npy', 'meta.json', 'state_dict.pt'], True)
    >>> np.array_equal(read.log_probs, trained.log_probs), read.seconds == trained.seconds, "lm_head.weight" in weights
    (True, True, True)
    """
    if cache_dir is None:
        result = train(task, cfg, progress)
        return TrainedPolicy(cfg, task.enumerate_log_probs(result.model), result.objective, result.seconds)
    path = cache_path(task, cfg, cache_dir)
    if (path / "meta.json").is_file():
        return _load_entry(path, cfg)
    result = train(task, cfg, progress)
    log_probs = task.enumerate_log_probs(result.model)
    if not np.isfinite(log_probs).all() or not all(math.isfinite(x) for x in result.objective):
        raise RuntimeError(f"training {cfg.label} produced non-finite values; not caching it")

    def write(tmp: Path) -> None:
        np.save(tmp / "log_probs.npy", log_probs)
        torch.save(result.model.state_dict(), tmp / "state_dict.pt")
        meta = {"config": cfg.to_json(), "label": cfg.label, "objective": result.objective,
                "seconds": result.seconds, "task": task.fingerprint(), "format": CACHE_FORMAT,
                "prompts": task.prompt_texts, "max_new_tokens": task.max_new_tokens}
        (tmp / "meta.json").write_text(json.dumps(meta))

    def agrees(existing: Path) -> bool:
        return np.array_equal(_load_entry(existing, cfg).log_probs, log_probs)

    write_once(path, write, agrees, directory=True)
    return TrainedPolicy(cfg, log_probs, result.objective, result.seconds, path)
