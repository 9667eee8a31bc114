"""vBoN on an enumerable :class:`bonmath.task.Task`, trained by TRL's ``RLOOTrainer`` as bonmath's trainer would.

:func:`train_trl_vbon` trains vBoN (exact R_N, β = 1) with TRL 1.16's
``RLOOTrainer`` and :class:`bonmath.trl.VBoNReward` with the task's exact CDF,
configured from a :class:`bonmath.train.VBoNConfig` so that it matches
:func:`bonmath.train.train` as closely as TRL allows (see its Notes for what still
differs), and enumerates the trained policy on the task's support.
:func:`optimizer_step_times` times optimizer steps of any trainer the same way.

TRL is imported only when a model is trained (extra ``trl``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from bonmath.cache import fingerprint, package_version, write_once
from bonmath.task import Task
from bonmath.train import CACHE_FORMAT, VBoNConfig

__all__ = ["TRLRun", "optimizer_step_times", "step_durations", "train_trl_vbon", "trl_cache_path"]


@contextlib.contextmanager
def optimizer_step_times() -> Iterator[list[float]]:
    """Collect ``time.perf_counter()`` after every ``torch.optim`` step taken inside the block.

    The differences of consecutive entries are the wall time per optimizer step of
    any trainer (bonmath's Adam, TRL's AdamW) measured the same way.

    Examples
    --------
    >>> w = torch.zeros(2, requires_grad=True)
    >>> optimizer = torch.optim.SGD([w], lr=0.1)
    >>> with optimizer_step_times() as stamps:
    ...     for _ in range(3):
    ...         optimizer.zero_grad(); (w - 1).pow(2).sum().backward(); optimizer.step()
    >>> len(stamps), all(d >= 0 for d in step_durations(stamps))  # one stamp per step
    (3, True)
    """
    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        yield stamps
    finally:
        handle.remove()


def step_durations(stamps: Sequence[float]) -> list[float]:
    """Seconds between consecutive :func:`optimizer_step_times` stamps (one per step after the first).

    Examples
    --------
    >>> step_durations([10.0, 10.5, 12.0])
    [0.5, 1.5]
    """
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


@dataclass
class TRLRun:
    """A TRL-trained policy: its enumerated log-probabilities and timing.

    Examples
    --------
    What :func:`train_trl_vbon` returns, here after one RLOO step on the review LM's
    first prompt (23 continuations of at most one token):

    >>> from bonmath.sentiment import review_task
    >>> run = train_trl_vbon(review_task(prompts=[0], max_new_tokens=1), VBoNConfig(n=4, steps=1, k=2))
    >>> run.config.label, run.log_probs.shape, round(float(np.exp(run.log_probs).sum()), 12)
    ('vbon_N4', (1, 23), 1.0)
    >>> run.optimizer_steps, run.step_seconds, run.trl_version == package_version("trl")  # one step: no duration
    (1, [], True)
    """

    config: VBoNConfig
    log_probs: np.ndarray
    """log π_θ(y | x_p) on the task's support, float64 of shape (P, S)."""
    seconds: float
    step_seconds: list[float]
    """Wall time of each optimizer step after the first."""
    trl_version: str
    optimizer_steps: int


def trl_cache_path(task: Task, cfg: VBoNConfig, cache_dir: str | os.PathLike) -> Path:
    """The cache entry of :func:`train_trl_vbon` for ``cfg`` on ``task`` under ``cache_dir``.

    Its name is the configuration's label and the first 20 hex digits of a key that
    hashes the whole configuration, the task's fingerprint and the TRL and torch versions.

    Examples
    --------
    Nothing is written; another seed (like any other field) gives another entry:

    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> path = trl_cache_path(task, VBoNConfig(n=4), "cache/trl_models")
    >>> path.parent == Path("cache/trl_models"), path.name.startswith("vbon_N4_trl_"), len(path.name)
    (True, True, 32)
    >>> path == trl_cache_path(task, VBoNConfig(n=4, seed=1), "cache/trl_models")
    False
    """
    return Path(cache_dir) / f"{cfg.label}_trl_{_trl_key(task, cfg)[:20]}"


def _trl_key(task: Task, cfg: VBoNConfig) -> str:
    return fingerprint({"trainer": "trl.RLOOTrainer", "positions": "from attention mask", "trl": package_version("trl"),
                        "config": cfg.to_json(), "task": task.fingerprint(), "format": CACHE_FORMAT,
                        "torch": torch.__version__.split("+")[0]})


def _train_trl(task: Task, cfg: VBoNConfig) -> TRLRun:
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback

    from bonmath.trl import VBoNReward, position_ids_from_attention_mask
    from bonmath.trl_sentiment import SentimentReward

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = task.tokenizer
    for text, ids in zip(task.prompt_texts, task.prompt_ids):
        if tuple(tokenizer(text=text)["input_ids"]) != ids:
            raise ValueError(f"TRL tokenizes prompt {text!r} differently from the task")
    exact_cdf = {text: (task.rewards[p], task.ref_log_probs[p]) for p, text in enumerate(task.prompt_texts)}
    reward = VBoNReward(SentimentReward(tokenizer), cfg.n, objective="exact", exact_cdf=exact_cdf)
    model = copy.deepcopy(task.model)  # float64, as bonmath trains; TRL builds its reference in the same dtype
    batch = task.num_prompts * cfg.k
    with tempfile.TemporaryDirectory() as tmp:
        args = trl.RLOOConfig(
            output_dir=tmp, use_cpu=True, seed=cfg.seed, max_steps=cfg.steps, learning_rate=cfg.lr,
            lr_scheduler_type="linear", warmup_steps=0, optim="adamw_torch", weight_decay=0.0,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
            max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else 0.0,
            per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_generations=cfg.k,
            max_completion_length=task.max_new_tokens, beta=1.0, num_iterations=1, normalize_advantages=False,
            temperature=1.0, top_k=0, top_p=1.0, mask_truncated_completions=False, disable_dropout=True,
            gradient_checkpointing=False, bf16=False, logging_steps=max(cfg.steps, 1), save_strategy="no",
            report_to="none", disable_tqdm=True,
        )
        # TRL types reward functions as returning list[float | None]; VBoNReward returns list[float]
        trainer = trl.RLOOTrainer(model=model, reward_funcs=cast("Callable[..., list[float | None]]", reward), args=args,
                                  train_dataset=Dataset.from_dict({"prompt": task.prompt_texts}),
                                  processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # its per-log prints; the study's own bar shows progress
        for policy in (trainer.model, trainer.ref_model):  # prompts of different lengths: docs/trl.md
            if policy is not None:
                position_ids_from_attention_mask(trainer.accelerator.unwrap_model(policy))
        started = time.perf_counter()
        with optimizer_step_times() as stamps:
            trainer.train()
        seconds = time.perf_counter() - started
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    log_probs = task.enumerate_log_probs(trained)
    return TRLRun(cfg, log_probs, seconds, step_durations(stamps), trl.__version__, len(stamps))


def train_trl_vbon(task: Task, cfg: VBoNConfig, cache_dir: str | os.PathLike | None = None) -> TRLRun:
    """vBoN with TRL's ``RLOOTrainer`` matched to bonmath's ``cfg``, enumerated; or read from ``cache_dir``.

    Parameters
    ----------
    task : Task
        Its model (trained in float64, a copy), prompts, tokenizer and L; the reward is
        VADER (:class:`bonmath.trl_sentiment.SentimentReward`) through
        :class:`bonmath.trl.VBoNReward` with the task's exact CDF (``objective="exact"``).
    cfg : VBoNConfig
        N, steps, k (``num_generations``; the batch is all prompts x k), lr, grad
        clipping and seed, as for :func:`bonmath.train.train`.
    cache_dir : path-like, optional
        Entry ``<label>_trl_<key[:20]>/`` with ``log_probs.npy`` and ``meta.json``,
        written once (:func:`bonmath.cache.write_once`).

    Returns
    -------
    TRLRun

    Notes
    -----
    β = 1, AdamW with weight decay 0 (Adam), linear decay from ``lr``, clipping at
    ``max_grad_norm``, temperature 1, ``top_k=0``, ``top_p=1``, no dropout,
    ``num_iterations=1``, ``normalize_advantages=False``: RLOO's gradient is then an
    unbiased estimate of -∇KL(π_θ||π_N) (:mod:`bonmath.trl`). What still differs
    from bonmath's trainer: TRL draws its samples with ``model.generate`` from the
    global torch RNG (other draws than bonmath's generator), stores rewards in
    float32, and left-pads prompts of unequal length without passing position ids
    to the model's forward (GPT-2 then shifts the positions of a shorter prompt in
    the log-probabilities of the loss and of the KL, though ``generate`` samples with
    the right ones).

    Examples
    --------
    Two RLOO steps with N = 4 and k = 2 on the review LM's first prompt (23
    continuations): KL(π_θ || π_4) drops below the reference's, and a second call
    reads the cache entry instead of training:

    >>> import tempfile
    >>> from bonmath.evaluation import policy_metrics
    >>> from bonmath.sentiment import review_task
    >>> task, cfg = review_task(prompts=[0], max_new_tokens=1), VBoNConfig(n=4, steps=2, k=2)
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     run = train_trl_vbon(task, cfg, cache)
    ...     again = train_trl_vbon(task, cfg, cache)
    ...     files = sorted(path.name for path in trl_cache_path(task, cfg, cache).iterdir())
    >>> run.optimizer_steps, files, np.array_equal(again.log_probs, run.log_probs), again.seconds == run.seconds
    (2, ['log_probs.npy', 'meta.json'], True, True)
    >>> before, after = (policy_metrics(task, log_probs, ns=[4], num_samples=0).kl_to_bon(4)
    ...                  for log_probs in (task.ref_log_probs, run.log_probs))
    >>> after < before
    True
    >>> train_trl_vbon(task, VBoNConfig(n=4, warmup_steps=1))
    Traceback (most recent call last):
    ...
    ValueError: cfg.warmup_steps must be 0 (the TRL runs use no warm-up)
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a bonmath.task.Task; got {task!r}")
    if not isinstance(cfg, VBoNConfig):
        raise TypeError(f"cfg must be a VBoNConfig; got {type(cfg).__name__}")
    if cfg.warmup_steps:
        raise ValueError("cfg.warmup_steps must be 0 (the TRL runs use no warm-up)")
    if cache_dir is None:
        return _train_trl(task, cfg)
    path = trl_cache_path(task, cfg, cache_dir)
    if not (path / "meta.json").is_file():
        run = _train_trl(task, cfg)

        def write(tmp: Path) -> None:
            np.save(tmp / "log_probs.npy", run.log_probs)
            meta = {"config": cfg.to_json(), "seconds": run.seconds, "step_seconds": run.step_seconds,
                    "trl_version": run.trl_version, "optimizer_steps": run.optimizer_steps,
                    "task": task.fingerprint()}
            (tmp / "meta.json").write_text(json.dumps(meta))

        write_once(path, write, lambda existing: np.array_equal(np.load(existing / "log_probs.npy"), run.log_probs),
                   directory=True)
        return run
    meta = json.loads((path / "meta.json").read_text())
    if meta["config"] != cfg.to_json():
        raise RuntimeError(f"cache entry {path} holds config {meta['config']}; delete it to retrain")
    return TRLRun(cfg, np.load(path / "log_probs.npy", allow_pickle=False), meta["seconds"], meta["step_seconds"],
                  meta["trl_version"], meta["optimizer_steps"])
