"""Exact bias, variance and relative MSE of the max@k / pass@k gradient estimators, against n and k.

PKPO's weights and baselines, Chen et al.'s Pass@k Training advantages and verl's
grpo_passk on a TabularLM and a tiny GPT-2, every number exact (no sampling); the
computation is :func:`bonmath.inference_aware_variance.run`, this script parses the
configuration and writes the results.

Usage::

    python benchmarks/inference_aware_variance.py --out results.json          # full run, < 3 min on 2 cores
    python benchmarks/inference_aware_variance.py --smoke --out /tmp/ia.json  # < 20 s
    python benchmarks/inference_aware_variance.py --out r.json --markdown     # also r.md (tables)

JSON: ``{"meta": {...}, "rows": [{"estimator", "label", "model", "target", "n", "k",
"relative_bias", "relative_variance", "relative_mse", "cosine"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from bonmath.inference_aware_variance import SMOKE, VarianceConfig, markdown_summary, run


def parse_args(argv: list[str] | None = None) -> tuple[VarianceConfig, Path, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(VarianceConfig):
        option = "--" + f.name.replace("_", "-")
        kwargs = dict(help=f.metadata["help"], default=f.default)
        if f.type in ("bool", bool):
            parser.add_argument(option, action="store_true", **kwargs)
        elif f.name == "models":
            parser.add_argument(option, nargs="+", choices=("tabular", "gpt2"), **kwargs)
        elif str(f.type).startswith("tuple"):
            parser.add_argument(option, type=int, nargs="+", **kwargs)
        else:
            parser.add_argument(option, type=type(f.default), **kwargs)
    parser.add_argument("--out", type=Path, required=True, help="write the results JSON here")
    parser.add_argument("--markdown", action="store_true", help="also write tables to the --out path with .md")
    args = vars(parser.parse_args(argv))
    out, markdown = args.pop("out"), args.pop("markdown")
    defaults = {f.name: f.default for f in fields(VarianceConfig)}
    if args["smoke"]:  # smoke settings, except where given on the command line
        args.update({key: value for key, value in SMOKE.items() if args[key] == defaults[key]})
    config = VarianceConfig(**{key: tuple(v) if isinstance(v, list) else v for key, v in args.items()})
    try:
        config.validate()
    except ValueError as err:
        parser.error(str(err))
    return config, out, markdown


def main(argv: list[str] | None = None) -> dict:
    config, out, markdown = parse_args(argv)
    results = run(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    tables = markdown_summary(results)
    print(tables)
    print(f"{len(results['rows'])} rows in {results['meta']['runtime_seconds']:.1f} s -> {out}")
    if markdown:
        out.with_suffix(".md").write_text(tables)
    return results


if __name__ == "__main__":
    main()
