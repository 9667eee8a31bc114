"""TRL's own GRPO and RLOO gradients against exact gradients, on an enumerable tiny GPT-2.

For each TRL configuration this builds TRL's trainer on a tiny local GPT-2
(policy = a perturbed copy of the reference, both float64, 5 tokens, at most 3
new tokens: 85 completions), runs ``trainer.training_step`` R times at fixed
parameters (TRL generates, scores, computes advantages and loss, backward; no
optimizer step) and compares the mean of the R gradients read from ``.grad``
with the exact gradient of each target objective, by enumeration
(:mod:`bonmath.trl_audit`). The law TRL samples from is checked against the
enumeration with a χ² test on every completion TRL generated.

Usage::

    python benchmarks/trl_gradients.py --out docs/trl_gradients.json --markdown docs/trl_audit.md
    python benchmarks/trl_gradients.py --smoke --out /tmp/trl.json       # < 90 s
    python benchmarks/trl_gradients.py --from-json docs/trl_gradients.json --markdown docs/trl_audit.md
    # run only the vBoN configurations, then merge them into the committed results:
    python benchmarks/trl_gradients.py --only vbon --out /tmp/vbon.json
    python benchmarks/trl_gradients.py --from-json /tmp/vbon.json --merge docs/trl_gradients.json \
        --out docs/trl_gradients.json --markdown docs/trl_audit.md
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built locally; never reach the Hub

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict, dataclass, field, fields  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class Config:
    """One run of the audit."""

    repetitions: int = _help("R: TRL training steps (gradient draws) per configuration", 60)
    groups: int = _help("prompt groups per training step (per_device_train_batch_size = groups * G)", 32)
    num_generations: int = _help("G: completions per group", 4)
    max_completion_length: int = _help("L: TRL's max_completion_length", 3)
    vocab_size: int = _help("tiny GPT-2 vocabulary (EOS included)", 5)
    temperature: float = _help("TRL's sampling temperature", 1.0)
    reward_value: float = _help("reward = this times the number of token 'a' in the completion", 0.1)
    noise: float = _help("policy = reference + noise * std * N(0, 1) per parameter", 2.0)
    random_directions: int = _help("random directions in the bias test (besides the exact-gradient ones)", 3)
    seed: int = _help("seed of the models, the directions and TRL's sampling", 0)
    threads: int = _help("torch intra-op threads (1 is fastest for these tiny models)", 1)
    max_completions: int = _help("size guard: refuse runs that would generate more completions", 3_000_000)
    out: str | None = _help("write the results JSON here", None)
    markdown: str | None = _help("write the verdict table (markdown) here", None)
    from_json: str | None = _help("do not run: read this results JSON (for --markdown or --merge)", None)
    smoke: bool = _help("four configurations, R = 30 (< 90 s), for tests", False)
    only: str = _help("run only these configurations: all, base (no vBoN reward) or vbon", "all")
    merge: str | None = _help("merge this run's rows into this results JSON (bonmath.trl_audit.merge_results; "
                              "rows of the same configurations are replaced) and write that to --out", None)


SMOKE = dict(repetitions=30)
LIMITS = dict(
    repetitions=(3, None), groups=(1, None), num_generations=(2, None), max_completion_length=(1, 6),
    vocab_size=(2, 27), random_directions=(0, None), threads=(1, None), max_completions=(1, None),
)
MAX_SUPPORT = 20_000
SELECTIONS = ("all", "base", "vbon")


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(Config):
        option = "--" + f.name.replace("_", "-")
        kwargs = dict(help=f.metadata.get("help", ""), default=f.default)
        if f.type in ("bool", bool):
            parser.add_argument(option, action="store_true", **kwargs)
        elif f.type in ("int", int):
            parser.add_argument(option, type=int, **kwargs)
        elif f.type in ("float", float):
            parser.add_argument(option, type=float, **kwargs)
        else:
            parser.add_argument(option, type=str, **kwargs)
    args = vars(parser.parse_args(argv))
    if args["smoke"]:
        for key, value in SMOKE.items():
            if args[key] == getattr(Config, key):
                args[key] = value
    for key, (low, high) in LIMITS.items():
        if args[key] < low or (high is not None and args[key] > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            parser.error(f"--{key.replace('_', '-')} must be {bound}, got {args[key]}")
    for key in ("temperature", "noise"):
        if not (math.isfinite(args[key]) and args[key] > 0):
            parser.error(f"--{key} must be finite and > 0, got {args[key]}")
    if not (math.isfinite(args["reward_value"]) and args["reward_value"] != 0):
        parser.error(f"--reward-value must be finite and non-zero, got {args['reward_value']}")
    if args["only"] not in SELECTIONS:
        parser.error(f"--only must be one of {', '.join(SELECTIONS)}, got {args['only']!r}")
    if args["merge"] is not None and args["out"] is None:
        parser.error("--merge writes the merged results to --out: give --out")
    if args["from_json"] is not None and args["markdown"] is None and args["merge"] is None:
        parser.error("--from-json only renders a table or merges: give --markdown or --merge too")
    cfg = Config(**args)
    if cfg.from_json is None:
        V, L = cfg.vocab_size, cfg.max_completion_length
        support = sum((V - 1) ** t for t in range(L)) + (V - 1) ** L
        if support > MAX_SUPPORT:
            parser.error(f"the support would have {support} completions (> {MAX_SUPPORT}): "
                         "lower --vocab-size or --max-completion-length")
        completions = len(_cases(cfg)) * cfg.repetitions * cfg.groups * cfg.num_generations
        if completions > cfg.max_completions:
            parser.error(f"this run would generate {completions} completions, more than "
                         f"--max-completions={cfg.max_completions} (tens of minutes); lower "
                         "--repetitions/--groups or raise --max-completions")
    return cfg


def _cases(cfg: Config) -> list:
    """(position, case) of the selected cases; the position in the full list seeds TRL's sampling,
    so a case draws the same completions whether run alone (``--only``) or in the full run."""
    from bonmath.trl_audit import default_cases, smoke_cases

    cases = list(enumerate(smoke_cases() if cfg.smoke else default_cases()))
    if cfg.only == "all":
        return cases
    return [(i, case) for i, case in cases if (case.vbon is not None) == (cfg.only == "vbon")]


def run(cfg: Config) -> dict:
    import transformers
    import trl

    from bonmath import trl_audit

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(cfg.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    cases = _cases(cfg)
    reward = trl_audit.count_token_reward(1, cfg.reward_value)
    rows, pooled = [], Counter()
    with tempfile.TemporaryDirectory() as folder:
        setup = trl_audit.build_tiny_setup(folder, vocab_size=cfg.vocab_size,
                                           max_completion_length=cfg.max_completion_length,
                                           seed=cfg.seed, noise=cfg.noise)
        problem = trl_audit.exact_problem(setup, reward, temperature=cfg.temperature,
                                          random_directions=cfg.random_directions, seed=cfg.seed)
        vbon_problems = {}
        bar = tqdm(total=len(cases) * cfg.repetitions, desc="TRL training steps", unit="step", disable=None)
        for i, case in cases:
            bar.set_postfix_str(case.label[:60])
            case_reward, case_problem, targets = reward, problem, None
            if case.vbon is not None:
                if case.vbon not in vbon_problems:
                    vbon_problems[case.vbon] = trl_audit.vbon_problem(
                        setup, case.vbon, reward, temperature=cfg.temperature,
                        random_directions=cfg.random_directions, seed=cfg.seed)
                vbon = vbon_problems[case.vbon]
                case_reward, case_problem = vbon.reward_func, vbon.problem
                targets = trl_audit.vbon_targets(case, vbon, cfg.num_generations)
            case_rows, sample = trl_audit.audit_case(
                case, setup, case_problem, case_reward, repetitions=cfg.repetitions,
                num_generations=cfg.num_generations, groups=cfg.groups,
                output_dir=Path(folder) / "trainer", seed=cfg.seed + 1 + i,
                temperature=cfg.temperature, targets=targets, progress=lambda: bar.update(1))
            rows += case_rows
            pooled.update(sample.completion_counts)
        bar.close()
        law = trl_audit.sampling_law_test(pooled, problem.pair.keys(), problem.pair.policy_log_probs)
    meta = {
        "config": asdict(cfg),
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "repetitions": cfg.repetitions,
        "groups": cfg.groups,
        "num_generations": cfg.num_generations,
        "exact": problem.summary,
        "vbon": {spec.name: v.summary for spec, v in vbon_problems.items()},
        "pooled_sampling_law": law,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    return {"meta": meta, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    if cfg.from_json is not None:
        results = json.loads(Path(cfg.from_json).read_text())
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers/TRL deprecation chatter on a CPU run
            results = run(cfg)
        for row in results["rows"]:
            print(f"{row['label'][:75]:75s} {row['target']:20s} rel {row['relative_bias']:6.3f} "
                  f"(se {row['relative_bias_se']:.3f}) z {row['bias_z']:5.1f} cos {row['cosine']:.4f}")
        law = results["meta"]["pooled_sampling_law"]
        print(f"sampling law chi2 = {law['chi2']:.1f} on {law['dof']} dof, p = {law['p_value']:.3g} "
              f"({law['samples']} completions); wall {results['meta']['wall_seconds']:.0f} s")
    if cfg.merge is not None:
        from bonmath.trl_audit import merge_results

        results = merge_results(json.loads(Path(cfg.merge).read_text()), results)
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    if cfg.markdown:
        from bonmath.trl_audit import markdown_report

        Path(cfg.markdown).write_text(markdown_report(results))
    return results


if __name__ == "__main__":
    main()
