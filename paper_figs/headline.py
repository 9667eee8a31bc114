"""The numbers worth quoting from the experiment, as a dict and as markdown tables.

Printed by ``fig_reward_vs_kl`` and stored in its JSON (``"headline"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def headline(results) -> dict[str, Any]:
    """The quotable numbers of an :class:`~bonmath.experiment.ExperimentResults`.

    Returns
    -------
    dict
        ``by_n``: per N, BoN's exact reward / win rate / KL and, for each trained
        series at that N, its reward, win rate, KL(π||π_ref) and KL(π||π_N);
        ``pareto_counts``; ``injective``: the injective formula's total mass, TV and
        worst log-ratio at each N of the theory grid; ``kl_estimates``: the mean and
        max absolute error of the k1 and k3 sample estimates of KL(π||π_ref) over the
        trained models, also in units of their exact standard deviations.
    """
    by_n = {}
    for b in results.bon:
        entry = {"bon": {"reward": b.metrics.reward, "win_rate": b.metrics.win_rate, "kl_ref": b.metrics.kl_ref}}
        for t in results.trained:
            if t.n == b.n:
                m = t.metrics
                entry[t.series] = {"reward": m.reward, "win_rate": m.win_rate, "kl_ref": m.kl_ref,
                                   "kl_to_bon": m.kl_to_bon(b.n)}
        by_n[str(b.n)] = entry
    sampled = [t.metrics for t in results.trained if t.metrics.sample is not None]
    estimates = {}
    for key in ("k1", "k3"):
        errors = [abs(getattr(m.sample, key) - m.kl_ref) for m in sampled]
        sds = [getattr(m.sample, f"{key}_sd") for m in sampled]
        scaled = [e / sd for e, sd in zip(errors, sds) if sd]
        estimates[key] = {"mean_abs_error": float(np.mean(errors)) if errors else None,
                          "max_abs_error": float(np.max(errors)) if errors else None,
                          "mean_abs_error_in_sd": float(np.mean(scaled)) if scaled else None}
    counts = {name: {"pareto": c.reward, "pareto_win": c.win_rate, "total": c.total}
              for name, c in results.pareto_counts().items()}
    injective = [{"n": r.n, "injective_total_mass": r.injective_total_mass, "injective_tv": r.injective_tv,
                  "injective_max_log_ratio": r.injective_max_log_ratio} for r in results.theory]
    return {"by_n": by_n, "pareto_counts": counts, "injective": injective, "kl_estimates": estimates}


def format_headline(h: dict[str, Any]) -> str:
    """A markdown rendering of :func:`headline`."""
    lines = ["| N | BoN E[r] | vBoN E[r] | BoN W | vBoN W | BoN KL | vBoN KL | KL(vBoN‖π_N) |",
             "|---|---|---|---|---|---|---|---|"]
    for n, e in h["by_n"].items():
        v = e.get("vbon")
        if v is None:
            continue
        b = e["bon"]
        lines.append(f"| {n} | {b['reward']:.4f} | {v['reward']:.4f} | {b['win_rate']:.4f} | {v['win_rate']:.4f} "
                     f"| {b['kl_ref']:.3f} | {v['kl_ref']:.3f} | {v['kl_to_bon']:.3f} |")
    lines += ["", "| series | on the reward-KL Pareto front | on the win-rate-KL front | models |", "|---|---|---|---|"]
    for series, c in h["pareto_counts"].items():
        lines.append(f"| {series} | {c['pareto']} | {c['pareto_win']} | {c['total']} |")
    lines += ["", "| N | injective formula total mass | TV to π_N | max log(π_N / formula) |", "|---|---|---|---|"]
    for row in h["injective"]:
        lines.append(f"| {row['n']} | {row['injective_total_mass']:.6f} | {row['injective_tv']:.3g} "
                     f"| {row['injective_max_log_ratio']:.3g} |")
    return "\n".join(lines) + "\n"
