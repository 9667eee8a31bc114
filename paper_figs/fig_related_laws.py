"""Win rate against KL(π || π_ref) for Best-of-N and its relatives, exactly, on one task.

    python -m paper_figs.fig_related_laws [--out paper_figs/out] [--smoke]

The task is an enumerable LM, ``bonmath.TabularLM.random(vocab_size=5, max_len=4, rng=0)``
(341 strings), with the reward "number of 1 tokens in the string" (0..4: five reward
levels, so ties everywhere). For each family the exact law is computed with bonmath and
its (KL, win rate against π_ref) plotted:

* BoN over a grid of n (:func:`bonmath.bon_log_probs`);
* soft BoN for a few temperatures λ over a grid of n (:func:`bonmath.theory.soft_bon_log_probs`);
* Best-of-Poisson over a grid of μ (:func:`bonmath.theory.best_of_poisson_log_probs`);
* the BoNBoN tilt π_ref e^(c F_mid)/Z over a grid of c: the exact win-rate-vs-KL frontier;
* the KL-RL optima π_ref e^(r/β)/Z over a sweep of β (:func:`bonmath.tilted_log_probs`).

The right panel shows each point's win-rate gap below the frontier at the same KL.
Thin grey lines are the continuous-limit curves (BoN: (log n - (n-1)/n, n/(n+1));
BoNBoN: (KL(c), W(c))). Writes ``related_laws.png`` and ``related_laws.json`` (every
plotted number) to ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import bonmath
from bonmath.theory import (
    best_of_poisson_log_probs,
    bonbon_kl,
    bonbon_tilt_c_for_kl,
    bonbon_tilt_log_probs,
    bonbon_win_rate,
    soft_bon_log_probs,
)
from paper_figs import _common


@dataclass
class Config:
    vocab_size: int = 5
    """Tokens of the random tabular LM (EOS included)."""
    max_len: int = 4
    """Maximum string length of the LM."""
    seed: int = 0
    """Seed of the LM's logits."""
    rewarded_token: int = 1
    """The reward counts this token."""
    bon_n: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 1024])
    """BoN sample counts."""
    soft_temperatures: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    """Soft-BoN temperatures λ."""
    soft_n: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48])
    """Soft-BoN sample counts (exact cost grows like n^4 with five reward levels)."""
    poisson_mu: list[float] = field(default_factory=lambda: list(np.geomspace(0.05, 2000.0, 30)))
    """Best-of-Poisson means μ (n - 1 ~ Poisson(μ))."""
    bonbon_c: list[float] = field(default_factory=lambda: list(np.geomspace(0.05, 2000.0, 40)))
    """Tilt strengths c of the BoNBoN tilt π_ref e^(c F_mid)/Z."""
    klrl_beta: list[float] = field(default_factory=lambda: list(np.geomspace(0.02, 50.0, 30)))
    """KL coefficients β of the KL-RL optima π_ref e^(r/β)/Z."""

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            bon_n=[1, 2, 4, 16],
            soft_temperatures=[0.5],
            soft_n=[1, 2, 4],
            poisson_mu=[0.5, 4.0],
            bonbon_c=[0.5, 5.0, 50.0],
            klrl_beta=[0.3, 3.0],
        )


def task(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The reference log-probabilities and integer rewards of the enumerated LM."""
    lm = bonmath.TabularLM.random(vocab_size=config.vocab_size, max_len=config.max_len, rng=config.seed)
    sequences, ref_log_probs = lm.enumerate()
    rewards = (np.asarray(sequences) == config.rewarded_token).sum(axis=1).astype(np.float64)
    return np.asarray(ref_log_probs), rewards


def point(log_probs: np.ndarray, ref: np.ndarray, rewards: np.ndarray, **param) -> dict:
    """KL, win rate, expected reward and the win-rate gap below the frontier at that KL."""
    kl = float(bonmath.kl_divergence(log_probs, ref))
    win = float(bonmath.win_rate(log_probs, ref, rewards))
    frontier = _frontier_win_rate(ref, rewards, kl)
    return {
        **param,
        "kl": kl,
        "win_rate": win,
        "expected_reward": float(np.exp(log_probs) @ rewards),
        "gap_to_frontier": frontier - win,
    }


def _frontier_win_rate(ref: np.ndarray, rewards: np.ndarray, kl: float) -> float:
    """The largest win rate at KL(π || π_ref) = kl: the mid-CDF tilt's, or the top level's beyond it."""
    try:
        c = bonbon_tilt_c_for_kl(ref, rewards, kl)
    except ValueError:  # kl >= -log q_top: the top level alone is reachable
        lt, le = bonmath.reward_cdf(ref, rewards)
        return float(np.max((np.exp(lt) + np.exp(le)) / 2))
    return float(bonmath.win_rate(bonbon_tilt_log_probs(ref, rewards, c), ref, rewards))


def compute(config: Config) -> dict:
    ref, rewards = task(config)
    curves: dict[str, list[dict]] = {}
    curves["BoN"] = [point(bonmath.bon_log_probs(ref, rewards, n), ref, rewards, n=n) for n in config.bon_n]
    for temperature in config.soft_temperatures:
        curves[f"soft BoN, λ = {temperature:g}"] = [
            point(soft_bon_log_probs(ref, rewards, n, temperature), ref, rewards, n=n, temperature=temperature)
            for n in config.soft_n
        ]
    curves["Best-of-Poisson"] = [
        point(best_of_poisson_log_probs(ref, rewards, mu), ref, rewards, mu=float(mu)) for mu in config.poisson_mu
    ]
    curves["BoNBoN tilt (frontier)"] = [
        point(bonbon_tilt_log_probs(ref, rewards, c), ref, rewards, c=float(c)) for c in config.bonbon_c
    ]
    curves["KL-RL optimum"] = [
        point(bonmath.tilted_log_probs(ref, rewards, beta), ref, rewards, beta=float(beta))
        for beta in config.klrl_beta
    ]
    n = np.asarray(config.bon_n, dtype=np.float64)
    c = np.asarray(config.bonbon_c, dtype=np.float64)
    continuous = {
        "BoN": {"n": n.tolist(), "kl": (np.log(n) - (n - 1) / n).tolist(), "win_rate": (n / (n + 1)).tolist()},
        "BoNBoN": {"c": c.tolist(), "kl": bonbon_kl(c).tolist(), "win_rate": bonbon_win_rate(c).tolist()},
    }
    lt, le = bonmath.reward_cdf(ref, rewards)
    top = float(np.max(rewards[np.isfinite(ref)]))
    return {
        "config": asdict(config),
        "task": {
            "num_strings": int(ref.size),
            "reward_levels": sorted(set(rewards.tolist())),
            "top_level_mass": float(np.exp(np.logaddexp.reduce(ref[rewards == top]))),
            "max_kl": float(-np.logaddexp.reduce(ref[rewards == top])),
            "max_win_rate": float(np.max((np.exp(lt) + np.exp(le)) / 2)),
        },
        "curves": curves,
        "continuous_limit": continuous,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(11, 4.3), constrained_layout=True)
    styles = {
        "BoN": dict(marker="o", linestyle="-", color="C0"),
        "Best-of-Poisson": dict(marker="", linestyle=":", color="C2", linewidth=2),
        "BoNBoN tilt (frontier)": dict(marker="", linestyle="-", color="k", linewidth=2.2),
        "KL-RL optimum": dict(marker="", linestyle="-.", color="C3"),
    }
    for i, (name, rows) in enumerate(results["curves"].items()):
        style = styles.get(name, dict(marker="s", markersize=3, linestyle="--", color=f"C{4 + i}"))
        kl = [r["kl"] for r in rows]
        ax.plot(kl, [r["win_rate"] for r in rows], label=name, **style)
        if not name.startswith("BoNBoN"):
            gap_ax.plot(kl, [r["gap_to_frontier"] for r in rows], label=name, **style)
    cont = results["continuous_limit"]
    ax.plot(cont["BoN"]["kl"], cont["BoN"]["win_rate"], color="0.6", linewidth=0.8, label="continuous limit")
    ax.plot(cont["BoNBoN"]["kl"], cont["BoNBoN"]["win_rate"], color="0.6", linewidth=0.8)
    ax.axvline(results["task"]["max_kl"], color="0.8", linewidth=0.8,
               label="KL = -log q_top: π_ref conditioned on the top reward level")
    title = f"Exact laws on a {results['task']['num_strings']}-string tabular LM"
    ax.set(xlabel="KL(π || π_ref) (nats)", ylabel="win rate against π_ref",
           title=f"SMOKE (tiny grids): {title}" if results["smoke"] else title)
    ax.legend(fontsize=7)
    gap_ax.axhline(0.01, color="0.6", linewidth=0.8, linestyle="--")
    gap_ax.set(xlabel="KL(π || π_ref) (nats)", ylabel="win-rate gap below the frontier at equal KL",
               title="Distance to the win-rate frontier (0.01 dashed)")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(_common.FigureConfig, argv, __doc__)
    config = Config.smoke() if cfg.smoke else Config()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"smoke": cfg.smoke, **compute(config)}
    (out / "related_laws.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    plot(results, out / "related_laws.png")
    print(f"wrote {out / 'related_laws.png'} and {out / 'related_laws.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
