"""Claims about enumerated supports: strings travel with their log-probabilities.

:class:`bonmath.Enumeration` and :class:`bonmath.EnumeratedPair` keep which string
sits at which position; functions given two of them check that they agree.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from conftest import ATOL_LOG, ATOL_NORMALISATION

import bonmath
from bonmath.enumeration import PAD, Enumeration, string_keys

LOG_PROB_SUFFIX = "log_probs"
"""Parameters holding log-probabilities over the support end with this."""

VALUES = {
    "rewards": lambda size: np.arange(size) % 3,
    "n": lambda size: 3.0,
    "beta": lambda size: 0.5,
    "alpha": lambda size: 2.0,
    "weight": lambda size: 0.5,
}
"""Valid values of the other required arguments, by name (``size`` = support size)."""


def two_log_prob_functions():
    """Every public function of bonmath taking two or more log-probability arrays."""
    for name in bonmath.__all__:
        func = getattr(bonmath, name)
        if not inspect.isfunction(func):
            continue
        params = inspect.signature(func).parameters
        if sum(p.endswith(LOG_PROB_SUFFIX) for p in params) >= 2:
            yield name, func


def call_with(func, enumerations: dict[str, Enumeration], size: int):
    kwargs = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in enumerations:
            kwargs[name] = enumerations[name]
        elif param.default is not inspect.Parameter.empty:
            continue
        elif name in VALUES:
            kwargs[name] = VALUES[name](size)
        else:
            pytest.fail(f"{func.__name__}: add a valid value for its argument {name!r} to VALUES")
    return func(**kwargs)


@pytest.fixture(scope="module")
def lm_pair():
    policy = bonmath.TabularLM.random(3, 3, rng=1, temperature=0.7)
    reference = bonmath.TabularLM.random(3, 3, rng=2)
    return policy.enumerate(), reference.enumerate()


def test_two_log_prob_functions_exist():
    """The generated tests below cover a non-trivial set of functions."""
    names = [name for name, _ in two_log_prob_functions()]
    assert {"kl_divergence", "vbon_objective", "win_rate", "kl_rl_objective"} <= set(names)


@pytest.mark.parametrize("name, func", list(two_log_prob_functions()))
def test_every_function_taking_two_enumerations_refuses_misaligned_ones(name, func, lm_pair):
    """Two enumerations of the same strings in different orders are refused with a
    ValueError naming both arguments; aligned ones give the bare-array result."""
    policy, reference = lm_pair
    params = [p for p in inspect.signature(func).parameters if p.endswith(LOG_PROB_SUFFIX)]
    size = policy.support_size
    order = np.random.default_rng(0).permutation(size)
    shuffled = Enumeration(policy.sequences[order], policy.log_probs[order])
    aligned = {p: (reference if i == 1 else policy) for i, p in enumerate(params)}
    misaligned = {**aligned, params[1]: shuffled}
    with pytest.raises(ValueError) as err:
        call_with(func, misaligned, size)
    message = str(err.value)
    assert "different strings" in message
    assert params[0] in message and params[1] in message, f"{name} must name both arguments: {message}"
    have = call_with(func, aligned, size)
    want = call_with(func, {p: e.log_probs for p, e in aligned.items()}, size)
    np.testing.assert_array_equal(np.asarray(have), np.asarray(want))


def test_tabular_and_causal_lm_enumerations_share_one_type():
    """TabularLM.enumerate() returns an Enumeration: padded int strings, log-probs summing
    to 1, lengths, and it unpacks as (sequences, log_probs)."""
    lm = bonmath.TabularLM.random(4, 3, rng=0)
    support = lm.enumerate()
    assert isinstance(support, Enumeration)
    sequences, log_probs = support
    assert sequences is support.sequences and log_probs is support.log_probs
    assert sequences.dtype.kind == "i" and sequences.shape == (lm.num_sequences, 3)
    assert abs(float(np.logaddexp.reduce(log_probs))) < ATOL_NORMALISATION
    np.testing.assert_array_equal(support.lengths, (sequences != PAD).sum(1))
    np.testing.assert_allclose(lm.log_prob(sequences), log_probs, rtol=0, atol=ATOL_LOG)


def test_index_finds_every_string_and_names_one_that_is_missing():
    """index() inverts the support order, for padded rows and for tuples; a string outside
    the support raises ValueError naming it."""
    support = bonmath.TabularLM.random(3, 2, rng=0).enumerate()
    positions = np.random.default_rng(1).permutation(support.support_size)
    np.testing.assert_array_equal(support.index(support.sequences[positions]), positions)
    np.testing.assert_array_equal(support.index([(1, 2), (0,)]), [4, 0])
    with pytest.raises(ValueError, match=r"\[2, 2, 2\].*not in the support"):
        support.index([(0,), (2, 2, 2)])


def test_string_keys_refuse_a_token_after_pad():
    """A padded row must have PAD only after its last token."""
    assert string_keys(np.array([[1, 0, PAD]])) == [(1, 0)]
    with pytest.raises(ValueError, match="after PAD"):
        string_keys(np.array([[1, PAD, 0]]))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_tabular_pair_holds_both_models_on_one_support(backend):
    """enumerate_pair of two TabularLMs: one support, each model's enumerate() and per-token
    views on it; the policy's log-probabilities keep autograd with torch tables."""
    if backend == "torch":
        torch = pytest.importorskip("torch")
        rng = np.random.default_rng(0)
        logits = [torch.tensor(rng.standard_normal((2**t, 3)), requires_grad=True) for t in range(2)]
        policy = bonmath.TabularLM.from_logits(logits)
        reference = bonmath.TabularLM.from_logits([torch.tensor(rng.standard_normal((2**t, 3))) for t in range(2)])
    else:
        policy = bonmath.TabularLM.random(3, 2, rng=3, zero_prob=0.4)
        reference = bonmath.TabularLM.random(3, 2, rng=4)
    pair = bonmath.enumerate_pair(policy, reference)
    sequences, policy_log_probs = policy.enumerate()
    np.testing.assert_array_equal(np.asarray(pair.sequences), np.asarray(sequences))
    np.testing.assert_array_equal(bonmath.backend.to_numpy(pair.policy_log_probs),
                                  bonmath.backend.to_numpy(policy_log_probs))
    np.testing.assert_array_equal(bonmath.backend.to_numpy(pair.ref_log_probs),
                                  bonmath.backend.to_numpy(reference.enumerate().log_probs))
    values, mask = policy.token_log_probs(sequences)
    np.testing.assert_array_equal(np.asarray(pair.mask), np.asarray(mask))
    np.testing.assert_allclose(bonmath.backend.to_numpy(pair.token_log_probs.sum(-1)),
                               bonmath.backend.to_numpy(policy_log_probs), rtol=0, atol=ATOL_LOG)
    assert tuple(pair.token_distributions.shape) == (len(sequences), 2, 3)
    kl = bonmath.backend.to_numpy(pair.token_kl)
    assert (kl[np.asarray(mask)] >= -ATOL_LOG).all() and (kl[~np.asarray(mask)] == 0).all()
    if backend == "torch":
        assert pair.policy_log_probs.requires_grad and not pair.ref_log_probs.requires_grad


def test_tabular_pair_refuses_models_of_different_strings():
    """Different vocabularies or lengths cannot share a support."""
    with pytest.raises(ValueError, match="max_len"):
        bonmath.enumerate_pair(bonmath.TabularLM.random(3, 2, rng=0), bonmath.TabularLM.random(3, 3, rng=0))
    with pytest.raises(TypeError, match="TabularLM"):
        bonmath.enumerate_pair(bonmath.TabularLM.random(3, 2, rng=0), object())


def test_a_batch_of_tabular_pairs_stacks_on_a_leading_axis():
    """A list of policies and references gives a batch; core functions run on it unchanged
    and agree with each row computed alone."""
    policies = [bonmath.TabularLM.random(3, 2, rng=s, zero_prob=0.3) for s in range(3)]
    references = [bonmath.TabularLM.random(3, 2, rng=10 + s) for s in range(3)]
    batch = bonmath.enumerate_pair(policies, references)
    rewards = batch.lengths.astype(float)
    have = bonmath.vbon_objective(batch.policy, batch.reference, rewards, n=4)
    for b, (p, r) in enumerate(zip(policies, references)):
        single = bonmath.enumerate_pair(p, r)
        want = bonmath.vbon_objective(single.policy, single.reference, rewards[b], n=4)
        assert have[b] == pytest.approx(float(want), abs=ATOL_LOG)


def test_enumeration_stack_pads_with_pad_strings_of_minus_inf():
    """Supports of different sizes stack with PAD rows of log-probability -inf, and row()
    gives each back without its padding."""
    small = bonmath.TabularLM.random(3, 1, rng=0).enumerate()
    big = bonmath.TabularLM.random(3, 2, rng=0).enumerate()
    small = Enumeration(np.pad(small.sequences, ((0, 0), (0, 1)), constant_values=PAD), small.log_probs)
    batch = Enumeration.stack([small, big])
    assert batch.sequences.shape == (2, big.support_size, 2)
    assert (batch.log_probs[0, small.support_size:] == -math.inf).all()
    assert (batch.sequences[0, small.support_size:] == PAD).all()
    np.testing.assert_array_equal(batch.row(0).sequences, small.sequences)
    np.testing.assert_array_equal(batch.row(1).log_probs, big.log_probs)


def test_normalisation_error_says_why_and_points_to_enumerate_pair():
    """A policy restricted to the reference's strings does not normalise: the error gives the
    sum, says that mass outside the support makes J infinite, points to enumerate_pair, and
    describes normalize=True as a different distribution."""
    policy = np.log([0.5, 0.3])  # 0.2 of its mass lies on strings outside this support
    with pytest.raises(ValueError) as err:
        bonmath.vbon_objective(policy, np.log([0.5, 0.5]), [0, 1], n=2)
    message = str(err.value)
    assert "policy_log_probs" in message and "sum to 0.8" in message
    assert "enumerate_pair" in message and "infinite" in message and "different distribution" in message


@pytest.mark.parametrize("objective", ["vbon", "kl", "kl_rl"])
def test_exact_gradients_refuse_misaligned_enumerations(objective):
    """bonmath.estimators.objective_loss / exact_gradient given a policy and a reference
    enumerated in different orders raise ValueError naming both; aligned enumerations give
    the bare-tensor gradient."""
    torch = pytest.importorskip("torch")
    from bonmath.estimators import exact_gradient

    rng = np.random.default_rng(0)
    logits = [torch.tensor(rng.standard_normal((2**t, 3)), requires_grad=True) for t in range(2)]
    ref_logits = [torch.tensor(rng.standard_normal((2**t, 3))) for t in range(2)]
    pair = bonmath.enumerate_pair(bonmath.TabularLM.from_logits(logits), bonmath.TabularLM.from_logits(ref_logits))
    reference = pair.reference
    order = torch.as_tensor(rng.permutation(pair.policy.support_size))
    shuffled = Enumeration(reference.sequences[order], reference.log_probs[order])
    rewards = pair.lengths.to(torch.float64)
    kwargs = {"rewards": rewards, "n": 3.0}
    with pytest.raises(ValueError, match="policy_log_probs and ref_log_probs are enumerations of different"):
        exact_gradient(objective, pair.policy, shuffled, logits, **kwargs)
    have = exact_gradient(objective, pair.policy, reference, logits, **kwargs)
    want = exact_gradient(objective, pair.policy_log_probs, reference.log_probs, logits, **kwargs)
    assert torch.equal(have, want)
