"""Exact evaluation of the vBoN sentiment experiment: every policy, by enumeration.

For the reference, every BoN_N, every trained model (:mod:`bonmath.train`) and the
exact optima (the tilted policies π_ref e^{r/β}/Z over a β sweep, which trace the
exact Pareto frontier of E[r] against KL(π||π_ref), and the optimum of the vBoN
lower bound π_ref F_lt^{N-1}/Z), this module computes per prompt, from the whole
enumerated support, and averages over prompts:

- E[r], KL(π||π_ref), the win rate W(π, π_ref), the entropy;
- KL(π||π_N) for every N of the grid (J = -KL(π||π_N) is the vBoN objective) and
  the lower bound L̃_N (:func:`bonmath.vbon_finite_lower_bound`);
- beside them, the usual sample estimates from ``eval_samples`` draws: the k1
  (mean of log π/π_ref) and k3 (mean of ρ - 1 - log ρ, ρ = π_ref/π) estimates
  of KL(π||π_ref), with their exact standard deviations.

Trained points are compared by Pareto optimality (reward or win rate against
KL, among all trained points) and by their gap to the exact frontier.

It also measures how wrong the vBoN paper's injective BoN formula
Σ_i C(N,i) F_lt^{N-i} π_ref^i = (F_lt + π_ref)^N - F_lt^N is on this task, where
distinct strings tie (:func:`injective_bon_log_probs`).

:func:`run_experiment` does all of it for an :class:`ExperimentConfig` and
returns (and caches) a JSON-ready dict, from which ``paper_figs`` draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bonmath.backend import NEG_INF, expectation, log1mexp, masked_ieee
from bonmath.divergences import entropy, kl_divergence
from bonmath.levels import reward_levels
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.optimal import tilted_log_probs, vbon_bound_optimum
from bonmath.validation import check_n

__all__ = [
    "RESULTS_FORMAT",
    "ExperimentConfig",
    "format_headline",
    "frontier_value_at",
    "headline",
    "injective_bon_log_probs",
    "injective_formula_error",
    "pareto_mask",
    "policy_metrics",
    "run_experiment",
    "series_name",
    "training_configs",
]

RESULTS_FORMAT = 1
"""Bump when the layout or meaning of :func:`run_experiment`'s results changes."""


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


# ------------------------------------------------------------- the injective formula


@masked_ieee
def injective_bon_log_probs(ref_log_probs, rewards, n: float) -> np.ndarray:
    """log of the vBoN paper's BoN formula Σ_{i=1..N} C(N,i) F_lt^{N-i} π_ref^i.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
    rewards : array of shape (..., k)
    n : float
        N > 0.

    Returns
    -------
    float64 array of shape (..., k)
        log((F_lt + π_ref)^N - F_lt^N) per string; -inf where π_ref = 0.

    Notes
    -----
    The binomial sum is (F_lt + π_ref)^N - F_lt^N. In logs, with b = F_lt and
    p = π_ref: N log(b + p) + log1mexp(-N log(1 + p/b)) for b > 0 and N log p for
    b = 0: sums of non-positive terms, finite for any N (no C(N,i) overflows).
    It is the BoN law only without ties; where strings share a reward level it
    undercounts (REFERENCE.md, "The Best-of-N law"), and
    :func:`injective_formula_error` says by how much.

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(injective_bon_log_probs(np.log([0.5, 0.5]), [0.0, 1.0], 2)).tolist()  # no ties: BoN
    [0.25, 0.75]
    >>> np.exp(injective_bon_log_probs(np.log([0.5, 0.25, 0.25]), [0, 1, 1], 2)).round(6).tolist()
    [0.25, 0.3125, 0.3125]
    """
    n = check_n(n)
    ref_log_probs = np.asarray(ref_log_probs, dtype=np.float64)
    rewards = np.broadcast_to(np.asarray(rewards, dtype=np.float64), ref_log_probs.shape)
    levels = reward_levels(ref_log_probs, rewards, np)
    log_b = levels.per_string(levels.log_cdf_lt, np)
    log_p = ref_log_probs
    lowest = log_b == NEG_INF
    log_ratio = np.logaddexp(0.0, log_p - np.where(lowest, 0.0, log_b))  # log(1 + p/b)
    value = n * np.logaddexp(log_b, log_p) + log1mexp(-n * np.where(lowest, 1.0, log_ratio), np)
    value = np.where(lowest, n * log_p, value)
    return np.where(log_p == NEG_INF, NEG_INF, value)


@masked_ieee
def injective_formula_error(ref_log_probs, rewards, bon_log_probs, n: float) -> dict[str, np.ndarray]:
    """How far the injective formula is from the exact tie-aware π_N.

    Parameters
    ----------
    ref_log_probs, rewards : arrays of shape (..., k)
    bon_log_probs : array of shape (..., k)
        The exact log π_N (:func:`bonmath.bon_log_probs`).
    n : float

    Returns
    -------
    dict of arrays of shape (...)
        ``total_mass``: Σ_y of the formula (1 without ties, less with them);
        ``tv``: ½ Σ_y |formula(y) - π_N(y)|; ``missing_mass``: 1 - total_mass
        (computed as Σ (π_N - formula), each term >= 0, so no cancellation against 1);
        ``max_log_ratio``: max_y log(π_N(y) / formula(y)), the worst per-string underestimate.
        The formula never exceeds π_N: within a level, f(x) = (b + x)^N - b^N is convex
        with f(0) = 0, so f(π_ref(y)) <= π_ref(y)/q · f(q) = π_N(y); hence tv = missing_mass / 2.
    """
    log_have = injective_bon_log_probs(ref_log_probs, rewards, n)
    log_want = np.asarray(bon_log_probs, dtype=np.float64)
    have, want = np.exp(log_have), np.exp(log_want)
    return {
        "total_mass": have.sum(-1),
        "missing_mass": (want - have).sum(-1),
        "tv": 0.5 * np.abs(have - want).sum(-1),
        "max_log_ratio": np.max(np.where(log_want > NEG_INF, log_want - log_have, 0.0), axis=-1),
    }


# -------------------------------------------------------------------------- metrics


def _sample_indices(log_probs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws per row from the enumerated law (inverse CDF), shape (P, size)."""
    cdf = np.cumsum(np.exp(log_probs), axis=-1)
    cdf /= cdf[:, -1:]
    u = rng.random((log_probs.shape[0], size))
    return np.stack([np.minimum(np.searchsorted(c, x, side="right"), len(c) - 1) for c, x in zip(cdf, u)])


@masked_ieee
def policy_metrics(
    task,
    log_probs: np.ndarray,
    ns: Sequence[float] = (),
    eval_samples: int = 64,
    rng: np.random.Generator | int | None = 0,
) -> dict[str, Any]:
    """Exact metrics of one policy per prompt, averaged over prompts, and sample estimates.

    Parameters
    ----------
    task : bonmath.train.Task
    log_probs : float64 array of shape (P, S)
        log π(y | x_p) on the task's support (e.g. ``task.enumerate_log_probs(model)``).
    ns : sequence of float
        N values for KL(π||π_N) and the bound L̃_N.
    eval_samples : int
        Draws per prompt for the sample estimates (0: none).
    rng : numpy Generator or seed

    Returns
    -------
    dict
        ``reward``, ``kl_ref``, ``win_rate``, ``entropy`` (means over prompts) and
        the same ``*_per_prompt``; ``kl_bon`` and ``bound``: {str(N): mean};
        ``sample``: k1 / k3 estimates of KL(π||π_ref) from ``eval_samples`` draws
        (mean over prompts), their exact standard deviations (sd of the mean of
        the per-prompt estimates; ``*_log_sd`` its log, None for sd 0; ``*_sd``
        None where it exceeds e^700, as k3's does under π_N for large N), and the sampled mean
        reward.

    Notes
    -----
    W(π, π_ref) = Σ_y π(y) (F_lt(y) + F_le(y))/2 with π_ref's reward CDF
    (:func:`bonmath.win_rate`, with the task's CDF computed once). L̃_N is
    :func:`bonmath.vbon_finite_lower_bound`: the bound L itself is -inf for any
    policy with mass on the lowest level.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.shape != task.ref_log_probs.shape:
        raise ValueError(f"log_probs must have shape {task.ref_log_probs.shape}; got {log_probs.shape}")
    ref = task.ref_log_probs
    beats = (np.exp(task.log_cdf_lt) + np.exp(task.log_cdf_le)) / 2.0
    per_prompt = {
        "reward": expectation(log_probs, task.rewards, np),
        "kl_ref": kl_divergence(log_probs, ref),
        "win_rate": expectation(log_probs, beats, np),
        "entropy": entropy(log_probs),
    }
    out: dict[str, Any] = {key: float(value.mean()) for key, value in per_prompt.items()}
    out.update({f"{key}_per_prompt": value.tolist() for key, value in per_prompt.items()})
    kl_bon, bound = {}, {}
    for n in ns:
        kl_bon[str(n)] = float(kl_divergence(log_probs, task.bon_log_probs(n)).mean())
        if n >= 1:
            bound[str(n)] = float(vbon_finite_lower_bound(log_probs, task.ref_log_probs, task.rewards, n).mean())
    out["kl_bon"], out["bound"] = kl_bon, bound
    if eval_samples:
        rng = np.random.default_rng(rng)
        idx = _sample_indices(log_probs, eval_samples, rng)
        with np.errstate(all="ignore"):
            log_ratio = np.take_along_axis(log_probs - ref, idx, -1)
            k3 = np.expm1(-log_ratio) + log_ratio
            exact_ratio = np.where(log_probs == NEG_INF, 0.0, log_probs - ref)
        kl = per_prompt["kl_ref"]
        log_var_k1 = np.log(expectation(log_probs, (exact_ratio - kl[:, None]) ** 2, np))
        # Var k3 = E[k3^2] - KL^2, in logs: ρ = π_ref/π can be e^1000 under π_N (a string BoN
        # almost never returns), so E[k3^2] overflows although it is a finite number.
        log_second = _logsumexp(log_probs + 2.0 * _log_k3(-exact_ratio))
        with np.errstate(divide="ignore"):
            log_kl2 = 2.0 * np.log(kl)
        log_var_k3 = np.where(log_second == NEG_INF, NEG_INF,
                              log_second + log1mexp(np.minimum(log_kl2 - log_second, 0.0), np))
        P = log_probs.shape[0]
        sd = {}
        for name, log_var in (("k1", log_var_k1), ("k3", log_var_k3)):
            log_sd = 0.5 * (_logsumexp(log_var) - math.log(eval_samples)) - math.log(P)
            if log_sd == NEG_INF:  # zero variance (π = π_ref)
                sd[name] = (None, 0.0)
            else:
                sd[name] = (float(log_sd), float(math.exp(log_sd)) if log_sd < 700 else None)
        out["sample"] = {
            "m": eval_samples,
            "k1": float(log_ratio.mean()),
            "k3": float(k3.mean()),
            "k1_sd": sd["k1"][1],
            "k3_sd": sd["k3"][1],
            "k1_log_sd": sd["k1"][0],
            "k3_log_sd": sd["k3"][0],
            "k1_per_prompt": log_ratio.mean(-1).tolist(),
            "k3_per_prompt": k3.mean(-1).tolist(),
            "reward": float(np.take_along_axis(task.rewards, idx, -1).mean()),
        }
    return out


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """log Σ e^x over the last axis (-inf for all -inf)."""
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - top), axis=-1)) + top[..., 0]


@masked_ieee
def _log_k3(t: np.ndarray) -> np.ndarray:
    """log(e^t - 1 - t), Schulman's k3 = ρ - 1 - log ρ at log ρ = t, finite for any finite t.

    For t > 1, e^t - 1 - t = e^t (1 - (1 + t) e^{-t}); below, expm1(t) - t directly
    (-inf at t = 0, where k3 = 0).
    """
    t = np.asarray(t, dtype=np.float64)
    big = t > 1.0
    tb = np.where(big, t, 2.0)
    ts = np.where(big, 0.0, t)
    return np.where(big, tb + np.log1p(-(1.0 + tb) * np.exp(-tb)), np.log(np.expm1(ts) - ts))


# ----------------------------------------------------------------- Pareto, frontier


def pareto_mask(cost: Sequence[float], gain: Sequence[float]) -> np.ndarray:
    """Which points no other point dominates (cost <= and gain >=, one strictly).

    Parameters
    ----------
    cost, gain : sequences of length m
        E.g. KL(π||π_ref) and E[r].

    Returns
    -------
    bool array of shape (m,)

    Examples
    --------
    >>> pareto_mask([1.0, 2.0, 2.0, 3.0], [0.5, 0.4, 0.7, 0.7]).tolist()
    [True, False, True, False]
    """
    cost, gain = np.asarray(cost, dtype=np.float64), np.asarray(gain, dtype=np.float64)
    le = cost[None, :] <= cost[:, None]
    ge = gain[None, :] >= gain[:, None]
    strict = (cost[None, :] < cost[:, None]) | (gain[None, :] > gain[:, None])
    return ~(le & ge & strict).any(axis=1)


def frontier_value_at(kl: float, frontier_kl: Sequence[float], frontier_value: Sequence[float]) -> float | None:
    """The exact frontier's value (E[r] or win rate) at KL ``kl``, or None outside the sweep.

    Linear interpolation between the points of the β sweep. The frontier is concave
    in KL, so the interpolated value is at most the true one: a trained point's gap
    to it is a slight underestimate of the true gap.

    Examples
    --------
    >>> frontier_value_at(1.5, [0.0, 1.0, 2.0], [0.0, 0.5, 0.7])
    0.6
    """
    x, y = np.asarray(frontier_kl), np.asarray(frontier_value)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if not x[0] <= kl <= x[-1]:
        return None
    return float(np.interp(kl, x, y))


# ----------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: task, methods, training budget, evaluation."""

    prompts: tuple[int, ...] | None = _help("prompt indices into prompts.json (None: all)", None)
    max_new_tokens: int = _help("continuation length L (the support is enumerated)", 4)
    ns: tuple[int, ...] = _help("BoN N grid (beta = 1/(N-1) for the bound)", (2, 4, 8, 16, 32, 64, 128))
    betas: tuple[float, ...] = _help("KL-RL beta grid", (1.0, 0.5, 0.25, 0.15, 0.1, 0.07, 0.05))
    cdf_samples: tuple[int, ...] = _help("M values for the bound with F-hat", (32, 300))
    methods: tuple[str, ...] = _help("methods to train", ("vbon", "vbon_bound", "kl_rl", "bon_sft"))
    steps: int = _help("optimizer steps per model", 300)
    k: int = _help("samples per prompt per step", 32)
    lr: float = _help("Adam learning rate", 3e-3)
    max_grad_norm: float | None = _help("gradient-norm clipping", 1.0)
    seed: int = _help("training seed", 0)
    eval_samples: int = _help("samples per prompt for the k1/k3 estimates", 64)
    frontier_betas: int = _help("points of the exact frontier's beta sweep", 48)
    theory_ns: tuple[int, ...] = _help(
        "N grid of the exact-only curves (KL bound, injective formula, bound optimum)",
        (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024),
    )


SMOKE = ExperimentConfig(
    prompts=(0,), max_new_tokens=2, ns=(2, 8), betas=(0.3,), cdf_samples=(8,), steps=6, k=4,
    eval_samples=16, frontier_betas=10, theory_ns=(1, 2, 4, 8, 32),
)
"""A configuration that runs in seconds (tests, ``python -m paper_figs --smoke``)."""


def training_configs(cfg: ExperimentConfig) -> list:
    """Every :class:`bonmath.train.TrainConfig` of the experiment, in training order."""
    from bonmath.train import TrainConfig

    common = dict(steps=cfg.steps, k=cfg.k, lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed)
    out = []
    if "vbon" in cfg.methods:
        out += [TrainConfig("vbon", n=n, **common) for n in cfg.ns]
    if "vbon_bound" in cfg.methods:
        out += [TrainConfig("vbon_bound", n=n, **common) for n in cfg.ns if n >= 2]
        out += [TrainConfig("vbon_bound", n=n, cdf_samples=m, **common) for m in cfg.cdf_samples
                for n in cfg.ns if n >= 2]
    if "kl_rl" in cfg.methods:
        out += [TrainConfig("kl_rl", beta=b, **common) for b in cfg.betas]
    if "bon_sft" in cfg.methods:
        out += [TrainConfig("bon_sft", n=n, **common) for n in cfg.ns]
    return out


def series_name(train_cfg) -> str:
    """The plotted series of a trained model: vbon, vbon_bound_exactF, vbon_bound_M32, kl_rl, bon_sft."""
    if train_cfg.method == "vbon_bound":
        return "vbon_bound_exactF" if train_cfg.cdf_samples is None else f"vbon_bound_M{train_cfg.cdf_samples}"
    return train_cfg.method


def _model_dir_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "prompts.json"):
        file = path / name
        digest.update(name.encode())
        digest.update(file.read_bytes() if file.is_file() else b"missing")
    return digest.hexdigest()


def results_key(cfg: ExperimentConfig, model_path: Path) -> str:
    """sha256 of the config, the model directory's files, the VADER version and the formats."""
    from importlib.metadata import PackageNotFoundError, version

    from bonmath.train import CACHE_FORMAT

    try:
        vader = version("vaderSentiment")
    except PackageNotFoundError:  # pragma: no cover
        vader = "unknown"
    payload = {"config": asdict(cfg), "model": _model_dir_digest(model_path), "vader": vader,
               "results_format": RESULTS_FORMAT, "train_format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _tie_free(rewards: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rewards with ties broken by tiny distinct offsets that keep the order of distinct rewards.

    Offsets are a random permutation of 0..S-1 times 0.5 * (smallest gap between
    distinct rewards) / S, so no string crosses into another level.
    """
    rng = np.random.default_rng(seed)
    out = np.empty_like(rewards)
    for p, row in enumerate(rewards):
        values = np.unique(row)
        gap = np.diff(values).min() if len(values) > 1 else 1.0
        out[p] = row + rng.permutation(row.size) * (0.5 * gap / row.size)
        if len(np.unique(out[p])) != row.size:
            raise RuntimeError("tie-breaking offsets collided in floating point")
    return out


@masked_ieee
def _theory(task, cfg: ExperimentConfig) -> dict[str, Any]:
    """Exact-only curves over ``cfg.theory_ns``: KL(π_N||π_ref) with and without ties, the
    injective formula's error, and the gap between π_N and the bound's optimum."""
    from bonmath.bon import bon_log_probs

    tie_free = _tie_free(task.rewards)
    rows = []
    for n in cfg.theory_ns:
        bon = task.bon_log_probs(n)
        bon_tie_free = bon_log_probs(task.ref_log_probs, tie_free, n)
        error = injective_formula_error(task.ref_log_probs, task.rewards, bon, n)
        row = {
            "n": n,
            "kl_bon_ref": float(kl_divergence(bon, task.ref_log_probs).mean()),
            "kl_bon_ref_tie_free": float(kl_divergence(bon_tie_free, task.ref_log_probs).mean()),
            "kl_bound": math.log(n) - (n - 1.0) / n,
            "injective_total_mass": float(error["total_mass"].mean()),
            "injective_missing_mass": float(error["missing_mass"].mean()),
            "injective_tv": float(error["tv"].mean()),
            "injective_tv_max": float(error["tv"].max()),
            "injective_max_log_ratio": float(error["max_log_ratio"].max()),
            "bon_reward": float(expectation(bon, task.rewards, np).mean()),
            "bon_win_rate": float(expectation(bon, (np.exp(task.log_cdf_lt) + np.exp(task.log_cdf_le)) / 2, np).mean()),
        }
        optimum = vbon_bound_optimum(task.ref_log_probs, task.rewards, n)
        row["bound_optimum_kl_to_bon"] = float(kl_divergence(optimum, bon).mean())  # = -J(π_L*)
        row["bound_optimum_reward"] = float(expectation(optimum, task.rewards, np).mean())
        row["bound_optimum_kl_ref"] = float(kl_divergence(optimum, task.ref_log_probs).mean())
        row["bound_optimum_win_rate"] = float(
            expectation(optimum, (np.exp(task.log_cdf_lt) + np.exp(task.log_cdf_le)) / 2, np).mean())
        row["bound_at_optimum"] = float(
            vbon_finite_lower_bound(optimum, task.ref_log_probs, task.rewards, n).mean()) if n > 1 else 0.0
        rows.append(row)
    return {"rows": rows}


def run_experiment(
    cfg: ExperimentConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train every model of ``cfg`` (or read it from the cache) and evaluate everything exactly.

    Parameters
    ----------
    cfg : ExperimentConfig
    cache_dir : path-like, optional
        Holds ``rewards/`` (VADER rewards), ``models/`` (trained models, see
        :func:`bonmath.train.train_cached`) and ``experiment_<key>.json`` (these
        results). A results file is reused when its key matches; none is ever
        overwritten with different content.
    progress : bool
        tqdm progress bars.
    model_path : path-like, optional
        The reference model directory (default the shipped review LM).

    Returns
    -------
    dict (JSON-ready)
        ``config``, ``task`` (prompts, support size, levels), ``reference``,
        ``bon`` (one row per N), ``frontier`` (tilted policies over the β sweep),
        ``bound_optimum`` (one row per N), ``trained`` (one row per model with its
        metrics, ``pareto``/``pareto_win`` flags and ``frontier_reward`` /
        ``frontier_win_rate`` at its KL), ``pareto_counts`` per series,
        ``theory`` (exact-only curves) and ``timing``.
    """
    from tqdm.auto import tqdm

    from bonmath.sentiment import REVIEW_LM_PATH
    from bonmath.train import Task, train_cached

    model_path = Path(REVIEW_LM_PATH if model_path is None else model_path)
    cache = None if cache_dir is None else Path(cache_dir)
    results_file = None
    if cache is not None:
        results_file = cache / f"experiment_{results_key(cfg, model_path)[:24]}.json"
        if results_file.is_file():
            results = json.loads(results_file.read_text())
            if results["config"] != json.loads(json.dumps(asdict(cfg))):
                raise RuntimeError(f"{results_file} holds another config; delete it to recompute")
            return results

    timing: dict[str, float] = {}
    started = time.perf_counter()
    task = Task.from_review_lm(cfg.prompts, cfg.max_new_tokens, model_path,
                               reward_cache_dir=None if cache is None else cache / "rewards")
    timing["task_seconds"] = time.perf_counter() - started
    ns = sorted(set(cfg.ns) | {1})

    def metrics(log_probs, seed):
        return policy_metrics(task, log_probs, ns, cfg.eval_samples, np.random.default_rng([cfg.seed, seed]))

    t0 = time.perf_counter()
    levels = [len(np.unique(r)) for r in task.rewards]
    lowest = np.where(task.log_cdf_lt == NEG_INF, np.exp(task.ref_log_probs), 0.0).sum(-1)
    results: dict[str, Any] = {
        "config": json.loads(json.dumps(asdict(cfg))),
        "task": {"prompts": task.prompt_texts, "num_strings": len(task.sequences),
                 "num_reward_levels": levels, "lowest_level_mass": lowest.tolist(),
                 "fingerprint": task.fingerprint(), "model_path": str(model_path)},
        "reference": metrics(task.ref_log_probs, 0),
        "bon": [{"n": n, **metrics(task.bon_log_probs(n), 1000 + i)} for i, n in enumerate(cfg.ns)],
    }
    frontier = []
    for beta in np.logspace(1.5, -2.3, cfg.frontier_betas):
        tilted = tilted_log_probs(task.ref_log_probs, task.rewards, float(beta))
        m = policy_metrics(task, tilted, (), 0)
        frontier.append({"beta": float(beta), **{k: m[k] for k in ("reward", "kl_ref", "win_rate", "entropy")}})
    results["frontier"] = frontier
    results["bound_optimum"] = [
        {"n": n, **metrics(vbon_bound_optimum(task.ref_log_probs, task.rewards, n), 2000 + i)}
        for i, n in enumerate(cfg.ns)
    ]
    results["theory"] = _theory(task, cfg)
    timing["exact_seconds"] = time.perf_counter() - t0

    configs = training_configs(cfg)
    trained = []
    t0 = time.perf_counter()
    bar = tqdm(configs, desc="train+evaluate", disable=not progress, unit="model")
    for i, train_cfg in enumerate(bar):
        bar.set_postfix_str(train_cfg.label, refresh=False)
        policy = train_cached(task, train_cfg, None if cache is None else cache / "models", progress)
        row = {"label": train_cfg.label, "series": series_name(train_cfg), "method": train_cfg.method,
               "n": train_cfg.n, "beta": train_cfg.beta, "cdf_samples": train_cfg.cdf_samples,
               "train_seconds": policy.seconds, "final_objective": policy.objective[-1] if policy.objective else None,
               **metrics(policy.log_probs, 3000 + i)}
        trained.append(row)
    bar.close()
    timing["train_eval_seconds"] = time.perf_counter() - t0

    fkl = [f["kl_ref"] for f in frontier]
    if trained:
        kl = [t["kl_ref"] for t in trained]
        on_reward = pareto_mask(kl, [t["reward"] for t in trained])
        on_win = pareto_mask(kl, [t["win_rate"] for t in trained])
        for t, a, b in zip(trained, on_reward, on_win):
            t["pareto"], t["pareto_win"] = bool(a), bool(b)
            t["frontier_reward"] = frontier_value_at(t["kl_ref"], fkl, [f["reward"] for f in frontier])
            t["frontier_win_rate"] = frontier_value_at(t["kl_ref"], fkl, [f["win_rate"] for f in frontier])
    counts: dict[str, dict[str, int]] = {}
    for t in trained:
        c = counts.setdefault(t["series"], {"total": 0, "pareto": 0, "pareto_win": 0})
        c["total"] += 1
        c["pareto"] += t["pareto"]
        c["pareto_win"] += t["pareto_win"]
    results["trained"] = trained
    results["pareto_counts"] = counts
    timing["total_seconds"] = time.perf_counter() - started
    results["timing"] = timing
    if results_file is not None:
        _write_new(results_file, results)
    return results


def _write_new(path: Path, results: dict) -> None:
    """Write JSON atomically; never replace an existing file (a concurrent run's must agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, allow_nan=False)
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = json.loads(path.read_text())
            strip = ("timing",)
            if {k: v for k, v in existing.items() if k not in strip} != json.loads(
                json.dumps({k: v for k, v in results.items() if k not in strip})
            ):
                raise RuntimeError(f"{path} exists with different results; not overwriting it") from None
    finally:
        os.unlink(tmp)


# ------------------------------------------------------------------------ headlines


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth quoting from :func:`run_experiment`'s results.

    Returns
    -------
    dict
        ``by_n``: per N, BoN's exact reward / win rate / KL and, for each trained
        series at that N, its reward, win rate, KL(π||π_ref) and KL(π||π_N);
        ``pareto_counts``; ``injective``: the injective formula's missing mass and
        TV at each N of the theory grid; ``kl_estimates``: the mean absolute error
        of the k1 and k3 sample estimates of KL(π||π_ref) over the trained models,
        also in units of their exact standard deviations.
    """
    bon = {row["n"]: row for row in results["bon"]}
    by_n = {}
    for n, b in bon.items():
        entry = {"bon": {k: b[k] for k in ("reward", "win_rate", "kl_ref")}}
        for t in results["trained"]:
            if t["n"] == n:
                entry[t["series"]] = {"reward": t["reward"], "win_rate": t["win_rate"], "kl_ref": t["kl_ref"],
                                      "kl_to_bon": t["kl_bon"][str(n)]}
        by_n[str(n)] = entry
    trained = [t for t in results["trained"] if "sample" in t]
    estimates = {}
    for key in ("k1", "k3"):
        errors = [abs(t["sample"][key] - t["kl_ref"]) for t in trained]
        scaled = [abs(t["sample"][key] - t["kl_ref"]) / t["sample"][f"{key}_sd"] for t in trained
                  if t["sample"][f"{key}_sd"] is not None and t["sample"][f"{key}_sd"] > 0]
        estimates[key] = {"mean_abs_error": float(np.mean(errors)) if errors else None,
                          "max_abs_error": float(np.max(errors)) if errors else None,
                          "mean_abs_error_in_sd": float(np.mean(scaled)) if scaled else None}
    return {
        "by_n": by_n,
        "pareto_counts": results["pareto_counts"],
        "injective": [{k: row[k] for k in ("n", "injective_total_mass", "injective_tv", "injective_max_log_ratio")}
                      for row in results["theory"]["rows"]],
        "kl_estimates": estimates,
    }


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
