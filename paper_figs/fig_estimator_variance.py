"""Figure 6: bias and variance of the vBoN gradient estimators, from the estimator benchmark.

    python -m paper_figs.fig_estimator_variance [--out paper_figs/out] [--smoke] [--json FILE]

Reads the JSON written by ``benchmarks/estimator_variance.py --out FILE`` (exact
bias and variance of every estimator against the exact gradient, on a tabular LM
and a tiny GPT-2). Without ``--json`` the benchmark is run (``--smoke``: its smoke
settings) into ``<out>/estimator_variance_benchmark.json``; in full mode a
benchmark JSON already in the cache directory, keyed by the script's hash, is
reused. If the benchmark script is missing, the figure says so in its PNG and JSON
(``"skipped"``) instead of failing.

Top row: relative MSE E‖ĝ - g‖²/‖g‖² against k for each (model, N). Bottom row:
relative bias ‖E ĝ - g‖/‖g‖ of the bound estimator with F̂ from M reference
samples, against M. Writes ``estimator_variance.png`` and ``estimator_variance.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from paper_figs import _common

NAME = "estimator_variance"
BENCHMARK = _common.ROOT / "benchmarks" / "estimator_variance.py"


def benchmark_results(args) -> dict:
    """The benchmark's results dict, or {"skipped": reason}."""
    if args.json:
        return json.loads(Path(args.json).read_text())
    if not BENCHMARK.is_file():
        return {"skipped": f"{BENCHMARK} not found: run the estimator benchmark to draw this figure"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "estimator_variance_benchmark.json"
    key = hashlib.sha256(BENCHMARK.read_bytes()).hexdigest()[:16]
    cached = _common.DEFAULT_CACHE / f"estimator_variance_{key}.json" if not args.smoke else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, target)
        return json.loads(target.read_text())
    spec = importlib.util.spec_from_file_location("estimator_variance_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except ImportError as err:  # e.g. bonmath.estimator_moments not there yet
        del sys.modules[spec.name]
        return {"skipped": f"the estimator benchmark could not be imported: {err}"}
    argv = (["--smoke"] if args.smoke else []) + ["--out", str(target)]
    module.main(argv)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, cached)
    return json.loads(target.read_text())


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="benchmark JSON to draw (default: run the benchmark)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = benchmark_results(args)
    plt = _common.pyplot()
    if "skipped" in results:
        print(f"fig_estimator_variance: skipped: {results['skipped']}")
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "skipped:\n" + results["skipped"], ha="center", va="center", wrap=True, fontsize=8)
        _common.save(fig, {"skipped": results["skipped"]}, args.out, NAME)
        return 0
    rows = results["rows"]
    panels = list(dict.fromkeys((r["model"], r["n"]) for r in rows))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.5), squeeze=False)
    curves = []
    for j, (model, n) in enumerate(panels):
        ax = axes[0][j]
        for name in dict.fromkeys(r["estimator"] for r in rows):
            pts = sorted((r["k"], r["rel_mse"]) for r in rows
                         if r["model"] == model and r["n"] == n and r["estimator"] == name
                         and r["rel_mse"] is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
                curves.append({"model": model, "n": n, "estimator": name, "k": [p[0] for p in pts],
                               "rel_mse": [p[1] for p in pts]})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{model}, N={n}", fontsize=9)
        ax.set_xlabel("k (samples per estimate)")
        ax.set_ylabel("E‖ĝ − g‖² / ‖g‖²")
        ax.grid(alpha=0.3)
        ax = axes[1][j]
        cdf = sorted((r["m"], r["rel_bias"]) for r in results.get("cdf_bias", [])
                     if r["model"] == model and r["n"] == n)
        if cdf:
            ax.plot(*zip(*cdf), marker="o")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        ax.set_xlabel("M (reference samples for F̂)")
        ax.set_ylabel("‖E ĝ − ∇L‖ / ‖∇L‖")
        ax.set_title(f"bound estimator with F̂: bias, {model}, N={n}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6)
    data = {"curves": curves,
            "cdf_bias": [{k: r[k] for k in ("model", "n", "m", "rel_bias")} for r in results.get("cdf_bias", [])],
            "benchmark_config": results.get("config"), "benchmark_runtime_seconds": results.get("runtime_seconds")}
    _common.save(fig, data, args.out, NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
