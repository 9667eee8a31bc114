"""The vBoN objective, its lower bound, and the KL-RL objective, exactly.

vBoN maximises J(θ) = -KL(π_θ || π_N) = E_θ[R_N] - KL(π_θ || π_ref)
(Amini et al. 2025, eq. 6): KL-regularised RL with reward R_N and β = 1.
Keeping the i = 1 term of the binomial sum gives R_N >= log N + (N-1) log F_lt, hence
the lower bound L(θ) = log N + (N-1) E_θ[log F_lt] - KL(π_θ || π_ref) <= J(θ).
"""

from __future__ import annotations

import math

from bonmath.backend import Array, expectation, masked_ieee
from bonmath.bon import bon_log_probs
from bonmath.divergences import kl_divergence
from bonmath.levels import reward_levels
from bonmath.validation import check_n, check_positive, check_reward_numbers, prepare


@masked_ieee
def vbon_objective(
    policy_log_probs: Array, ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """J = -KL(π_θ || π_N), the vBoN objective (maximised).

    Parameters
    ----------
    policy_log_probs, ref_log_probs : arrays of shape (..., k)
    rewards : array of shape (..., k)
    n : float
        BoN samples, n > 0.

    Returns
    -------
    array of shape (...)
        J <= 0, with J = 0 iff π_θ = π_N; -inf if π_θ has mass where π_ref has none.

    Examples
    --------
    >>> import numpy as np
    >>> float(vbon_objective(np.log([0.25, 0.75]), np.log([0.5, 0.5]), [0, 1], n=2))
    0.0
    """
    n = check_n(n)
    _, (policy_log_probs, ref_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs},
        {"rewards": rewards},
        normalize=normalize,
    )
    return -kl_divergence(policy_log_probs, bon_log_probs(ref_log_probs, rewards, n))


@masked_ieee
def vbon_lower_bound(
    policy_log_probs: Array, ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """L = log n + (n-1) E_θ[log F_lt(y)] - KL(π_θ || π_ref) <= J (vBoN, Amini et al. 2025).

    Parameters
    ----------
    policy_log_probs, ref_log_probs : arrays of shape (..., k)
    rewards : array of shape (..., k)
    n : float
        BoN samples; the bound needs n >= 1 (for n < 1 the inequality reverses).

    Returns
    -------
    array of shape (...)
        L; -inf when n > 1 and π_θ has mass on the lowest reward level (F_lt = 0);
        exactly -KL(π_θ || π_ref) at n = 1.

    Examples
    --------
    >>> import numpy as np
    >>> policy, ref = np.log([0.25, 0.75]), np.log([0.5, 0.5])
    >>> float(vbon_lower_bound(policy, ref, [0, 1], n=2))
    -inf
    >>> float(vbon_lower_bound([-np.inf, 0.0], ref, [0, 1], n=2))  # log 2 + log 1/2 - log 2
    -0.693147180559
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 for the vBoN lower bound; got {n:g}")
    xp, (policy_log_probs, ref_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs},
        {"rewards": rewards},
        normalize=normalize,
    )
    kl = kl_divergence(policy_log_probs, ref_log_probs)
    if n == 1:
        return -kl
    levels = reward_levels(ref_log_probs, rewards, xp)
    log_cdf_lt = levels.per_string(levels.log_cdf_lt, xp)
    return math.log(n) + (n - 1.0) * expectation(policy_log_probs, log_cdf_lt, xp) - kl


@masked_ieee
def kl_rl_objective(
    policy_log_probs: Array, ref_log_probs: Array, rewards: Array, beta: float, *, normalize: bool = False
) -> Array:
    """E_θ[r] - β KL(π_θ || π_ref), the KL-regularised RL objective.

    Rewards are used as numbers: a reward of +inf at a string the policy reaches
    raises ``ValueError`` (the objective would be +inf, and its maximiser, the tilt,
    does not exist); -inf there makes E_θ[r] = -inf; a reward at a string of zero
    policy mass is never used (0 · r = 0). Its maximiser is :func:`bonmath.tilted_log_probs`.

    Examples
    --------
    >>> import numpy as np
    >>> float(kl_rl_objective(np.log([0.5, 0.5]), np.log([0.5, 0.5]), [0.0, 2.0], beta=1.0))
    1.0
    """
    beta = check_positive(beta, "beta")
    xp, (policy_log_probs, ref_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs},
        {"rewards": rewards},
        normalize=normalize,
        rewards_as_numbers=True,
    )
    rewards = check_reward_numbers(rewards, policy_log_probs, "rewards", xp, why=": E_θ[r] would be +inf")
    rewards = xp.astype(rewards, policy_log_probs.dtype)
    return expectation(policy_log_probs, rewards, xp) - beta * kl_divergence(policy_log_probs, ref_log_probs)
