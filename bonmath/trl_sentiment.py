"""vBoN with TRL's RLOO trainer on the review LM, with exact evaluation while training.

The scale path of the vBoN sentiment experiment: the same task as
:mod:`bonmath.train` (``models/review_lm``, VADER reward rounded to 4 decimals), but
trained by TRL's ``RLOOTrainer`` with :class:`bonmath.trl.VBoNReward` (reference
rewards drawn once per prompt from the reference model) and evaluated exactly by
:class:`bonmath.trl.ExactEvaluationCallback`. RLOO, not GRPO: RLOO puts the sequence
KL (summed k1) into the reward, which with β = 1 makes its gradient an unbiased
estimate of ∇J = -∇KL(π_θ || π̂_N); GRPO's per-token k3 in the loss and its std
scaling do not (see :mod:`bonmath.trl` and the audit).

Run in one process or several (``gloo`` on CPU)::

    python -m bonmath.trl_sentiment --smoke --out results.json
    accelerate launch --cpu --num_processes 2 -m bonmath.trl_sentiment --smoke --out results.json

``benchmarks/trl_vbon_sentiment.py`` is the same command. The JSON holds the exact
metrics at the start and the end (``start``, ``end``: reward, kl_ref, kl_bon, J, bound,
win_rate, averaged over prompts), BoN's own exact metrics (``bon``), every evaluation
(``history``), the cost ratios (``timing``, also printed) and ``trl_version``. The VADER
rewards of the enumerated supports (V^L strings per prompt) are computed once and
cached on disk (``--reward-cache``, default ``cache/rewards`` beside ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np

from bonmath.bon import bon_log_probs
from bonmath.hf import CausalLMPolicy
from bonmath.sentiment import REVIEW_LM_PATH, continuation_rewards, load_review_lm
from bonmath.trl import (
    DEFAULT_EVAL_EVERY,
    ExactEvaluationCallback,
    VBoNReward,
    exact_metrics,
    position_ids_from_attention_mask,
)
from bonmath.validation import check_flag

__all__ = ["SMOKE", "SentimentReward", "TRLSentimentConfig", "main", "train_vbon_sentiment"]


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


class SentimentReward:
    """VADER reward of prompt + completion, as a TRL reward function.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The policy's tokenizer (decodes ``completion_ids`` with the prompt, as
        :func:`bonmath.sentiment.continuation_rewards`; a final EOS is dropped).

    Examples
    --------
    >>> _, tokenizer, _ = load_review_lm()
    >>> good, eos = tokenizer.convert_tokens_to_ids(["good", tokenizer.eos_token])
    >>> SentimentReward(tokenizer)(prompts=["the movie was"], completions=["good"], completion_ids=[[good, eos]])
    [0.4404]
    """

    __name__ = "vader"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float]:
        out = np.empty(len(prompts))
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(i)
        for prompt, rows in groups.items():
            out[rows] = continuation_rewards(self.tokenizer, prompt, [completion_ids[i] for i in rows])
        return out.tolist()


@dataclass(frozen=True)
class TRLSentimentConfig:
    """One TRL vBoN run on the review LM.

    Examples
    --------
    >>> TRLSentimentConfig().beta, TRLSentimentConfig(n=5, objective="bound").beta  # bound: beta = 1/(N-1)
    (1.0, 0.25)
    >>> TRLSentimentConfig(batch_size=50)
    Traceback (most recent call last):
    ...
    ValueError: batch_size (50) must be a multiple of num_generations (8)
    """

    out: str | None = _help("write the results JSON here", None)
    smoke: bool = _help("a run of a few seconds (overrides the sizes below unless given)", False)
    n: int = _help("N of Best-of-N", 8)
    objective: str = _help("exact (R_N, beta = 1) or bound (log F-hat, beta = 1/(N-1))", "exact")
    steps: int = _help("optimizer steps", 300)
    num_generations: int = _help("completions per prompt per step (RLOO's group)", 8)
    batch_size: int = _help("completions per process per step (a multiple of num_generations)", 48)
    max_new_tokens: int = _help("completion length L (V^L continuations are enumerated per prompt)", 3)
    num_ref_samples: int = _help("M reference completions per prompt for F-hat", 256)
    lr: float = _help("learning rate (AdamW, linear decay)", 2e-3)
    eval_every: int = _help("steps between exact evaluations", DEFAULT_EVAL_EVERY)
    prompts: int = _help("how many of the review prompts (prompts.json) to train on", 6)
    seed: int = _help("seed", 0)
    threads: int = _help("torch threads per process", 1)
    model_path: str = _help("reference model directory (saved with save_pretrained)", str(REVIEW_LM_PATH))
    reward_cache: str | None = _help("directory caching the VADER rewards of the enumerated supports "
                                     "(default: cache/rewards beside --out; none without --out)", None)
    keep_padded_positions: bool = _help("leave TRL's loss numbering GPT-2's positions from the left padding of "
                                        "shorter prompts (TRL as is; default: position ids from the attention "
                                        "mask, bonmath.trl.position_ids_from_attention_mask)", False)

    def __post_init__(self) -> None:
        positive = ("n", "steps", "num_generations", "batch_size", "max_new_tokens", "num_ref_samples",
                    "eval_every", "prompts", "threads")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        if self.objective not in ("exact", "bound"):
            raise ValueError(f"objective must be 'exact' or 'bound'; got {self.objective!r}")
        if self.objective == "bound" and self.n < 2:
            raise ValueError("the bound needs n >= 2 (beta = 1/(N-1))")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2 (RLOO's leave-one-out baseline)")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0; got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0; got {self.seed}")

    @property
    def beta(self) -> float:
        return 1.0 if self.objective == "exact" else 1.0 / (self.n - 1)


SMOKE = dict(steps=2, num_generations=4, batch_size=8, max_new_tokens=2, num_ref_samples=32, eval_every=1,
             prompts=2)
"""What ``--smoke`` sets (unless given explicitly)."""


def parse_args(argv: Sequence[str] | None = None) -> TRLSentimentConfig:
    """A :class:`TRLSentimentConfig` from the command line; bad values exit 2 with a usage line."""
    parser = argparse.ArgumentParser(prog="python -m bonmath.trl_sentiment", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TRLSentimentConfig):
        option = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(option, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(option, type=kind, default=None, help=f"{f.metadata['help']} (default {f.default})")
    args = vars(parser.parse_args(argv))
    given = {key: value for key, value in args.items() if value is not None and value is not False}
    smoke = {key: value for key, value in SMOKE.items() if key not in given} if args["smoke"] else {}
    try:
        return TRLSentimentConfig(**{**smoke, **given})
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def _without_prefix(metrics: dict[str, float]) -> dict[str, float]:
    return {key.removeprefix("exact/"): value for key, value in metrics.items() if key != "step"}


def train_vbon_sentiment(cfg: TRLSentimentConfig, output_dir: str | os.PathLike | None = None, *,
                         progress: bool = True) -> dict[str, Any]:
    """Train vBoN with TRL's RLOOTrainer on the review LM and evaluate it exactly.

    Parameters
    ----------
    cfg : TRLSentimentConfig
    output_dir : path-like, optional
        TRL's output directory (nothing is saved there; default a temporary one).
    progress : bool, default True
        TRL's progress bar and the log lines it prints to stdout; ``False``: neither
        (the logs still reach ``trl_log`` and ``history``).

    Returns
    -------
    dict (JSON-ready)
        ``config``, ``trl_version``, ``num_processes``, ``start`` and ``end`` (exact
        metrics averaged over prompts), ``bon`` (the same for π_N itself, the target),
        ``history``, ``trl_log`` (TRL's last training log entry) and ``timing``, ratios
        over the training time without the callback: ``vbon_reward_ratio``
        (VBoNReward's own cost, the base reward and the cached reference sampling
        excluded), ``callback_ratio_per_evaluation`` (one evaluation over the training
        time of ``eval_every`` steps), ``callback_ratio`` (all evaluations),
        ``support_reward_ratio`` (the one-time VADER scoring of every prompt's V^L
        strings, done before training or read from the reward cache:
        ``support_rewards_scored`` / ``support_rewards_read`` prompts) and
        ``callback_ratio_with_support_rewards`` (the two together), with the seconds they come
        from. Only the main process's dict has ``start``/``end``.

    Examples
    --------
    The smoke sizes (:data:`SMOKE`: 2 steps, 4 completions per prompt) on the first
    prompt with one-token completions (23 continuations): the run starts at π_ref and
    moves towards π_8, whose own KL to itself is 0:

    >>> cfg = TRLSentimentConfig(**{**SMOKE, "prompts": 1, "max_new_tokens": 1})
    >>> results = train_vbon_sentiment(cfg, progress=False)
    >>> results["timing"]["steps"], [entry["step"] for entry in results["history"]]
    (2, [0, 1, 2])
    >>> results["start"]["kl_ref"], round(results["start"]["win_rate"], 12), results["bon"]["kl_bon"]
    (0.0, 0.5, 0.0)
    >>> results["end"]["kl_bon"] < results["start"]["kl_bon"]
    True
    """
    import torch
    import trl
    from datasets import Dataset
    from transformers import PrinterCallback

    progress = check_flag(progress, "progress")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(cfg.threads)
    _, tokenizer, all_prompts = load_review_lm(cfg.model_path)
    if cfg.prompts > len(all_prompts):
        raise ValueError(f"prompts must be <= {len(all_prompts)} (prompts.json); got {cfg.prompts}")
    prompts = all_prompts[: cfg.prompts]
    base_reward = SentimentReward(tokenizer)
    vbon = VBoNReward(base_reward, cfg.n, objective=cfg.objective, reference_model=cfg.model_path,
                      tokenizer=tokenizer, num_ref_samples=cfg.num_ref_samples,
                      max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        args = trl.RLOOConfig(
            output_dir=str(output_dir or tmp), use_cpu=True, seed=cfg.seed, max_steps=cfg.steps,
            learning_rate=cfg.lr, per_device_train_batch_size=cfg.batch_size,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
            beta=cfg.beta, disable_dropout=True, gradient_checkpointing=False, bf16=False,
            logging_steps=max(1, cfg.eval_every), save_strategy="no", report_to="none", disable_tqdm=not progress,
        )
        dataset = Dataset.from_dict({"prompt": prompts * cfg.num_generations})
        # TRL types reward functions as returning list[float | None]; VBoNReward returns list[float].
        reward_funcs = cast("Callable[..., list[float | None]]", vbon)
        trainer = trl.RLOOTrainer(model=cfg.model_path, reward_funcs=reward_funcs, args=args,
                                  train_dataset=dataset, processing_class=tokenizer)
        if not progress:
            trainer.remove_callback(PrinterCallback)  # its per-log prints (ProgressCallback is off)
        if not cfg.keep_padded_positions:  # the loss then scores what generate sampled from (docs/trl.md)
            for model in (trainer.model, trainer.ref_model):
                if model is not None:
                    position_ids_from_attention_mask(trainer.accelerator.unwrap_model(model))
        # The supports' VADER rewards, once per prompt (read from the disk cache when it has
        # them); the callback then never scores its V^L strings, and BoN's metrics use them too.
        references: dict[str, Any] = {}
        exact_rewards: dict[str, tuple[Any, np.ndarray]] = {}
        scoring_seconds, scored = 0.0, 0
        if trainer.accelerator.is_main_process:  # the only process that evaluates
            cache = _reward_cache(cfg)
            reference_model = trainer.accelerator.unwrap_model(trainer.ref_model)
            for prompt in prompts:
                ids = tokenizer(text=prompt)["input_ids"]  # as TRL tokenizes
                with torch.no_grad():
                    references[prompt] = CausalLMPolicy(reference_model, ids, cfg.max_new_tokens,
                                                        tokenizer.eos_token_id).enumerate()
                sequences = references[prompt].sequences
                files, started = _cached_files(cache), time.perf_counter()
                exact_rewards[prompt] = (sequences, continuation_rewards(tokenizer, prompt, sequences, cache))
                scoring_seconds += time.perf_counter() - started
                scored += cache is None or _cached_files(cache) > files
        callback = ExactEvaluationCallback(trainer, prompts, base_reward, cfg.n, eval_every=cfg.eval_every,
                                           exact_rewards=exact_rewards)
        trainer.add_callback(callback)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started

    steps = trainer.state.global_step
    training_seconds = train_seconds - callback.seconds
    own = vbon.timing["seconds"] - vbon.timing["base_reward_seconds"] - vbon.timing["reference_seconds"]
    evaluations = len(callback.history)
    per_evaluation = (callback.seconds - callback.reward_seconds) / max(evaluations, 1)
    support_seconds = scoring_seconds + callback.reward_seconds
    timing = {
        "train_seconds": train_seconds,
        "steps": steps,
        "step_seconds": training_seconds / steps,
        "vbon_reward_calls": vbon.timing["calls"],
        "vbon_reward_seconds_per_step": own / steps,
        "vbon_reward_ratio": own / training_seconds,
        "base_reward_ratio": vbon.timing["base_reward_seconds"] / training_seconds,
        "reference_sampling_seconds": vbon.timing["reference_seconds"],
        "callback_seconds": callback.seconds,
        "callback_evaluations": evaluations,
        "callback_seconds_per_evaluation": per_evaluation,
        "callback_ratio_per_evaluation": per_evaluation / (cfg.eval_every * training_seconds / steps),
        "callback_ratio": callback.seconds / training_seconds,
        "callback_support_reward_seconds": callback.reward_seconds,
        "callback_ratio_without_support_rewards": (callback.seconds - callback.reward_seconds) / training_seconds,
        "support_reward_seconds": support_seconds,
        "support_reward_ratio": support_seconds / training_seconds,
        "support_rewards_scored": scored,
        "support_rewards_read": len(exact_rewards) - scored,
        "callback_ratio_with_support_rewards": (callback.seconds + scoring_seconds) / training_seconds,
    }
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "trl_version": trl.__version__,
        "num_processes": trainer.accelerator.num_processes,
        "timing": timing,
        "trl_log": train_logs[-1] if train_logs else None,
    }
    if callback.history:
        results["start"] = _without_prefix(callback.history[0])
        results["end"] = _without_prefix(callback.history[-1])
        results["history"] = callback.history
        bon = []
        for prompt in prompts:
            ref_log_probs = references[prompt].log_probs.numpy()
            rewards = exact_rewards[prompt][1]
            bon.append(exact_metrics(bon_log_probs(ref_log_probs, rewards, cfg.n), ref_log_probs, rewards, cfg.n))
        results["bon"] = {key: float(np.mean([row[key] for row in bon])) for key in bon[0]}
    return results


def _reward_cache(cfg: TRLSentimentConfig) -> Path | None:
    if cfg.reward_cache is not None:
        return Path(cfg.reward_cache)
    return None if cfg.out is None else Path(cfg.out).parent / "cache" / "rewards"


def _cached_files(cache: Path | None) -> int:
    return len(list(cache.glob("vader_*.npy"))) if cache is not None and cache.is_dir() else 0


def _cost_summary(timing: dict[str, Any]) -> str:
    """The cost ratios of a run's ``timing`` as sentences (what :func:`main` prints)."""
    t = timing
    return (
        f"VBoNReward: {1e3 * t['vbon_reward_seconds_per_step']:.1f} ms per step = "
        f"{100 * t['vbon_reward_ratio']:.1f} % of training (step {t['step_seconds']:.3f} s; target <= 5 %)\n"
        f"ExactEvaluationCallback: {t['callback_seconds_per_evaluation']:.2f} s per evaluation = "
        f"{100 * t['callback_ratio_per_evaluation']:.1f} % of the training between two; "
        f"{t['callback_evaluations']} evaluations, {t['callback_seconds']:.1f} s = "
        f"{100 * t['callback_ratio']:.1f} % of training ({t['train_seconds'] - t['callback_seconds']:.1f} s)\n"
        f"one-time scoring of the enumerated supports: {t['support_reward_seconds']:.1f} s = "
        f"{100 * t['support_reward_ratio']:.1f} % ({t['support_rewards_scored']} prompts scored, "
        f"{t['support_rewards_read']} read from the cache); callback with it: "
        f"{100 * t['callback_ratio_with_support_rewards']:.1f} % (target <= 10 %)"
    )


def main(argv: Sequence[str] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Command line: train, print the start/end metrics, write ``--out`` (main process).

    Parameters
    ----------
    argv : sequence of str, optional
        The options of :class:`TRLSentimentConfig` (default ``sys.argv[1:]``); invalid
        values exit with status 2 and a usage message (argparse).
    progress : bool, default True
        As for :func:`train_vbon_sentiment`.

    Returns
    -------
    dict
        The results of :func:`train_vbon_sentiment`; the summary and the cost ratios
        are printed to stderr.

    Examples
    --------
    A bad value is refused before anything is loaded (argparse prints the usage and the
    reason to stderr and exits with status 2):

    >>> main(["--batch-size", "10", "--num-generations", "4"])
    Traceback (most recent call last):
    ...
    SystemExit: 2

    A smoke run on one prompt with one-token completions, its results written to ``--out``
    (and the supports' VADER rewards cached beside it):

    >>> import json, pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = pathlib.Path(tmp) / "results.json"
    ...     results = main(["--smoke", "--prompts", "1", "--max-new-tokens", "1", "--out", str(out)], progress=False)
    ...     saved = json.loads(out.read_text())
    ...     cached = len(list((pathlib.Path(tmp) / "cache" / "rewards").glob("vader_*.npy")))
    >>> saved["config"]["steps"], saved["end"] == results["end"], cached
    (2, True, 1)
    """
    progress = check_flag(progress, "progress")
    cfg = parse_args(argv)
    results = train_vbon_sentiment(cfg, progress=progress)
    if "end" in results:
        summary = {key: {k: round(results[key][k], 4) for k in ("reward", "kl_ref", "kl_bon", "win_rate")}
                   for key in ("start", "end", "bon")}
        print(json.dumps({"exact": summary, "timing": results["timing"]}, indent=1), file=sys.stderr)
        print(_cost_summary(results["timing"]), file=sys.stderr)
        if cfg.out is not None:
            Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.out).write_text(json.dumps(results, indent=1, allow_nan=False))
    return results


if __name__ == "__main__":
    main()
