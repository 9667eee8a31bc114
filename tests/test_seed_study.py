"""The seed study (bonmath.seed_study): what its summaries claim, checked against the rows they summarise.

One tiny study (1 prompt, L = 2, 2 steps, 2 seeds, 2 N, 2 β, TRL at one N) is run
once; each test checks one claim of the module docstring against an independent
recomputation (numpy over the rows, a brute-force Pareto check, a direct
``policy_metrics`` on a trained model, a spy on TRL's trainer).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("trl")

from conftest import RTOL_EXACT  # noqa: E402

from bonmath.evaluation import policy_metrics  # noqa: E402
from bonmath.seed_study import (  # noqa: E402
    POOLS,
    SMOKE,
    FrontCount,
    SeedStudyConfig,
    front_verdict,
    run_seed_study,
)
from bonmath.train import train_cached  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import trl

    from bonmath.sentiment import review_task

    calls = []
    original = trl.RLOOTrainer.train

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    trl.RLOOTrainer.train = spy
    try:
        task = review_task(SMOKE.prompts, SMOKE.max_new_tokens)
        cache = tmp_path_factory.mktemp("seed_study")
        results = run_seed_study(SMOKE, cache, progress=False, task=task)
    finally:
        trl.RLOOTrainer.train = original
    return task, cache, results, calls


def test_the_trl_rows_come_from_trls_rloo_trainer(study):
    """Each TRL row is one call of trl.RLOOTrainer.train, with its own (non-bonmath) policy."""
    _, _, results, calls = study
    trl_rows = [r for r in results.rows if r.method == "trl_vbon"]
    assert calls == ["RLOOTrainer"] * len(SMOKE.trl_configs()) == ["RLOOTrainer"] * len(trl_rows)
    twins = {(r.n, r.seed): r for r in results.rows if r.method == "vbon"}
    for row in trl_rows:
        assert row.metrics.kl_ref > 0 and row.metrics.reward != twins[(row.n, row.seed)].metrics.reward


def test_a_rows_metrics_equal_policy_metrics_of_that_seeds_model(study):
    """The row of (method, N/β, seed) is policy_metrics of the model train_cached trained with that seed."""
    task, cache, results, _ = study
    for train_cfg in SMOKE.train_configs():
        policy = train_cached(task, train_cfg, cache / "models", progress=False)
        model = copy.deepcopy(task.model)
        model.load_state_dict(policy.state_dict())
        direct = policy_metrics(task, task.enumerate_log_probs(model), SMOKE.ns, num_samples=0)
        (row,) = [r for r in results.rows if r.method == train_cfg.method and r.seed == train_cfg.seed
                  and (r.n, r.beta) == (getattr(train_cfg, "n", None), getattr(train_cfg, "beta", None))]
        for key in ("reward", "kl_ref", "win_rate", "kl_bon"):
            np.testing.assert_allclose(getattr(row.metrics, key), getattr(direct, key), rtol=RTOL_EXACT, atol=0)
        if row.n is not None:
            assert row.kl_bon == direct.kl_to_bon(row.n)


def test_series_means_and_sds_are_numpys_over_the_seed_rows(study):
    """mean, sd (ddof = 1), min and max of each series point are numpy's over that point's per-seed rows."""
    _, _, results, _ = study
    assert len(results.series) == len(SMOKE.ns) + len(SMOKE.betas) + len(SMOKE.trl_ns)
    for point in results.series:
        rows = [r for r in results.rows if (r.method, r.n, r.beta) == (point.method, point.n, point.beta)]
        assert sorted(r.seed for r in rows) == sorted(point.seeds) == sorted(SMOKE.seeds)
        for key in ("reward", "kl_ref", "win_rate"):
            values = np.array([getattr(r.metrics, key) for r in rows])
            stat = getattr(point, key)
            assert (stat.mean, stat.sd, stat.min, stat.max) == (values.mean(), values.std(ddof=1), values.min(),
                                                                values.max())


def test_front_flags_are_the_brute_force_pareto_set_and_counts_sum_them(study):
    """A row is on a pool's front iff no row of the pool and seed has <= KL and >= value, one strictly;
    the per-seed counts count those flags and the pooled counts are their sums."""
    _, _, results, _ = study
    for pool, methods in POOLS.items():
        for metric in ("reward", "win_rate"):
            key = f"{pool}/{metric}"
            for seed in SMOKE.seeds:
                members = [r for r in results.rows if r.seed == seed and r.method in methods]
                for r in members:
                    dominated = any(o.metrics.kl_ref <= r.metrics.kl_ref and o.metrics.value(metric) >= r.metrics.value(
                        metric) and (o.metrics.kl_ref, o.metrics.value(metric)) != (r.metrics.kl_ref, r.metrics.value(
                            metric)) for o in members)
                    assert r.on_front[key] is (not dominated)
            for method in methods:
                count = results.count(pool, metric, method)
                expected = [sum(r.on_front[key] for r in results.rows if r.seed == s and r.method == method)
                            for s in SMOKE.seeds]
                sizes = [sum(1 for r in results.rows if r.seed == s and r.method == method) for s in SMOKE.seeds]
                assert count.on_front_per_seed == expected and count.total_per_seed == sizes
                assert (count.on_front, count.total) == (sum(expected), sum(sizes))


def test_trl_minus_bonmath_differences_are_the_per_seed_differences(study):
    """The difference at N is the Stat of TRL's minus bonmath's value per seed; 'all' pools every (N, seed)."""
    _, _, results, _ = study
    rows = {(r.method, r.n, r.seed): r for r in results.rows if r.method in ("vbon", "trl_vbon")}
    for d in results.differences:
        pairs = [(rows[("trl_vbon", n, s)], rows[("vbon", n, s)]) for n in ([d.n] if d.n else SMOKE.trl_ns)
                 for s in SMOKE.seeds]
        values = np.array([t.metrics.reward - b.metrics.reward for t, b in pairs])
        assert d.reward.values == values.tolist() and d.reward.mean == values.mean()
        assert d.kl_bon.values == [t.kl_bon - b.kl_bon for t, b in pairs]


@pytest.mark.parametrize("vbon, kl_rl, word", [
    ([3, 4], [2, 3], "supported"), ([2, 2], [3, 4], "contradicted"), ([3, 2], [2, 3], "not settled"),
    ([3, 3], [3, 3], "not settled"),
])
def test_the_verdict_follows_the_per_seed_counts(vbon, kl_rl, word):
    """Supported iff vBoN has more front points in every seed, contradicted iff fewer in every seed."""
    def count(method, on):
        return FrontCount("bonmath", "reward", method, on, [4, 4], sum(on), 8)

    verdict = front_verdict(count("vbon", vbon), count("kl_rl", kl_rl))
    assert verdict.startswith(word)
    assert f"vBoN {sum(vbon)}/8 and KL-RL {sum(kl_rl)}/8" in verdict


def test_the_study_verdict_is_derived_from_its_counts(study):
    _, _, results, _ = study
    assert results.verdict == front_verdict(results.count("bonmath", "reward", "vbon"),
                                            results.count("bonmath", "reward", "kl_rl"))
    from benchmarks.sentiment_seeds import to_markdown

    assert f"**Verdict** on \"vBoN is on the reward–KL front more often than KL-RL\": {results.verdict}." in to_markdown(
        results)


def test_trl_steps_below_steps_adds_bonmath_twins_with_the_trl_steps():
    """The TRL comparison is against bonmath vBoN trained with the same (reduced) number of steps."""
    cfg = SeedStudyConfig(seeds=(0,), ns=(2, 8), betas=(0.5,), steps=10, trl_ns=(8,), trl_steps=4)
    twins = [c for c in cfg.train_configs() if c.steps == 4]
    assert [(c.method, c.n) for c in twins] == [("vbon", 8)]
    assert [(c.n, c.steps) for c in cfg.trl_configs()] == [(8, 4)]
    with pytest.raises(ValueError, match="trl_ns"):
        SeedStudyConfig(ns=(2, 8), trl_ns=(4,))


@pytest.mark.parametrize("prompts, max_new_tokens", [((1,), SMOKE.max_new_tokens), (SMOKE.prompts, 1)])
def test_a_task_that_is_not_the_configs_review_task_is_refused(prompts, max_new_tokens):
    """run_seed_study(task=...) refuses a task with other prompts or another continuation length than
    cfg's, before training: its results would carry cfg's prompts (refuse rather than guess)."""
    import dataclasses

    from bonmath.sentiment import review_task

    task = review_task(prompts, max_new_tokens)
    with pytest.raises(ValueError, match="the review task of cfg has prompts"):
        run_seed_study(dataclasses.replace(SMOKE, trl_ns=()), progress=False, task=task)
