"""The model zoo (:mod:`bonmath.zoo`) that the estimator tests, benchmark and figure share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ATOL_LOG

torch = pytest.importorskip("torch")

from bonmath.zoo import gpt2_pair, pair_sizes, tabular_pair, tiny_gpt2_policy_pair  # noqa: E402

N_BON = 4


def members():
    yield tabular_pair(3, 2, seed=1)
    yield tabular_pair(4, 3, seed=2)
    pytest.importorskip("transformers")
    yield gpt2_pair(5, 2, seed=0)
    yield gpt2_pair(4, 3, seed=1)


@pytest.fixture(scope="module")
def zoo():
    return list(members())


def test_pair_sizes_are_those_of_the_built_pairs(zoo):
    """pair_sizes (closed forms, used by the size guards) counts the strings and parameters the
    built pairs have."""
    lengths = {"tabular": lambda case: case.policy.max_len, "gpt2": lambda case: case.policy.max_new_tokens}
    for case in zoo:
        vocab = case.pair.token_distributions.shape[-1]
        want = (case.pair.sequences.shape[0], case.num_params)
        assert pair_sizes(case.name, vocab, lengths[case.name](case)) == want, case.description


def test_policy_has_no_mass_on_the_lowest_reward_level(zoo):
    """Reward 0 exactly on the strings whose first token the policy never emits, integers 1..3 with
    ties elsewhere; so F_lt > 0 wherever π_θ > 0 and the vBoN lower bound and its gradient are finite."""
    for case in zoo:
        never_first = (case.pair.token_log_probs[:, 0] == -math.inf).detach()
        assert never_first.any(), case.description
        assert torch.equal(case.rewards == 0, never_first), case.description
        rewards = case.rewards[~never_first]
        assert set(rewards.tolist()) <= {1.0, 2.0, 3.0} and len(set(rewards.tolist())) < len(rewards)
        assert float(case.probs[never_first].sum()) == 0.0
        assert bool(torch.isfinite(case.log_cdf_lt()[case.support]).all())
        assert bool(torch.isfinite(case.gradient("vbon_bound", n=N_BON)).all())


def test_samplers_are_reproducible_and_draw_from_each_models_support(zoo):
    """sample_policy/sample_reference give the same strings for the same seed, and only strings
    with positive mass under that model."""
    for case in zoo:
        for sample, log_probs in ((case.sample_policy, case.pair.policy_log_probs.detach()),
                                  (case.sample_reference, case.ref_log_probs)):
            first, again = sample(200, 3), sample(200, 3)
            assert case.pair.index(first).tolist() == case.pair.index(again).tolist()
            assert bool((log_probs[case.pair.index(first)] > -math.inf).all()), case.description


def test_token_views_of_samples_match_the_enumeration(zoo):
    """token_log_probs of sampled strings (the model scoring them) equals the enumerated pair's
    per-token log-probabilities at those strings, for both models."""
    for case in zoo:
        strings = case.sample_policy(30, 5)
        rows = case.pair.index(strings)
        for score, enumerated in ((case.token_log_probs, case.pair.token_log_probs),
                                  (case.ref_token_log_probs, case.pair.ref_token_log_probs)):
            values, mask = score(strings)
            want = enumerated[rows].detach()[:, : values.shape[1]]
            np.testing.assert_array_equal(mask.numpy(), (torch.as_tensor(case.pair.mask)[rows])[:, : mask.shape[1]])
            torch.testing.assert_close(values.detach(), want, rtol=0, atol=ATOL_LOG)


def test_tiny_gpt2_refuses_more_tokens_than_its_positions():
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="exceed the tiny GPT-2's 16 positions"):
        tiny_gpt2_policy_pair(4, 14, seed=0)


def test_the_gpt2_builders_leave_torchs_global_generator_alone(tmp_path):
    """tiny_gpt2_policy_pair and the audit's build_tiny_setup seed GPT-2's initialisation without
    moving the caller's global torch generator, and give the same weights whatever its state."""
    pytest.importorskip("transformers")
    from bonmath.trl_audit import build_tiny_setup

    builders = {
        "pair": lambda: tiny_gpt2_policy_pair(4, 2, seed=3)[1].model,
        "audit": lambda: build_tiny_setup(tmp_path / str(len(list(tmp_path.iterdir()))), vocab_size=4,
                                          max_completion_length=2, seed=3).reference,
    }
    for name, build in builders.items():
        torch.manual_seed(123)
        state = torch.get_rng_state()
        first = build()
        assert torch.equal(torch.get_rng_state(), state), name
        torch.manual_seed(999)
        second = build()
        assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters())), name
