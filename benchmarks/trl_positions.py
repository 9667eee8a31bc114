"""TRL's vBoN run on prompts of different lengths, with and without position ids from the mask.

The review prompts have 2 and 3 tokens; TRL left-pads them and, as is, scores the
completions of the shorter one with GPT-2's positions counted from the padding
(docs/trl.md). This trains :func:`bonmath.trl_sentiment.train_vbon_sentiment` (vBoN,
exact R_N, N = 8, RLOO, 300 steps) per seed twice, with
:func:`bonmath.trl.position_ids_from_attention_mask` (the default) and with
``keep_padded_positions`` (TRL as is), and reports the exact end metrics of each run and
their mean and sd over seeds.

Usage::

    python benchmarks/trl_positions.py --out results/trl_positions.json
    python benchmarks/trl_positions.py --smoke --out /tmp/trl_positions.json
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bonmath.cli import option, parse_config
from bonmath.trl_sentiment import SMOKE, TRLSentimentConfig, train_vbon_sentiment

METRICS = ("reward", "kl_ref", "kl_bon", "win_rate")
"""End metrics summarised over seeds (exact, averaged over the prompts)."""


@dataclass(frozen=True)
class Config:
    """TRL's vBoN run on prompts of different lengths, with and without position ids from the mask."""

    out: Path | None = option("write the JSON here", None)
    seeds: tuple[int, ...] = option("training seeds", (0, 1, 2), minimum=0)
    smoke: bool = option("trl_sentiment's SMOKE sizes on all six prompts per step, one-token completions", False)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv, prog="benchmarks/trl_positions.py")
    # smoke: every step's batch holds all six prompts, so the 2-token one is padded in each
    sizes = {**SMOKE, "prompts": 6, "max_new_tokens": 1, "batch_size": 6 * SMOKE["num_generations"]} if cfg.smoke else {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = []
    for seed in tqdm(cfg.seeds, desc="seeds"):
        for keep in (False, True):
            run_cfg = TRLSentimentConfig(**sizes, seed=seed, keep_padded_positions=keep)
            results = train_vbon_sentiment(run_cfg, progress=False)
            runs.append({"seed": seed, "keep_padded_positions": keep, "end": results["end"],
                         "history": results["history"], "step_seconds": results["timing"]["step_seconds"]})
    summary = {}
    for keep, name in ((False, "position_ids_from_mask"), (True, "keep_padded_positions")):
        ends = [run["end"] for run in runs if run["keep_padded_positions"] is keep]
        summary[name] = {metric: {"mean": statistics.fmean(e[metric] for e in ends),
                                  "sd": statistics.stdev(e[metric] for e in ends) if len(ends) > 1 else None,
                                  "values": [e[metric] for e in ends]} for metric in METRICS}
    per_run = ("seed", "keep_padded_positions")  # recorded with each run
    train = {k: v for k, v in vars(TRLSentimentConfig(**sizes)).items() if k not in per_run}
    out = {"config": {"seeds": list(cfg.seeds), "smoke": cfg.smoke, "train": train},
           "trl_version": results["trl_version"], "bon": results["bon"], "runs": runs, "summary": summary}
    for name, metrics in summary.items():
        print(name, ", ".join(f"{metric} {stat['mean']:.4f} (sd {stat['sd']})" for metric, stat in metrics.items()))
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(out, indent=1, allow_nan=False))
    return out


if __name__ == "__main__":
    main()
