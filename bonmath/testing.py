"""Brute-force oracles and hypothesis strategies for property-testing Best-of-N code.

bonmath's own tests use these; other research code can use them to test its BoN
implementation against ground truth::

    from hypothesis import given
    from bonmath.testing import supports, brute_force_bon

    @given(supports(), st.integers(1, 4))
    def test_my_bon(support, n):
        want = brute_force_bon(support.probs, support.rewards, n)
        have = my_bon(support.ref_log_probs, support.rewards_array, n)
        ...

The oracles work with exact rationals (:class:`fractions.Fraction`) or mpmath at
high precision and share no code with the fast implementations. They are meant
for tiny supports: ``brute_force_bon`` enumerates all k^n tuples of draws.
Requires hypothesis (``pip install bonmath[test]``).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from bonmath.backend import InputTypeError, float_array
from bonmath.tabular import TabularLM
from bonmath.validation import check_count, check_flag, check_n, check_positive

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
    """F_lt(y) and F_le(y) for every y, by summing over the support."""
    probs = _exact_probs(probs, "probs")
    rewards = _exact_rewards(rewards, len(probs))
    lt = [sum((p for p, s in zip(probs, rewards) if s < r), Fraction(0)) for r in rewards]
    le = [sum((p for p, s in zip(probs, rewards) if s <= r), Fraction(0)) for r in rewards]
    return lt, le


def brute_force_bon(probs: Sequence[Fraction], rewards: Sequence[float], n: int) -> list[Fraction]:
    """The BoN law by enumerating every n-tuple of reference draws.

    Each tuple has probability Π p(y_i); the returned draw is uniform among the
    draws of maximal reward. Exact, and O(k^n): keep k^n below ~10^5.
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
    """The tie-aware closed form π_ref(y)/q(y) · (F_le^n - F_lt^n) in exact rationals (integer n)."""
    n = check_count(n, "n")
    lt, le = exact_cdf(probs, rewards)
    probs = _exact_probs(probs, "probs")
    return [p * (b**n - a**n) / (b - a) if p else Fraction(0) for p, a, b in zip(probs, lt, le)]


def paper_bon(probs: Sequence[Fraction], rewards: Sequence[float], n: int) -> list[Fraction]:
    """The vBoN paper's Proposition: Σ_{i=1..n} C(n,i) F_lt(y)^(n-i) π_ref(y)^i.

    Correct only when no two strings with mass share a reward; with ties its
    values do not sum to 1.
    """
    n = check_count(n, "n")
    lt, _ = exact_cdf(probs, rewards)
    probs = _exact_probs(probs, "probs")
    return [sum(math.comb(n, i) * f ** (n - i) * p**i for i in range(1, n + 1)) for p, f in zip(probs, lt)]


def exact_win_rate(p: Sequence[Fraction], q: Sequence[Fraction], rewards: Sequence[float]) -> Fraction:
    """P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')), Y ~ p, Y' ~ q, by the double sum."""
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
    """
    import mpmath

    log_probs = float_array(log_probs, np, name="log_probs")
    if log_probs.ndim != 1 or not log_probs.size or np.isnan(log_probs).any() or (log_probs == math.inf).any():
        raise ValueError("log_probs must be a non-empty 1-D array of log-weights, without NaN or +inf")
    if (log_probs == -math.inf).all():
        raise ValueError("log_probs has no mass (every entry is -inf)")
    rewards = _exact_rewards(rewards, len(log_probs), "log_probs")
    n = check_n(n)
    dps = check_count(dps, "dps")

    with mpmath.workdps(dps):
        weights = [mpmath.exp(mpmath.mpf(x)) if x != -math.inf else mpmath.mpf(0) for x in log_probs]
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


# ---------------------------------------------------------- hypothesis strategies


@dataclass(frozen=True)
class Support:
    """A tiny enumerated support with exact masses.

    Attributes
    ----------
    weights : tuple of int
        Unnormalised integer masses; 0 marks a zero-mass string.
    rewards : tuple of int
        Small integers, so that ties are frequent.
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
    """
    min_size = check_count(min_size, "min_size")
    return _supports(
        min_size,
        check_count(max_size, "max_size", minimum=min_size),
        check_count(max_weight, "max_weight"),
        check_count(num_rewards, "num_rewards"),
        check_flag(zero_mass, "zero_mass"),
    )


@st.composite
def _supports(draw, min_size: int, max_size: int, max_weight: int, num_rewards: int, zero_mass: bool) -> Support:
    size = draw(st.integers(min_size, max_size))
    weights = draw(st.lists(st.integers(0 if zero_mass else 1, max_weight), min_size=size, max_size=size))
    if sum(weights) == 0:
        weights[draw(st.integers(0, size - 1))] = 1
    rewards = draw(st.lists(st.integers(0, num_rewards - 1), min_size=size, max_size=size))
    return Support(tuple(weights), tuple(rewards))


def policies(size: int, zero_mass: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Log-probabilities of a random policy on a support of ``size`` strings."""
    return _policies(check_count(size, "size"), check_flag(zero_mass, "zero_mass"))


@st.composite
def _policies(draw, size: int, zero_mass: bool) -> np.ndarray:
    weights = draw(st.lists(st.integers(0 if zero_mass else 1, 5), min_size=size, max_size=size))
    if sum(weights) == 0:
        weights[0] = 1
    with np.errstate(divide="ignore"):
        return np.log(np.array(weights, dtype=np.float64) / sum(weights))


def tabular_lms(max_vocab: int = 4, max_len: int = 3, zero_prob: bool = True) -> st.SearchStrategy[TabularLM]:
    """Random :class:`bonmath.TabularLM` s, some with zero-probability tokens."""
    return _tabular_lms(
        check_count(max_vocab, "max_vocab", minimum=2), check_count(max_len, "max_len"), check_flag(zero_prob, "zero_prob")
    )


@st.composite
def _tabular_lms(draw, max_vocab: int, max_len: int, zero_prob: bool) -> TabularLM:
    return TabularLM.random(
        vocab_size=draw(st.integers(2, max_vocab)),
        max_len=draw(st.integers(1, max_len)),
        seed=draw(st.integers(0, 2**32 - 1)),
        temperature=draw(st.sampled_from([0.5, 1.0, 2.0])),
        zero_prob=draw(st.sampled_from([0.0, 0.3])) if zero_prob else 0.0,
    )


# ------------------------------------------------------- tiny Hugging Face models


def tiny_gpt2_policy_pair(
    vocab_size: int,
    max_new_tokens: int,
    seed: int,
    scale: float = 10.0,
    noise: float = 0.5,
    prompt: tuple[int, ...] = (1, 2, 3),
):
    """A seeded tiny GPT-2 reference and a perturbed trainable copy, as CausalLMPolicy.

    Parameters
    ----------
    vocab_size, max_new_tokens : int
        EOS is the last token id; continuations have at most ``max_new_tokens`` tokens.
    seed : int
        Seeds the reference weights (``seed`` >= 0) and the perturbation (``seed + 1``).
    scale : float
        Factor > 0 on the (tied) token embeddings: next-token distributions far from uniform.
    noise : float
        Policy = reference + ``noise`` · std(parameter) · N(0, 1) per parameter (noise >= 0).
    prompt : tuple of int
        Token ids in [0, vocab_size).

    Returns
    -------
    policy, ref : bonmath.hf.CausalLMPolicy
        float64 models built from ``GPT2Config`` (nothing downloaded); the policy is
        truncated to top_k = V - 1 and keeps autograd, the reference's weights are frozen.
    """
    import copy

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bonmath.hf import CausalLMPolicy

    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    seed = check_count(seed, "seed", minimum=0)
    scale = check_positive(scale, "scale")
    noise = check_positive(noise, "noise", inclusive=True)
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt:
        raise InputTypeError(f"prompt must be a non-empty sequence of token ids; got {prompt!r}")
    if not all(0 <= check_count(t, "prompt", minimum=0) < vocab_size for t in prompt):
        raise ValueError(f"prompt must hold token ids in [0, vocab_size = {vocab_size}); got {prompt!r}")
    config = GPT2Config(vocab_size=vocab_size, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=vocab_size - 1)
    torch.manual_seed(seed)
    ref_model = GPT2LMHeadModel(config)
    with torch.no_grad():
        ref_model.transformer.wte.weight.mul_(scale)  # tied to lm_head: far from uniform
    ref_model = ref_model.to(torch.float64).eval()
    policy_model = copy.deepcopy(ref_model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy_model.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    for p in ref_model.parameters():
        p.requires_grad_(False)
    policy = CausalLMPolicy(policy_model, prompt, max_new_tokens, top_k=vocab_size - 1)
    return policy, CausalLMPolicy(ref_model, prompt, max_new_tokens)
