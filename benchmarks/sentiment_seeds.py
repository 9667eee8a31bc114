"""The vBoN sentiment experiment over seeds: bonmath vBoN and KL-RL, TRL vBoN, exact evaluation.

A thin command line over :func:`bonmath.seed_study.run_seed_study`: writes the
results as JSON (never overwriting a file with other results) and, with
``--markdown``, the summary tables and the verdict (:func:`to_markdown`).

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
from bonmath.experiment import ExperimentConfig
from bonmath.seed_study import (
    METHODS,
    SMOKE,
    SeedStudyConfig,
    SeedStudyResults,
    Stat,
    missing_models,
    run_seed_study,
)
from bonmath.sentiment import load_review_lm, review_task


@dataclass(frozen=True)
class Config(SeedStudyConfig):
    """The vBoN sentiment experiment over seeds: bonmath vBoN and KL-RL, TRL vBoN, exact evaluation."""

    out: Path | None = option("write the results JSON here (never overwritten with other results)", None)
    markdown: Path | None = option("write the markdown summary here", None)
    cache: Path | None = option("cache directory (rewards/, models/, trl_models/)", None)
    smoke: bool = option("the tiny SMOKE study (study options given explicitly win)", False)
    threads: int = option("torch threads", 1, minimum=1)
    max_new_models: int = option("refuse to start if more models than this must be trained", 60, minimum=0)


def _cell(stat: Stat | None, digits: int = 4) -> str:
    if stat is None:
        return "–"
    sd = "–" if stat.sd is None else f"{stat.sd:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {sd} [{stat.min:.{digits}f}, {stat.max:.{digits}f}]"


def _departures(cfg: SeedStudyConfig) -> str:
    """Where the study's training differs from the main experiment's (ExperimentConfig's defaults)."""
    main = ExperimentConfig()
    prompts = len(load_review_lm()[2]) if main.prompts is None else len(main.prompts)
    pairs = [("prompts", len(cfg.prompts) if cfg.prompts is not None else prompts, prompts),
             ("L", cfg.max_new_tokens, main.max_new_tokens), ("k", cfg.k, main.k), ("steps", cfg.steps, main.steps),
             ("lr", cfg.lr, main.lr), ("grad clip", cfg.max_grad_norm, main.max_grad_norm),
             ("N grid", list(cfg.ns), list(main.ns)), ("β grid", list(cfg.betas), list(main.betas))]
    changed = [f"{name} {ours} (main: {theirs})" for name, ours, theirs in pairs if ours != theirs]
    if not changed:
        return "Training as in the main experiment (`bonmath.experiment.ExperimentConfig` defaults)."
    return ("**Smaller than the main experiment** (`bonmath.experiment.ExperimentConfig` defaults): "
            + ", ".join(changed) + ".")


def to_markdown(results: SeedStudyResults) -> str:
    """The study as markdown: per-N/β tables, front counts, TRL − bonmath differences, the verdict."""
    cfg = results.config
    names = {"vbon": "bonmath vBoN", "kl_rl": "bonmath KL-RL", "trl_vbon": "TRL vBoN"}
    lines = [
        "# The vBoN sentiment experiment over seeds",
        "",
        f"Review task: {len(results.prompts)} prompts, L = {cfg.max_new_tokens}, task fingerprint "
        f"`{results.task_fingerprint[:12]}`. Seeds {list(cfg.seeds)}; bonmath models: {cfg.steps} steps, "
        f"k = {cfg.k}, lr {cfg.lr:g} (linear decay), grad clip {cfg.max_grad_norm}; vBoN N ∈ {list(cfg.ns)}, "
        f"KL-RL β ∈ {list(cfg.betas)}. TRL vBoN (RLOOTrainer, β = 1, exact CDF): N ∈ {list(cfg.trl_ns)}, "
        f"{cfg.comparison_steps} steps" + (" (fewer than bonmath's series; its bonmath twins were trained with "
                                            "the same steps)" if cfg.comparison_steps != cfg.steps else "") + ".",
        "",
        _departures(cfg),
        "",
        "Cells: mean ± sample sd (ddof = 1) [min, max] over seeds, exact (enumerated) values averaged over "
        "prompts. Gap: the exact frontier's E[r] at the model's KL(π‖π_ref) minus its E[r].",
        "",
    ]
    for method in METHODS:
        points = [p for p in results.series if p.method == method]
        if not points:
            continue
        lines += [f"## {names[method]}", "", "| N / β | E[r] | KL(π‖π_ref) | KL(π‖π_N) | win rate vs π_ref | gap |",
                  "|---|---|---|---|---|---|"]
        for p in points:
            label = f"N = {p.n}" if p.n is not None else f"β = {p.beta:g}"
            lines.append(f"| {label} | {_cell(p.reward)} | {_cell(p.kl_ref)} | {_cell(p.kl_bon)} | "
                         f"{_cell(p.win_rate)} | {_cell(p.reward_gap)} |")
        lines.append("")
    lines += ["## Pareto fronts", "",
              "Per seed, the models of a pool (bonmath: bonmath vBoN + bonmath KL-RL; trl: TRL vBoN + bonmath "
              "KL-RL) that no other model of the same pool and seed dominates.", "",
              "| pool | front | method | on the front per seed | pooled |", "|---|---|---|---|---|"]
    for c in results.fronts:
        per_seed = ", ".join(f"{a}/{b}" for a, b in zip(c.on_front_per_seed, c.total_per_seed))
        lines.append(f"| {c.pool} | {c.metric}–KL | {names[c.method]} | {per_seed} | {c.on_front}/{c.total} |")
    off = [r for r in results.rows if r.on_front.get("bonmath/reward") is False]
    lines += ["", "Off the reward–KL front of pool bonmath (KL(π_ref‖π_N): how far the untrained reference is from "
              "π_N):", "", "| method | N / β | seed | E[r] | KL(π‖π_ref) | KL(π‖π_N) | KL(π_ref‖π_N) |",
              "|---|---|---|---|---|---|---|"]
    for r in off:
        label = f"N = {r.n}" if r.n is not None else f"β = {r.beta:g}"
        to_bon = "–" if r.kl_bon is None else f"{r.kl_bon:.4f}"
        ref_to_bon = "–" if r.n is None else f"{results.reference.kl_to_bon(r.n):.4f}"
        lines.append(f"| {names[r.method]} | {label} | {r.seed} | {r.metrics.reward:.4f} | {r.metrics.kl_ref:.4f} | "
                     f"{to_bon} | {ref_to_bon} |")
    lines += ["", f"**Verdict** on \"vBoN is on the reward–KL front more often than KL-RL\": {results.verdict}.", ""]
    if results.differences:
        lines += ["## TRL − bonmath vBoN", "",
                  "Per seed and N, TRL-trained minus bonmath-trained vBoN (same N, seed number, steps, k, lr; "
                  "different random draws), over seeds.", "",
                  "| N | E[r] | KL(π‖π_ref) | KL(π‖π_N) | win rate |", "|---|---|---|---|---|"]
        for d in results.differences:
            lines.append(f"| {'all' if d.n is None else d.n} | {_cell(d.reward)} | {_cell(d.kl_ref)} | "
                         f"{_cell(d.kl_bon)} | {_cell(d.win_rate)} |")
        overall = results.differences[-1]
        lines += ["", "Mean difference per prompt over every (N, seed): "
                  + "; ".join(f"'{text}': E[r] {r:+.4f}, KL {k:+.4f}" for text, r, k in
                              zip(results.prompts, overall.reward_per_prompt, overall.kl_ref_per_prompt)), ""]
    lines += ["## Time", "", ", ".join(f"{k} {v:.0f} s" for k, v in results.timing.items()), ""]
    return "\n".join(lines)


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
