"""The vBoN objective, its lower bound, and the KL-RL objective, exactly.

vBoN maximises J(θ) = -KL(π_θ || π_N) = E_θ[R_N] - KL(π_θ || π_ref)
(Amini et al. 2025, eq. 6): KL-regularised RL with reward R_N and β = 1.
Keeping the i = 1 term of the binomial sum gives R_N >= log N + (N-1) log F_lt, hence
the lower bound L(θ) = log N + (N-1) E_θ[log F_lt] - KL(π_θ || π_ref) <= J(θ).
L = -inf as soon as π_θ has mass where F_lt = 0 (the lowest reward level); its
finite companion L̃ (:func:`vbon_finite_lower_bound`) keeps the exact R_N there.
"""

from __future__ import annotations

import math

from bonmath.backend import NEG_INF, Array, expectation, masked_ieee
from bonmath.bon import bon_log_probs
from bonmath.divergences import kl_divergence
from bonmath.levels import reward_levels
from bonmath.validation import check_n, check_positive, check_reward_numbers, prepare

__all__ = [
    "kl_rl_objective",
    "vbon_finite_bound_log_cdf",
    "vbon_finite_lower_bound",
    "vbon_lower_bound",
    "vbon_objective",
]


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

    See Also
    --------
    vbon_finite_lower_bound : L̃ <= J, finite for every policy.
    vbon_bound_optimum : the maximiser of L, π_ref F_lt^(N-1)/Z.

    Notes
    -----
    .. math::

        J(\\theta) \\ge L(\\theta) = \\log N + (N-1)\\,E_{\\pi_\\theta}[\\log F_{\\mathrm{lt}}]
        - \\mathrm{KL}(\\pi_\\theta \\,\\|\\, \\pi_{\\mathrm{ref}})

    (keep the i = 1 term of the binomial sum of R_N; :ref:`math-vbon`).

    Examples
    --------
    >>> import numpy as np
    >>> policy, ref = np.log([0.25, 0.75]), np.log([0.5, 0.5])
    >>> float(vbon_lower_bound(policy, ref, [0, 1], n=2))
    -inf
    >>> float(vbon_lower_bound([-np.inf, 0.0], ref, [0, 1], n=2))  # log 2 + log 1/2 - log 2
    -0.693147180559
    """
    return _lower_bound(policy_log_probs, ref_log_probs, rewards, n, normalize, finite=False)


def _lower_bound(policy_log_probs, ref_log_probs, rewards, n, normalize: bool, *, finite: bool) -> Array:
    """log n + (n-1) E_θ[log F] - KL(π_θ || π_ref) with F = F_lt (L) or F̃ (L̃)."""
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
    log_cdf = _finite_bound_log_cdf(levels.log_cdf_lt, levels.log_mass, n, xp) if finite else levels.log_cdf_lt
    return math.log(n) + (n - 1.0) * expectation(policy_log_probs, levels.per_string(log_cdf, xp), xp) - kl


def _finite_bound_log_cdf(log_cdf_lt: Array, log_level_mass: Array, n: float, xp) -> Array:
    """log F̃: log F_lt, and log q - log(n)/(n-1) where F_lt = 0 (n > 1).

    Then log n + (n-1) log F̃ is log n + (n-1) log F_lt where F_lt > 0 and the exact
    R_N = (n-1) log q where F_lt = 0 (there a^n/a = q^(n-1)).
    """
    lowest = log_cdf_lt == NEG_INF
    return xp.where(lowest, log_level_mass - math.log(n) / (n - 1.0), log_cdf_lt)


@masked_ieee
def vbon_finite_bound_log_cdf(ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False) -> Array:
    """log F̃, the per-string log-CDF of the finite bound L̃: log F_lt with its -inf replaced.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support (last axis); leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards, broadcast against ``ref_log_probs``; ties allowed.
    n : float
        BoN samples, n > 1 (at n = 1 no reward enters the bound).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log F_lt(y) where F_lt(y) > 0; log q(y) - log(n)/(n-1) where F_lt(y) = 0, so
        that log n + (n-1) log F̃ = R_N there (-inf only for a zero-mass level).

    Notes
    -----
    The per-string value log n + (n-1) log F̃ is <= R_N everywhere (vBoN's
    i = 1 term where F_lt > 0, docs/math.md "vBoN"; equal to R_N = (n-1) log q
    where F_lt = 0). It is the reward of the KL-RL form of L̃: L̃/(n-1) =
    E_θ[log F̃] - KL(π_θ || π_ref)/(n-1) + log(n)/(n-1), which
    :func:`bonmath.estimators.vbon_bound_surrogate` estimates with ``log_cdf_lt = log F̃``.

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(vbon_finite_bound_log_cdf(np.log([0.5, 0.5]), [0, 1], n=2)).tolist()  # q/2, F_lt
    [0.25, 0.5]
    """
    n = check_n(n)
    if n <= 1:
        raise ValueError(f"n must be > 1 for the bound's log-CDF (at n = 1 the bound is -KL); got {n:g}")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    levels = reward_levels(ref_log_probs, rewards, xp)
    return levels.per_string(_finite_bound_log_cdf(levels.log_cdf_lt, levels.log_mass, n, xp), xp)


@masked_ieee
def vbon_finite_lower_bound(
    policy_log_probs: Array, ref_log_probs: Array, rewards: Array, n: float, *, normalize: bool = False
) -> Array:
    """L̃ <= J, the vBoN lower bound made finite: L with the exact R_N where F_lt = 0.

    Parameters
    ----------
    policy_log_probs, ref_log_probs : arrays of shape (..., k)
        log π_θ and log π_ref over one enumerated support (last axis); leading axes
        are a batch.
    rewards : array of shape (..., k)
        Rewards, broadcast against the log-probabilities; ties allowed.
    n : float
        BoN samples, n >= 1 (for n < 1 the inequality reverses).
    normalize : bool, default False
        Renormalise the log-probabilities instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)
        L̃ = log n + (n-1) E_θ[log F̃] - KL(π_θ || π_ref), with log F̃ of
        :func:`vbon_finite_bound_log_cdf`. L̃ <= J; L̃ = L wherever L is finite
        (π_θ without mass where F_lt = 0); -inf only where J is (π_θ has mass where
        π_ref has none); exactly -KL(π_θ || π_ref) at n = 1.

    Notes
    -----
    The vBoN bound (Amini et al. 2025; docs/math.md, "vBoN") keeps the i = 1 term
    of R_N's binomial sum: R_N >= log n + (n-1) log F_lt. Where F_lt = 0 (the lowest
    reward level) that term is -inf, so L = -inf for every policy with mass there
    (every softmax policy). The exact value there is R_N = (n-1) log q, and using it
    keeps the per-string value <= R_N, hence L̃ = E_θ[per-string value] -
    KL(π_θ || π_ref) <= E_θ[R_N] - KL(π_θ || π_ref) = J.

    Examples
    --------
    At π_θ = π_2 (J = 0), L = -inf but L̃ = -(3/4) log(3/2):

    >>> import numpy as np
    >>> policy, ref = np.log([0.25, 0.75]), np.log([0.5, 0.5])
    >>> float(vbon_finite_lower_bound(policy, ref, [0, 1], n=2))
    -0.304098831081
    >>> float(vbon_lower_bound(policy, ref, [0, 1], n=2))
    -inf
    """
    return _lower_bound(policy_log_probs, ref_log_probs, rewards, n, normalize, finite=True)


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
