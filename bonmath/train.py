"""Fine-tuning a causal LM with vBoN, its lower bound, KL-RL and BoN-SFT, on an enumerable task.

The vBoN sentiment experiment (Amini et al. 2025, Sec. 5) at a scale where every
number is exact: a small reference LM, a few prompts, continuations of at most
``max_new_tokens`` tokens, so that each prompt's whole continuation space is
enumerated once (:class:`Task`). Training itself only ever sees *samples*: k
continuations per prompt per step, drawn from the policy being trained with
:meth:`bonmath.hf.CausalLMPolicy.sample`, scored by the reward, and turned into a
surrogate loss by :mod:`bonmath.estimators`. The enumerated reference supplies
what the methods assume known: log π_ref(y), r(y) (a lookup of the cached reward,
the same number as calling VADER on the sample), the exact reward CDF and the
exact BoN law. Evaluation (:mod:`bonmath.experiment`) enumerates the trained
models.

Methods (:data:`METHODS`; REFERENCE.md, "vBoN"):

``vbon``
    Minimise KL(π_θ || π_N) with the exact log π_N = log π_ref + R_N
    (:func:`bonmath.estimators.vbon_surrogate`, RLOO baseline).
``vbon_bound``
    Maximise the lower bound L: KL-RL with reward log F_lt and β = 1/(N-1)
    (:func:`bonmath.estimators.vbon_bound_surrogate` with ``scale="kl_rl"``, as the
    paper's released code trains). F is exact (``cdf_samples=None``) or estimated
    from M reference samples per prompt, drawn once before training, with the
    released code's add-one estimator (:func:`bonmath.estimate_log_cdf`).
``kl_rl``
    Maximise E[r] - β KL(π_θ||π_ref) with the raw reward. The paper uses PPO; here
    it is RLOO with the KL as k1 in the reward (TRL's ``RLOOTrainer``): the
    surrogate :func:`~bonmath.estimators.reward_surrogate` +
    β :func:`~bonmath.estimators.reverse_kl_surrogate`, both leave-one-out, which
    is the score function of r - β (log π_θ - log π_ref) with an RLOO baseline.
``bon_sft``
    Maximum likelihood on BoN samples (minimises KL(π_N || π_θ)); the samples are
    drawn exactly from the enumerated π_N, which is the law of
    :func:`bonmath.sample_bon`.

The lowest reward level. With the exact F, F_lt = 0 on the lowest level, so
L = -inf for every policy that gives it mass (every softmax policy does). Where a
sample lands there (its π_ref mass is ~1e-16 on the review task, so it does not
happen in practice) the bound's per-string value log N + (N-1) log F_lt is replaced
by the exact R_N = (N-1) log q of that level (the finite bound L̃ of
:func:`bonmath.vbon_finite_lower_bound`, trained through :meth:`Task.bound_log_cdf`);
this is still a lower bound on R_N everywhere, and equals L's value elsewhere.

All parameters of a copy of the reference model are trained, with Adam, a
linearly decaying learning rate (optional linear warm-up) and optional
gradient-norm clipping (TRL's ``max_grad_norm``), in float64. Runs are deterministic given the
seed (and torch's thread count, which can change float reductions).
:func:`train_cached` stores each trained model's enumerated log-probabilities and
state_dict under a cache directory keyed by the configuration and the task.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bonmath.bon import bon_log_probs, bon_log_ratio
from bonmath.cdf_estimation import estimate_log_cdf
from bonmath.enumeration import Enumeration
from bonmath.estimators import (
    reverse_kl_surrogate,
    reward_surrogate,
    vbon_bound_surrogate,
    vbon_surrogate,
)
from bonmath.hf import CausalLMPolicy
from bonmath.levels import reward_levels
from bonmath.objectives import vbon_finite_bound_log_cdf

__all__ = [
    "CACHE_FORMAT",
    "METHODS",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainedPolicy",
    "train",
    "train_cached",
]

METHODS = ("vbon", "vbon_bound", "kl_rl", "bon_sft")
"""Training methods; see the module docstring."""

CACHE_FORMAT = 1
"""Bump when the meaning of a cached trained model changes (trainer code, evaluation format)."""

Continuation = tuple[int, ...]


def _help(text: str, default: Any = None, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": text}, **kwargs)


# --------------------------------------------------------------------------- the task


class Task:
    """An enumerated reference LM over a few prompts, with rewards and the exact BoN law.

    Parameters
    ----------
    model : transformers causal LM
        The reference model, float64, eval mode. The task keeps it; trainers copy it.
    prompts : sequence of (str, sequence of int)
        Each prompt's text (a label) and token ids.
    max_new_tokens : int
        Longest continuation ``L``.
    rewards : callable (prompt text, prompt ids, list of continuations) -> float array
        The reward of every continuation of one prompt (e.g.
        :func:`bonmath.sentiment.continuation_rewards`).
    eos_token_id : int, None or "config"
        As for :class:`bonmath.hf.CausalLMPolicy`.

    Attributes
    ----------
    sequences : list of S tuples of int
        Every continuation, in :meth:`CausalLMPolicy.enumerate` order (the same for
        every prompt: without top-k the support does not depend on the prompt).
    ref_log_probs, rewards : float64 arrays of shape (P, S)
        log π_ref(y | x_p) and r(x_p, y).
    log_cdf_lt, log_cdf_le, log_level_mass : float64 arrays of shape (P, S)
        log F_lt, log F_le and log q of each string's reward level under π_ref.

    Notes
    -----
    Exact BoN quantities are cached per N (:meth:`bon_log_probs`,
    :meth:`bon_log_ratio`). :meth:`lookup` maps sampled continuations to support
    indices, which is how rewards and reference log-probabilities of samples are
    read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompts: Sequence[tuple[str, Sequence[int]]],
        max_new_tokens: int,
        rewards: Callable[[str, tuple[int, ...], list[Continuation]], np.ndarray],
        eos_token_id: int | None | str = "config",
    ) -> None:
        if not prompts:
            raise ValueError("a task needs at least one prompt")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self.prompt_texts = [str(text) for text, _ in prompts]
        self.prompt_ids = [tuple(int(t) for t in ids) for _, ids in prompts]
        support, log_probs, reward_rows = None, [], []
        for text, ids in zip(self.prompt_texts, self.prompt_ids):
            with torch.no_grad():
                enumeration = self.policy(model, len(log_probs)).enumerate()
            if support is None:
                support = enumeration
            elif not torch.equal(enumeration.sequences, support.sequences):
                raise ValueError("prompts have different continuation supports (top_k is not supported)")
            lp = enumeration.log_probs
            log_probs.append(lp.detach().to(torch.float64).cpu().numpy())
            seqs = support.keys()
            r = np.asarray(rewards(text, ids, seqs), dtype=np.float64)
            if r.shape != (len(seqs),) or not np.isfinite(r).all():
                raise ValueError(f"rewards for prompt {text!r} must be finite, of shape ({len(seqs)},)")
            reward_rows.append(r)
        self.support: Enumeration = support  # the strings, (S, L) with PAD after EOS
        self.sequences: list[Continuation] = support.keys()
        self.ref_log_probs = np.stack(log_probs)
        self.rewards = np.stack(reward_rows)
        levels = reward_levels(self.ref_log_probs, self.rewards, np)
        self.log_cdf_lt = levels.per_string(levels.log_cdf_lt, np)
        self.log_cdf_le = levels.per_string(levels.log_cdf_le, np)
        self.log_level_mass = levels.per_string(levels.log_mass, np)
        self._bon: dict[float, np.ndarray] = {}
        self._ratio: dict[float, np.ndarray] = {}
        self._fingerprint: str | None = None
        self.tokenizer: Any = None

    @classmethod
    def from_review_lm(
        cls,
        prompts: Sequence[int] | None = None,
        max_new_tokens: int = 4,
        path: str | os.PathLike | None = None,
        reward_cache_dir: str | os.PathLike | None = None,
    ) -> Task:
        """The review task: :func:`bonmath.sentiment.load_review_lm` with VADER rewards.

        Parameters
        ----------
        prompts : sequence of int, optional
            Indices into ``prompts.json``; all prompts by default.
        max_new_tokens : int, default 4
        path : path-like, optional
            Model directory (default :data:`bonmath.sentiment.REVIEW_LM_PATH`).
        reward_cache_dir : path-like, optional
            Passed to :func:`bonmath.sentiment.continuation_rewards`.
        """
        from bonmath.sentiment import REVIEW_LM_PATH, continuation_rewards, load_review_lm

        model, tokenizer, texts = load_review_lm(REVIEW_LM_PATH if path is None else path)
        chosen = range(len(texts)) if prompts is None else prompts
        pairs = [(texts[i], tokenizer(texts[i], add_special_tokens=False)["input_ids"]) for i in chosen]

        def rewards(text, ids, seqs):
            return continuation_rewards(tokenizer, text, seqs, cache_dir=reward_cache_dir)

        task = cls(model, pairs, max_new_tokens, rewards)
        task.tokenizer = tokenizer
        return task

    # ------------------------------------------------------------------ basics

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids)

    def policy(self, model: torch.nn.Module, prompt: int) -> CausalLMPolicy:
        """The continuation distribution of ``model`` for prompt ``prompt``."""
        return CausalLMPolicy(model, self.prompt_ids[prompt], self.max_new_tokens, self.eos_token_id)

    def lookup(self, continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """Support indices of complete continuations, shape (k,)."""
        return self.support.index(continuations)

    @torch.no_grad()
    def enumerate_log_probs(self, model: torch.nn.Module) -> np.ndarray:
        """log π_θ(y | x_p) of ``model`` on the whole support, float64 of shape (P, S)."""
        rows = []
        for p in range(self.num_prompts):
            enumeration = self.policy(model, p).enumerate()
            if not torch.equal(enumeration.sequences, self.support.sequences):
                raise ValueError("the model's support differs from the task's")
            rows.append(enumeration.log_probs.to(torch.float64).cpu().numpy())
        return np.stack(rows)

    # ------------------------------------------------------------ exact BoN law

    def bon_log_probs(self, n: float) -> np.ndarray:
        """log π_N for every prompt, shape (P, S) (cached)."""
        n = float(n)
        if n not in self._bon:
            self._bon[n] = bon_log_probs(self.ref_log_probs, self.rewards, n)
        return self._bon[n]

    def bon_log_ratio(self, n: float) -> np.ndarray:
        """R_N = log π_N - log π_ref for every prompt, shape (P, S) (cached)."""
        n = float(n)
        if n not in self._ratio:
            self._ratio[n] = bon_log_ratio(self.ref_log_probs, self.rewards, n)
        return self._ratio[n]

    def bound_log_cdf(self, n: float) -> np.ndarray:
        """log F̃ of the finite bound L̃ for every prompt, shape (P, S), n > 1.

        :func:`bonmath.vbon_finite_bound_log_cdf`: log F_lt, with log q - log N/(N-1)
        where F_lt = 0, so that the bound's per-string value there is the exact R_N.
        """
        return vbon_finite_bound_log_cdf(self.ref_log_probs, self.rewards, n)

    def fingerprint(self) -> str:
        """sha256 of the model weights and config, the prompts, L, EOS and the rewards."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            header = {
                "prompts": [list(ids) for ids in self.prompt_ids],
                "max_new_tokens": self.max_new_tokens,
                "eos_token_id": self.eos_token_id,
                "config": self.model.config.to_json_string(use_diff=False),
                "num_sequences": len(self.sequences),
            }
            digest.update(json.dumps(header, sort_keys=True).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to(torch.float64).cpu().contiguous().numpy().tobytes())
            digest.update(np.ascontiguousarray(self.rewards).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


# --------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    method: str = _help("vbon, vbon_bound, kl_rl or bon_sft (see bonmath.train)", "vbon")
    n: int | None = _help("BoN N (vbon, vbon_bound: beta = 1/(N-1), bon_sft)", None)
    beta: float | None = _help("KL coefficient of kl_rl", None)
    cdf_samples: int | None = _help(
        "vbon_bound only: M reference samples per prompt for F-hat (add-one); None = exact F", None
    )
    steps: int = _help("optimizer steps", 300)
    k: int = _help("samples per prompt per step (RLOO needs k >= 2)", 16)
    lr: float = _help("Adam learning rate (decays linearly to 0 over the steps)", 3e-3)
    warmup_steps: int = _help("linear learning-rate warm-up steps", 0)
    max_grad_norm: float | None = _help("clip the global gradient norm to this (None: no clipping)", None)
    seed: int = _help("seed of the policy samples and the reference samples for F-hat", 0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.method in ("vbon", "vbon_bound", "bon_sft"):
            if self.n is None or int(self.n) != self.n or self.n < 1:
                raise ValueError(f"method {self.method!r} needs an integer n >= 1; got {self.n!r}")
            if self.method == "vbon_bound" and self.n < 2:
                raise ValueError("vbon_bound trains with beta = 1/(N-1): it needs n >= 2")
        if self.method == "kl_rl" and (self.beta is None or not self.beta > 0):
            raise ValueError(f"kl_rl needs beta > 0; got {self.beta!r}")
        if self.cdf_samples is not None and (self.method != "vbon_bound" or self.cdf_samples < 1):
            raise ValueError("cdf_samples is a positive M, for vbon_bound only")
        if self.steps < 0 or self.k < 2:
            raise ValueError(f"need steps >= 0 and k >= 2; got steps={self.steps}, k={self.k}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")

    @property
    def label(self) -> str:
        """Short name, e.g. ``vbon_bound_N8_M32``."""
        if self.method == "kl_rl":
            return f"kl_rl_beta{self.beta:g}"
        label = f"{self.method}_N{self.n}"
        if self.method == "vbon_bound":
            label += "_exactF" if self.cdf_samples is None else f"_M{self.cdf_samples}"
        return label


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: torch.nn.Module
    objective: list[float]
    """Per step, the sample estimate (averaged over prompts) of the quantity minimised."""
    loss: list[float]
    """Per step, the surrogate loss."""
    seconds: float


# ------------------------------------------------------------------------- training


def _reference_log_cdf_hat(task: Task, cfg: TrainConfig, generator: torch.Generator) -> np.ndarray:
    """log F̂ (add-one) at every string from M reference samples per prompt, shape (P, S)."""
    rows = []
    for p in range(task.num_prompts):
        samples = task.policy(task.model, p).sample(cfg.cdf_samples, generator)
        reference_rewards = task.rewards[p, task.lookup(samples)]
        rows.append(estimate_log_cdf(reference_rewards, task.rewards[p], "add_one"))
    return np.stack(rows)


def train(task: Task, cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Fine-tune a copy of ``task.model`` with ``cfg.method`` from samples.

    Parameters
    ----------
    task : Task
    cfg : TrainConfig
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
    >>> task = Task.from_review_lm(prompts=[0], max_new_tokens=2)  # doctest: +SKIP
    >>> result = train(task, TrainConfig("vbon", n=4, steps=10, k=4), progress=False)  # doctest: +SKIP
    """
    started = time.perf_counter()
    model = copy.deepcopy(task.model).to(torch.float64)
    model.eval()  # the distribution must not depend on dropout
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (cfg.warmup_steps + 1)) * (1.0 - step / max(cfg.steps, 1))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    policies = [task.policy(model, p) for p in range(task.num_prompts)]
    ref = torch.from_numpy(task.ref_log_probs)

    n = None if cfg.n is None else float(cfg.n)
    if cfg.method == "vbon":
        log_ratio = torch.from_numpy(task.bon_log_ratio(n))
    elif cfg.method == "vbon_bound":
        log_cdf = task.bound_log_cdf(n) if cfg.cdf_samples is None else _reference_log_cdf_hat(task, cfg, generator)
        log_cdf = torch.from_numpy(log_cdf)
    elif cfg.method == "bon_sft":
        bon_cdf = np.cumsum(np.exp(task.bon_log_probs(n)), axis=-1)
        bon_cdf /= bon_cdf[:, -1:]
    rewards = torch.from_numpy(task.rewards)

    objective, losses = [], []
    bar = tqdm(range(cfg.steps), desc=cfg.label, disable=not progress, leave=False, mininterval=1.0)
    for _ in bar:
        optimizer.zero_grad()
        step_loss, step_objective = 0.0, 0.0
        for p, policy in enumerate(policies):
            if cfg.method == "bon_sft":
                idx = np.minimum(np.searchsorted(bon_cdf[p], rng.random(cfg.k), side="right"), len(task.sequences) - 1)
                samples = [task.sequences[i] for i in idx]
            else:
                samples = policy.sample(cfg.k, generator)
                idx = task.lookup(samples)
            idx_t = torch.from_numpy(idx)
            log_probs = policy.log_prob(samples)
            ref_lp = ref[p, idx_t]
            if cfg.method == "vbon":
                loss = vbon_surrogate(log_probs, ref_lp, log_ratio[p, idx_t])
                value = (log_probs.detach() - ref_lp - log_ratio[p, idx_t]).mean()
            elif cfg.method == "vbon_bound":
                lf = log_cdf[p, idx_t]
                loss = vbon_bound_surrogate(log_probs, ref_lp, lf, n, scale="kl_rl")
                value = (-lf + (log_probs.detach() - ref_lp) / (n - 1.0)).mean()
            elif cfg.method == "kl_rl":
                r = rewards[p, idx_t]
                loss = reward_surrogate(log_probs, r) + cfg.beta * reverse_kl_surrogate(log_probs, ref_lp)
                value = (-r + cfg.beta * (log_probs.detach() - ref_lp)).mean()
            else:
                loss = -log_probs.mean()
                value = loss.detach()
            (loss / task.num_prompts).backward()
            step_loss += float(loss.detach()) / task.num_prompts
            step_objective += float(value) / task.num_prompts
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(step_loss)
        objective.append(step_objective)
        if progress:
            bar.set_postfix(objective=f"{step_objective:.4g}", refresh=False)
    bar.close()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return TrainResult(model, objective, losses, time.perf_counter() - started)


# ---------------------------------------------------------------------------- cache


@dataclass
class TrainedPolicy:
    """A trained model as cached: its config, exact log-probabilities and training log."""

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
    """sha256 over the training config, the task's fingerprint and :data:`CACHE_FORMAT`."""
    payload = {"format": CACHE_FORMAT, "config": asdict(cfg), "task": task.fingerprint(),
               "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_entry(path: Path, cfg: TrainConfig) -> TrainedPolicy:
    meta = json.loads((path / "meta.json").read_text())
    if meta["config"] != asdict(cfg):
        raise RuntimeError(f"cache entry {path} holds config {meta['config']}, not {asdict(cfg)}; "
                           "it is stale or damaged: delete it to retrain")
    log_probs = np.load(path / "log_probs.npy", allow_pickle=False)
    return TrainedPolicy(cfg, log_probs, meta["objective"], meta["seconds"], path)


def train_cached(
    task: Task, cfg: TrainConfig, cache_dir: str | os.PathLike | None, progress: bool = True
) -> TrainedPolicy:
    """:func:`train`, then enumerate; or read both from ``cache_dir``.

    An entry is the directory ``cache_dir/<label>_<key[:20]>`` (key:
    :func:`cache_key`) with ``meta.json``, ``log_probs.npy`` (float64, (P, S)) and
    ``state_dict.pt``. It is written to a temporary directory and renamed into
    place, so a reader never sees half an entry. An existing entry is never
    replaced: if one appears while training (another process) with different
    log-probabilities, a ``RuntimeError`` is raised. ``cache_dir=None`` trains
    without caching.
    """
    if cache_dir is None:
        result = train(task, cfg, progress)
        return TrainedPolicy(cfg, task.enumerate_log_probs(result.model), result.objective, result.seconds)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cfg.label}_{cache_key(task, cfg)[:20]}"
    if (path / "meta.json").is_file():
        return _load_entry(path, cfg)
    result = train(task, cfg, progress)
    log_probs = task.enumerate_log_probs(result.model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".tmp-"))
    try:
        np.save(tmp / "log_probs.npy", log_probs)
        torch.save(result.model.state_dict(), tmp / "state_dict.pt")
        meta = {"config": asdict(cfg), "label": cfg.label, "objective": result.objective,
                "seconds": result.seconds, "task": task.fingerprint(), "format": CACHE_FORMAT,
                "prompts": task.prompt_texts, "max_new_tokens": task.max_new_tokens}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, path)  # atomic; fails if path exists and is not empty
        except OSError:
            existing = _load_entry(path, cfg)
            if not np.array_equal(existing.log_probs, log_probs):
                raise RuntimeError(
                    f"cache entry {path} exists with different log-probabilities; not overwriting it"
                ) from None
            return existing
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TrainedPolicy(cfg, log_probs, result.objective, result.seconds, path)
