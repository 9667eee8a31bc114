"""Brute-force oracles, goodness-of-fit tests and hypothesis strategies for Best-of-N code.

bonmath's own tests use these; other research code can use them to test its BoN
implementation against ground truth. A property test of a BoN law (here bonmath's
own, in place of yours) against the enumeration of every tuple of draws:

>>> import numpy as np
>>> from hypothesis import given, settings, strategies as st
>>> import bonmath
>>> from bonmath.testing import bon_sampler_test, brute_force_bon, supports
>>> @settings(max_examples=30, deadline=None)
... @given(supports(max_size=4), st.integers(1, 3))
... def test_my_bon(support, n):
...     want = [float(p) for p in brute_force_bon(support.probs, support.rewards, n)]
...     have = np.exp(bonmath.bon_log_probs(support.ref_log_probs, support.rewards_array, n))
...     np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-15)
>>> test_my_bon()

A BoN *sampler* is checked against the exact law by a χ² test of the support
indices it returns (:func:`bon_sampler_test`; :func:`support_index` maps sampled
strings to those indices):

>>> ref, rewards = np.log([0.4, 0.3, 0.2, 0.1]), [0.0, 1.0, 1.0, 2.0]
>>> samples = bonmath.sample_bon(ref, rewards, n=4, size=2000, rng=0)  # your sampler here
>>> result = bon_sampler_test(samples, ref, rewards, n=4)
>>> result.dof, bool(result.p_value > 1e-3)
(3, True)

The oracles work with exact rationals (:class:`fractions.Fraction`) or mpmath at
high precision and share no code with the fast implementations. They are meant
for tiny supports: ``brute_force_bon`` enumerates all k^n tuples of draws.
Only the strategies (:func:`supports`, :func:`policies`, :func:`tabular_lms`) need
hypothesis (``pip install bonmath[test]``); the oracles and the goodness-of-fit
tests work without it.

(Over 400 lines on purpose: the oracles, the sampler tests and the hypothesis strategies
that tests and users share; over 40 % is docstrings.)
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.stats import chi2

from bonmath.backend import (
    NEG_INF,
    Array,
    InputTypeError,
    float_array,
    is_torch,
    masked_ieee,
    namespace,
    to_numpy,
)
from bonmath.bon import bon_log_probs
from bonmath.enumeration import positions_of, string_positions
from bonmath.tabular import TabularLM
from bonmath.validation import (
    check_count,
    check_flag,
    check_log_probs,
    check_n,
    check_positive,
    prepare,
)

try:
    from hypothesis import strategies as st
except ImportError:  # only the strategies need hypothesis
    st = None  # type: ignore[assignment]  # the strategies check for None and raise ImportError

__all__ = [
    "GoodnessOfFit",
    "Support",
    "bon_sampler_test",
    "brute_force_bon",
    "exact_bon",
    "exact_cdf",
    "exact_win_rate",
    "goodness_of_fit",
    "mp_bon_log_probs",
    "paper_bon",
    "policies",
    "support_index",
    "supports",
    "tabular_lms",
]

# ---------------------------------------------------------------- exact oracles


def _exact_probs(probs: Any, name: str) -> list[Fraction]:
    """A distribution in exact rationals: Fractions (or ints), each >= 0, summing to 1."""
    if isinstance(probs, (str, bytes)) or not isinstance(probs, (Sequence, np.ndarray)) or len(probs) == 0:
        raise InputTypeError(f"{name} must be a non-empty sequence of Fractions; got {probs!r}")
    if not all(isinstance(p, numbers.Rational) and not isinstance(p, bool) for p in probs):
        raise InputTypeError(f"{name} must hold exact rationals (Fraction or int); got {list(probs)!r}")
    if any(p < 0 for p in probs) or sum(probs) != 1:
        raise ValueError(f"{name} must be a distribution: non-negative and summing to exactly 1")
    return [Fraction(p) for p in probs]


def _exact_rewards(rewards: Any, size: int, support: str = "probs") -> list:
    """Rewards as a list of real numbers (bools, ints, Fractions, floats; ±inf; no NaN), one
    per entry of the argument ``support`` (``size`` entries)."""
    if isinstance(rewards, (str, bytes)) or not isinstance(rewards, (Sequence, np.ndarray)):
        raise InputTypeError(f"rewards must be a sequence of real numbers; got {rewards!r}")
    values = list(rewards)
    if not all(isinstance(r, (numbers.Real, np.bool_)) for r in values):
        raise InputTypeError(f"rewards must hold real numbers; got {values!r}")
    if any(r != r for r in values):
        raise ValueError("rewards contains NaN")
    if len(values) != size:
        raise ValueError(f"rewards has {len(values)} entries, {support} has {size}")
    return values


def exact_cdf(probs: Sequence[Fraction], rewards: Sequence[float]) -> tuple[list[Fraction], list[Fraction]]:
    """F_lt(y) and F_le(y) for every y, by summing over the support.

    Examples
    --------
    >>> from fractions import Fraction
    >>> exact_cdf([Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)], [0, 1, 1])
    ([Fraction(0, 1), Fraction(1, 2), Fraction(1, 2)], [Fraction(1, 2), Fraction(1, 1), Fraction(1, 1)])
    """
    probs = _exact_probs(probs, "probs")
    rewards = _exact_rewards(rewards, len(probs))
    lt = [sum((p for p, s in zip(probs, rewards) if s < r), Fraction(0)) for r in rewards]
    le = [sum((p for p, s in zip(probs, rewards) if s <= r), Fraction(0)) for r in rewards]
    return lt, le


def brute_force_bon(probs: Sequence[Fraction], rewards: Sequence[float], n: int) -> list[Fraction]:
    """The BoN law by enumerating every n-tuple of reference draws.

    Each tuple has probability Π p(y_i); the returned draw is uniform among the
    draws of maximal reward. Exact, and O(k^n): keep k^n below ~10^5.

    Examples
    --------
    >>> from fractions import Fraction
    >>> brute_force_bon([Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)], [0, 1, 1], 2)
    [Fraction(1, 4), Fraction(3, 8), Fraction(3, 8)]
    """
    probs = _exact_probs(probs, "probs")
    rewards = _exact_rewards(rewards, len(probs))
    n = check_count(n, "n")
    if n * math.log(len(probs)) > math.log(10**6):
        raise ValueError(f"k^n = {len(probs) ** n} tuples is too many for brute force")
    law = [Fraction(0)] * len(probs)
    for draws in itertools.product(range(len(probs)), repeat=n):
        weight = math.prod((probs[i] for i in draws), start=Fraction(1))
        if weight == 0:
            continue
        best = max(rewards[i] for i in draws)
        winners = [i for i in draws if rewards[i] == best]
        for i in winners:
            law[i] += weight / len(winners)
    return law


def exact_bon(probs: Sequence[Fraction], rewards: Sequence[float], n: int) -> list[Fraction]:
    """The tie-aware closed form π_ref(y)/q(y) · (F_le^n - F_lt^n) in exact rationals (integer n).

    Examples
    --------
    >>> from fractions import Fraction
    >>> exact_bon([Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)], [0, 1, 1], 2)
    [Fraction(1, 4), Fraction(3, 8), Fraction(3, 8)]
    """
    n = check_count(n, "n")
    lt, le = exact_cdf(probs, rewards)
    probs = _exact_probs(probs, "probs")
    return [p * (b**n - a**n) / (b - a) if p else Fraction(0) for p, a, b in zip(probs, lt, le)]


def paper_bon(probs: Sequence[Fraction], rewards: Sequence[float], n: int) -> list[Fraction]:
    """The vBoN paper's Proposition: Σ_{i=1..n} C(n,i) F_lt(y)^(n-i) π_ref(y)^i.

    Correct only when no two strings with mass share a reward; with ties its
    values do not sum to 1.

    Examples
    --------
    With tied rewards the injective formula does not normalise:

    >>> from fractions import Fraction
    >>> law = paper_bon([Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)], [0, 1, 1], 2)
    >>> law, sum(law)
    ([Fraction(1, 4), Fraction(5, 16), Fraction(5, 16)], Fraction(7, 8))
    """
    n = check_count(n, "n")
    lt, _ = exact_cdf(probs, rewards)
    probs = _exact_probs(probs, "probs")
    return [sum((math.comb(n, i) * f ** (n - i) * p**i for i in range(1, n + 1)), Fraction(0)) for p, f in zip(probs, lt)]


def exact_win_rate(p: Sequence[Fraction], q: Sequence[Fraction], rewards: Sequence[float]) -> Fraction:
    """P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')), Y ~ p, Y' ~ q, by the double sum.

    Examples
    --------
    >>> from fractions import Fraction
    >>> half = [Fraction(1, 2), Fraction(1, 2)]
    >>> exact_win_rate([Fraction(1, 4), Fraction(3, 4)], half, [0, 1])  # BoN_2 against the reference
    Fraction(5, 8)
    """
    p, q = _exact_probs(p, "p"), _exact_probs(q, "q")
    if len(p) != len(q):
        raise ValueError(f"p and q must share one support; they have {len(p)} and {len(q)} entries")
    rewards = _exact_rewards(rewards, len(p), "p and q")
    total = Fraction(0)
    for pi, ri in zip(p, rewards):
        for qj, rj in zip(q, rewards):
            total += pi * qj * (1 if ri > rj else Fraction(1, 2) if ri == rj else 0)
    return total


def mp_bon_log_probs(log_probs: Sequence[float], rewards: Sequence[float], n: float, dps: int = 420) -> list:
    """log π_N by the naive formula p/q (F_le^n - F_lt^n) in mpmath at ``dps`` digits.

    The float log-probabilities are taken as exact and renormalised in mpmath. The
    precision must cover the cancellation in F_le^n - F_lt^n: 420 digits handle
    atoms down to 1e-350. Returns mpmath numbers (-inf for zero mass).

    Examples
    --------
    >>> import math
    >>> [float(x) for x in mp_bon_log_probs([math.log(0.5), math.log(0.5)], [0.0, 1.0], 2)]
    [-1.3862943611198906, -0.2876820724517809]
    """
    import mpmath

    log_weights = float_array(log_probs, np, name="log_probs")
    if log_weights.ndim != 1 or not log_weights.size or np.isnan(log_weights).any() or (log_weights == math.inf).any():
        raise ValueError("log_probs must be a non-empty 1-D array of log-weights, without NaN or +inf")
    if (log_weights == -math.inf).all():
        raise ValueError("log_probs has no mass (every entry is -inf)")
    rewards = _exact_rewards(rewards, len(log_weights), "log_probs")
    n = check_n(n)
    dps = check_count(dps, "dps")

    with mpmath.workdps(dps):
        weights = [mpmath.exp(mpmath.mpf(x)) if x != -math.inf else mpmath.mpf(0) for x in log_weights]
        total = mpmath.fsum(weights)
        probs = [w / total for w in weights]
        out = []
        for p, r in zip(probs, rewards):
            if p == 0:
                out.append(mpmath.mpf("-inf"))
                continue
            lt = mpmath.fsum(w for w, s in zip(probs, rewards) if s < r)
            q = mpmath.fsum(w for w, s in zip(probs, rewards) if s == r)
            le = lt + q
            out.append(mpmath.log(p / q * (mpmath.power(le, n) - mpmath.power(lt, n))))
        return out


# ------------------------------------------------------------- goodness of fit


@dataclass(frozen=True)
class GoodnessOfFit:
    """The result of a Pearson χ² test of sampled support indices against an exact law.

    Attributes
    ----------
    p_value : float
        P(χ²_dof >= statistic) under the law; exactly 0.0 when a sample has
        probability 0 (then ``impossible_index`` names it).
    statistic : float
        Σ over cells of (observed - expected)² / expected; +inf when a sample has
        probability 0.
    dof : int
        Number of cells - 1 (0 for a law with one string of positive probability,
        or when a sample has probability 0).
    cells : tuple of tuple of int
        The support indices pooled into each cell (see :func:`goodness_of_fit`);
        empty when a sample has probability 0.
    observed : tuple of int
        Samples in each cell.
    expected : tuple of float
        size · (law's mass of the cell), each >= ``min_expected`` unless there is one cell.
    impossible_index : int or None
        The first sampled support index (in sample order) whose probability is 0.

    Examples
    --------
    A sample the law cannot draw is reported, not tested:

    >>> import numpy as np
    >>> fit = goodness_of_fit(np.array([0, 1, 2]), np.array([np.log(0.5), np.log(0.5), -np.inf]))
    >>> fit.p_value, fit.statistic, fit.impossible_index
    (0.0, inf, 2)
    """

    p_value: float
    statistic: float
    dof: int
    cells: tuple[tuple[int, ...], ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    impossible_index: int | None = None

    def rejects(self, alpha: float) -> bool:
        """Whether the test at level ``alpha`` rejects the law (p-value < alpha)."""
        return self.p_value < check_positive(alpha, "alpha")


def _pool_cells(expected: np.ndarray, positive: np.ndarray, min_expected: float) -> list[list[int]]:
    """Cells of support indices with expected counts >= ``min_expected`` (see :func:`goodness_of_fit`)."""
    candidates = np.flatnonzero(positive)
    order = candidates[np.argsort(expected[candidates], kind="stable")]
    cells: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for index in order.tolist():
        current.append(index)
        total += expected[index]
        if total >= min_expected:
            cells.append(current)
            current, total = [], 0.0
    if current:  # a last group short of min_expected joins the cell before it
        if cells:
            cells[-1].extend(current)
        else:
            cells.append(current)
    return cells


def _sample_indices(sample_indices: Any, num_strings: int) -> np.ndarray:
    values = to_numpy(sample_indices) if is_torch(sample_indices) else np.asarray(sample_indices)
    if values.ndim != 1:
        raise ValueError(f"sample_indices must be 1-D (one support index per sample); got shape {values.shape}")
    if values.size == 0:
        raise ValueError("sample_indices is empty: the test needs samples")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"sample_indices must hold integers (support indices); got dtype {values.dtype}")
    outside = (values < 0) | (values >= num_strings)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"sample_indices[{first}] = {int(values[first])} is not a support index in [0, {num_strings})"
        )
    return values.astype(np.int64)


@masked_ieee
def goodness_of_fit(sample_indices: Array, log_probs: Array, *, min_expected: float = 5.0) -> GoodnessOfFit:
    """Pearson's χ² test that i.i.d. samples of support indices follow the law ``exp(log_probs)``.

    Parameters
    ----------
    sample_indices : int array of shape (size,)
        Support indices of the samples (numpy, torch or a list); :func:`support_index`
        maps sampled strings to them.
    log_probs : array of shape (k,)
        The exact law on the support (normalised; -inf for strings of probability 0).
    min_expected : float, default 5
        Smallest expected count of a cell (the usual rule for the χ² approximation).

    Returns
    -------
    GoodnessOfFit
        p-value, statistic, degrees of freedom and the pooled cells.

    Notes
    -----
    Cells. Strings of probability 0 are not cells: a sample on one of them gives
    p-value 0 exactly (``impossible_index``). The other strings are taken in
    increasing order of expected count size · p (ties in index order) and pooled
    greedily: a cell collects strings until its expected count reaches
    ``min_expected``, then the next cell starts; a last group that falls short
    joins the cell before it. Every cell then has expected count >= ``min_expected``,
    strings that already have it stay alone, and the pooling depends on the law and
    the size only, never on the samples. Fewer than two cells is refused (draw more
    samples), unless only one string has positive probability (then p = 1).

    Statistic and p-value. X² = Σ_cells (O - E)²/E, compared with χ² with
    (cells - 1) degrees of freedom: p = P(χ²_dof >= X²). Under the law the p-value
    is approximately uniform, so a test at level α alarms with probability ≈ α
    (``tests/test_testing.py`` checks this on 400 runs of :func:`bonmath.sample_bon`).
    Against a wrong law p', X² is approximately noncentral χ² with noncentrality
    λ = size · Σ_cells (p'_c - p_c)²/p_c, so the power at level α is about
    ``scipy.stats.ncx2.sf(chi2.isf(α, dof), dof, λ)``: it grows linearly in the size.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> law = np.log([0.5, 0.3, 0.2])
    >>> samples = rng.choice(3, size=1000, p=[0.5, 0.3, 0.2])
    >>> bool(goodness_of_fit(samples, law).p_value > 1e-3)
    True
    >>> goodness_of_fit(samples, np.log([0.3, 0.5, 0.2])).p_value < 1e-10
    True
    >>> goodness_of_fit([0, 2], [np.log(0.5), np.log(0.5), -np.inf]).impossible_index
    2
    """
    min_expected = check_positive(min_expected, "min_expected")
    log_probs = check_log_probs(float_array(to_numpy(log_probs), namespace(), name="log_probs"), "log_probs", namespace())
    if log_probs.ndim != 1:
        raise ValueError(f"log_probs must be one law of shape (k,); got shape {log_probs.shape}")
    samples = _sample_indices(sample_indices, log_probs.shape[0])
    positive = log_probs > NEG_INF
    impossible = ~positive[samples]
    if impossible.any():
        index = int(samples[np.flatnonzero(impossible)[0]])
        return GoodnessOfFit(0.0, math.inf, 0, (), (), (), impossible_index=index)
    probs = np.exp(log_probs)
    expected = samples.size * probs / probs.sum()
    counts = np.bincount(samples, minlength=log_probs.shape[0])
    cells = _pool_cells(expected, positive, min_expected)
    if len(cells) < 2 and np.count_nonzero(positive) > 1:
        raise ValueError(
            f"{samples.size} samples leave fewer than two cells with expected count >= "
            f"min_expected={min_expected:g}: draw more samples"
        )
    observed = np.array([counts[cell].sum() for cell in cells])
    cell_expected = np.array([expected[cell].sum() for cell in cells])
    statistic = float(np.sum((observed - cell_expected) ** 2 / cell_expected))
    dof = len(cells) - 1
    p_value = float(chi2.sf(statistic, dof)) if dof > 0 else 1.0
    return GoodnessOfFit(
        p_value=p_value,
        statistic=statistic,
        dof=dof,
        cells=tuple(tuple(cell) for cell in cells),
        observed=tuple(int(o) for o in observed),
        expected=tuple(float(e) for e in cell_expected),
    )


def bon_sampler_test(
    sample_indices: Array,
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    *,
    min_expected: float = 5.0,
    normalize: bool = False,
) -> GoodnessOfFit:
    """χ² test that a Best-of-N sampler's outputs follow the exact BoN law (ties included).

    Parameters
    ----------
    sample_indices : int array of shape (size,)
        Support indices of i.i.d. outputs of the sampler under test (BoN with ``n``
        draws from the reference); :func:`support_index` maps strings to them.
    ref_log_probs : array of shape (k,)
        log π_ref over the enumerated support.
    rewards : array of shape (k,)
    n : float
        BoN samples.
    min_expected : float, default 5
        See :func:`goodness_of_fit`.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    GoodnessOfFit
        :func:`goodness_of_fit` against :func:`bonmath.bon_log_probs`.

    Notes
    -----
    Under a correct sampler the p-value is approximately uniform: at level α the
    test alarms in about a fraction α of runs. Common mistakes give a different law
    and are detected with a power that grows with the number of samples (see
    :func:`goodness_of_fit` for the noncentral-χ² prediction): breaking ties by a
    preference among *strings* (e.g. the smallest support index, rather than the
    first maximising draw), drawing N - 1 instead of N, or sampling the vBoN
    paper's injective formula (normalised) where strings tie. On the tied
    4-string support of ``tests/test_testing.py`` (π_ref = (0.4, 0.3, 0.2, 0.1),
    rewards (0, 1, 1, 2), N = 4), 2000 samples give noncentralities λ = 290, 150
    and 256 for these three: power above 1 - 1e-12 at α = 0.05. At 60, 150 and 60
    samples the predicted powers 0.73, 0.41 and 0.63 match the alarm rates of 400
    seeded runs there (0.75, 0.43, 0.65).

    Examples
    --------
    >>> import numpy as np
    >>> import bonmath
    >>> ref, rewards = np.log([0.5, 0.25, 0.25]), [0.0, 1.0, 1.0]
    >>> samples = bonmath.sample_bon(ref, rewards, n=2, size=1000, rng=1)
    >>> bool(bon_sampler_test(samples, ref, rewards, n=2).p_value > 1e-3)
    True
    >>> bon_sampler_test(samples, ref, rewards, n=3).p_value < 1e-6  # the wrong N
    True
    """
    _, (ref_log_probs, rewards) = prepare({"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize)
    if ref_log_probs.ndim != 1:
        raise ValueError(f"ref_log_probs and rewards must be one support of shape (k,); got shape {tuple(ref_log_probs.shape)}")
    law = to_numpy(bon_log_probs(ref_log_probs, rewards, n)).astype(np.float64)
    law = law - np.logaddexp.reduce(law)  # a bfloat16 reference's law, renormalised in float64
    return goodness_of_fit(sample_indices, law, min_expected=min_expected)


def support_index(sequences: Any, samples: Any) -> np.ndarray:
    """Positions of sampled strings in an enumerated support given as a bare array.

    With an :class:`bonmath.Enumeration` use its ``index`` method; this is the same
    lookup for users who keep the strings themselves.

    Parameters
    ----------
    sequences : int array of shape (S, T) or sequence of S sequences of int
        The enumerated support: rows padded with ``PAD = -1`` (as
        :meth:`bonmath.TabularLM.enumerate` returns), or tuples of token ids (as
        ``bonmath.hf.CausalLMPolicy.enumerate`` returns); numpy or torch.
    samples : int array of shape (m, T') or sequence of m sequences of int
        The sampled strings, in either form (the padding width may differ).

    Returns
    -------
    int64 array of shape (m,)
        ``out[i]`` is the position of ``samples[i]`` in ``sequences``.

    Raises
    ------
    ValueError
        Naming the first sample that is not in the support, or two positions of
        ``sequences`` holding the same string.

    Examples
    --------
    >>> support = [(0,), (1, 0), (1, 1)]
    >>> support_index(support, [(1, 1), (0,), (1, 1)]).tolist()
    [2, 0, 2]
    >>> support_index(np.array([[0, -1], [1, 0], [1, 1]]), np.array([[1, 0], [0, -1]])).tolist()
    [1, 0]
    """
    return positions_of(string_positions(sequences, "sequences"), samples, "samples")


# ---------------------------------------------------------- hypothesis strategies


def _strategy(func):
    """``hypothesis.strategies.composite(func)``, or without hypothesis a stand-in that
    raises ImportError when called (importing this module does not need hypothesis)."""
    if st is not None:
        return st.composite(func)

    @functools.wraps(func)
    def needs_hypothesis(*args, **kwargs):
        raise ImportError(
            f"bonmath.testing.{func.__name__.lstrip('_')} is a hypothesis strategy and needs hypothesis: "
            "pip install bonmath[test]"
        )

    return needs_hypothesis


@dataclass(frozen=True)
class Support:
    """A tiny enumerated support with exact masses.

    Attributes
    ----------
    weights : tuple of int
        Unnormalised integer masses; 0 marks a zero-mass string.
    rewards : tuple of int
        Small integers, so that ties are frequent.

    Examples
    --------
    >>> support = Support(weights=(1, 0, 3), rewards=(0, 1, 1))
    >>> [str(p) for p in support.probs], support.ref_log_probs.tolist()
    (['1/4', '0', '3/4'], [-1.386294, -inf, -0.287682])
    """

    weights: tuple[int, ...]
    rewards: tuple[int, ...]

    @property
    def probs(self) -> list[Fraction]:
        total = sum(self.weights)
        return [Fraction(w, total) for w in self.weights]

    @property
    def ref_log_probs(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(np.array(self.weights, dtype=np.float64)) - math.log(sum(self.weights))

    @property
    def rewards_array(self) -> np.ndarray:
        return np.array(self.rewards, dtype=np.float64)


def supports(
    min_size: int = 1,
    max_size: int = 6,
    max_weight: int = 5,
    num_rewards: int = 3,
    zero_mass: bool = True,
) -> st.SearchStrategy[Support]:
    """Supports of ``min_size..max_size`` strings with tied rewards and zero-mass strings.

    Weights are integers in [0 or 1, max_weight] (at least one positive), rewards
    integers in [0, num_rewards): with few reward values, ties are the rule. The
    arguments are checked here, not when a support is drawn.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=20, derandomize=True, database=None)
    ... @given(supports(max_size=4, num_rewards=2))
    ... def check(support):
    ...     assert sum(support.probs) == 1 and set(support.rewards) <= {0, 1}
    >>> check()
    """
    min_size = check_count(min_size, "min_size")
    return _supports(
        min_size,
        check_count(max_size, "max_size", minimum=min_size),
        check_count(max_weight, "max_weight"),
        check_count(num_rewards, "num_rewards"),
        check_flag(zero_mass, "zero_mass"),
    )


@_strategy
def _supports(draw, min_size: int, max_size: int, max_weight: int, num_rewards: int, zero_mass: bool) -> Support:
    size = draw(st.integers(min_size, max_size))
    weights = draw(st.lists(st.integers(0 if zero_mass else 1, max_weight), min_size=size, max_size=size))
    if sum(weights) == 0:
        weights[draw(st.integers(0, size - 1))] = 1
    rewards = draw(st.lists(st.integers(0, num_rewards - 1), min_size=size, max_size=size))
    return Support(tuple(weights), tuple(rewards))


def policies(size: int, zero_mass: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Log-probabilities of a random policy on a support of ``size`` strings.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=20, derandomize=True, database=None)
    ... @given(policies(3))
    ... def check(log_probs):
    ...     assert log_probs.shape == (3,) and abs(np.exp(log_probs).sum() - 1) < 1e-12
    >>> check()
    """
    return _policies(check_count(size, "size"), check_flag(zero_mass, "zero_mass"))


@_strategy
def _policies(draw, size: int, zero_mass: bool) -> np.ndarray:
    weights = draw(st.lists(st.integers(0 if zero_mass else 1, 5), min_size=size, max_size=size))
    if sum(weights) == 0:
        weights[0] = 1
    with np.errstate(divide="ignore"):
        return np.log(np.array(weights, dtype=np.float64) / sum(weights))


def tabular_lms(max_vocab: int = 4, max_len: int = 3, zero_prob: bool = True) -> st.SearchStrategy[TabularLM]:
    """Random :class:`bonmath.TabularLM` s, some with zero-probability tokens.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=10, derandomize=True, database=None, deadline=None)
    ... @given(tabular_lms(max_vocab=3, max_len=2))
    ... def check(lm):
    ...     assert abs(np.exp(lm.enumerate().log_probs).sum() - 1) < 1e-12
    >>> check()
    """
    return _tabular_lms(
        check_count(max_vocab, "max_vocab", minimum=2), check_count(max_len, "max_len"), check_flag(zero_prob, "zero_prob")
    )


@_strategy
def _tabular_lms(draw, max_vocab: int, max_len: int, zero_prob: bool) -> TabularLM:
    return TabularLM.random(
        vocab_size=draw(st.integers(2, max_vocab)),
        max_len=draw(st.integers(1, max_len)),
        rng=draw(st.integers(0, 2**32 - 1)),
        temperature=draw(st.sampled_from([0.5, 1.0, 2.0])),
        zero_prob=draw(st.sampled_from([0.0, 0.3])) if zero_prob else 0.0,
    )


