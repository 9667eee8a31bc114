"""Figure 2: win rate against π_ref versus KL(π || π_ref), exactly, on the review task.

    python -m paper_figs.fig_win_rate_vs_kl [--out paper_figs/out] [--smoke]

The same series as figure 1 (``fig_reward_vs_kl``) with the win rate
W(π, π_ref) = P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')) on the y axis (ties count one
half; exact, from π_ref's reward CDF). The black curve is the tilted family
π_ref e^{r/β}/Z, which is the exact reward-KL frontier, not the win-rate frontier
(that is BoNBoN's π_ref e^{cF}/Z, see ``fig_related_laws``), so points may lie above
it. Pareto rings are for win rate vs KL among the trained models.

Writes ``win_rate_vs_kl.png`` and ``win_rate_vs_kl.json``.
"""

from __future__ import annotations

from paper_figs import _common
from paper_figs.fig_reward_vs_kl import draw

NAME = "win_rate_vs_kl"


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(_common.FigureConfig, argv, __doc__)
    results = _common.experiment(cfg)
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    data = draw(ax, results, "win_rate", "win rate against π_ref (exact)")
    ax.set_title("Win rate vs KL (reward-KL frontier in black)")
    _common.save(fig, data, cfg.out, NAME, smoke=cfg.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
