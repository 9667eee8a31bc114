"""Figure 3: the vBoN objective J against its lower bound L, exactly.

    python -m paper_figs.fig_vbon_bound_gap [--out paper_figs/out] [--smoke]

Left: for every N, the trained vBoN model and the models trained on the bound
(exact F, F̂ with M samples), each evaluated by the exact objective
J = -KL(π || π_N) (filled) and by the bound L̃ (hollow; L itself is -inf for any
policy with mass on the lowest reward level, which every softmax policy has, so L̃
replaces that level's term by its exact value, see ``bonmath.task.Task.bound_log_cdf``).
Right: the exact gap between BoN and the bound's optimum π_L = π_ref F_lt^{N-1}/Z as
N grows: KL(π_L || π_N) = -J(π_L), and the differences in reward, win rate and KL
to π_ref.

Writes ``vbon_bound_gap.png`` and ``vbon_bound_gap.json``.
"""

from __future__ import annotations

from paper_figs import _common

NAME = "vbon_bound_gap"


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(_common.FigureConfig, argv, __doc__)
    results = _common.experiment(cfg)
    plt = _common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    models = {}
    for t in results.trained:
        if t.method not in ("vbon", "vbon_bound"):
            continue
        models.setdefault(t.series, []).append({"n": t.n, "label": t.label, "J": -t.metrics.kl_to_bon(t.n),
                                                "L": t.metrics.bound_at(t.n)})
    if not models:
        raise ValueError("the experiment trained no vbon or vbon_bound model")
    names = list(models)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        st = _common.style(name, names)
        pts = sorted(models[name], key=lambda p: p["n"])
        x = [j + (i - (len(names) - 1) / 2) * width for j in range(len(pts))]
        ax.scatter(x, [p["J"] for p in pts], color=st["color"], marker=st["marker"], label=f"{st['label']}: J")
        ax.scatter(x, [p["L"] for p in pts], facecolors="white", edgecolors=st["color"], marker=st["marker"],
                   label=f"{st['label']}: L̃")
        for xi, p in zip(x, pts):
            ax.plot([xi, xi], [p["L"], p["J"]], color=st["color"], lw=0.8, alpha=0.6)
    ns = sorted({p["n"] for pts in models.values() for p in pts})
    ax.set_xticks(range(len(ns)), [str(n) for n in ns])
    ax.set_xlabel("N")
    ax.set_ylabel("nats")
    ax.set_title("Trained models: exact J = -KL(π‖π_N) (filled) and bound L̃ (hollow)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)

    rows = [r for r in results.theory if r.n > 1]
    gap = [{"n": r.n, "kl_bound_optimum_to_bon": r.bound_optimum_kl_to_bon,
            "reward_bon_minus_optimum": r.bon_reward - r.bound_optimum_reward,
            "win_rate_bon_minus_optimum": r.bon_win_rate - r.bound_optimum_win_rate,
            "kl_ref_optimum_minus_bon": r.bound_optimum_kl_ref - r.kl_bon_ref,
            "bound_at_optimum": r.bound_at_optimum} for r in rows]
    n = [g["n"] for g in gap]
    ax2.plot(n, [g["kl_bound_optimum_to_bon"] for g in gap], marker="o", label="KL(π_L ‖ π_N) = -J(π_L)")
    ax2.plot(n, [g["reward_bon_minus_optimum"] for g in gap], marker="s", label="E_N[r] - E_L[r]")
    ax2.plot(n, [g["win_rate_bon_minus_optimum"] for g in gap], marker="^", label="W(π_N) - W(π_L)")
    ax2.plot(n, [g["kl_ref_optimum_minus_bon"] for g in gap], marker="v", label="KL(π_L‖π_ref) - KL(π_N‖π_ref)")
    ax2.axhline(0, color="black", lw=0.6)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("N")
    ax2.set_title("BoN vs the bound's optimum π_ref F_lt^{N-1}/Z (exact)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    _common.save(fig, {"trained": models, "bound_optimum_gap": gap}, cfg.out, NAME, smoke=cfg.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
