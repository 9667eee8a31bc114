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

NAME = "reward_vs_kl"


def trained_series(results: dict, value: str, pareto_key: str) -> dict[str, list[dict]]:
    series: dict[str, list[dict]] = {}
    for t in results["trained"]:
        series.setdefault(t["series"], []).append({
            "label": t["label"], "n": t["n"], "beta": t["beta"], "kl_ref": t["kl_ref"], value: t[value],
            "pareto": t[pareto_key], f"frontier_{value}": t[f"frontier_{value}"],
        })
    return series


def draw(ax, results: dict, value: str, pareto_key: str, ylabel: str) -> dict:
    """One reward-or-win-rate vs KL panel; returns the plotted numbers."""
    frontier = [{"beta": f["beta"], "kl_ref": f["kl_ref"], value: f[value]} for f in results["frontier"]]
    bon = [{"n": b["n"], "kl_ref": b["kl_ref"], value: b[value]} for b in results["bon"]]
    optimum = [{"n": b["n"], "kl_ref": b["kl_ref"], value: b[value]} for b in results["bound_optimum"]]
    series = trained_series(results, value, pareto_key)
    ax.plot([f["kl_ref"] for f in frontier], [f[value] for f in frontier], color="black", lw=1.2,
            label="exact frontier π_ref e^{r/β}/Z")
    ax.plot([b["kl_ref"] for b in bon], [b[value] for b in bon], color="black", ls="--", marker="*", ms=9,
            label="BoN (exact π_N)")
    for b in bon:
        ax.annotate(f"{b['n']}", (b["kl_ref"], b[value]), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax.plot([b["kl_ref"] for b in optimum], [b[value] for b in optimum], color="tab:gray", ls=":", marker=".",
            label="bound optimum π_ref F^{N-1}/Z")
    counts = results["pareto_counts"]
    for name, points in series.items():
        st = _common.style(name)
        c = counts[name][pareto_key]
        ax.scatter([p["kl_ref"] for p in points], [p[value] for p in points], color=st["color"],
                   marker=st["marker"], s=30, label=f"{st['label']} ({c}/{len(points)} Pareto)", zorder=3)
        front = [p for p in points if p["pareto"]]
        ax.scatter([p["kl_ref"] for p in front], [p[value] for p in front], facecolors="none",
                   edgecolors="black", s=110, lw=1.0, zorder=4)
    shown = [b["kl_ref"] for b in bon] + [p["kl_ref"] for pts in series.values() for p in pts]
    ax.set_xlim(-0.05 * max(shown), 1.15 * max(shown))
    ax.set_xlabel("KL(π ‖ π_ref) (nats, exact)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    return {"frontier": frontier, "bon": bon, "bound_optimum": optimum, "trained": series,
            "pareto_counts": {k: {"pareto": v[pareto_key], "total": v["total"]} for k, v in counts.items()}}


def main(argv: list[str] | None = None) -> int:
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    results = _common.experiment(args)
    from bonmath.experiment import format_headline, headline

    plt = _common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]})
    data = draw(ax, results, "reward", "pareto", "E[r] (VADER compound, exact)")
    ax.set_title(f"Reward vs KL, {len(results['task']['prompts'])} prompts, "
                 f"{results['task']['num_strings']} continuations each")
    estimates = []
    for t in results["trained"]:
        s = t["sample"]
        estimates.append({"label": t["label"], "series": t["series"], "kl_ref": t["kl_ref"], "k1": s["k1"],
                          "k3": s["k3"], "k1_sd": s["k1_sd"], "k3_sd": s["k3_sd"], "m": s["m"]})
    if estimates:
        x = [e["kl_ref"] for e in estimates]
        for e in estimates:  # an sd beyond e^700 is drawn as no bar
            e["k1_sd"] = e["k1_sd"] or 0.0
            e["k3_sd"] = e["k3_sd"] or 0.0
        ax2.errorbar(x, [e["k1"] for e in estimates], yerr=[e["k1_sd"] for e in estimates], fmt="o", ms=3,
                     color="tab:blue", alpha=0.8, label="k1 = mean log(π/π_ref)")
        ax2.errorbar(x, [e["k3"] for e in estimates], yerr=[e["k3_sd"] for e in estimates], fmt="s", ms=3,
                     color="tab:red", alpha=0.8, label="k3 = mean(ρ - 1 - log ρ)")
        values = x + [e["k1"] for e in estimates] + [e["k3"] for e in estimates]
        lo, hi = min(0.0, min(values)), max(values)
        ax2.plot([0.0, max(x)], [0.0, max(x)], color="black", lw=0.8, label="exact")
        # k3's exact sd can be 1e7 (ρ = π_ref/π is heavy-tailed): clip the bars, not the points
        ax2.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    m = estimates[0]["m"] if estimates else 0
    ax2.set_title(f"Sample KL estimates ({m} samples/prompt) vs exact")
    ax2.set_xlabel("exact KL(π ‖ π_ref)")
    ax2.set_ylabel("estimate (±1 exact sd, bars clipped)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    data["kl_estimates"] = estimates
    data["headline"] = headline(results)
    data["task"] = results["task"]
    data["reference"] = {k: results["reference"][k] for k in ("reward", "kl_ref", "win_rate", "entropy")}
    print(format_headline(data["headline"]))
    _common.save(fig, data, args.out, NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
