"""TabularLM: enumeration, log_prob and sampling agree, and match a brute-force recursion."""

import itertools
import math

import numpy as np
import pytest
from conftest import ATOL_LOG, Z_BOUND
from hypothesis import given

import bonmath
from bonmath import PAD, TabularLM
from bonmath.testing import tabular_lms


def brute_force_strings(lm):
    """Every string and its probability, by walking prefixes token by token (a dict, no tables order)."""
    out = {}

    def walk(prefix, log_prob, prefix_index):
        depth = len(prefix)
        if depth == lm.max_len:
            out[tuple(prefix)] = log_prob
            return
        row = lm.tables[depth][prefix_index]
        for token in range(lm.vocab_size):
            lp = log_prob + row[token]
            if token == lm.eos_id:
                out[tuple(prefix) + (token,)] = lp
            else:
                digit = [t for t in range(lm.vocab_size) if t != lm.eos_id].index(token)
                walk(prefix + [token], lp, prefix_index * (lm.vocab_size - 1) + digit)

    walk([], 0.0, 0)
    return out


@given(tabular_lms())
def test_enumerate_matches_brute_force_recursion(lm):
    """enumerate() lists every string once with its chain-rule log-probability."""
    sequences, log_probs = lm.enumerate()
    want = brute_force_strings(lm)
    have = {tuple(t for t in s if t != PAD): lp for s, lp in zip(sequences.tolist(), log_probs)}
    assert have.keys() == want.keys() and len(sequences) == len(want) == lm.num_sequences
    for key, value in want.items():
        assert have[key] == value or abs(have[key] - value) <= ATOL_LOG


@given(tabular_lms())
def test_enumerate_normalises(lm):
    """The strings' probabilities sum to 1."""
    _, log_probs = lm.enumerate()
    assert abs(np.logaddexp.reduce(log_probs)) <= 1e-12


@given(tabular_lms())
def test_log_prob_agrees_with_enumerate(lm):
    """log_prob(sequences) returns enumerate()'s values, zero-mass strings included."""
    sequences, log_probs = lm.enumerate()
    np.testing.assert_array_equal(lm.log_prob(sequences), log_probs)


@given(tabular_lms())
def test_token_log_probs_follow_the_brute_force_prefix_walk(lm):
    """token_log_probs gives log p(y_t | y_<t) of each real token (the tables read by
    walking the prefix, as in the brute-force recursion), 0 after EOS; its sum is
    log_prob; token_distributions holds the whole next-token row there, zeros after EOS."""
    sequences, log_probs = lm.enumerate()
    values, mask = lm.token_log_probs(sequences)
    dists = lm.token_distributions(sequences)
    continue_tokens = [t for t in range(lm.vocab_size) if t != lm.eos_id]
    for i, seq in enumerate(sequences.tolist()):
        prefix_index = 0
        for t, token in enumerate(seq):
            if token == PAD:
                assert not mask[i, t] and values[i, t] == 0.0 and np.all(dists[i, t] == 0.0)
                continue
            row = lm.tables[t][prefix_index]
            assert mask[i, t] and values[i, t] == row[token]
            np.testing.assert_array_equal(dists[i, t], row)
            if token != lm.eos_id:
                prefix_index = prefix_index * (lm.vocab_size - 1) + continue_tokens.index(token)
    np.testing.assert_allclose(values.sum(-1), log_probs, rtol=0, atol=ATOL_LOG)


def test_token_views_reject_malformed_sequences():
    lm = TabularLM.random(4, 3, rng=0)
    for view in (lm.token_log_probs, lm.token_distributions):
        with pytest.raises(ValueError, match="after EOS"):
            view(np.array([[1, 0, 1]]))


def test_strings_end_with_eos_or_reach_max_len():
    """Every enumerated string ends with EOS or has max_len tokens, as generate() returns."""
    lm = TabularLM.random(4, 3, rng=0, eos_id=2)
    for seq in lm.enumerate().sequences.tolist():
        tokens = [t for t in seq if t != PAD]
        assert (tokens[-1] == 2 and 2 not in tokens[:-1]) or (len(tokens) == 3 and 2 not in tokens)


@pytest.mark.statistical
def test_sample_frequencies_match_enumerate():
    """Sample frequencies agree with exact probabilities: every string's count within
    Z_BOUND binomial standard errors (Bonferroni over strings is implied by z = 5)."""
    lm = TabularLM.random(4, 3, rng=3, zero_prob=0.2)
    sequences, log_probs = lm.enumerate()
    size = 200_000
    draws = lm.sample(size, rng=0)
    index = {tuple(s): i for i, s in enumerate(sequences.tolist())}
    counts = np.bincount([index[tuple(s)] for s in draws.tolist()], minlength=len(sequences))
    p = np.exp(log_probs)
    assert np.all(counts[p == 0] == 0)
    se = np.sqrt(size * p * (1 - p))
    z = (counts - size * p)[p > 0] / se[p > 0]
    assert np.abs(z).max() < Z_BOUND, f"max |z| = {np.abs(z).max():.2f} over {len(z)} strings"


def test_enumerates_a_million_strings():
    """V = 11, T = 6 has 1 111 111 strings; enumeration is vectorised and normalised."""
    lm = TabularLM.random(11, 6, rng=0)
    sequences, log_probs = lm.enumerate()
    assert sequences.shape == (1_111_111, 6)
    assert abs(np.logaddexp.reduce(log_probs)) <= 1e-10


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[1, 2, 0, 1]], "shape"),
        ([[1, 0, 1]], "after EOS"),
        ([[1, PAD, PAD]], "PAD before EOS"),
        ([[1, 7, 0]], "outside"),
        ([[1.0, 0.0, PAD]], "integer"),
    ],
)
def test_log_prob_rejects_malformed_sequences(bad, message):
    lm = TabularLM.random(4, 3, rng=0)
    with pytest.raises(ValueError, match=message):
        lm.log_prob(np.array(bad))


def test_constructor_rejects_bad_tables():
    with pytest.raises(ValueError, match="shape"):
        TabularLM([np.log(np.full((1, 3), 1 / 3)), np.log(np.full((3, 3), 1 / 3))])
    with pytest.raises(ValueError, match="normalise"):
        TabularLM([np.log(np.full((1, 3), 0.5))])
    with pytest.raises(ValueError, match="max_sequences"):
        TabularLM.random(50, 6)


def test_bon_on_a_tabular_lm_with_a_length_reward():
    """End to end: BoN over a TabularLM's strings with reward = length (many ties) matches
    brute force over 2-tuples."""
    from fractions import Fraction

    from bonmath.testing import brute_force_bon

    lm = TabularLM.random(3, 2, rng=4)
    sequences, log_probs = lm.enumerate()
    rewards = (sequences != PAD).sum(axis=1).astype(float)
    have = np.exp(bonmath.bon_log_probs(log_probs, rewards, 2))
    probs = [Fraction(math.exp(lp)) for lp in log_probs]
    total = sum(probs)
    want = brute_force_bon([p / total for p in probs], rewards.tolist(), 2)
    np.testing.assert_allclose(have, [float(w) for w in want], rtol=1e-12)
    assert len(set(itertools.chain(rewards.tolist()))) < len(rewards)
