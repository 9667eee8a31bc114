"""J-BOND's anchor reward (Sessa et al. 2024, "BOND: Aligning LLMs with Best-of-N
Distillation", arXiv 2407.14622: the J-BOND section and Algorithm 2).

BOND's backward-KL gradient uses the reward log p_≤(y) = log F_le(y), the log-CDF of
the reward under the anchor policy, with β_BOND = 1/(N-1) (BOND's eqs. 8-10 and 15 as
numbered in the reimplementation cited below; the paper's body could not be read here).
J-BOND distils Best-of-2 of a moving anchor and replaces log F_le(y) by a two-sample
proxy: draw y'_1, y'_2 from the anchor and give the policy sample y

    r_J(y) = -log 16   if y is worse than both anchor samples,   else 0.

"Worse" is strict in the main text, r(y) < min(r(y'_1), r(y'_2)), and non-strict,
r(y) <= both, in the appendix (both as transcribed in the task brief; the
third-party reimplementation ``gurusha01/passk-frontier``, ``train_bon.py``, writes
the strict form as BOND's eq. 17). With ties the two differ. Over the two
independent anchor draws,

    E[r_J(y)] = -log 16 · P(r(Y') > r(y))²  = -log 16 · (1 - F_le(y))²   (strict, "lt"),
    E[r_J(y)] = -log 16 · P(r(Y') >= r(y))² = -log 16 · (1 - F_lt(y))²   (non-strict, "le").

How close it is to log F. In the continuous limit both are -log 16 · (1 - u)² at
quantile u, against log u. The constant makes them agree at the median
(-log 16 / 4 = log 1/2); they also agree at u ≈ 0.1127. In between the proxy is
below log u by up to 0.1744 nats (at u = (1 - sqrt(1 - 1/(2 log 2)))/2 ≈ 0.2361);
above the median it is above log u by up to 0.1148 (at u ≈ 0.7639); as u → 0 the
proxy stays at -log 16 while log u → -∞. (bonmath's derivation; tested in
``tests/test_theory_inference_aware.py``.)
"""

from __future__ import annotations

import math

from bonmath.backend import Array, masked_ieee, namespace
from bonmath.levels import reward_cdf
from bonmath.validation import broadcast_batch, check_choice, check_values, prepare, reward_arrays

JBOND_PENALTY = math.log(16.0)
"""log 16: J-BOND's reward is -log 16 for a sample worse than both anchor samples."""

WORSE = ("lt", "le")
"""How a sample is "worse" than an anchor sample: r(y) < r(y') (main text) or r(y) <= r(y') (appendix)."""


@masked_ieee
def jbond_anchor_reward(rewards: Array, anchor_rewards: Array, *, worse: str = "lt") -> Array:
    """J-BOND's reward for sampled policy outputs: -log 16 below both anchor samples, else 0.

    Parameters
    ----------
    rewards : array of shape (...)
        r(y) of the policy samples.
    anchor_rewards : array of shape (..., 2)
        r(y'_1), r(y'_2) of the two anchor samples drawn for each policy sample.
    worse : {"lt", "le"}, default "lt"
        "lt": penalise r(y) < both (BOND's main text); "le": r(y) <= both (its appendix).

    Returns
    -------
    array of shape (...)
        -log 16 or 0.

    Examples
    --------
    >>> import numpy as np
    >>> jbond_anchor_reward(np.array([0.0, 1.0]), np.array([[1.0, 2.0], [1.0, 2.0]])).round(4).tolist()
    [-2.7726, 0.0]
    >>> jbond_anchor_reward(np.array([1.0]), np.array([[1.0, 2.0]]), worse="le").round(4).tolist()
    [-2.7726]
    """
    check_choice(worse, "worse", WORSE)
    xp = namespace(rewards, anchor_rewards)
    # only the order of the rewards is used: integers of any size are ranked together
    rewards, anchor_rewards = reward_arrays({"rewards": rewards, "anchor_rewards": anchor_rewards}, xp)
    anchor_rewards = check_values(anchor_rewards, "anchor_rewards", xp)
    if xp.any(xp.isnan(rewards)):
        raise ValueError("rewards contains NaN")
    if anchor_rewards.shape[-1] != 2:
        raise ValueError(f"anchor_rewards must have a last axis of 2 anchor samples; got {anchor_rewards.shape}")
    rewards, lowest_anchor = broadcast_batch({"rewards": rewards, "anchor_rewards": xp.min(anchor_rewards, axis=-1)}, xp)
    below = rewards < lowest_anchor if worse == "lt" else rewards <= lowest_anchor
    return xp.where(below, -JBOND_PENALTY, xp.zeros_like(xp.astype(below, rewards.dtype)))


@masked_ieee
def jbond_expected_reward(
    anchor_log_probs: Array, rewards: Array, *, worse: str = "lt", normalize: bool = False
) -> Array:
    """E[r_J(y)] over the two anchor samples, for every string y: exact, with ties.

    Parameters
    ----------
    anchor_log_probs : array of shape (..., k)
        log π_anchor over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed (they are where "lt" and "le" differ).
    worse : {"lt", "le"}, default "lt"
        The comparison of :func:`jbond_anchor_reward`.
    normalize : bool, default False
        Renormalise ``anchor_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        -log 16 · P(r(Y') > r(y))² ("lt") or -log 16 · P(r(Y') >= r(y))² ("le"), the
        value BOND's log F_le(y) is approximated by (compare :func:`bonmath.reward_cdf`).

    Notes
    -----
    The anchor's upper tail is the CDF of the negated reward, P(r(Y') > r) = F_lt of -r,
    computed as a suffix sum: accurate when it is tiny (BOND, Sessa et al. 2024, the J-BOND
    section; the expectation is bonmath's).

    Examples
    --------
    >>> import numpy as np
    >>> anchor = np.log([0.25, 0.25, 0.5])
    >>> jbond_expected_reward(anchor, [0, 1, 1]).round(4).tolist()  # -log 16 · (3/4)², 0, 0
    [-1.5596, 0.0, 0.0]
    >>> jbond_expected_reward(anchor, [0, 1, 1], worse="le").round(4).tolist()
    [-2.7726, -1.5596, -1.5596]
    """
    check_choice(worse, "worse", WORSE)
    xp, (anchor_log_probs, rewards) = prepare(
        {"anchor_log_probs": anchor_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    log_above, log_at_or_above = reward_cdf(anchor_log_probs, -rewards)
    log_tail = log_above if worse == "lt" else log_at_or_above
    return -JBOND_PENALTY * xp.exp(2.0 * log_tail)
