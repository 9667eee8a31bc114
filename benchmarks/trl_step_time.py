"""Time per optimizer step of vBoN: TRL's RLOOTrainer against bonmath's trainer, same model and batch.

Both train vBoN (exact R_N, β = 1) on the review task (all prompts, L tokens) with
k completions per prompt per step, from the same float64 copy of the review LM:
TRL through :func:`bonmath.trl_task.train_trl_vbon`, bonmath through
:func:`bonmath.train.train`. A step is timed the same way for both, between
consecutive optimizer steps (:func:`bonmath.trl_task.optimizer_step_times`:
sampling, reward, forward, backward and the update); the first ``warmup`` steps
are dropped and the median of the rest is reported, with the ratio TRL / bonmath.

Usage::

    python benchmarks/trl_step_time.py --out results/trl_step_time.json
    python benchmarks/trl_step_time.py --smoke --out /tmp/trl_step_time.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bonmath.cli import option, parse_config
from bonmath.sentiment import review_task
from bonmath.train import VBoNConfig, train
from bonmath.trl_task import optimizer_step_times, step_durations, train_trl_vbon


@dataclass(frozen=True)
class Config:
    """Time per optimizer step of vBoN: TRL's RLOOTrainer against bonmath's trainer, same model and batch."""

    out: Path | None = option("write the JSON here", None)
    smoke: bool = option("1 prompt, L = 2, k = 4, 1 + 2 steps (seconds)", False)
    prompts: int = option("how many review prompts", 6, minimum=1)
    max_new_tokens: int = option("L", 4, minimum=1)
    k: int = option("completions per prompt per step", 32, minimum=2)
    n: int = option("N of vBoN", 8, minimum=1)
    warmup: int = option("steps not timed", 2, minimum=1)
    timed: int = option("steps timed (median reported)", 6, minimum=1)
    threads: int = option("torch threads", 1, minimum=1)
    reward_cache: Path | None = option("VADER reward cache directory", None)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv, prog="benchmarks/trl_step_time.py")
    if cfg.smoke:
        cfg = replace(cfg, prompts=1, max_new_tokens=2, k=4, warmup=1, timed=2)
    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    task = review_task(list(range(cfg.prompts)), cfg.max_new_tokens, reward_cache_dir=cfg.reward_cache)
    task_seconds = time.perf_counter() - started
    vbon = VBoNConfig(n=cfg.n, steps=cfg.warmup + cfg.timed + 1, k=cfg.k, lr=3e-3, max_grad_norm=1.0, seed=0)

    trl_run = train_trl_vbon(task, vbon)
    with optimizer_step_times() as stamps:
        train(task, vbon, progress=False)
    bonmath_steps = step_durations(stamps)
    trl_steps = trl_run.step_seconds
    if len(trl_steps) != vbon.steps - 1 or len(bonmath_steps) != vbon.steps - 1:
        raise RuntimeError(f"expected {vbon.steps} optimizer steps of each trainer; got "
                           f"{trl_run.optimizer_steps} (TRL) and {len(stamps)} (bonmath)")
    trl_s = float(np.median(trl_steps[cfg.warmup:]))
    bonmath_s = float(np.median(bonmath_steps[cfg.warmup:]))
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "batch": {"prompts": task.num_prompts, "completions_per_prompt": cfg.k, "max_new_tokens": cfg.max_new_tokens,
                  "dtype": "float64", "support_size": len(task.sequences)},
        "trl_seconds_per_step": trl_s,
        "bonmath_seconds_per_step": bonmath_s,
        "ratio_trl_over_bonmath": trl_s / bonmath_s,
        "trl_step_seconds": trl_steps,
        "bonmath_step_seconds": bonmath_steps,
        "trl_version": trl_run.trl_version,
        "task_seconds": task_seconds,
        "load_average": list(os.getloadavg()),
    }
    print(f"TRL {trl_s:.4f} s/step, bonmath {bonmath_s:.4f} s/step, ratio {trl_s / bonmath_s:.2f} "
          f"(median of {cfg.timed} steps after {cfg.warmup}; {task.num_prompts} prompts x {cfg.k}, "
          f"L = {cfg.max_new_tokens})", file=sys.stderr)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(results, indent=1, allow_nan=False))
    return results


if __name__ == "__main__":
    main()
