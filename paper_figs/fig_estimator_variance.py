"""Figure 6: bias and variance of the vBoN gradient estimators, drawn from the estimator benchmark's JSON.

    python benchmarks/estimator_variance.py --out results/estimator_variance.json   # ~30 s, 2 cores
    python -m paper_figs.fig_estimator_variance [--out paper_figs/out] [--json FILE]
    python -m paper_figs.fig_estimator_variance --smoke [--out DIR]

Full mode draws the JSON that ``benchmarks/estimator_variance.py --out`` wrote
(default ``results/estimator_variance.json``) and fails when it is missing, was
run with another configuration than the default, or was written by other code
(its ``code_version`` differs from :func:`bonmath.estimator_benchmark.code_version`):
rerun the benchmark. ``--smoke`` computes the smoke preset in-process with
:func:`bonmath.estimator_benchmark.run` (seconds) and says "smoke" in its title.

One row per model. Left panels: relative MSE E‖ĝ − g‖²/‖g‖² against k for each N,
one series per estimator (solid: claimed unbiased, dashed: biased). Right panel:
exact relative bias ‖E ĝ − ∇L‖/‖∇L‖ of the bound estimator with F̂ from M
reference samples, against M, for each N. Writes ``estimator_variance.png`` and
``estimator_variance.json`` (every plotted number).
"""

from __future__ import annotations

import json
from pathlib import Path

from paper_figs import _common

NAME = "estimator_variance"
DEFAULT_JSON = _common.ROOT / "results" / "estimator_variance.json"

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
          "tab:gray", "tab:olive", "tab:cyan", "black", "gold"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p"]


def estimator_styles(results: dict) -> dict[str, dict]:
    """A distinct colour and marker per estimator, in registry order; dashed when biased."""
    estimators = results["estimators"]
    if len(estimators) > len(COLORS):
        raise ValueError(f"{len(estimators)} estimators but only {len(COLORS)} distinct styles")
    return {e["name"]: dict(color=c, marker=m, linestyle="-" if e["claimed_unbiased"] else "--", label=e["name"])
            for e, c, m in zip(estimators, COLORS, MARKERS)}


def load_results(path: Path) -> dict:
    """The benchmark's results at ``path``; raises unless they are the default run of this code."""
    from bonmath.estimator_benchmark import code_version

    rerun = f"rerun `python benchmarks/estimator_variance.py --out {path}` (about 30 s on 2 cores)"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {rerun}")
    results = json.loads(path.read_text())
    if results.get("code_version") != code_version():
        raise ValueError(f"{path} is stale: written by code version {results.get('code_version')}, the "
                         f"benchmark's code is now {code_version()}; {rerun}")
    if results.get("preset") != "default":
        raise ValueError(f"{path} holds a {results.get('preset')!r} run, not the default configuration; {rerun}")
    return results


def draw(results: dict):
    """The figure of a results dict, and the numbers it plots (``curves``, ``cdf_bias``)."""
    plt = _common.pyplot()
    rows, cdf = results["rows"], results["cdf_bias"]
    styles = estimator_styles(results)
    models = list(dict.fromkeys(r["model"] for r in rows))
    ns = list(dict.fromkeys(r["n"] for r in rows))
    fig, axes = plt.subplots(len(models), len(ns) + 1, figsize=(3.6 * (len(ns) + 1), 3.2 * len(models)),
                             squeeze=False)
    curves = []
    for i, model in enumerate(models):
        for j, n in enumerate(ns):
            ax = axes[i][j]
            for name, style in styles.items():
                points = sorted((r["k"], r["rel_mse"]) for r in rows
                                if r["model"] == model and r["n"] == n and r["estimator"] == name)
                if points:
                    ax.plot(*zip(*points), ms=4, lw=1.2, **style)
                    curves.append({"model": model, "n": n, "estimator": name, "k": [p[0] for p in points],
                                   "rel_mse": [p[1] for p in points]})
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{model}, N = {n}", fontsize=9)
            ax.set_xlabel("k (samples per estimate)")
            ax.set_ylabel("E‖ĝ − g‖² / ‖g‖²")
            ax.grid(alpha=0.3)
        ax = axes[i][-1]
        shades = plt.get_cmap("Greys")([0.45 + 0.55 * j / max(len(ns) - 1, 1) for j in range(len(ns))])
        for j, (shade, n) in enumerate(zip(shades, ns)):
            points = sorted((r["m"], r["rel_bias"]) for r in cdf if r["model"] == model and r["n"] == n)
            ax.plot(*zip(*points), marker=MARKERS[j % len(MARKERS)], ms=4, color=shade,
                    linestyle=["-", "--", ":", "-."][j % 4], label=f"N = {n}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("M (reference samples for F̂)")
        ax.set_ylabel("‖E ĝ − ∇L‖ / ‖∇L‖")
        ax.set_title(f"{model}: bound_rloo_Fhat bias", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    handles = [plt.Line2D([], [], ms=5, **style) for style in styles.values()]
    fig.legend(handles, list(styles), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, fontsize=8,
               title="estimator (solid: unbiased, dashed: biased)", title_fontsize=8)
    preset = results.get("preset", "custom")
    title = "vBoN gradient estimators: relative MSE against k, and the bias of F̂ against M"
    if preset != "default":
        title += f" ({preset} run: {'tiny models, few samples' if preset == 'smoke' else 'custom settings'})"
    fig.suptitle(title, fontsize=11)
    data = {"preset": preset, "code_version": results.get("code_version"), "curves": curves,
            "cdf_bias": [{k: r[k] for k in ("model", "n", "m", "rel_bias")} for r in cdf],
            "benchmark_config": results["config"], "benchmark_runtime_seconds": results["runtime_seconds"]}
    return fig, data


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None,
                   help=f"benchmark JSON to draw (default {DEFAULT_JSON.relative_to(_common.ROOT)}; not with --smoke)")
    args = p.parse_args(argv)
    if args.smoke and args.json is not None:
        p.error("--json and --smoke exclude each other: --smoke computes its own results")
    if args.smoke:
        from bonmath.estimator_benchmark import SMOKE, run

        results = run(SMOKE, progress=None if args.progress else False)
    else:
        results = load_results(args.json or DEFAULT_JSON)
    fig, data = draw(results)
    _common.save(fig, data, args.out, NAME, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
