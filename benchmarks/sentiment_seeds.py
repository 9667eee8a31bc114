"""The vBoN sentiment experiment over seeds: bonmath vBoN and KL-RL, TRL vBoN, exact evaluation.

A thin command line over :func:`bonmath.seed_study.run_seed_study`: writes the
results as JSON (never overwriting a file with other results) and, with
``--markdown``, the summary tables and the verdict (:func:`bonmath.seed_study.to_markdown`).

Usage::

    python benchmarks/sentiment_seeds.py --cache /work/expcache --out results/sentiment_seeds.json \
        --markdown docs/sentiment_seeds.md
    python benchmarks/sentiment_seeds.py --smoke --cache /tmp/c --out /tmp/s.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bonmath.cache import to_json, write_once
from bonmath.cli import build_parser, option, parse_config
from bonmath.seed_study import SMOKE, SeedStudyConfig, missing_models, run_seed_study, to_markdown
from bonmath.sentiment import review_task


@dataclass(frozen=True)
class Config(SeedStudyConfig):
    """The vBoN sentiment experiment over seeds: bonmath vBoN and KL-RL, TRL vBoN, exact evaluation."""

    out: Path | None = option("write the results JSON here (never overwritten with other results)", None)
    markdown: Path | None = option("write the markdown summary here", None)
    cache: Path | None = option("cache directory (rewards/, models/, trl_models/)", None)
    smoke: bool = option("the tiny SMOKE study (study options given explicitly win)", False)
    threads: int = option("torch threads", 1, minimum=1)
    max_new_models: int = option("refuse to start if more models than this must be trained", 60, minimum=0)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv, prog="benchmarks/sentiment_seeds.py")
    default = SeedStudyConfig()
    # --smoke gives SMOKE's value to every study option left at its default
    study = SeedStudyConfig(**{f.name: getattr(SMOKE if cfg.smoke and getattr(cfg, f.name) == getattr(default, f.name)
                                               else cfg, f.name) for f in dataclasses.fields(SeedStudyConfig)})
    torch.set_num_threads(cfg.threads)
    task = review_task(study.prompts, study.max_new_tokens,
                       reward_cache_dir=None if cfg.cache is None else cfg.cache / "rewards")
    missing = missing_models(task, study, cfg.cache)
    print(f"{len(missing)} of {len(study.train_configs()) + len(study.trl_configs())} models to train", file=sys.stderr)
    if len(missing) > cfg.max_new_models:
        build_parser(Config).error(f"{len(missing)} models to train, more than --max-new-models {cfg.max_new_models}")
    results = run_seed_study(study, cfg.cache, progress=True, task=task)
    data = to_json(results)
    if cfg.out is not None:
        def same(existing: Path) -> bool:
            old = json.loads(existing.read_text())
            return {k: v for k, v in old.items() if k != "timing"} == {
                k: v for k, v in json.loads(json.dumps(data)).items() if k != "timing"}

        write_once(cfg.out, lambda tmp: tmp.write_text(json.dumps(data, indent=1, allow_nan=False)), same)
    text = to_markdown(results)
    if cfg.markdown is not None:
        cfg.markdown.parent.mkdir(parents=True, exist_ok=True)
        cfg.markdown.write_text(text)
    print(results.verdict, file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
