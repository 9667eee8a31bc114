"""Bias, variance and cost of every vBoN gradient estimator, exactly, on a TabularLM and a tiny GPT-2.

The command line of :func:`bonmath.estimator_benchmark.run` (what is measured, and
how, is documented there and in ``docs/estimators.md``): it prints the tables and
writes the results as JSON (and CSV), markdown tables and paper figure 6.

Usage::

    python benchmarks/estimator_variance.py                       # default run, ~30 s on 2 idle cores
    python benchmarks/estimator_variance.py --smoke --out /tmp/ev.json
    python benchmarks/estimator_variance.py --out results/estimator_variance.json --markdown table.md
    python benchmarks/estimator_variance.py --model gpt2 --n 8 --k 4 16 --plot ev.png
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bonmath.cli import build_parser, option, parse_config
from bonmath.estimator_benchmark import (
    COLUMNS,
    SMOKE,
    EstimatorBenchmarkConfig,
    markdown_tables,
    run,
)


def preset_argv(preset: EstimatorBenchmarkConfig) -> list[str]:
    """The options that turn the default configuration into ``preset``."""
    default, argv = EstimatorBenchmarkConfig(), []
    for field in dataclasses.fields(preset):
        value = getattr(preset, field.name)
        if value != getattr(default, field.name):
            argv += ["--" + field.name.replace("_", "-"), *map(str, value if isinstance(value, tuple) else [value])]
    return argv


def format_tables(results: dict) -> str:
    """The results as plain-text tables (every row, timing included), for the terminal."""
    head = (f"{'model':7} {'N':>3} {'estimator':20} {'k':>3} {'|bias|':>10} {'|bias|/|g|':>11} {'z':>7} "
            f"{'cos(Eg,g)':>9} {'trVar':>10} {'relMSE':>10} {'E cos':>6} {'ms/est':>7}")
    lines = [head, "-" * len(head)]
    for r in results["rows"]:
        flag = "" if r["exact"] else "*"
        ms = "–" if r["seconds_per_estimate"] is None else f"{1000 * r['seconds_per_estimate']:.2f}"
        lines.append(
            f"{r['model']:7} {r['n']:>3} {r['estimator']:20} {r['k']:>3} {r['bias_norm']:>10.3g} "
            f"{r['rel_bias']:>10.3g}{flag:1} {r['bias_z']:>7.1f} {r['cos_of_mean']:>9.4f} "
            f"{r['total_variance']:>10.4g} {r['rel_mse']:>10.4g} {r['mean_cosine']:>6.3f} {ms:>7}")
    lines.append("bias, trVar and relMSE exact except * (Monte Carlo, R estimates); z: Monte Carlo mean of R "
                 "estimates against the exact gradient, max over the gradient's direction and random directions, "
                 "in standard errors; E cos: mean cosine of one estimate with g (Monte Carlo)")
    lines += ["", f"{'model':7} {'N':>3} {'M':>5} {'|bias|/|g_L|':>13} {'cos(E g, g_L)':>14} "
              f"{'E[log F^ - log F]':>18}"]
    for r in results["cdf_bias"]:
        lines.append(f"{r['model']:7} {r['n']:>3} {r['m']:>5} {r['rel_bias']:>13.4g} {r['cosine']:>14.4f} "
                     f"{r['mean_log_cdf_bias']:>18.4g}")
    lines.append(f"\npipeline against the per-string basis, max relative error: "
                 f"{results['pipeline_check_max_rel_err']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Config(EstimatorBenchmarkConfig):
    """Bias, variance and cost of every vBoN gradient estimator, exactly, on a TabularLM and a tiny GPT-2."""

    smoke: bool = option("start from the smoke preset (seconds): " + " ".join(preset_argv(SMOKE))
                         + "; options given explicitly override it", False)
    out: Path | None = option("write the results JSON here, and a CSV of the rows next to it", None)
    markdown: Path | None = option("write the markdown tables of docs/estimators.md here", None)
    plot: Path | None = option("draw paper figure 6 (relative MSE against k, bias against M) to this PNG",
                               None)
    progress: bool = option("show a progress bar when writing to a terminal", True)


def parse_args(argv: list[str] | None = None) -> Config:
    """The command line as a :class:`Config`; bad values exit 2 with an argparse message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if build_parser(Config).parse_known_args(argv)[0].smoke:
        argv = preset_argv(SMOKE) + argv  # later options win
    return parse_config(Config, argv, prog="estimator_variance.py")


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    benchmark = EstimatorBenchmarkConfig(**{f.name: getattr(config, f.name)
                                            for f in dataclasses.fields(EstimatorBenchmarkConfig)})
    results = run(benchmark, progress=None if config.progress else False)
    print(format_tables(results))
    print(f"runtime {results['runtime_seconds']:.1f} s")
    if config.out:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(json.dumps(results, indent=1))
        with open(config.out.with_suffix(".csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(results["rows"])
    if config.markdown:
        config.markdown.write_text(markdown_tables(results))
    if config.plot:
        from paper_figs.fig_estimator_variance import draw

        figure, _ = draw(results)
        figure.savefig(config.plot, dpi=130, bbox_inches="tight")
    return results


if __name__ == "__main__":
    main()
