"""Inference-aware BoN: max@k / pass@k gradient estimators against n, and BoN's true reward under a proxy.

    python -m paper_figs.fig_inference_aware [--out paper_figs/out] [--smoke] [--from-json FILE]

Panel 1 (one axes per policy and k): the exact relative MSE E‖ĝ - g‖²/‖g‖² of the
estimators of :mod:`bonmath.estimators_at_k` against the number of samples n per group,
log-log, with g the exact gradient of pass@k (default; ``--target max@k`` for integer
rewards, where Chen et al.'s advantage does not apply). The numbers come from
:func:`bonmath.inference_aware_variance.run`, the computation behind
``benchmarks/inference_aware_variance.py``, or from a JSON that benchmark wrote
(``--from-json``; the figure fails if the file or one of the rows it draws is missing).

Panel 2: E[r_true] against N for BoN ranked by a proxy reward
(:func:`bonmath.bon_true_reward`), Best-of-Poisson with n - 1 ~ Poisson(μ) and the same
mean sample count, 1 + μ = N (:func:`bonmath.theory.best_of_poisson_log_probs`), and
InferenceTimePessimism once its law is in :mod:`bonmath.theory` (see
:func:`inference_time_pessimism_values`), with HedgeTune's N* (:func:`bonmath.hedgetune_n`)
marked on the BoN curve. The proxy/true pair is :func:`proxy_task`: 26 strings on 13 proxy
levels, two strings per level (ties), where the proxy keeps rewarding what the true reward
stops liking, so BoN's true reward rises, peaks at N* = 55 and falls to its value on the
top proxy level.

Writes ``inference_aware.png`` and ``inference_aware.json`` (every plotted number) to ``--out``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

import bonmath
from bonmath.cli import option, parse_config
from bonmath.inference_aware import MAX_EXACT_N
from bonmath.inference_aware_variance import ESTIMATORS, MODELS, VarianceConfig
from bonmath.theory import best_of_poisson_log_probs
from paper_figs import _common

NAME = "inference_aware"

SERIES = {  # estimator -> style; the labels never change between smoke and full runs
    "pkpo": dict(color="tab:blue", marker="o", label="PKPO s, no baseline (unbiased)"),
    "pkpo_loo": dict(color="tab:orange", marker="s", label="PKPO leave-one-out, eq. 29 (unbiased)"),
    "pkpo_loo_minus_one": dict(color="tab:green", marker="^", label="PKPO k−1 baseline, eq. 33 (unbiased)"),
    "pkpo_mean_centred": dict(color="tab:red", marker="v", label="PKPO s − mean(s) (biased: ×(1 − k/n))"),
    "passk_training": dict(color="tab:purple", marker="D", label="Chen et al. Pass@k Training (÷σ)"),
    "grpo_passk": dict(color="tab:brown", marker="P", label="verl grpo_passk, no std"),
    "grpo_passk_std": dict(color="tab:pink", marker="X", label="verl grpo_passk ÷ (std + 1e-6)"),
}
TRUE_REWARD_STYLE = {
    "bon": dict(color="tab:blue", marker="o", markersize=3, label="BoN ranked by the proxy"),
    "best_of_poisson": dict(color="tab:green", marker="s", markersize=3, linestyle="--",
                            label="Best-of-Poisson, 1 + μ = N"),
    "pessimism": dict(color="tab:red", marker="^", markersize=3, linestyle="-.", label="InferenceTimePessimism"),
    "hedgetune": dict(color="black", marker="*", markersize=14, linestyle="none", label="HedgeTune N* (on BoN)"),
}

SMOKE = dict(models=("tabular",), ks=(2, 4), n=(2, 4, 8), n_max=10_000, n_points=15)
"""Settings that ``--smoke`` changes where they are left at their defaults; its tabular LM is also smaller."""
SMOKE_TABULAR = dict(tabular_vocab=3, tabular_len=3)


@dataclass
class Config(_common.FigureConfig):
    """Inference-aware BoN figure: estimator MSE against n, and BoN's true reward against N."""

    smoke: bool = option("tiny settings, seconds (tabular LM only, small grids)", False)
    from_json: Path | None = option(
        "panel 1 from this JSON of benchmarks/inference_aware_variance.py instead of computing it", None)
    target: Literal["pass@k", "max@k"] = option(
        "objective whose gradient the estimators estimate (Chen et al. applies to pass@k only)", "pass@k")
    models: tuple[str, ...] = option("enumerable policies of panel 1", MODELS, choices=MODELS)
    ks: tuple[int, ...] = option("k of panel 1 (one axes per k)", (2, 8), minimum=1)
    n: tuple[int, ...] = option("samples per group n of panel 1", (2, 4, 8, 16, 32, 64), minimum=2)
    seed: int = option("seed of the panel-1 policies and rewards", 0)
    n_max: int = option("largest N of panel 2 (HedgeTune searches 1..n_max)", 100_000, minimum=2)
    n_points: int = option("points of panel 2's geometric N grid (N* and its neighbours are added)", 60,
                           minimum=2)

    def __post_init__(self) -> None:
        if self.smoke:  # smoke settings, except where an option differs from its default
            defaults = Config.__dataclass_fields__
            for key, value in SMOKE.items():
                if getattr(self, key) == defaults[key].default:
                    setattr(self, key, value)
        if self.n_max > MAX_EXACT_N:
            raise ValueError(f"n_max must be <= 2^53 (HedgeTune's limit); got {self.n_max}")
        if self.from_json is None and max(self.ks) > max(self.n):
            raise ValueError(f"k = {max(self.ks)} exceeds every n {self.n}: its axes would be empty")
        if self.from_json is not None and not Path(self.from_json).is_file():
            raise ValueError(f"--from-json {self.from_json}: no such file")
        self.variance_config().validate()

    def variance_config(self) -> VarianceConfig:
        """The benchmark's configuration for panel 1."""
        sizes = SMOKE_TABULAR if self.smoke else {}
        return VarianceConfig(models=self.models, n=self.n, k=self.ks, seed=self.seed, threads=self.threads,
                              smoke=self.smoke, **sizes)


# ------------------------------------------------------------------ panel 1: estimators


def estimator_rows(config: Config) -> tuple[list[dict], str]:
    """The benchmark's rows (computed by the library, or read from ``--from-json``) and their source."""
    if config.from_json is not None:
        data = json.loads(Path(config.from_json).read_text())
        if "rows" not in data:
            raise ValueError(f"{config.from_json} has no 'rows': not a benchmarks/inference_aware_variance.py JSON")
        return data["rows"], str(config.from_json)
    from bonmath.inference_aware_variance import run

    return run(config.variance_config(), progress=config.progress)["rows"], "bonmath.inference_aware_variance.run"


def estimator_curves(rows: list[dict], config: Config) -> list[dict]:
    """One curve per (model, k, estimator): relative MSE (and bias, variance) against n.

    Raises ``ValueError`` when a (model, k) has no rows, an estimator that applies at
    some n of those rows is missing, or an estimator has two rows at one n.
    """
    specs = {s.name: s for s in ESTIMATORS}
    curves = []
    for model in config.models:
        for k in config.ks:
            block = [r for r in rows if r["model"] == model and r["target"] == config.target and r["k"] == k]
            if not block:
                raise ValueError(f"no rows for model={model}, target={config.target}, k={k}")
            ns = sorted({r["n"] for r in block})
            for name in SERIES:
                spec = specs[name]
                if config.target not in spec.targets or not any(spec.applies(n, k) for n in ns):
                    continue
                points = sorted((r for r in block if r["estimator"] == name), key=lambda r: r["n"])
                where = f"model={model}, target={config.target}, k={k}"
                if not points:
                    raise ValueError(f"no {name} rows for {where}")
                if len({r["n"] for r in points}) < len(points):
                    raise ValueError(f"two {name} rows with the same n for {where}")
                curves.append(dict(
                    model=model, target=config.target, k=k, estimator=name, label=SERIES[name]["label"],
                    n=[r["n"] for r in points],
                    **{key: [r[key] for r in points] for key in ("relative_mse", "relative_bias", "relative_variance")},
                ))
    return curves


# ---------------------------------------------------------- panel 2: true reward against N


@dataclass(frozen=True)
class ProxyTask:
    """An enumerated support with a reference policy, a proxy reward BoN ranks by and a true reward."""

    ref_log_probs: np.ndarray
    proxy_rewards: np.ndarray
    true_rewards: np.ndarray
    description: str


def proxy_task() -> ProxyTask:
    """A proxy/true pair on which BoN over-optimises the proxy.

    Proxy level v = 0..12 holds two strings j = 0, 1 (the proxy ties them), with
    π_ref(v, j) ∝ 2^-v · (3/4, 1/4)_j, so BoN_N mostly returns v ≈ log2 N. The true reward
    r_true(v, j) = v - v²/12 - j rises with the proxy up to v = 6 and then falls, to
    -j at v = 12: E_{BoN_N(proxy)}[r_true] climbs from E_ref[r_true] = 0.50 to 2.49 at
    N* = 55 and falls to the top level's mean, -1/4, as N → ∞.
    """
    levels = 13
    v = np.repeat(np.arange(levels, dtype=np.float64), 2)
    j = np.tile([0.0, 1.0], levels)
    probs = 2.0**-v * np.where(j == 0, 0.75, 0.25)
    return ProxyTask(
        ref_log_probs=np.log(probs / probs.sum()),
        proxy_rewards=v,
        true_rewards=v - v**2 / 12 - j,
        description=(f"{2 * levels} strings: proxy level v = 0..{levels - 1}, two strings j = 0, 1 per level, "
                     "pi_ref(v, j) ∝ 2^-v (3/4, 1/4)_j, r_true = v - v^2/12 - j"),
    )


def true_reward_grid(config: Config, task: ProxyTask) -> tuple[np.ndarray, int]:
    """Panel 2's N grid (geometric in 1..n_max, with N* - 1, N*, N* + 1) and HedgeTune's N*."""
    n_star = int(bonmath.hedgetune_n(task.ref_log_probs, task.proxy_rewards, task.true_rewards, config.n_max))
    grid = np.geomspace(1, config.n_max, config.n_points).round().astype(np.int64)
    extra = [n for n in (n_star - 1, n_star, n_star + 1) if 1 <= n <= config.n_max]
    return np.unique(np.concatenate([grid, extra])), n_star


def best_of_poisson_true_reward(task: ProxyTask, mean_samples: float) -> float:
    """E[r_true] of Best-of-Poisson ranked by the proxy with n - 1 ~ Poisson(mean_samples - 1)."""
    log_probs = best_of_poisson_log_probs(task.ref_log_probs, task.proxy_rewards, mean_samples - 1.0)
    return float(np.exp(log_probs) @ task.true_rewards)


PESSIMISM_CHI2_COEFFICIENT = 2.0
"""χ² coefficient β of InferenceTimePessimism on the proxy (proxy rewards 0..12)."""
PESSIMISM_MAX_COUNT_VECTORS = 200_000
"""Its exact finite-n law sums over level-count vectors: drawn at the N where C(N+L-1, L-1) is below this."""


def inference_time_pessimism_values(task: ProxyTask, n_grid: np.ndarray) -> tuple[list[int], list[float], float]:
    """InferenceTimePessimism's exact E[r_true] on the N of ``n_grid`` where its finite-n law is
    computable (:func:`bonmath.theory.pessimism_sampler_log_probs`), and its population limit
    (:func:`bonmath.theory.pessimism_log_probs`), both ranked by the proxy with β = PESSIMISM_CHI2_COEFFICIENT."""
    num_levels = np.unique(task.proxy_rewards).size
    ns = [int(n) for n in n_grid if math.comb(int(n) + num_levels - 1, num_levels - 1) <= PESSIMISM_MAX_COUNT_VECTORS]
    values = [
        float(np.exp(bonmath.theory.pessimism_sampler_log_probs(task.ref_log_probs, task.proxy_rewards, n,
                                                               PESSIMISM_CHI2_COEFFICIENT)) @ task.true_rewards)
        for n in ns
    ]
    limit = np.exp(bonmath.theory.pessimism_log_probs(task.ref_log_probs, task.proxy_rewards, PESSIMISM_CHI2_COEFFICIENT))
    return ns, values, float(limit @ task.true_rewards)


def pessimism_series(n: Sequence[int], values: Sequence[float], limit: float | None = None) -> dict:
    """Panel 2's InferenceTimePessimism entry: one finite value per N of ``n``, and its n → ∞ limit."""
    n_values = np.asarray(n)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != n_values.shape:
        raise ValueError(f"pessimism values must have one entry per N (shape {n_values.shape}); got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("pessimism values must be finite")
    return {"status": "drawn", "n": n_values.tolist(), "true_reward": values.tolist(), "limit": limit}


def true_reward_panel(config: Config, pessimism_values: Sequence[float] | None = None) -> dict:
    """Panel 2's numbers; ``pessimism_values`` (on :func:`true_reward_grid`) overrides the pending hook."""
    task = proxy_task()
    grid, n_star = true_reward_grid(config, task)
    if pessimism_values is None:
        pessimism = pessimism_series(*inference_time_pessimism_values(task, grid))
    else:
        pessimism = pessimism_series(grid, pessimism_values)
    bon = [float(bonmath.bon_true_reward(task.ref_log_probs, task.proxy_rewards, task.true_rewards, int(n)))
           for n in grid]
    return {
        "task": {"description": task.description, "ref_probs": np.exp(task.ref_log_probs).tolist(),
                 "proxy_rewards": task.proxy_rewards.tolist(), "true_rewards": task.true_rewards.tolist()},
        "n": grid.tolist(),
        "bon": bon,
        "best_of_poisson": {"mu": (grid - 1).astype(np.float64).tolist(),
                            "true_reward": [best_of_poisson_true_reward(task, float(n)) for n in grid]},
        "pessimism": pessimism,
        "hedgetune": {"n_max": config.n_max, "n_star": n_star, "true_reward": bon[int(np.searchsorted(grid, n_star))]},
    }


# ------------------------------------------------------------------------------ figure


def compute(config: Config, pessimism_values: Sequence[float] | None = None) -> dict:
    """Every number the figure plots."""
    rows, source = estimator_rows(config)
    return {
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "smoke": config.smoke,
        "estimators": {"source": source, "target": config.target, "curves": estimator_curves(rows, config)},
        "true_reward": true_reward_panel(config, pessimism_values),
    }


def plot(results: dict, plt):
    """Panel 1 (one axes per model and k) left, panel 2 right; the legends below, in axes of their own."""
    config = results["config"]
    models, ks = config["models"], config["ks"]
    fig = plt.figure(figsize=(3.6 * len(ks) + 5.2, 3.3 * len(models) + 1.5))
    grid = fig.add_gridspec(len(models) + 1, len(ks) + 1, width_ratios=[1] * len(ks) + [1.45],
                            height_ratios=[1] * len(models) + [0.33])
    target = results["estimators"]["target"]
    for i, model in enumerate(models):
        for j, k in enumerate(ks):
            ax = fig.add_subplot(grid[i, j])
            for curve in results["estimators"]["curves"]:
                if curve["model"] == model and curve["k"] == k:
                    ax.plot(curve["n"], curve["relative_mse"], markersize=4, **SERIES[curve["estimator"]])
            ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{model}, ∇{target}, k = {k}", fontsize=9)
            ax.set_xlabel("n (samples per group)")
            ax.set_ylabel("E‖ĝ − g‖² / ‖g‖² (dimensionless)", fontsize=8)
            ax.grid(alpha=0.3)
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    _legend_axes(fig, grid[len(models), : len(ks)]).legend(
        handles.values(), handles.keys(), loc="upper center", ncol=2, fontsize=7,
        title=f"estimators of ∇{target} (dotted: 1, the score of ĝ ≡ 0)", title_fontsize=7)

    panel = results["true_reward"]
    ax = fig.add_subplot(grid[: len(models), len(ks)])
    ax.plot(panel["n"], panel["bon"], **TRUE_REWARD_STYLE["bon"])
    ax.plot(panel["n"], panel["best_of_poisson"]["true_reward"], **TRUE_REWARD_STYLE["best_of_poisson"])
    pessimism = panel["pessimism"]
    ax.plot(pessimism["n"], pessimism["true_reward"], **TRUE_REWARD_STYLE["pessimism"])
    if pessimism["limit"] is not None:
        ax.axhline(pessimism["limit"], color=TRUE_REWARD_STYLE["pessimism"]["color"], linestyle=":", linewidth=1,
                   label="InferenceTimePessimism, n → ∞")
    hedge = panel["hedgetune"]
    ax.plot([hedge["n_star"]], [hedge["true_reward"]], zorder=5, **TRUE_REWARD_STYLE["hedgetune"])
    ax.annotate(f"N* = {hedge['n_star']}", (hedge["n_star"], hedge["true_reward"]), textcoords="offset points",
                xytext=(10, 3), ha="left", va="bottom", fontsize=8)
    ax.margins(y=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("N (samples per prompt; Best-of-Poisson: mean 1 + μ)")
    ax.set_ylabel("E[r_true] (true-reward units)")
    ax.set_title("True reward of proxy-ranked selection (BoN over-optimises)", fontsize=9)
    ax.grid(alpha=0.3)
    _legend_axes(fig, grid[len(models), len(ks)]).legend(*ax.get_legend_handles_labels(), loc="upper center",
                                                         ncol=2, fontsize=7)
    smoke = " — smoke run (tiny settings)" if results["smoke"] else ""
    fig.suptitle(f"Inference-aware Best-of-N, exact{smoke}", fontsize=11)
    return fig


def _legend_axes(fig, cell):
    """An empty axes for a legend: the layout makes room for it and it covers no data."""
    ax = fig.add_subplot(cell)
    ax.axis("off")
    return ax


def main(argv: list[str] | None = None, pessimism_values: Sequence[float] | None = None) -> int:
    config = parse_config(Config, argv, prog="python -m paper_figs.fig_inference_aware",
                          description=__doc__.splitlines()[0])
    results = compute(config, pessimism_values)
    _common.save(plot(results, _common.pyplot()), results, config.out, NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
