"""Figure 1: expected reward against KL(π || π_ref), exactly, on the review task.

    python -m paper_figs.fig_reward_vs_kl [--out paper_figs/out] [--smoke]

Left: BoN (exact π_N over the N grid), the trained models (vBoN, the vBoN bound L
with exact F and with F̂ from M reference samples, KL-RL, BoN-SFT), the optimum of
the bound π_ref F_lt^{N-1}/Z, and the exact Pareto frontier (the tilted policies
π_ref e^{r/β}/Z over a β sweep). Every coordinate is computed on the whole
enumerated support and averaged over prompts. Trained points that no other trained
point dominates (lower KL and higher reward) are ringed; the legend counts them.
Right: the k1 and k3 sample estimates of KL(π||π_ref) (64 samples per prompt)
against the exact KL, for every trained model, with ±1 exact standard deviation.

Writes ``reward_vs_kl.png`` and ``reward_vs_kl.json``.
"""

from __future__ import annotations

from paper_figs import _common
from paper_figs.headline import format_headline, headline

NAME = "reward_vs_kl"


def trained_series(results, metric: str) -> dict[str, list[dict]]:
    """Per series, each trained point's KL, ``metric``, Pareto flag and the frontier's value at its KL."""
    return {name: [{"label": t.label, "n": t.n, "beta": t.beta, "kl_ref": t.metrics.kl_ref,
                    metric: t.metrics.value(metric), "pareto": t.front(metric).pareto,
                    "frontier_value": t.front(metric).frontier_value} for t in points]
            for name, points in results.series().items()}


def draw(ax, results, metric: str, ylabel: str) -> dict:
    """One reward-or-win-rate vs KL panel; returns the plotted numbers."""
    f = results.frontier
    frontier = [{"beta": b, "kl_ref": k, metric: v} for b, k, v in zip(f.beta, f.kl_ref, getattr(f, metric))]
    bon = [{"n": b.n, "kl_ref": b.metrics.kl_ref, metric: b.metrics.value(metric)} for b in results.bon]
    optimum = [{"n": b.n, "kl_ref": b.metrics.kl_ref, metric: b.metrics.value(metric)}
               for b in results.bound_optimum]
    series = trained_series(results, metric)
    ax.plot([p["kl_ref"] for p in frontier], [p[metric] for p in frontier], color="black", lw=1.2,
            label="exact frontier π_ref e^{r/β}/Z")
    ax.plot([b["kl_ref"] for b in bon], [b[metric] for b in bon], color="black", ls="--", marker="*", ms=9,
            label="BoN (exact π_N)")
    for b in bon:
        ax.annotate(f"{b['n']}", (b["kl_ref"], b[metric]), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax.plot([b["kl_ref"] for b in optimum], [b[metric] for b in optimum], color="tab:gray", ls=":", marker=".",
            label="bound optimum π_ref F^{N-1}/Z")
    counts = {name: sum(p["pareto"] for p in points) for name, points in series.items()}
    for name, points in series.items():
        st = _common.style(name, list(series))
        ax.scatter([p["kl_ref"] for p in points], [p[metric] for p in points], color=st["color"],
                   marker=st["marker"], s=30, label=f"{st['label']} ({counts[name]}/{len(points)} Pareto)", zorder=3)
        front = [p for p in points if p["pareto"]]
        ax.scatter([p["kl_ref"] for p in front], [p[metric] for p in front], facecolors="none",
                   edgecolors="black", s=110, lw=1.0, zorder=4)
    shown = [b["kl_ref"] for b in bon] + [p["kl_ref"] for pts in series.values() for p in pts]
    ax.set_xlim(-0.05 * max(shown), 1.15 * max(shown))
    ax.set_xlabel("KL(π ‖ π_ref) (nats, exact)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    return {"metric": metric, "frontier": frontier, "bon": bon, "bound_optimum": optimum, "trained": series,
            "pareto_counts": {name: {"pareto": counts[name], "total": len(points)}
                              for name, points in series.items()}}


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(_common.FigureConfig, argv, __doc__)
    results = _common.experiment(cfg)
    plt = _common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]})
    data = draw(ax, results, "reward", "E[r] (VADER compound, exact)")
    ax.set_title(f"Reward vs KL, {len(results.task.prompts)} prompts, "
                 f"{results.task.num_strings} continuations each")
    estimates = [{"label": t.label, "series": t.series, "kl_ref": t.metrics.kl_ref, "k1": s.k1, "k3": s.k3,
                  "k1_sd": s.k1_sd, "k3_sd": s.k3_sd, "num_samples": s.num_samples}
                 for t in results.trained if (s := t.metrics.sample) is not None]
    if not estimates:
        raise ValueError("no trained model has sample KL estimates (num_eval_samples = 0?)")
    x = [e["kl_ref"] for e in estimates]
    bars = {key: [e[f"{key}_sd"] or 0.0 for e in estimates] for key in ("k1", "k3")}  # None: sd > e^700, no bar
    ax2.errorbar(x, [e["k1"] for e in estimates], yerr=bars["k1"], fmt="o", ms=3,
                 color="tab:blue", alpha=0.8, label="k1 = mean log(π/π_ref)")
    ax2.errorbar(x, [e["k3"] for e in estimates], yerr=bars["k3"], fmt="s", ms=3,
                 color="tab:red", alpha=0.8, label="k3 = mean(ρ - 1 - log ρ)")
    values = x + [e["k1"] for e in estimates] + [e["k3"] for e in estimates]
    lo, hi = min(0.0, min(values)), max(values)
    ax2.plot([0.0, max(x)], [0.0, max(x)], color="black", lw=0.8, label="exact")
    # k3's exact sd can be 1e7 (ρ = π_ref/π is heavy-tailed): clip the bars, not the points
    ax2.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax2.set_title(f"Sample KL estimates ({estimates[0]['num_samples']} samples/prompt) vs exact")
    ax2.set_xlabel("exact KL(π ‖ π_ref)")
    ax2.set_ylabel("estimate (±1 exact sd, bars clipped)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    data["kl_estimates"] = estimates
    data["headline"] = headline(results)
    data["task"] = {"prompts": results.task.prompts, "num_strings": results.task.num_strings,
                    "num_reward_levels": results.task.num_reward_levels}
    ref = results.reference
    data["reference"] = {"reward": ref.reward, "kl_ref": ref.kl_ref, "win_rate": ref.win_rate, "entropy": ref.entropy}
    print(format_headline(data["headline"]))
    _common.save(fig, data, cfg.out, NAME, smoke=cfg.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
