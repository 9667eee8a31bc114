"""The vBoN sentiment experiment's Pareto claim over several seeds, and TRL's vBoN beside bonmath's.

:func:`run_seed_study` builds the review task once (:func:`bonmath.sentiment.review_task`),
trains every (method, N or β, seed) of a :class:`SeedStudyConfig` with bonmath's
trainer (:func:`bonmath.train.train_cached`: vBoN and KL-RL) and, optionally, vBoN
at a few N with TRL's ``RLOOTrainer`` (:func:`bonmath.trl_task.train_trl_vbon`: β = 1 and
:class:`bonmath.trl.VBoNReward` with the task's exact CDF), evaluates each
trained policy exactly (:func:`bonmath.evaluation.policy_metrics`), and
summarises over seeds:

* per method and N/β, the mean, sample sd (ddof = 1) and min-max over seeds of
  E[r], KL(π||π_ref), KL(π||π_N) (vBoN) and the win rate against π_ref
  (:class:`SeriesPoint`), and the gap below the exact reward-KL frontier;
* per seed, which models are Pareto-optimal (reward-KL and win-rate-KL,
  :func:`bonmath.evaluation.front_positions`) within a pool of methods trained
  with that seed (:data:`POOLS`), counted per method per seed and pooled
  (:class:`FrontCount`);
* the per-seed differences TRL − bonmath of vBoN at each N (:class:`Difference`).

The verdict on "vBoN is on the front more often than KL-RL" (Amini et al. 2025,
Sec. 5) is derived from the counts by :func:`front_verdict`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonmath.cli import option
from bonmath.evaluation import (
    FRONT_METRICS,
    Frontier,
    PolicyMetrics,
    exact_frontier,
    front_positions,
    policy_metrics,
)
from bonmath.task import Task
from bonmath.train import KLRLConfig, TrainConfig, VBoNConfig, cache_path, train_cached
from bonmath.trl_task import train_trl_vbon, trl_cache_path

__all__ = [
    "METHODS",
    "POOLS",
    "SMOKE",
    "Difference",
    "FrontCount",
    "SeedRow",
    "SeedStudyConfig",
    "SeedStudyResults",
    "SeriesPoint",
    "Stat",
    "front_verdict",
    "missing_models",
    "run_seed_study",
]

METHODS = ("vbon", "kl_rl", "trl_vbon")
"""vBoN and KL-RL trained by :mod:`bonmath.train`; vBoN trained by TRL's RLOOTrainer."""

POOLS: dict[str, tuple[str, ...]] = {"bonmath": ("vbon", "kl_rl"), "trl": ("trl_vbon", "kl_rl")}
"""Pareto pools: per seed, the models of these methods are compared with each other."""


@dataclass(frozen=True)
class SeedStudyConfig:
    """Seeds of bonmath-trained vBoN and KL-RL, and TRL-trained vBoN, on the review task.

    Examples
    --------
    >>> cfg = SeedStudyConfig(seeds=(0, 1), ns=(2, 8), betas=(0.5,), trl_ns=(8,))
    >>> [(c.label, c.seed) for c in cfg.trl_configs()]  # one TRL run per seed and TRL N
    [('vbon_N8', 0), ('vbon_N8', 1)]
    >>> SeedStudyConfig(ns=(2, 8), trl_ns=(4,))
    Traceback (most recent call last):
    ...
    ValueError: trl_ns (4,) must be a subset of ns (2, 8)
    """

    seeds: tuple[int, ...] = option("training seeds", (0, 1, 2), minimum=0)
    prompts: tuple[int, ...] | None = option("prompt indices into prompts.json (None: all 6)", None, minimum=0)
    max_new_tokens: int = option("continuation length L", 4, minimum=1)
    ns: tuple[int, ...] = option("vBoN N grid", (2, 4, 8, 16, 32, 64, 128), minimum=1)
    betas: tuple[float, ...] = option("KL-RL beta grid", (1.0, 0.5, 0.25, 0.15, 0.1, 0.07, 0.05))
    steps: int = option("optimizer steps per bonmath model", 300, minimum=0)
    k: int = option("samples per prompt per step (TRL: num_generations)", 32, minimum=2)
    lr: float = option("learning rate (linear decay to 0)", 3e-3)
    max_grad_norm: float | None = option("gradient-norm clipping", 1.0)
    trl_ns: tuple[int, ...] = option("N of the TRL vBoN series (empty: none)", (2, 8, 32, 128), minimum=1,
                                  allow_empty=True)
    trl_steps: int | None = option("optimizer steps of the TRL runs and their bonmath twins (None: steps)", None,
                                   minimum=1)
    frontier_betas: int = option("points of the exact frontier's beta sweep", 48, minimum=2)

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty; got {self.seeds}")
        if not set(self.trl_ns) <= set(self.ns):
            raise ValueError(f"trl_ns {self.trl_ns} must be a subset of ns {self.ns}")
        for b in self.betas:
            if not b > 0:
                raise ValueError(f"betas must be > 0; got {self.betas}")
        self.train_configs()  # each validates itself

    @property
    def comparison_steps(self) -> int:
        return self.steps if self.trl_steps is None else self.trl_steps

    def train_configs(self) -> list[TrainConfig]:
        """bonmath's training configs: vBoN and KL-RL per seed, then vBoN twins of the TRL runs."""
        out: list[TrainConfig] = []
        for seed in self.seeds:
            out += [self._vbon(n, self.steps, seed) for n in self.ns]
            out += [KLRLConfig(beta=b, steps=self.steps, seed=seed, k=self.k, lr=self.lr,
                               max_grad_norm=self.max_grad_norm) for b in self.betas]
        if self.comparison_steps != self.steps:
            out += [self._vbon(n, self.comparison_steps, seed) for seed in self.seeds for n in self.trl_ns]
        return out

    def trl_configs(self) -> list[VBoNConfig]:
        """The TRL runs, each described by the bonmath config it matches."""
        return [self._vbon(n, self.comparison_steps, seed) for seed in self.seeds for n in self.trl_ns]

    def _vbon(self, n: int, steps: int, seed: int) -> VBoNConfig:
        return VBoNConfig(n=n, steps=steps, seed=seed, k=self.k, lr=self.lr, max_grad_norm=self.max_grad_norm)


SMOKE = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=2, ns=(2, 8), betas=(0.5, 0.1), steps=2, k=4,
                        trl_ns=(8,), frontier_betas=8)
"""A configuration of seconds (tests, ``--smoke``)."""


# ---------------------------------------------------------------------- results


@dataclass
class Stat:
    """One quantity over seeds: mean, sample sd (ddof = 1; None for one seed), min, max, the values.

    Examples
    --------
    >>> stat = Stat.of([1.0, 2.0, 4.0])
    >>> round(stat.mean, 6), round(stat.sd, 6), stat.min, stat.max  # sd = sqrt(7/3)
    (2.333333, 1.527525, 1.0, 4.0)
    >>> Stat.of([3.0]).sd is None
    True
    """

    mean: float
    sd: float | None
    min: float
    max: float
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        array = np.asarray(values, dtype=np.float64)
        sd = float(array.std(ddof=1)) if array.size > 1 else None
        return cls(float(array.mean()), sd, float(array.min()), float(array.max()), array.tolist())


@dataclass
class SeedRow:
    """One trained model, evaluated exactly.

    Examples
    --------
    The smallest study: one prompt, one new token, vBoN at N = 2 and KL-RL at β = 0.5, two
    steps, two seeds, no TRL runs (``trl_ns=()``; each takes seconds):

    >>> cfg = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), steps=2, k=2,
    ...                       trl_ns=())
    >>> rows = run_seed_study(cfg, progress=False).rows
    >>> [(row.method, row.seed) for row in rows]
    [('vbon', 0), ('kl_rl', 0), ('vbon', 1), ('kl_rl', 1)]
    >>> row = rows[0]
    >>> row.kl_bon == row.metrics.kl_to_bon(row.n), row.reward_gap > 0, sorted(row.on_front)
    (True, True, ['bonmath/reward', 'bonmath/win_rate'])
    """

    method: str
    n: int | None
    beta: float | None
    seed: int
    steps: int
    train_seconds: float
    metrics: PolicyMetrics
    kl_bon: float | None
    """KL(π||π_N) at the model's own N (vBoN)."""
    reward_gap: float | None
    """The exact frontier's E[r] at the model's KL minus the model's E[r] (None outside the sweep)."""
    on_front: dict[str, bool]
    """``<pool>/<metric>`` -> Pareto-optimal within the pool's models of this seed."""


@dataclass
class SeriesPoint:
    """One method at one N or β, over seeds.

    Examples
    --------
    Each statistic summarises that method's rows, one per seed (the study of :class:`SeedRow`):

    >>> cfg = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), steps=2, k=2,
    ...                       trl_ns=())
    >>> results = run_seed_study(cfg, progress=False)
    >>> point = results.series[0]
    >>> point.method, point.n, point.seeds
    ('vbon', 2, [0, 1])
    >>> point.reward.values == [r.metrics.reward for r in results.rows if r.method == "vbon"]
    True
    """

    method: str
    n: int | None
    beta: float | None
    seeds: list[int]
    reward: Stat
    kl_ref: Stat
    kl_bon: Stat | None
    win_rate: Stat
    reward_gap: Stat | None


@dataclass
class FrontCount:
    """How many of a method's models are on the front of a pool, per seed and pooled over seeds.

    Examples
    --------
    >>> count = FrontCount("bonmath", "reward", "vbon", [6, 7], [7, 7], 13, 14)
    >>> count.on_front == sum(count.on_front_per_seed), count.total == sum(count.total_per_seed)
    (True, True)
    """

    pool: str
    metric: str
    method: str
    on_front_per_seed: list[int]
    total_per_seed: list[int]
    on_front: int
    total: int


@dataclass
class Difference:
    """TRL − bonmath vBoN at one N (``n`` None: over every N), per seed, over seeds.

    Examples
    --------
    :func:`run_seed_study` reports one per N of ``cfg.trl_ns`` and one over every N; a TRL
    run takes seconds, so this one is built from two seeds' differences by hand. Like
    every result it survives the JSON round trip of :mod:`bonmath.cache`:

    >>> import json
    >>> from bonmath.cache import from_json, to_json
    >>> diff = Difference(n=8, seeds=[0, 1], reward=Stat.of([0.02, -0.01]), kl_ref=Stat.of([0.05, 0.03]),
    ...                   kl_bon=Stat.of([-0.01, 0.01]), win_rate=Stat.of([0.01, 0.0]),
    ...                   reward_per_prompt=[0.005], kl_ref_per_prompt=[0.04])
    >>> round(diff.reward.mean, 4), round(diff.kl_ref.sd, 4)
    (0.005, 0.0141)
    >>> from_json(Difference, json.loads(json.dumps(to_json(diff)))) == diff
    True
    """

    n: int | None
    seeds: list[int]
    reward: Stat
    kl_ref: Stat
    kl_bon: Stat
    win_rate: Stat
    reward_per_prompt: list[float]
    """Mean over (N, seed) of each prompt's reward difference."""
    kl_ref_per_prompt: list[float]


@dataclass
class SeedStudyResults:
    """Everything :func:`run_seed_study` computes (JSON via :func:`bonmath.cache.to_json`).

    Examples
    --------
    The study of :class:`SeedRow`; without TRL runs there are no differences, and the
    results survive a JSON round trip unchanged:

    >>> import json
    >>> from bonmath.cache import from_json, to_json
    >>> cfg = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), steps=2, k=2,
    ...                       trl_ns=())
    >>> results = run_seed_study(cfg, progress=False)
    >>> vbon = results.count("bonmath", "reward", "vbon")
    >>> vbon.on_front <= vbon.total == len(cfg.seeds), results.differences
    (True, [])
    >>> from_json(SeedStudyResults, json.loads(json.dumps(to_json(results)))) == results
    True
    """

    config: SeedStudyConfig
    task_fingerprint: str
    prompts: list[str]
    reference: PolicyMetrics
    """π_ref's own metrics (``kl_bon``: KL(π_ref||π_N), what an untrained model is off π_N)."""
    frontier: Frontier
    rows: list[SeedRow]
    series: list[SeriesPoint]
    fronts: list[FrontCount]
    differences: list[Difference]
    verdict: str
    timing: dict[str, float]

    def count(self, pool: str, metric: str, method: str) -> FrontCount:
        """The :class:`FrontCount` of ``method`` in ``pool`` on ``metric``."""
        for c in self.fronts:
            if (c.pool, c.metric, c.method) == (pool, metric, method):
                return c
        raise KeyError(f"no front count for pool {pool!r}, metric {metric!r}, method {method!r}")


# ------------------------------------------------------------------ computation


def front_verdict(vbon: FrontCount, kl_rl: FrontCount) -> str:
    """The claim "vBoN is on the front more often than KL-RL", judged from per-seed counts.

    Supported if vBoN has more front points than KL-RL in every seed, contradicted if
    fewer in every seed, else not settled; the pooled counts are stated either way.

    Examples
    --------
    >>> a = FrontCount("bonmath", "reward", "vbon", [6, 7], [7, 7], 13, 14)
    >>> b = FrontCount("bonmath", "reward", "kl_rl", [7, 7], [7, 7], 14, 14)
    >>> front_verdict(a, b).split(":")[0]
    'not settled by these seeds'
    """
    pairs = list(zip(vbon.on_front_per_seed, kl_rl.on_front_per_seed))
    more, fewer = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
    if more == len(pairs):
        word = "supported"
    elif fewer == len(pairs):
        word = "contradicted"
    else:
        word = "not settled by these seeds"
    return (f"{word}: on the {vbon.metric}-KL front of pool '{vbon.pool}', vBoN {vbon.on_front}/{vbon.total} "
            f"and KL-RL {kl_rl.on_front}/{kl_rl.total} over {len(pairs)} seeds; vBoN had more front points than "
            f"KL-RL in {more} seed(s), fewer in {fewer}, as many in {len(pairs) - more - fewer}")


def _rows_of(task: Task, cfg: SeedStudyConfig, trained: list[tuple[str, VBoNConfig | KLRLConfig, np.ndarray, float]],
             frontier: Frontier) -> list[SeedRow]:
    rows = []
    for method, train_cfg, log_probs, seconds in trained:
        n = getattr(train_cfg, "n", None)
        metrics = policy_metrics(task, log_probs, cfg.ns, num_samples=0)
        value = frontier.value_at("reward", metrics.kl_ref)
        rows.append(SeedRow(method, n, getattr(train_cfg, "beta", None), train_cfg.seed, train_cfg.steps, seconds,
                            metrics, None if n is None else metrics.kl_to_bon(n),
                            None if value is None else value - metrics.reward, {}))
    for pool, methods in POOLS.items():
        for seed in cfg.seeds:
            members = [r for r in rows if r.seed == seed and r.method in methods
                       and (r.method == "trl_vbon" or r.steps == cfg.steps)]
            if "trl_vbon" in methods and not any(r.method == "trl_vbon" for r in members):
                continue
            for metric in FRONT_METRICS:
                for row, position in zip(members, front_positions([r.metrics for r in members], frontier, metric)):
                    row.on_front[f"{pool}/{metric}"] = position.pareto
    return rows


def _series(rows: list[SeedRow], steps: int) -> list[SeriesPoint]:
    groups: dict[tuple[str, int | None, float | None], list[SeedRow]] = {}
    for r in rows:
        if r.steps == steps or r.method == "trl_vbon":
            groups.setdefault((r.method, r.n, r.beta), []).append(r)

    def stat(group, get):
        values = [get(r) for r in group]
        return None if any(v is None for v in values) else Stat.of(values)

    return [SeriesPoint(method, n, beta, [r.seed for r in g], Stat.of([r.metrics.reward for r in g]),
                        Stat.of([r.metrics.kl_ref for r in g]), stat(g, lambda r: r.kl_bon),
                        Stat.of([r.metrics.win_rate for r in g]), stat(g, lambda r: r.reward_gap))
            for (method, n, beta), g in groups.items()]


def _fronts(rows: list[SeedRow], seeds: Sequence[int]) -> list[FrontCount]:
    out = []
    for pool, methods in POOLS.items():
        for metric in FRONT_METRICS:
            key = f"{pool}/{metric}"
            for method in methods:
                per_seed = [[r.on_front[key] for r in rows if r.seed == s and r.method == method and key in r.on_front]
                            for s in seeds]
                if any(per_seed):
                    on, total = [sum(x) for x in per_seed], [len(x) for x in per_seed]
                    out.append(FrontCount(pool, metric, method, on, total, sum(on), sum(total)))
    return out


def _differences(rows: list[SeedRow], cfg: SeedStudyConfig) -> list[Difference]:
    bonmath = {(r.n, r.seed): r for r in rows if r.method == "vbon" and r.steps == cfg.comparison_steps}
    pairs = [(r, bonmath[(r.n, r.seed)]) for r in rows if r.method == "trl_vbon"]

    def difference(n, chosen):
        def stat(get):
            return Stat.of([get(t) - get(b) for t, b in chosen])

        per_prompt = {key: np.mean([np.subtract(getattr(t.metrics, key), getattr(b.metrics, key))
                                    for t, b in chosen], axis=0).tolist()
                      for key in ("reward_per_prompt", "kl_ref_per_prompt")}
        return Difference(n, [t.seed for t, _ in chosen], stat(lambda r: r.metrics.reward),
                          stat(lambda r: r.metrics.kl_ref), stat(lambda r: r.kl_bon),
                          stat(lambda r: r.metrics.win_rate), **per_prompt)

    if not pairs:
        return []
    return [difference(n, [p for p in pairs if p[0].n == n]) for n in cfg.trl_ns] + [difference(None, pairs)]


def _check_review_task(task: Task, cfg: SeedStudyConfig) -> None:
    """Refuse a task other than the review task of ``cfg`` (the results carry ``cfg``'s prompts)."""
    from bonmath.sentiment import REVIEW_LM_PATH

    texts = json.loads((REVIEW_LM_PATH / "prompts.json").read_text())
    wanted = texts if cfg.prompts is None else [texts[i] for i in cfg.prompts]
    if task.prompt_texts != wanted or task.max_new_tokens != cfg.max_new_tokens:
        raise ValueError(f"task has prompts {task.prompt_texts} and max_new_tokens {task.max_new_tokens}; the review "
                         f"task of cfg has prompts {wanted} and max_new_tokens {cfg.max_new_tokens}")


def run_seed_study(cfg: SeedStudyConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                   task: Task | None = None) -> SeedStudyResults:
    """Train (cached), evaluate exactly and summarise every model of ``cfg``.

    Parameters
    ----------
    cfg : SeedStudyConfig
    cache_dir : path-like, optional
        ``rewards/`` and ``models/`` as for :func:`bonmath.experiment.run_experiment`
        (shared with it), ``trl_models/`` for the TRL runs.
    progress : bool
    task : Task, optional
        The review task of ``cfg`` if already built.

    Returns
    -------
    SeedStudyResults

    Raises
    ------
    ValueError
        If ``task``'s prompts or continuation length are not ``cfg``'s.

    Examples
    --------
    The smallest study (four models of two steps, no TRL runs: each takes seconds), and a
    task of another continuation length refused:

    >>> from bonmath.sentiment import review_task
    >>> cfg = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), steps=2, k=2,
    ...                       trl_ns=())
    >>> results = run_seed_study(cfg, progress=False)
    >>> len(results.rows), results.verdict.split(":")[0]
    (4, 'not settled by these seeds')
    >>> run_seed_study(cfg, progress=False, task=review_task(prompts=[0], max_new_tokens=2))
    Traceback (most recent call last):
    ...
    ValueError: task has prompts ['the movie was'] and max_new_tokens 2; the review task of cfg has prompts ['the movie was'] and max_new_tokens 1
    """
    from bonmath.sentiment import review_task

    if not isinstance(cfg, SeedStudyConfig):
        raise TypeError(f"cfg must be a SeedStudyConfig; got {type(cfg).__name__}")
    if task is not None:
        _check_review_task(task, cfg)
    cache = None if cache_dir is None else Path(cache_dir)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    if task is None:
        task = review_task(cfg.prompts, cfg.max_new_tokens,
                           reward_cache_dir=None if cache is None else cache / "rewards")
    timing["task_seconds"] = time.perf_counter() - started
    frontier = exact_frontier(task, np.logspace(1.5, -2.3, cfg.frontier_betas))

    trained: list = []
    t0 = time.perf_counter()
    configs = cfg.train_configs()
    for train_cfg in tqdm(configs, desc="bonmath models", disable=not progress, unit="model"):
        policy = train_cached(task, train_cfg, None if cache is None else cache / "models", progress)
        trained.append((train_cfg.method, train_cfg, policy.log_probs, policy.seconds))
    timing["bonmath_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for trl_cfg in tqdm(cfg.trl_configs(), desc="TRL models", disable=not progress, unit="model"):
        run = train_trl_vbon(task, trl_cfg, None if cache is None else cache / "trl_models")
        trained.append(("trl_vbon", trl_cfg, run.log_probs, run.seconds))
    timing["trl_seconds"] = time.perf_counter() - t0

    rows = _rows_of(task, cfg, trained, frontier)
    fronts = _fronts(rows, cfg.seeds)
    reference = policy_metrics(task, task.ref_log_probs, cfg.ns, num_samples=0)
    results = SeedStudyResults(cfg, task.fingerprint(), task.prompt_texts, reference, frontier, rows,
                               _series(rows, cfg.steps), fronts, _differences(rows, cfg), "", timing)
    results.verdict = front_verdict(results.count("bonmath", "reward", "vbon"),
                                    results.count("bonmath", "reward", "kl_rl"))
    timing["total_seconds"] = time.perf_counter() - started
    return results


def missing_models(task: Task, cfg: SeedStudyConfig, cache_dir: str | os.PathLike | None) -> list[str]:
    """Labels of the models of ``cfg`` that ``cache_dir`` does not hold yet (all of them without a cache).

    Examples
    --------
    >>> import tempfile
    >>> from bonmath.sentiment import review_task
    >>> cfg = SeedStudyConfig(seeds=(0, 1), prompts=(0,), max_new_tokens=1, ns=(2,), betas=(0.5,), steps=2, k=2,
    ...                       trl_ns=())
    >>> task = review_task(cfg.prompts, cfg.max_new_tokens)
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     before = missing_models(task, cfg, cache)
    ...     _ = run_seed_study(cfg, cache, progress=False, task=task)
    ...     after = missing_models(task, cfg, cache)
    >>> before, after
    (['vbon_N2_seed0', 'kl_rl_beta0.5_seed0', 'vbon_N2_seed1', 'kl_rl_beta0.5_seed1'], [])
    """
    bonmath = [(cache_path(task, c, Path(cache_dir or ".") / "models"), f"{c.label}_seed{c.seed}")
               for c in cfg.train_configs()]
    trl = [(trl_cache_path(task, c, Path(cache_dir or ".") / "trl_models"), f"trl_{c.label}_seed{c.seed}")
           for c in cfg.trl_configs()]
    return [label for path, label in bonmath + trl if cache_dir is None or not (path / "meta.json").is_file()]
