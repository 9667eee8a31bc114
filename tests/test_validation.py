"""Bad input raises ValueError naming the argument and the problem; nothing is clipped."""

import numpy as np
import pytest
from conftest import ATOL_LOG, RTOL_BFLOAT16, RTOL_EXACT

import bonmath

REF = np.log([0.5, 0.25, 0.25])
REWARDS = np.array([0.0, 1.0, 2.0])


def all_calls(ref=REF, rewards=REWARDS, policy=REF):
    """Every public function of the core that takes log-probabilities and rewards."""
    return {
        "reward_cdf": lambda: bonmath.reward_cdf(ref, rewards),
        "bon_log_probs": lambda: bonmath.bon_log_probs(ref, rewards, 2),
        "bon_log_ratio": lambda: bonmath.bon_log_ratio(ref, rewards, 2),
        "sample_bon": lambda: bonmath.sample_bon(ref, rewards, 2, 3),
        "win_rate": lambda: bonmath.win_rate(policy, ref, rewards),
        "vbon_objective": lambda: bonmath.vbon_objective(policy, ref, rewards, 2),
        "vbon_lower_bound": lambda: bonmath.vbon_lower_bound(policy, ref, rewards, 2),
        "kl_rl_objective": lambda: bonmath.kl_rl_objective(policy, ref, rewards, 1.0),
        "tilted_log_probs": lambda: bonmath.tilted_log_probs(ref, rewards, 1.0),
        "vbon_bound_optimum": lambda: bonmath.vbon_bound_optimum(ref, rewards, 2),
    }


BAD_LOG_PROBS = {
    "NaN": (np.array([np.nan, -0.7, -0.7]), "contains NaN"),
    "+inf": (np.array([np.inf, -0.7, -0.7]), r"\+inf"),
    "unnormalised": (np.log([0.5, 0.5, 0.5]), "does not normalise"),
    "no mass": (np.full(3, -np.inf), "no mass"),
}


@pytest.mark.parametrize("bad", BAD_LOG_PROBS)
@pytest.mark.parametrize("call", all_calls())
def test_bad_reference_log_probs_are_rejected(call, bad):
    value, message = BAD_LOG_PROBS[bad]
    with pytest.raises(ValueError, match=f"(ref|q)_log_probs .*{message}"):
        all_calls(ref=value)[call]()


@pytest.mark.parametrize("call", ["win_rate", "vbon_objective", "vbon_lower_bound", "kl_rl_objective"])
def test_bad_policy_log_probs_are_rejected_by_name(call):
    name = "p_log_probs" if call == "win_rate" else "policy_log_probs"
    with pytest.raises(ValueError, match=f"{name} does not normalise"):
        all_calls(policy=np.log([0.9, 0.9, 0.9]))[call]()


@pytest.mark.parametrize("call", all_calls())
def test_nan_rewards_are_rejected(call):
    with pytest.raises(ValueError, match="rewards contains NaN"):
        all_calls(rewards=np.array([0.0, np.nan, 1.0]))[call]()


@pytest.mark.parametrize("call", all_calls())
def test_mismatched_supports_are_rejected(call):
    with pytest.raises(ValueError, match="support sizes"):
        all_calls(rewards=np.array([0.0, 1.0]))[call]()


@pytest.mark.parametrize("call", all_calls())
def test_empty_support_is_rejected(call):
    with pytest.raises(ValueError, match="empty support"):
        all_calls(ref=np.zeros(0), rewards=np.zeros(0), policy=np.zeros(0))[call]()


def test_batch_shapes_that_do_not_broadcast_are_rejected():
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        bonmath.bon_log_probs(np.tile(REF, (2, 1)), np.tile(REWARDS, (3, 1)), 2)


@pytest.mark.parametrize("n", [0, -1, np.nan, np.inf, "3", None, True])
def test_bad_n_is_rejected(n):
    with pytest.raises(ValueError, match="n must"):
        bonmath.bon_log_probs(REF, REWARDS, n)


@pytest.mark.parametrize("beta", [0.0, -2.0, np.nan, np.inf])
def test_bad_beta_is_rejected(beta):
    with pytest.raises(ValueError, match="beta must"):
        bonmath.tilted_log_probs(REF, REWARDS, beta)
    with pytest.raises(ValueError, match="beta must"):
        bonmath.kl_rl_objective(REF, REF, REWARDS, beta)


def test_unknown_ties_and_method_are_rejected():
    with pytest.raises(ValueError, match="unknown ties 'lowest'"):
        bonmath.bon_log_probs(REF, REWARDS, 2, ties="lowest")
    with pytest.raises(ValueError, match="unknown method 'median'"):
        bonmath.estimate_log_cdf(REWARDS, REWARDS, method="median")


def test_bound_needs_n_at_least_one():
    with pytest.raises(ValueError, match="n must be >= 1"):
        bonmath.vbon_lower_bound(REF, REF, REWARDS, 0.5)


def test_sample_bon_needs_integer_n_and_size():
    with pytest.raises(ValueError, match="n must be an integer"):
        bonmath.sample_bon(REF, REWARDS, 2.5, 3)
    with pytest.raises(ValueError, match="size must be >= 0"):
        bonmath.sample_bon(REF, REWARDS, 2, -1)


def test_plus_infinite_rewards_with_mass_are_rejected_where_they_are_used_as_numbers():
    """E[r] and the tilt refuse +inf at a string with mass (BoN accepts ±inf: only order matters)."""
    with pytest.raises(ValueError, match=r"rewards is \+inf at a string with mass"):
        bonmath.kl_rl_objective(REF, REF, [0.0, 1.0, np.inf], 1.0)
    with pytest.raises(ValueError, match=r"rewards is \+inf at a string with mass"):
        bonmath.tilted_log_probs(REF, [0.0, 1.0, np.inf], 1.0)


def test_rewards_of_zero_mass_strings_are_never_used_as_numbers():
    """0 · r = 0 (bonmath.backend.expectation's convention): an infinite reward on a string of zero
    mass changes nothing in E[r], the tilt or soft BoN (validation module docstring)."""
    policy, ref = np.array([np.log(0.5), np.log(0.5), -np.inf]), np.log([0.5, 0.25, 0.25])
    for reward in (np.inf, -np.inf):
        assert bonmath.kl_rl_objective(policy, ref, [0.0, 1.0, reward], 1.0) == bonmath.kl_rl_objective(
            policy, ref, [0.0, 1.0, 0.0], 1.0)
    ref_with_zero = policy
    for reward in (np.inf, -np.inf):
        np.testing.assert_array_equal(bonmath.tilted_log_probs(ref_with_zero, [0.0, 1.0, reward], 1.0),
                                      bonmath.tilted_log_probs(ref_with_zero, [0.0, 1.0, 0.0], 1.0))
        np.testing.assert_array_equal(bonmath.soft_bon_log_probs(ref_with_zero, [0.0, 1.0, reward], 3, 1.0),
                                      bonmath.soft_bon_log_probs(ref_with_zero, [0.0, 1.0, 0.0], 3, 1.0))


def test_minus_infinite_reward_with_mass_gives_minus_infinite_expected_reward():
    """E_θ[r] = -inf when the policy reaches a -inf reward; the tilt gives that string no mass."""
    assert bonmath.kl_rl_objective(REF, REF, [0.0, 1.0, -np.inf], 1.0) == -np.inf
    have = bonmath.tilted_log_probs(REF, [0.0, 1.0, -np.inf], 1.0)
    assert have[2] == -np.inf and np.isclose(np.logaddexp.reduce(have), 0.0, atol=ATOL_LOG)


def test_soft_bon_refuses_infinite_rewards_with_mass():
    """softmax(r/λ) over n draws is undefined when every draw can be -inf (or two +inf)."""
    for reward in (np.inf, -np.inf):
        with pytest.raises(ValueError, match="rewards is .inf at a string with mass"):
            bonmath.soft_bon_log_probs(REF, [0.0, 1.0, reward], 2, 1.0)


def test_normalize_opt_in_renormalises():
    """normalize=True is the explicit way to pass unnormalised log-probabilities."""
    have = bonmath.bon_log_probs(REF + 3.0, REWARDS, 2, normalize=True)
    np.testing.assert_allclose(have, bonmath.bon_log_probs(REF, REWARDS, 2), atol=1e-15)


def test_bon_log_ratio_from_cdf_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="exceeds 1"):
        bonmath.bon_log_ratio_from_cdf(np.log(0.7), np.log(0.5), 2)
    with pytest.raises(ValueError, match="log_cdf_lt must hold log-probabilities"):
        bonmath.bon_log_ratio_from_cdf(0.5, np.log(0.5), 2)


def test_log_cdf_estimate_moments_rejects_bad_num_ref_samples():
    """M = 0 reference samples is refused by the argument's name (issue #10: num_ref_samples)."""
    with pytest.raises(ValueError, match="^num_ref_samples must be >= 1"):
        bonmath.log_cdf_estimate_moments(np.log(0.5), 0)


# ------------------------------------------------------------- dtypes and integers


def test_integer_rewards_beyond_2_53_are_ordered_exactly():
    """2^53 + 1 > 2^53 although float64 rounds both to 2^53: the BoN law sees two levels
    (issue #11: [.5, .5] before, [.75, .25] now), for int64, uint64 and Python ints beyond int64."""
    want = bonmath.bon_log_probs(np.log([0.5, 0.5]), [1, 0], 2)
    np.testing.assert_allclose(np.exp(want), [0.75, 0.25], rtol=RTOL_EXACT)
    for rewards in (np.array([2**53 + 1, 2**53]), np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64),
                    [2**70 + 1, 2**70], [2**70 + 0.0, -(2**70)]):
        np.testing.assert_array_equal(bonmath.bon_log_probs(np.log([0.5, 0.5]), rewards, 2), want)


def test_exact_integer_order_holds_across_two_reward_arrays():
    """estimate_log_cdf compares reference rewards with rewards: both are ranked together."""
    reference = np.array([2**53, 2**53 + 1, 2**53 + 2, 2**53 + 3])
    have = bonmath.estimate_log_cdf(reference, [2**53 + 1, 2**70], "empirical")
    np.testing.assert_array_equal(have, np.log([0.25, 1.0]))


def test_integer_rewards_beyond_2_53_are_refused_where_used_as_numbers():
    """E[r], the tilt, soft BoN's weights and the regularised score use rewards as numbers."""
    rewards = np.array([0, 1, 2**53 + 1])
    calls = [
        lambda: bonmath.kl_rl_objective(REF, REF, rewards, 1.0),
        lambda: bonmath.tilted_log_probs(REF, rewards, 1.0),
        lambda: bonmath.soft_bon_log_probs(REF, rewards, 2, 1.0),
        lambda: bonmath.regularized_bon_log_probs(REF, rewards, 2, 0.5),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="rewards holds integers beyond 2\\^53"):
            call()


def test_boolean_rewards_are_zero_and_one():
    """A pass/fail reward: False < True, used as 0 and 1."""
    have = bonmath.bon_log_probs(REF, np.array([False, True, True]), 3)
    np.testing.assert_array_equal(have, bonmath.bon_log_probs(REF, [0.0, 1.0, 1.0], 3))
    assert bonmath.kl_rl_objective(REF, REF, [False, True, True], 1.0) == 0.5


@pytest.mark.parametrize("bad", [
    np.log([0.5, 0.25, 0.25]) + 0j,
    np.array([0.0, 1.0, "2"], dtype=object),
    np.array(["0", "-1", "-1"]),
    np.array([True, False, False]),
    None,
])
def test_log_probabilities_of_the_wrong_type_are_refused_by_name(bad):
    """Complex, object, string and boolean arrays raise InputTypeError (a TypeError and a ValueError)."""
    with pytest.raises(TypeError, match="ref_log_probs") as err:
        bonmath.bon_log_probs(bad, REWARDS, 2)
    assert isinstance(err.value, ValueError)


def test_complex_rewards_are_refused_by_name():
    with pytest.raises(TypeError, match="rewards must hold real numbers; got dtype complex128"):
        bonmath.bon_log_probs(REF, REWARDS + 1j, 2)


@pytest.mark.parametrize("bad", ["2", True, None, 1 + 1j])
def test_scalars_that_are_not_real_numbers_are_refused(bad):
    """Numeric strings and booleans are not silently numbers (issue #11: bonbon_kl("2"), bonbon_win_rate(True))."""
    with pytest.raises(TypeError, match=r"\bc\b"):
        bonmath.bonbon_kl(bad)
    with pytest.raises(TypeError, match=r"\bc\b"):
        bonmath.bonbon_win_rate(bad)
    with pytest.raises(TypeError, match=r"\bn\b"):
        bonmath.bon_log_probs(REF, REWARDS, bad)


def test_bfloat16_log_probabilities_compute_in_bfloat16():
    """A floating tensor keeps its dtype: bfloat16 works like float16 (issue #11: it raised
    'data type numpy.str_ not inexact'), close to float64 at bfloat16's resolution."""
    torch = pytest.importorskip("torch")
    want = bonmath.bon_log_probs(REF, REWARDS, 4)
    for dtype in (torch.bfloat16, torch.float16):
        have = bonmath.bon_log_probs(torch.tensor(REF).to(dtype), REWARDS, 4)
        assert have.dtype == dtype
        np.testing.assert_allclose(have.float().numpy(), want, rtol=RTOL_BFLOAT16, atol=RTOL_BFLOAT16)


# ------------------------------------------------------------------ empty batches


def test_an_empty_batch_gives_an_empty_result_of_the_right_shape_and_dtype():
    """A leading axis of length 0 is legal (validation module docstring); numpy raised
    'zero-size array to reduction operation maximum' (issue #11)."""
    empty_ref, empty_rewards = np.zeros((0, 3)), np.zeros((0, 3))
    assert bonmath.bon_log_probs(empty_ref, empty_rewards, 2).shape == (0, 3)
    assert bonmath.bon_log_probs(empty_ref, REWARDS, 2).shape == (0, 3)
    lt, le = bonmath.reward_cdf(REF, empty_rewards)
    assert lt.shape == le.shape == (0, 3)
    assert bonmath.kl_divergence(empty_ref, REF).shape == (0,)
    assert bonmath.win_rate(REF, REF, np.zeros((2, 0, 3))).shape == (2, 0)
    assert bonmath.sample_bon(empty_ref, REWARDS, 2, size=5, rng=0).shape == (0, 5)
    assert bonmath.estimate_log_cdf(np.zeros((0, 4)), np.zeros((0, 3))).shape == (0, 3)
    assert bonmath.soft_bon_log_probs(empty_ref, REWARDS, 3, 1.0).shape == (0, 3)


def test_an_empty_torch_batch_keeps_dtype_and_device():
    torch = pytest.importorskip("torch")
    have = bonmath.bon_log_probs(torch.zeros((0, 3), dtype=torch.float32), REWARDS, 2)
    assert have.shape == (0, 3) and have.dtype == torch.float32


# ------------------------------------------------------------- other arguments


@pytest.mark.parametrize("rng, error", [(-1, ValueError), ("seed", TypeError), (1.5, TypeError),
                                        (True, TypeError), (np.nan, TypeError)])
def test_bad_rng_is_refused_by_name(rng, error):
    """check_rng: None, an int seed >= 0 or a Generator (issue #11: sample_bon(rng=-1) did not name rng)."""
    with pytest.raises(error, match="rng"):
        bonmath.sample_bon(REF, REWARDS, 2, 3, rng=rng)


def test_a_generator_is_used_as_is():
    have = bonmath.sample_bon(REF, REWARDS, 2, 4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(have, bonmath.sample_bon(REF, REWARDS, 2, 4, rng=7))


def test_normalize_must_be_a_boolean():
    with pytest.raises(TypeError, match="normalize must be True or False"):
        bonmath.bon_log_probs(REF, REWARDS, 2, normalize="no")


def test_tabular_lm_random_refuses_an_eos_outside_the_vocabulary():
    """Issue #11: TabularLM.random(3, 2, eos_id=3) raised IndexError."""
    with pytest.raises(ValueError, match="eos_id 3 is outside the vocabulary of size 3"):
        bonmath.TabularLM.random(3, 2, eos_id=3)


def test_bon_log_ratio_from_cdf_names_mismatched_shapes():
    """Issue #11: size and batch mismatches raised numpy's broadcast message."""
    with pytest.raises(ValueError, match=r"log_cdf_lt\(3,\), log_level_mass\(2,\)"):
        bonmath.bon_log_ratio_from_cdf(np.log([0.1, 0.2, 0.3]), np.log([0.1, 0.2]), 2)
