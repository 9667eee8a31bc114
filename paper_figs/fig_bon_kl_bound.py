"""Figure 4: KL(π_N || π_ref) against log N - (N-1)/N, with ties and without; the injective formula's error.

    python -m paper_figs.fig_bon_kl_bound [--out paper_figs/out] [--smoke]

Left: the exact KL(π_N || π_ref) on the review task (VADER rewards rounded to 4
decimals: thousands of levels, many strings per level), on a tie-free
perturbation of it (ties broken by tiny distinct offsets that keep the order of
distinct rewards), and Beirami et al.'s bound log N - (N-1)/N; the bound minus
each KL on a log scale. Right: the vBoN paper's injective formula
Σ_i C(N,i) F_lt^{N-i} π_ref^i, which assumes no ties, against the exact
tie-aware π_N: its missing total mass (= twice its TV distance, since it never
exceeds π_N) and the worst per-string log(π_N / formula).

Writes ``bon_kl_bound.png`` and ``bon_kl_bound.json``.
"""

from __future__ import annotations

from paper_figs import _common

NAME = "bon_kl_bound"


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(_common.FigureConfig, argv, __doc__)
    results = _common.experiment(cfg)
    plt = _common.pyplot()
    keys = ("n", "kl_bon_ref", "kl_bon_ref_tie_free", "kl_bound", "injective_total_mass",
            "injective_missing_mass", "injective_tv", "injective_tv_max", "injective_max_log_ratio")
    rows = [{k: getattr(r, k) for k in keys} for r in results.theory]
    data = {"rows": rows, "task": {"num_strings": results.task.num_strings,
                                   "num_reward_levels": results.task.num_reward_levels}}
    n = [r["n"] for r in rows]
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.8))
    ax.plot(n, [r["kl_bound"] for r in rows], color="black", label="log N - (N-1)/N")
    ax.plot(n, [r["kl_bon_ref"] for r in rows], marker="o", label="exact, task (ties)")
    ax.plot(n, [r["kl_bon_ref_tie_free"] for r in rows], marker="x", ls="--", label="exact, ties broken")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N")
    ax.set_ylabel("KL(π_N ‖ π_ref) (nats)")
    ax.set_title("BoN KL vs Beirami et al.'s bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    big = [r for r in rows if r["n"] > 1]
    ax2.plot([r["n"] for r in big], [max(r["kl_bound"] - r["kl_bon_ref"], 1e-300) for r in big], marker="o",
             label="bound - KL (ties)")
    ax2.plot([r["n"] for r in big], [max(r["kl_bound"] - r["kl_bon_ref_tie_free"], 1e-300) for r in big],
             marker="x", ls="--", label="bound - KL (ties broken)")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("N")
    ax2.set_title("Slack of the bound")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    ax3.plot([r["n"] for r in big], [r["injective_missing_mass"] for r in big], marker="o",
             label="1 - Σ formula = 2 TV")
    ax3.plot([r["n"] for r in big], [r["injective_max_log_ratio"] for r in big], marker="s",
             label="max_y log(π_N(y) / formula(y))")
    ax3.set_xscale("log", base=2)
    ax3.set_yscale("log")
    ax3.set_xlabel("N")
    ax3.set_title("The injective formula Σ C(N,i) F^{N-i} π^i with ties")
    ax3.grid(alpha=0.3)
    ax3.legend(fontsize=8)
    _common.save(fig, data, cfg.out, NAME, smoke=cfg.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
