"""paper_figs/fig_inference_aware.py: its smoke run, and its numbers against independent computations.

The figure's panel 1 is the exact relative MSE of the max@k / pass@k gradient
estimators against n; panel 2 the true reward of proxy-ranked BoN and Best-of-Poisson
against N with HedgeTune's N*. Every check here recomputes a plotted number another
way: level sums in mpmath, a Poisson mixture of BoN curves, every n-tuple of samples.
"""

from __future__ import annotations

import itertools
import json
import math

import mpmath
import numpy as np
import pytest
from conftest import RTOL_EXACT, RTOL_MPMATH

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import bonmath  # noqa: E402
from paper_figs import _common  # noqa: E402
from paper_figs import fig_inference_aware as fig  # noqa: E402

SMOKE_ARGS = ["--smoke", "--no-progress"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run's output directory and its JSON (read back strictly: no NaN or infinity)."""
    out = tmp_path_factory.mktemp("fig_inference_aware")
    assert fig.main([*SMOKE_ARGS, "--out", str(out)]) == 0
    return out, _strict_json(out / f"{fig.NAME}.json")


def _strict_json(path):
    def reject(constant):
        raise ValueError(f"{path.name} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def _level_means_and_cdf(task: fig.ProxyTask, dps: int | None = None):
    """Per proxy level (ascending): the π_ref-weighted mean of r_true and F_lt, F_le, from plain sums."""
    num = (lambda x: mpmath.mpf(float(x))) if dps else float
    probs = [num(p) for p in np.exp(task.ref_log_probs)]
    levels = sorted(set(task.proxy_rewards.tolist()))
    means, lt, le, below = [], [], [], num(0)
    for v in levels:
        members = [i for i, p in enumerate(task.proxy_rewards) if p == v]
        mass = sum(probs[i] for i in members)
        means.append(sum(probs[i] * num(task.true_rewards[i]) for i in members) / mass)
        lt.append(below)
        below = below + mass
        le.append(below)
    return means, lt, le


def test_smoke_run_writes_png_and_json(smoke):
    """The smoke run writes a non-trivial PNG and a JSON holding both panels, flagged as smoke."""
    out, data = smoke
    png = out / f"{fig.NAME}.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert data["smoke"] is True
    assert data["estimators"]["curves"] and data["true_reward"]["bon"]


def test_smoke_figure_says_smoke_in_its_title(smoke):
    """A smoke figure's title says "smoke"; a full one's does not."""
    plt = _common.pyplot()
    _, data = smoke
    assert "smoke" in fig.plot(data, plt)._suptitle.get_text()
    assert "smoke" not in fig.plot({**data, "smoke": False}, plt)._suptitle.get_text()
    plt.close("all")


def test_every_series_has_its_own_colour_and_marker():
    """Within each panel no two series share a colour or a marker."""
    for styles in (fig.SERIES, fig.TRUE_REWARD_STYLE):
        assert len({s["color"] for s in styles.values()}) == len(styles)
        assert len({s["marker"] for s in styles.values()}) == len(styles)


def test_bon_curve_is_the_true_reward_of_proxy_ranked_bon(smoke):
    """Plotted BoN value at N = Σ_v m_v (F_le(v)^N − F_lt(v)^N) over proxy levels (docs/math.md; Khalaf et al. 2025), in mpmath."""
    _, data = smoke
    panel = data["true_reward"]
    with mpmath.workdps(50):
        means, lt, le = _level_means_and_cdf(fig.proxy_task(), dps=50)
        for n, have in zip(panel["n"], panel["bon"]):
            want = sum(m * (b**n - a**n) for m, a, b in zip(means, lt, le))
            assert abs(have - float(want)) <= RTOL_MPMATH * max(1.0, abs(float(want))), n


def test_bon_curve_matches_bon_log_probs_summed_explicitly(smoke):
    """Plotted BoN value at N = Σ_y exp(bon_log_probs(y)) r_true(y), an explicit sum over the 26 strings."""
    import bonmath

    _, data = smoke
    task = fig.proxy_task()
    for n, have in zip(data["true_reward"]["n"], data["true_reward"]["bon"]):
        probs = np.exp(bonmath.bon_log_probs(task.ref_log_probs, task.proxy_rewards, n))
        want = math.fsum(p * r for p, r in zip(probs, task.true_rewards))
        assert have == pytest.approx(want, rel=RTOL_EXACT, abs=RTOL_EXACT), n


def test_hedgetune_n_star_is_the_argmax_of_the_plotted_bon_curve(smoke):
    """N* is on the plotted grid and is the grid's argmax of the BoN curve, with its value."""
    _, data = smoke
    panel = data["true_reward"]
    n_star = panel["hedgetune"]["n_star"]
    assert panel["n"][int(np.argmax(panel["bon"]))] == n_star
    assert panel["hedgetune"]["true_reward"] == panel["bon"][panel["n"].index(n_star)]


def test_hedgetune_n_star_is_the_argmax_over_every_integer_up_to_n_max(smoke):
    """N* maximises Σ_v m_v (F_le^N − F_lt^N) over every integer 1..n_max, by a clear margin."""
    _, data = smoke
    n_max, n_star = data["true_reward"]["hedgetune"]["n_max"], data["true_reward"]["hedgetune"]["n_star"]
    means, lt, le = (np.array(x) for x in _level_means_and_cdf(fig.proxy_task()))
    n = np.arange(1, n_max + 1, dtype=np.float64)[:, None]
    curve = (means * (le**n - lt**n)).sum(axis=1)
    second = np.max(np.delete(curve, n_star - 1))
    assert int(np.argmax(curve)) + 1 == n_star
    assert curve[n_star - 1] - second > 1e3 * RTOL_EXACT, "the curve's top is too flat to name one N*"


def test_best_of_poisson_curve_is_the_poisson_mixture_of_bon_curves(smoke):
    """Best-of-Poisson with mean 1 + μ = N: E[r_true] = Σ_j Poisson(j; μ) E_{BoN_(j+1)}[r_true] (docs/math.md),
    = Σ_v m_v (G(F_le) − G(F_lt)) with G(F) = E[F^(1+J)] = F e^(μ(F−1)) (the Poisson generating function), in mpmath."""
    _, data = smoke
    panel = data["true_reward"]
    with mpmath.workdps(50):
        means, lt, le = _level_means_and_cdf(fig.proxy_task(), dps=50)
        for n, mu, have in zip(panel["n"], panel["best_of_poisson"]["mu"], panel["best_of_poisson"]["true_reward"]):
            assert mu == n - 1
            mixture = [F * mpmath.exp(mu * (F - 1)) for F in (*lt, *le)]
            want = sum(m * (b - a) for m, a, b in zip(means, mixture[: len(lt)], mixture[len(lt):]))
            assert abs(have - float(want)) <= RTOL_MPMATH * max(1.0, abs(float(want))), n


def test_proxy_task_over_optimises(smoke):
    """BoN's true reward starts at E_ref[r_true], rises to its peak at N* and falls below its start by n_max."""
    _, data = smoke
    panel = data["true_reward"]
    task = fig.proxy_task()
    bon, peak = panel["bon"], panel["hedgetune"]["true_reward"]
    assert bon[0] == pytest.approx(math.fsum(np.exp(task.ref_log_probs) * task.true_rewards), rel=RTOL_EXACT)
    assert panel["n"][0] == 1 and panel["n"][-1] == panel["hedgetune"]["n_max"]
    assert peak > bon[0] + 1 and bon[-1] < bon[0]
    assert panel["hedgetune"]["n_star"] == 55, "proxy_task's docstring states N* = 55"


def _exact_relative_mse(policy, weights, n: int, k: int) -> float:
    """E‖ĝ − ∇pass@k‖²/‖∇pass@k‖² by summing over every n-tuple of strings with mass."""
    probs = policy.probs
    rewards = policy.rewards["pass@k"][policy.keep]
    scores = np.stack([
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(policy.log_probs[s], policy.params, retain_graph=True)])
        .numpy() for s in policy.keep
    ])
    p = probs[rewards == 1].sum()
    g = k * (1 - p) ** (k - 1) * (probs[rewards == 1] @ scores[rewards == 1])  # ∇pass@k = k (1-p)^(k-1) ∇p
    tuples = np.array(list(itertools.product(range(len(probs)), repeat=n)))
    w = weights(rewards[tuples], k)
    g_hat = np.einsum("ti,tip->tp", w, scores[tuples])
    return float(np.prod(probs[tuples], axis=1) @ ((g_hat - g) ** 2).sum(axis=1) / (g @ g))


def _pkpo_plain(rewards: np.ndarray, k: int) -> np.ndarray:
    """PKPO's s_i = (1/C(n,k)) Σ_{k-subsets S ∋ i} max_{j ∈ S} g_j, from the definition (one loop per subset)."""
    n = rewards.shape[1]
    s = np.zeros_like(rewards)
    subsets = list(itertools.combinations(range(n), k))
    for subset in subsets:
        best = rewards[:, list(subset)].max(axis=1)
        for i in subset:
            s[:, i] += best
    return s / len(subsets)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("estimator", ["pkpo", "pkpo_mean_centred"])
def test_plotted_relative_mse_is_exact_by_enumerating_every_group(smoke, estimator, k):
    """Plotted relative MSE at n = 4 = Σ over all 15^4 groups of π(group) ‖ĝ − g‖²/‖g‖², with PKPO's s_i from its subset definition."""
    from bonmath.inference_aware_variance import tabular_policy

    _, data = smoke
    n = 4
    curve = next(c for c in data["estimators"]["curves"] if c["estimator"] == estimator and c["k"] == k)
    have = curve["relative_mse"][curve["n"].index(n)]
    config = fig.Config(smoke=True)
    if estimator == "pkpo":
        weights = _pkpo_plain
    else:
        def weights(rewards, k):
            s = _pkpo_plain(rewards, k)
            return s - s.mean(axis=1, keepdims=True)
    want = _exact_relative_mse(tabular_policy(config.variance_config()), weights, n, k)
    assert have == pytest.approx(want, rel=RTOL_EXACT)


def _fake_rows(models=("tabular",), ks=(2,), ns=(2, 4)):
    """Benchmark-shaped rows with distinct made-up numbers, for every estimator that applies."""
    from bonmath.inference_aware_variance import ESTIMATORS

    rows, value = [], 1.0
    for model, k, n, spec in itertools.product(models, ks, ns, ESTIMATORS):
        if k <= n and spec.applies(n, k):
            value += 1.0
            rows.append(dict(estimator=spec.name, label=spec.label, model=model, target="pass@k", n=n, k=k,
                             relative_bias=value / 10, relative_variance=value / 5, relative_mse=value, cosine=1.0))
    return rows


def test_from_json_draws_the_rows_it_is_given(tmp_path):
    """With --from-json, panel 1's curves are the file's numbers, unchanged."""
    rows = _fake_rows()
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"meta": {}, "rows": rows}))
    out = tmp_path / "out"
    fig.main([*SMOKE_ARGS, "--models", "tabular", "--ks", "2", "--from-json", str(source), "--out", str(out)])
    data = _strict_json(out / f"{fig.NAME}.json")
    assert data["estimators"]["source"] == str(source)
    plotted = {(c["estimator"], n): mse for c in data["estimators"]["curves"] for n, mse in zip(c["n"], c["relative_mse"])}
    want = {(r["estimator"], r["n"]): r["relative_mse"] for r in rows if r["estimator"] in fig.SERIES}
    assert plotted == want


@pytest.mark.parametrize("defect", ["pkpo_loo_minus_one", "k", "duplicate"])
def test_from_json_fails_when_a_drawn_row_is_missing_or_doubled(tmp_path, defect):
    """A JSON without the rows of a drawn estimator or of a drawn k, or with one row twice, is refused, naming it."""
    rows = [r for r in _fake_rows() if r["estimator"] != defect]
    if defect == "duplicate":
        rows.append(rows[0])
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"rows": rows}))
    ks = ["4"] if defect == "k" else ["2"]
    match = {"k": "k=4", "duplicate": f"two {rows[0]['estimator']} rows"}.get(defect, defect)
    with pytest.raises(ValueError, match=match):
        fig.main([*SMOKE_ARGS, "--models", "tabular", "--ks", *ks, "--n", "4", "--from-json", str(source),
                  "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("argv", [
    ["--ks", "0"],
    ["--n", "1"],
    ["--target", "pass@3"],
    ["--models", "gpt3"],
    ["--ks", "2", "16", "--n", "4", "8"],
    ["--from-json", "/nonexistent/bench.json"],
    ["--n-max", "1"],
    ["--n-max", str(2**53 + 1)],
])
def test_bad_argument_exits_2(argv, tmp_path):
    """Invalid options are argparse errors: exit status 2, before anything is computed."""
    with pytest.raises(SystemExit) as exit_info:
        fig.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_pessimism_values_are_drawn_on_the_grid_and_checked():
    """Curve values given for InferenceTimePessimism enter the JSON as given and the plot with their label;
    a wrong length or a non-finite value is refused."""
    config = fig.Config(smoke=True)
    grid, _ = fig.true_reward_grid(config, fig.proxy_task())
    values = np.linspace(0.5, 2.0, grid.size)
    panel = fig.true_reward_panel(config, values)
    assert panel["pessimism"] == {"status": "drawn", "n": grid.tolist(), "true_reward": values.tolist(), "limit": None}
    plt = _common.pyplot()
    results = {"config": {"models": ["tabular"], "ks": [2]}, "smoke": True,
               "estimators": {"target": "pass@k", "curves": []}, "true_reward": panel}
    labels = [line.get_label() for ax in fig.plot(results, plt).axes for line in ax.get_lines()]
    assert fig.TRUE_REWARD_STYLE["pessimism"]["label"] in labels
    plt.close("all")
    with pytest.raises(ValueError, match="one entry per N"):
        fig.true_reward_panel(config, values[:-1])
    with pytest.raises(ValueError, match="finite"):
        fig.true_reward_panel(config, np.full(grid.size, np.nan))


def test_pessimism_curve_is_its_exact_law_and_tends_to_its_limit():
    """The drawn InferenceTimePessimism values are E[r_true] under bonmath.theory's exact finite-n
    law (recomputed here), at N = 1 equal to π_ref's E[r_true], and its line is the population limit."""
    task = fig.proxy_task()
    grid, _ = fig.true_reward_grid(fig.Config(smoke=True), task)
    ns, values, limit = fig.inference_time_pessimism_values(task, grid)
    assert ns and ns[0] == 1
    assert values[0] == pytest.approx(float(np.exp(task.ref_log_probs) @ task.true_rewards), rel=RTOL_EXACT)
    want = np.exp(bonmath.theory.pessimism_sampler_log_probs(task.ref_log_probs, task.proxy_rewards, ns[-1],
                                                             fig.PESSIMISM_CHI2_COEFFICIENT)) @ task.true_rewards
    assert values[-1] == pytest.approx(float(want), rel=RTOL_EXACT)
    law = np.exp(bonmath.theory.pessimism_log_probs(task.ref_log_probs, task.proxy_rewards, fig.PESSIMISM_CHI2_COEFFICIENT))
    assert limit == pytest.approx(float(law @ task.true_rewards), rel=RTOL_EXACT)
