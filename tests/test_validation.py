"""Bad input raises ValueError naming the argument and the problem; nothing is clipped."""

import numpy as np
import pytest

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


def test_infinite_rewards_are_rejected_where_they_are_used_as_numbers():
    """E[r] and the tilt need finite rewards (BoN itself accepts ±inf: only order matters)."""
    with pytest.raises(ValueError, match="rewards must be finite"):
        bonmath.kl_rl_objective(REF, REF, [0.0, 1.0, np.inf], 1.0)
    with pytest.raises(ValueError, match=r"\+inf"):
        bonmath.tilted_log_probs(REF, [0.0, 1.0, np.inf], 1.0)


def test_normalize_opt_in_renormalises():
    """normalize=True is the explicit way to pass unnormalised log-probabilities."""
    have = bonmath.bon_log_probs(REF + 3.0, REWARDS, 2, normalize=True)
    np.testing.assert_allclose(have, bonmath.bon_log_probs(REF, REWARDS, 2), atol=1e-15)


def test_bon_log_ratio_from_cdf_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="exceeds 1"):
        bonmath.bon_log_ratio_from_cdf(np.log(0.7), np.log(0.5), 2)
    with pytest.raises(ValueError, match="log_cdf_lt must hold log-probabilities"):
        bonmath.bon_log_ratio_from_cdf(0.5, np.log(0.5), 2)


def test_log_cdf_estimate_moments_rejects_bad_m():
    with pytest.raises(ValueError, match="m must be >= 1"):
        bonmath.log_cdf_estimate_moments(np.log(0.5), 0)
