"""bonmath.testing's goodness-of-fit tests, string → index mapping and optional hypothesis.

The χ² claims (docs/math.md, "The Best-of-N law"; Pearson's test): under the exact law
the p-value is about uniform, so a level-α test alarms in a fraction ≈ α of runs;
against a wrong law its power is about the noncentral-χ² prediction.
"""

import doctest
import itertools
import math
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from conftest import RTOL_EXACT, Z_BOUND
from scipy.stats import chi2, ncx2

import bonmath
from bonmath.testing import (
    GoodnessOfFit,
    bon_sampler_test,
    goodness_of_fit,
    paper_bon,
    support_index,
)

ALPHA = 0.05

# a tied support with small BoN masses (pooled cells) and a zero-mass string
POOLED_WEIGHTS = np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.0])
POOLED_REWARDS = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 0.0, 3.0, 1.0])

# the tied 4-string support of bon_sampler_test's docstring
REF = np.log([0.4, 0.3, 0.2, 0.1])
REWARDS = np.array([0.0, 1.0, 1.0, 2.0])
N = 4


def log(weights):
    with np.errstate(divide="ignore"):
        return np.log(weights)


def binomial_band(p: float, runs: int) -> float:
    """Z_BOUND binomial standard deviations of an alarm count."""
    return Z_BOUND * math.sqrt(runs * p * (1 - p))


# ------------------------------------------------------------------- samplers


def smallest_index_sampler(size, rng):
    """BoN that breaks ties by the smallest support index among the maximising draws:
    it prefers particular strings, so its law is not π_N."""
    draws = rng.choice(len(REF), size=(size, N), p=np.exp(REF))
    rewards = REWARDS[draws]
    return np.where(rewards == rewards.max(-1, keepdims=True), draws, len(REF)).min(-1)


def smallest_index_law():
    """The law of :func:`smallest_index_sampler`, by enumerating every N-tuple of draws."""
    law = np.zeros(len(REF))
    for draws in itertools.product(range(len(REF)), repeat=N):
        best = max(REWARDS[list(draws)])
        law[min(i for i in draws if REWARDS[i] == best)] += np.prod(np.exp(REF)[list(draws)])
    return law


def injective_law():
    """The vBoN paper's injective formula, normalised (it does not sum to 1 with ties)."""
    probs = [Fraction(w, 10) for w in (4, 3, 2, 1)]
    law = np.array([float(x) for x in paper_bon(probs, REWARDS.tolist(), N)])
    return law / law.sum()


WRONG_SAMPLERS = {  # name: (sampler, its law, a size where the power is moderate)
    "smallest_index_ties": (smallest_index_sampler, smallest_index_law, 60),
    "n_minus_1_draws": (
        lambda size, rng: bonmath.sample_bon(REF, REWARDS, N - 1, size, rng),
        lambda: np.exp(bonmath.bon_log_probs(REF, REWARDS, N - 1)),
        150,
    ),
    "injective_formula": (
        lambda size, rng: rng.choice(len(REF), size=size, p=injective_law()),
        injective_law,
        60,
    ),
}


# ---------------------------------------------------------------- false alarms


@pytest.mark.statistical
def test_bon_sampler_test_alarms_at_rate_alpha_under_the_exact_law():
    """400 runs of bonmath.sample_bon (200 samples each, with pooled cells and a zero-mass
    string) alarm at level 0.05 in a fraction within Z_BOUND binomial sds of 0.05."""
    runs, size = 400, 200
    rng = np.random.default_rng(20261201)
    ref = log(POOLED_WEIGHTS)
    alarms = 0
    for _ in range(runs):
        result = bon_sampler_test(bonmath.sample_bon(ref, POOLED_REWARDS, N, size, rng), ref, POOLED_REWARDS, N)
        assert any(len(cell) > 1 for cell in result.cells)  # pooling is exercised
        alarms += result.rejects(ALPHA)
    assert abs(alarms - ALPHA * runs) <= binomial_band(ALPHA, runs), (
        f"{alarms}/{runs} alarms at level {ALPHA}: outside the z = {Z_BOUND} binomial band"
    )


# ----------------------------------------------------------------------- power


@pytest.mark.statistical
@pytest.mark.parametrize("name", list(WRONG_SAMPLERS))
def test_bon_sampler_test_detects_wrong_samplers_with_the_predicted_power(name):
    """A wrong BoN sampler (ties broken by string preference, N - 1 draws, the injective
    formula) alarms at the noncentral-χ² power λ = size Σ (p'_c - p_c)²/p_c, within Z_BOUND
    binomial sds over 400 runs at a size where that power is moderate; at 2000 samples the
    predicted power is 1 - 1e-12 or more and every one of 50 runs alarms."""
    sampler, alternative, moderate_size = WRONG_SAMPLERS[name]
    law, wrong = np.exp(bonmath.bon_log_probs(REF, REWARDS, N)), alternative()
    assert np.abs(wrong - law).max() > 0.03  # the wrong law really differs
    rng = np.random.default_rng(7)
    for size, runs in ((moderate_size, 400), (2000, 50)):
        results = [bon_sampler_test(sampler(size, rng), REF, REWARDS, N) for _ in range(runs)]
        cells, dof = results[0].cells, results[0].dof
        noncentrality = size * sum((wrong[list(c)].sum() - law[list(c)].sum()) ** 2 / law[list(c)].sum()
                                   for c in cells)
        power = float(ncx2.sf(chi2.isf(ALPHA, dof), dof, noncentrality))
        alarms = sum(r.rejects(ALPHA) for r in results)
        if size == 2000:
            assert power >= 1 - 1e-12 and alarms == runs, (name, power, alarms)
        else:
            assert 0.3 < power < 0.9, power  # a size where the power is informative
            assert abs(alarms - power * runs) <= binomial_band(power, runs), (
                f"{name}: {alarms}/{runs} alarms, predicted power {power:.3f}"
            )


# -------------------------------------------------------------- the statistic


def test_goodness_of_fit_statistic_and_p_value_by_hand():
    """30 and 10 samples against (1/2, 1/2): X² = (10² + 10²)/20 = 10 with 1 dof, p = erfc(√5)."""
    result = goodness_of_fit([0] * 30 + [1] * 10, np.log([0.5, 0.5]))
    assert result.statistic == pytest.approx(10.0, rel=RTOL_EXACT)
    assert result.dof == 1 and result.cells == ((0,), (1,)) and result.observed == (30, 10)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(5.0)), rel=1e-12)


def test_pooling_merges_the_smallest_expected_counts_until_min_expected():
    """Strings in increasing expected count are pooled greedily until a cell reaches min_expected;
    a short last group joins the cell before it; zero-probability strings are no cell."""
    weights = np.array([1.0, 10.0, 3.0, 1.0, 2.0, 0.0, 20.0]) / 37  # expected counts 1, 10, 3, 1, 2, 0, 20
    samples = np.repeat(np.arange(7), [1, 10, 3, 1, 2, 0, 20])
    result = goodness_of_fit(samples, log(weights), min_expected=5)
    assert result.cells == ((0, 3, 4, 2), (1,), (6,))
    assert result.expected == pytest.approx((7.0, 10.0, 20.0), rel=RTOL_EXACT)
    larger = goodness_of_fit(samples, log(weights), min_expected=11)  # 1+1+2+3 = 7 < 11, + 10 = 17
    assert larger.cells == ((0, 3, 4, 2, 1), (6,))
    weights = np.array([4.0, 3.0, 4.0, 3.0, 4.0]) / 18  # 3 + 3, then 4 + 4, then a short 4: joins (0, 2)
    short = goodness_of_fit(np.repeat(np.arange(5), [4, 3, 4, 3, 4]), np.log(weights), min_expected=5)
    assert short.cells == ((1, 3), (0, 2, 4)) and short.expected == pytest.approx((6.0, 12.0), rel=RTOL_EXACT)


def test_pooling_depends_on_the_law_and_size_only():
    """Two different samples of one size get the same cells; every cell expects >= min_expected."""
    ref = log(POOLED_WEIGHTS)
    rng = np.random.default_rng(0)
    a, b = (bon_sampler_test(bonmath.sample_bon(ref, POOLED_REWARDS, N, 150, rng), ref, POOLED_REWARDS, N)
            for _ in range(2))
    assert a.cells == b.cells and a.expected == b.expected
    assert min(a.expected) >= 5 and sum(a.observed) == 150
    assert sorted(i for cell in a.cells for i in cell) == list(range(8))  # not the zero-mass string 8


def test_sample_on_a_zero_probability_string_gives_p_value_zero():
    """A sample where the law has no mass: p-value exactly 0, the first such index reported."""
    law = log(np.array([0.5, 0.0, 0.5, 0.0]))
    result = goodness_of_fit([0, 2, 3, 1, 3] + [0, 2] * 50, law)
    assert result.p_value == 0.0 and result.statistic == math.inf and result.impossible_index == 3
    assert result.rejects(1e-300)


def test_bon_sampler_test_reports_a_sample_below_the_best_of_n():
    """A 'BoN' output with zero BoN mass (a zero-mass string) is reported as impossible."""
    ref = log(POOLED_WEIGHTS)
    samples = np.concatenate([bonmath.sample_bon(ref, POOLED_REWARDS, N, 100, 0), [8]])
    assert bon_sampler_test(samples, ref, POOLED_REWARDS, N).impossible_index == 8


def test_a_law_with_one_atom_has_p_value_one():
    result = goodness_of_fit([1, 1, 1], log(np.array([0.0, 1.0])))
    assert (result.p_value, result.dof, result.cells) == (1.0, 0, ((1,),))


@pytest.mark.parametrize(
    "samples, log_probs, error, match",
    [
        ([0, 1], np.log([0.5, 0.5]) + 0.1, ValueError, "log_probs does not normalise"),
        ([[0, 1]], np.log([0.5, 0.5]), ValueError, "1-D"),
        ([], np.log([0.5, 0.5]), ValueError, "empty"),
        ([0.0, 1.0], np.log([0.5, 0.5]), TypeError, "integers"),
        ([0, 2], np.log([0.5, 0.5]), ValueError, r"sample_indices\[1\] = 2"),
        ([0, 1, 1], np.log([0.5, 0.5]), ValueError, "draw more samples"),
        ([0] * 20, np.log([[0.5, 0.5]]), ValueError, "one law"),
    ],
)
def test_goodness_of_fit_rejects_bad_input(samples, log_probs, error, match):
    with pytest.raises(error, match=match):
        goodness_of_fit(samples, log_probs)


def test_goodness_of_fit_rejects_a_bad_min_expected():
    with pytest.raises(ValueError, match="min_expected"):
        goodness_of_fit([0, 1], np.log([0.5, 0.5]), min_expected=0)


def test_goodness_of_fit_accepts_torch_samples():
    torch = pytest.importorskip("torch")
    samples = bonmath.sample_bon(torch.tensor(REF), REWARDS, N, 500, 3)
    want = bon_sampler_test(samples.numpy(), REF, REWARDS, N)
    have = bon_sampler_test(samples, torch.tensor(REF), REWARDS, N)  # the law from torch: last-bit differences
    assert isinstance(have, GoodnessOfFit) and (have.cells, have.observed) == (want.cells, want.observed)
    assert have.p_value == pytest.approx(want.p_value, rel=RTOL_EXACT)


# ----------------------------------------------------------------- support_index


def test_support_index_maps_padded_rows_and_tuples():
    """Rows padded with PAD and tuples of token ids map to their positions, whatever the padding width."""
    lm = bonmath.TabularLM.random(vocab_size=3, max_len=3, rng=0)
    sequences, _ = lm.enumerate()
    samples = lm.sample(50, rng=1)
    have = support_index(sequences, samples)
    want = [next(i for i, s in enumerate(sequences) if np.array_equal(s, row)) for row in samples]
    assert have.tolist() == want
    as_tuples = [tuple(int(t) for t in row if t != bonmath.PAD) for row in sequences]
    assert support_index(as_tuples, samples).tolist() == want
    wide = np.pad(samples, ((0, 0), (0, 2)), constant_values=bonmath.PAD)
    assert support_index(sequences, wide).tolist() == want


def test_support_index_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    sequences = np.array([[0, -1], [1, 0], [1, 1]])
    assert support_index(torch.tensor(sequences), torch.tensor([[1, 1], [0, -1]])).tolist() == [2, 0]


def test_support_index_names_the_first_sample_outside_the_support():
    with pytest.raises(ValueError, match=r"samples\[1\] = \[2, 0\] is not in the support"):
        support_index([(0,), (1, 0)], [(1, 0), (2, 0), (3,)])
    with pytest.raises(ValueError, match=r"samples\[0\] = \[1, -1, 0\] is not"):  # PAD inside a string
        support_index([(0,), (1, 0)], [(1, -1, 0)])


def test_support_index_rejects_a_support_with_a_repeated_string():
    with pytest.raises(ValueError, match=r"twice \(positions 0 and 2\)"):
        support_index(np.array([[0, -1], [1, 0], [0, -1]]), [(0,)])


# ------------------------------------------------------------ without hypothesis


def test_module_example_runs_as_pasted():
    """The module docstring's example runs in an empty namespace: it imports all it uses."""
    test = doctest.DocTestParser().get_doctest(bonmath.testing.__doc__, {}, "bonmath.testing", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert len(test.examples) >= 8 and runner.failures == 0


def test_testing_imports_without_hypothesis_and_only_the_strategies_need_it():
    """With hypothesis unimportable, bonmath.testing imports, its oracles and goodness-of-fit
    work, and a strategy raises ImportError naming the ``test`` extra."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None
        from fractions import Fraction
        import numpy as np
        import bonmath.testing as t
        assert t.exact_bon([Fraction(1, 2)] * 2, [0, 1], 2) == [Fraction(1, 4), Fraction(3, 4)]
        assert t.goodness_of_fit([0, 1] * 10, np.log([0.5, 0.5])).p_value == 1.0
        for strategy, args in ((t.supports, ()), (t.policies, (3,)), (t.tabular_lms, ())):
            try:
                strategy(*args)
            except ImportError as err:
                assert "pip install bonmath[test]" in str(err), err
            else:
                raise AssertionError(f"{strategy.__name__} did not raise")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
