"""The vBoN sentiment experiment, end to end: train every model, evaluate everything exactly.

:func:`run_experiment` builds the review task (:func:`bonmath.sentiment.review_task`),
trains every model of an :class:`ExperimentConfig` (:func:`bonmath.train.train_cached`)
and evaluates, by enumeration (:mod:`bonmath.evaluation`): the reference, every BoN_N,
every trained model, the exact reward-KL frontier and the optimum of the vBoN bound
π_ref F_lt^{N-1}/Z. Beside them, exact-only curves over a wider N grid
(:class:`TheoryRow`): KL(π_N||π_ref) with ties and with ties broken, the error of
the vBoN paper's injective formula (:mod:`bonmath.theory.injective`), and the gap
between π_N and the bound's optimum. The results are an :class:`ExperimentResults`,
cached as JSON; ``paper_figs`` draws from it.

(Over 400 lines on purpose: the experiment's result dataclasses sit beside the one
function that fills them, so the schema and its producer are read together.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
from tqdm.auto import tqdm

from bonmath.backend import NEG_INF, expectation, masked_ieee
from bonmath.bon import bon_log_probs
from bonmath.cache import fingerprint, from_json, package_version, to_json, write_once
from bonmath.cli import option
from bonmath.divergences import bon_kl_upper_bound, kl_divergence, win_rate
from bonmath.evaluation import (
    FRONT_METRICS,
    Frontier,
    FrontMetric,
    FrontPosition,
    PolicyMetrics,
    exact_frontier,
    front_positions,
    policy_metrics,
)
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.optimal import vbon_bound_optimum
from bonmath.task import Task
from bonmath.theory.injective import injective_formula_error
from bonmath.train import (
    CACHE_FORMAT,
    METHODS,
    BoNSFTConfig,
    KLRLConfig,
    TrainConfig,
    VBoNBoundConfig,
    VBoNConfig,
    train_cached,
)

__all__ = [
    "RESULTS_FORMAT",
    "SMOKE",
    "BoNPoint",
    "ExperimentConfig",
    "ExperimentResults",
    "ParetoCount",
    "TaskSummary",
    "TheoryRow",
    "TrainedPoint",
    "results_key",
    "run_experiment",
    "series_name",
    "theory_row",
    "training_configs",
]

RESULTS_FORMAT = 2
"""Bump when the layout or meaning of :class:`ExperimentResults` changes."""


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: task, methods, training budget, evaluation.

    Examples
    --------
    >>> cfg = ExperimentConfig(ns=(2, 4), betas=(0.5,), methods=("vbon", "kl_rl"))
    >>> cfg.steps, cfg.k, cfg.max_new_tokens
    (300, 32, 4)
    >>> ExperimentConfig(methods=("ppo",))
    Traceback (most recent call last):
    ...
    ValueError: methods: unknown ['ppo']; expected some of vbon, vbon_bound, kl_rl, bon_sft
    """

    prompts: tuple[int, ...] | None = option("prompt indices into prompts.json (None: all)", None)
    max_new_tokens: int = option("continuation length L (the support is enumerated)", 4, minimum=1)
    ns: tuple[int, ...] = option("BoN N grid (beta = 1/(N-1) for the bound)", (2, 4, 8, 16, 32, 64, 128), minimum=1)
    betas: tuple[float, ...] = option("KL-RL beta grid", (1.0, 0.5, 0.25, 0.15, 0.1, 0.07, 0.05))
    num_ref_samples: tuple[int, ...] = option("M values for the bound with F-hat", (32, 300), minimum=1)
    methods: tuple[str, ...] = option("methods to train", ("vbon", "vbon_bound", "kl_rl", "bon_sft"))
    steps: int = option("optimizer steps per model", 300, minimum=0)
    k: int = option("samples per prompt per step", 32, minimum=2)
    lr: float = option("Adam learning rate", 3e-3)
    max_grad_norm: float | None = option("gradient-norm clipping", 1.0)
    seed: int = option("training seed", 0, minimum=0)
    num_eval_samples: int = option("samples per prompt for the k1/k3 estimates", 64, minimum=0)
    frontier_betas: int = option("points of the exact frontier's beta sweep", 48, minimum=2)
    theory_ns: tuple[int, ...] = option(
        "N grid of the exact-only curves (KL bound, injective formula, bound optimum)",
        (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024), minimum=1,
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; expected some of {', '.join(METHODS)}")
        training_configs(self)  # every training config validates itself


class _CommonTrainOptions(TypedDict):
    """The :class:`TrainConfig` fields every trained method of the experiment shares."""

    steps: int
    k: int
    lr: float
    max_grad_norm: float | None
    seed: int


def training_configs(cfg: ExperimentConfig) -> list[TrainConfig]:
    """Every training config of the experiment, in training order.

    Examples
    --------
    The bound needs N >= 2: N = 1 gets no vBoN-bound model, neither with the exact F nor with F-hat.

    >>> cfg = ExperimentConfig(ns=(1, 4), num_ref_samples=(32,), methods=("vbon", "vbon_bound"))
    >>> [c.label for c in training_configs(cfg)]
    ['vbon_N1', 'vbon_N4', 'vbon_bound_N4_exactF', 'vbon_bound_N4_M32']
    """
    common = _CommonTrainOptions(steps=cfg.steps, k=cfg.k, lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed)
    bound_ns = [n for n in cfg.ns if n >= 2]
    out: list[TrainConfig] = []
    if "vbon" in cfg.methods:
        out += [VBoNConfig(n=n, **common) for n in cfg.ns]
    if "vbon_bound" in cfg.methods:
        out += [VBoNBoundConfig(n=n, **common) for n in bound_ns]
        out += [VBoNBoundConfig(n=n, num_ref_samples=m, **common) for m in cfg.num_ref_samples for n in bound_ns]
    if "kl_rl" in cfg.methods:
        out += [KLRLConfig(beta=b, **common) for b in cfg.betas]
    if "bon_sft" in cfg.methods:
        out += [BoNSFTConfig(n=n, **common) for n in cfg.ns]
    return out


def series_name(train_cfg: TrainConfig) -> str:
    """The plotted series of a trained model: vbon, vbon_bound_exactF, vbon_bound_M32, kl_rl, bon_sft.

    Examples
    --------
    >>> series_name(VBoNBoundConfig(n=8, num_ref_samples=32)), series_name(KLRLConfig(beta=0.1))
    ('vbon_bound_M32', 'kl_rl')
    """
    if isinstance(train_cfg, VBoNBoundConfig):
        m = train_cfg.num_ref_samples
        return "vbon_bound_exactF" if m is None else f"vbon_bound_M{m}"
    return train_cfg.method


SMOKE = ExperimentConfig(
    prompts=(0,), max_new_tokens=2, ns=(2, 8), betas=(0.3,), num_ref_samples=(8,), steps=6, k=4,
    num_eval_samples=16, frontier_betas=10, theory_ns=(1, 2, 4, 8, 32),
)
"""A configuration that runs in seconds (tests, ``python -m paper_figs --smoke``)."""


# --------------------------------------------------------------------------- results


@dataclass
class TaskSummary:
    """The task the results were computed on: its prompts, support and reward levels.

    Examples
    --------
    One prompt, one new token, and no training (``methods=()``: only the exact curves):

    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), methods=(), num_eval_samples=0,
    ...                        theory_ns=(2,))
    >>> summary = run_experiment(cfg, progress=False).task
    >>> summary.prompts, summary.num_strings, summary.num_reward_levels
    (['the movie was'], 23, [9])
    >>> [round(mass, 4) for mass in summary.lowest_level_mass]  # strings that never win a BoN comparison
    [0.0608]
    """

    prompts: list[str]
    num_strings: int
    num_reward_levels: list[int]
    lowest_level_mass: list[float]
    """π_ref mass of the lowest reward level per prompt (where F_lt = 0 and L = -inf)."""
    fingerprint: str
    model_path: str


@dataclass
class BoNPoint:
    """A policy indexed by N (BoN's π_N, the bound's optimum) and its metrics.

    Examples
    --------
    ``results.bon`` holds π_N itself, at KL 0 from π_N and within Beirami et al.'s bound
    log N - (N-1)/N of π_ref; the bound's optimum ``results.bound_optimum`` is another policy:

    >>> from bonmath.divergences import bon_kl_upper_bound
    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2, 4), methods=(), num_eval_samples=0,
    ...                        theory_ns=(2,))
    >>> results = run_experiment(cfg, progress=False)
    >>> [(p.n, abs(p.metrics.kl_to_bon(p.n)) < 1e-12, p.metrics.kl_ref <= bon_kl_upper_bound(p.n)) for p in results.bon]
    [(2, True, True), (4, True, True)]
    >>> [(p.n, round(p.metrics.kl_to_bon(p.n), 4)) for p in results.bound_optimum]
    [(2, 0.0602), (4, 0.249)]
    """

    n: int
    metrics: PolicyMetrics


@dataclass
class TrainedPoint:
    """One trained model: its configuration, metrics and place among the trained models.

    Examples
    --------
    Two models of two optimizer steps each (the smallest run whose models differ):

    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), methods=("vbon", "kl_rl"),
    ...                        steps=2, k=2, num_eval_samples=0, theory_ns=(2,))
    >>> vbon, kl_rl = run_experiment(cfg, progress=False).trained
    >>> (vbon.label, vbon.series, vbon.n, vbon.beta), (kl_rl.label, kl_rl.series, kl_rl.n, kl_rl.beta)
    (('vbon_N2', 'vbon', 2, None), ('kl_rl_beta0.5', 'kl_rl', None, 0.5))
    >>> vbon.front("reward") is vbon.reward_front, vbon.reward_front.frontier_value > vbon.metrics.reward
    (True, True)
    """

    label: str
    series: str
    method: str
    n: int | None
    beta: float | None
    num_ref_samples: int | None
    train_seconds: float
    final_objective: float | None
    metrics: PolicyMetrics
    reward_front: FrontPosition
    win_rate_front: FrontPosition

    def front(self, metric: FrontMetric) -> FrontPosition:
        return {"reward": self.reward_front, "win_rate": self.win_rate_front}[metric]


@dataclass
class TheoryRow:
    """Exact-only quantities at one N (means over prompts unless named ``_max``).

    Examples
    --------
    VADER's rewards tie, and ties lower KL(π_N||π_ref): below its value with the ties broken,
    itself below the bound log N - (N-1)/N. The injective formula misses mass; its total
    variation from π_N is half the missing mass:

    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), methods=(), num_eval_samples=0,
    ...                        theory_ns=(2, 8))
    >>> rows = run_experiment(cfg, progress=False).theory
    >>> [(row.n, row.kl_bon_ref < row.kl_bon_ref_tie_free < row.kl_bound) for row in rows]
    [(2, True), (8, True)]
    >>> [abs(row.injective_tv - row.injective_missing_mass / 2) < 1e-12 for row in rows]
    [True, True]
    """

    n: int
    kl_bon_ref: float
    kl_bon_ref_tie_free: float
    kl_bound: float
    """Beirami et al.'s log N - (N-1)/N."""
    injective_total_mass: float
    injective_missing_mass: float
    injective_tv: float
    injective_tv_max: float
    injective_max_log_ratio: float
    bon_reward: float
    bon_win_rate: float
    bound_optimum_kl_to_bon: float
    """KL(π_L* || π_N) = -J(π_L*)."""
    bound_optimum_reward: float
    bound_optimum_kl_ref: float
    bound_optimum_win_rate: float
    bound_at_optimum: float


@dataclass
class ParetoCount:
    """How many trained models of a series there are, and how many are on each Pareto front.

    Examples
    --------
    What :meth:`ExperimentResults.pareto_counts` reports per series:

    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), methods=("vbon", "kl_rl"),
    ...                        steps=2, k=2, num_eval_samples=0, theory_ns=(2,))
    >>> run_experiment(cfg, progress=False).pareto_counts()
    {'vbon': ParetoCount(total=1, reward=1, win_rate=1), 'kl_rl': ParetoCount(total=1, reward=1, win_rate=1)}
    """

    total: int
    reward: int
    """Models of the series on the reward-KL Pareto front of all trained models."""
    win_rate: int


@dataclass
class ExperimentResults:
    """Everything :func:`run_experiment` computes (JSON via :func:`bonmath.cache.to_json`).

    Examples
    --------
    The results survive a JSON round trip unchanged (how :func:`run_experiment` caches them):

    >>> import json
    >>> from bonmath.cache import from_json, to_json
    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), methods=("vbon", "kl_rl"),
    ...                        steps=2, k=2, num_eval_samples=0, theory_ns=(2,))
    >>> results = run_experiment(cfg, progress=False)
    >>> from_json(ExperimentResults, json.loads(json.dumps(to_json(results)))) == results
    True
    >>> {name: [p.label for p in points] for name, points in results.series().items()}
    {'vbon': ['vbon_N2'], 'kl_rl': ['kl_rl_beta0.5']}
    """

    config: ExperimentConfig
    task: TaskSummary
    reference: PolicyMetrics
    bon: list[BoNPoint]
    frontier: Frontier
    bound_optimum: list[BoNPoint]
    theory: list[TheoryRow]
    trained: list[TrainedPoint]
    timing: dict[str, float]

    def series(self) -> dict[str, list[TrainedPoint]]:
        """Trained points grouped by series, in training order."""
        out: dict[str, list[TrainedPoint]] = {}
        for point in self.trained:
            out.setdefault(point.series, []).append(point)
        return out

    def pareto_counts(self) -> dict[str, ParetoCount]:
        """Per series: its models, and how many of them are on the reward–KL and win-rate–KL fronts."""
        return {name: ParetoCount(len(points), sum(p.reward_front.pareto for p in points),
                                  sum(p.win_rate_front.pareto for p in points))
                for name, points in self.series().items()}


# ---------------------------------------------------------------------- computation


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
def theory_row(task: Task, n: int, tie_free_rewards: np.ndarray) -> TheoryRow:
    """The exact-only quantities of :class:`TheoryRow` at N = ``n``.

    Parameters
    ----------
    task : Task
    n : int
        BoN N.
    tie_free_rewards : float64 array of shape (P, S)
        ``task.rewards`` with every tie broken and the order of distinct rewards kept.

    Returns
    -------
    TheoryRow

    Examples
    --------
    On the tiny task (:func:`bonmath.zoo.tiny_task`, integer rewards 0-2), offsets below 1 break
    the ties; without ties KL(π_N||π_ref) is higher, still below log N - (N-1)/N:

    >>> import numpy as np
    >>> from bonmath.zoo import tiny_task
    >>> task = tiny_task()
    >>> tie_free = task.rewards + np.arange(task.rewards.shape[1]) / 100
    >>> row = theory_row(task, 4, tie_free)
    >>> row.kl_bon_ref < row.kl_bon_ref_tie_free < row.kl_bound, round(row.kl_bound, 4)
    (True, 0.6363)
    """
    ref, rewards = task.ref_log_probs, task.rewards
    bon = task.bon_log_probs(n)
    error = injective_formula_error(ref, rewards, bon, n)
    optimum = vbon_bound_optimum(ref, rewards, n)
    return TheoryRow(
        n=n,
        kl_bon_ref=float(kl_divergence(bon, ref).mean()),
        kl_bon_ref_tie_free=float(kl_divergence(bon_log_probs(ref, tie_free_rewards, n), ref).mean()),
        kl_bound=bon_kl_upper_bound(n),
        injective_total_mass=float(error.total_mass.mean()),
        injective_missing_mass=float(error.missing_mass.mean()),
        injective_tv=float(error.tv.mean()),
        injective_tv_max=float(error.tv.max()),
        injective_max_log_ratio=float(error.max_log_ratio.max()),
        bon_reward=float(expectation(bon, rewards, np).mean()),
        bon_win_rate=float(win_rate(bon, ref, rewards).mean()),
        bound_optimum_kl_to_bon=float(kl_divergence(optimum, bon).mean()),
        bound_optimum_reward=float(expectation(optimum, rewards, np).mean()),
        bound_optimum_kl_ref=float(kl_divergence(optimum, ref).mean()),
        bound_optimum_win_rate=float(win_rate(optimum, ref, rewards).mean()),
        bound_at_optimum=float(vbon_finite_lower_bound(optimum, ref, rewards, n).mean()) if n > 1 else 0.0,
    )


def results_key(cfg: ExperimentConfig, model_path: Path) -> str:
    """sha256 of the config, the model directory's files, the VADER version and the formats.

    Examples
    --------
    >>> from bonmath.sentiment import REVIEW_LM_PATH
    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1)
    >>> key = results_key(cfg, REVIEW_LM_PATH)
    >>> len(key), key == results_key(cfg, REVIEW_LM_PATH), key == results_key(ExperimentConfig(prompts=(1,)), REVIEW_LM_PATH)
    (64, True, False)
    """
    files = ("config.json", "model.safetensors", "tokenizer.json", "prompts.json")
    contents = [(model_path / f).read_bytes() if (model_path / f).is_file() else b"missing" for f in files]
    return fingerprint({"config": to_json(cfg), "files": files, "vader": package_version("vaderSentiment"),
                        "results_format": RESULTS_FORMAT, "train_format": CACHE_FORMAT},
                       [b for f, c in zip(files, contents) for b in (f.encode(), c)])


def _without_timing(data: dict) -> dict:
    return {key: value for key, value in data.items() if key != "timing"}


def _exact_curves(task: Task, cfg: ExperimentConfig, ns: Sequence[int], progress: bool):
    """Reference, BoN, frontier, bound optimum and theory rows (no training)."""
    def metrics(log_probs, stream):
        return policy_metrics(task, log_probs, ns, cfg.num_eval_samples, np.random.default_rng([cfg.seed, stream]))

    bar = tqdm(total=1 + 2 * len(cfg.ns) + len(cfg.theory_ns) + 1, desc="exact curves", disable=not progress)
    reference = metrics(task.ref_log_probs, 0)
    bar.update()
    bon = []
    for i, n in enumerate(cfg.ns):
        bon.append(BoNPoint(n, metrics(task.bon_log_probs(n), 1000 + i)))
        bar.update()
    frontier = exact_frontier(task, np.logspace(1.5, -2.3, cfg.frontier_betas))
    bar.update()
    bound_optimum = []
    for i, n in enumerate(cfg.ns):
        bound_optimum.append(BoNPoint(n, metrics(vbon_bound_optimum(task.ref_log_probs, task.rewards, n), 2000 + i)))
        bar.update()
    tie_free = _tie_free(task.rewards)
    theory = []
    for n in cfg.theory_ns:
        theory.append(theory_row(task, n, tie_free))
        bar.update()
    bar.close()
    return reference, bon, frontier, bound_optimum, theory


def run_experiment(
    cfg: ExperimentConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model_path: str | os.PathLike | None = None,
) -> ExperimentResults:
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
    ExperimentResults

    Examples
    --------
    The smallest run (one prompt, one new token, two models of two steps) with a cache; the
    second call reads the results file instead of recomputing:

    >>> import tempfile, pathlib
    >>> cfg = ExperimentConfig(prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), methods=("vbon", "kl_rl"),
    ...                        steps=2, k=2, num_eval_samples=0, theory_ns=(2,))
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     results = run_experiment(cfg, cache, progress=False)
    ...     again = run_experiment(cfg, cache, progress=False)
    ...     files = sorted(path.name.split("_")[0] for path in pathlib.Path(cache).iterdir())
    >>> [p.label for p in results.trained], again == results, files
    (['vbon_N2', 'kl_rl_beta0.5'], True, ['experiment', 'models', 'rewards'])
    """
    from bonmath.sentiment import REVIEW_LM_PATH, review_task

    model_path = Path(REVIEW_LM_PATH if model_path is None else model_path)
    cache = None if cache_dir is None else Path(cache_dir)
    results_file = None
    if cache is not None:
        results_file = cache / f"experiment_{results_key(cfg, model_path)[:24]}.json"
        if results_file.is_file():
            results = from_json(ExperimentResults, json.loads(results_file.read_text()))
            if results.config != cfg:
                raise RuntimeError(f"{results_file} holds another config; delete it to recompute")
            return results

    timing: dict[str, float] = {}
    started = time.perf_counter()
    task = review_task(cfg.prompts, cfg.max_new_tokens, model_path,
                       reward_cache_dir=None if cache is None else cache / "rewards")
    timing["task_seconds"] = time.perf_counter() - started
    ns = sorted(set(cfg.ns) | {1})
    t0 = time.perf_counter()
    reference, bon, frontier, bound_optimum, theory = _exact_curves(task, cfg, ns, progress)
    timing["exact_seconds"] = time.perf_counter() - t0

    configs = training_configs(cfg)
    t0 = time.perf_counter()
    trained_metrics, policies = [], []
    bar = tqdm(configs, desc="train+evaluate", disable=not progress, unit="model")
    for i, train_cfg in enumerate(bar):
        bar.set_postfix_str(train_cfg.label, refresh=False)
        policy = train_cached(task, train_cfg, None if cache is None else cache / "models", progress)
        policies.append(policy)
        trained_metrics.append(policy_metrics(task, policy.log_probs, ns, cfg.num_eval_samples,
                                              np.random.default_rng([cfg.seed, 3000 + i])))
    bar.close()
    timing["train_eval_seconds"] = time.perf_counter() - t0
    fronts = {metric: front_positions(trained_metrics, frontier, metric) for metric in FRONT_METRICS}
    trained = [
        TrainedPoint(
            label=p.config.label, series=series_name(p.config), method=p.config.method,
            n=getattr(p.config, "n", None), beta=getattr(p.config, "beta", None),
            num_ref_samples=getattr(p.config, "num_ref_samples", None), train_seconds=p.seconds,
            final_objective=p.objective[-1] if p.objective else None, metrics=m,
            reward_front=fronts["reward"][i], win_rate_front=fronts["win_rate"][i],
        )
        for i, (p, m) in enumerate(zip(policies, trained_metrics))
    ]
    lowest = np.where(task.log_cdf_lt == NEG_INF, np.exp(task.ref_log_probs), 0.0).sum(-1)
    summary = TaskSummary(prompts=task.prompt_texts, num_strings=len(task.sequences),
                          num_reward_levels=[len(np.unique(r)) for r in task.rewards],
                          lowest_level_mass=lowest.tolist(), fingerprint=task.fingerprint(),
                          model_path=str(model_path))
    timing["total_seconds"] = time.perf_counter() - started
    results = ExperimentResults(cfg, summary, reference, bon, frontier, bound_optimum, theory, trained, timing)
    if results_file is not None:
        data = to_json(results)
        write_once(results_file, lambda tmp: tmp.write_text(json.dumps(data, allow_nan=False)),
                   lambda existing: _without_timing(json.loads(existing.read_text())) == _without_timing(
                       json.loads(json.dumps(data))))
    return results

