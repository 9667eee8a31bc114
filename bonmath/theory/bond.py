"""BOND (Sessa et al. 2024, "BOND: Aligning LLMs with Best-of-N Distillation").

BOND writes the Best-of-N law as the reference times a correction factor
(BOND, eq. 4; the same law as :func:`bonmath.bon_log_probs`),

    π_N(y) = π_ref(y) · F_le(y)^(N-1) · Σ_{i=1..N} (F_lt(y)/F_le(y))^(i-1),

and distils it by minimising divergences between the policy π_θ and π_N: the
forward KL(π_N || π_θ) (mode covering), the backward KL(π_θ || π_N) (mode seeking)
and their Jeffreys combination J^β = (1-β) KL(π_N || π_θ) + β KL(π_θ || π_N)
(BOND, Section 4.2 of arXiv 2407.14622v1; its J-BOND algorithm uses β = 1/2).

:func:`bond_log_probs` evaluates the correction-factor form *as written*, a sum of
N terms in log space, independently of the core's geometric-series evaluation
(:func:`bonmath.bon_log_probs`); the tests show the two agree. BOND's iterated
distillation (BoN_m of BoN_n is BoN_{mn}) is tested in the core
(``test_bon_composes_multiplicatively``) and, for real exponents, in
``tests/test_theory.py``.
"""

from __future__ import annotations

from typing import NamedTuple

from bonmath.backend import NEG_INF, Array, is_torch_namespace, logsumexp, masked_ieee
from bonmath.bon import bon_log_probs
from bonmath.divergences import kl_divergence
from bonmath.levels import reward_levels
from bonmath.validation import check_count, check_n, check_positive, prepare


class BondDivergences(NamedTuple):
    """The three divergences BOND minimises, each of shape (...).

    Examples
    --------
    >>> import numpy as np
    >>> d = bond_divergences(np.log([0.5, 0.5]), np.log([0.5, 0.5]), [0, 1], n=2, backward_weight=0.25)
    >>> bool(np.isclose(d.jeffreys, 0.75 * d.forward + 0.25 * d.backward)), round(float(d.backward), 6)
    (True, 0.143841)
    """

    forward: Array
    """KL(π_N || π_θ): mode covering; +inf if π_θ misses a string π_N can return."""
    backward: Array
    """KL(π_θ || π_N): mode seeking; the negated vBoN objective."""
    jeffreys: Array
    """(1-β) forward + β backward (BOND's J^β; the classical Jeffreys divergence is 2 J^(1/2))."""


def _term_index(n: int, like: Array, xp) -> Array:
    """0, 1, ..., n-1 as a float array of ``like``'s dtype and device."""
    if is_torch_namespace(xp):
        return xp.arange(n, dtype=like.dtype, device=like.device)
    return xp.arange(n, dtype=xp.float64)


@masked_ieee
def bond_log_probs(
    ref_log_probs: Array, rewards: Array, n: int, *, normalize: bool = False
) -> Array:
    """The Best-of-N law in BOND's correction-factor form, evaluated term by term.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties and ±inf allowed.
    n : int
        Number of BoN samples, an integer >= 1.

    Returns
    -------
    array of shape (..., k)
        log π_N(y); equal to :func:`bonmath.bon_log_probs` (the tests check it).

    Notes
    -----
    log π_N(y) = log π_ref(y) + (N-1) log F_le(y) + log Σ_{i=1..N} exp((i-1)(log F_lt(y) - log F_le(y)))
    (BOND, Sessa et al. 2024, eq. 4). The sum is a log-sum-exp over N terms per
    level: O(k N) time and memory, so this form is for checking, not for large N. On
    the lowest level (F_lt = 0) only the i = 1 term survives, giving F_le^(N-1).

    Examples
    --------
    >>> import numpy as np
    >>> np.exp(bond_log_probs(np.log([0.5, 0.25, 0.25]), [0, 1, 1], n=2)).tolist()
    [0.25, 0.375, 0.375]
    """
    n = check_count(n, "n")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    levels = reward_levels(ref_log_probs, rewards, xp)
    log_lt, log_le = levels.log_cdf_lt, levels.log_cdf_le
    lowest = log_lt == NEG_INF
    empty = log_le == NEG_INF  # a zero-mass level at the bottom: only zero-mass strings
    log_ratio = xp.where(lowest | empty, 0.0, log_lt - xp.where(empty, 0.0, log_le))
    i = _term_index(n, log_ratio, xp)  # i - 1 in the formula
    terms = i * log_ratio[..., None]
    terms = xp.where(lowest[..., None] & (i > 0), NEG_INF, terms)
    log_le_safe = xp.where(empty, 0.0, log_le)
    per_level = (n - 1.0) * log_le_safe + logsumexp(terms, xp, axis=-1)
    log_factor = levels.per_string(per_level, xp)
    zero_mass = ref_log_probs == NEG_INF
    return xp.where(zero_mass, NEG_INF, ref_log_probs + xp.where(zero_mass, 0.0, log_factor))


@masked_ieee
def bond_divergences(
    policy_log_probs: Array,
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    *,
    backward_weight: float = 0.5,
    normalize: bool = False,
) -> BondDivergences:
    """BOND's forward, backward and Jeffreys divergences between π_θ and π_N.

    Parameters
    ----------
    policy_log_probs : array of shape (..., k)
        log π_θ.
    ref_log_probs : array of shape (..., k)
        log π_ref.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    n : float
        BoN samples, any real n > 0.
    backward_weight : float, default 0.5
        Jeffreys weight β in [0, 1] on the backward KL.
    normalize : bool, default False
        Renormalise the log-probabilities instead of rejecting unnormalised input.

    Returns
    -------
    BondDivergences
        ``(forward, backward, jeffreys)``, arrays of shape (...). With torch inputs all
        three are differentiable in π_θ (and in π_ref, through π_N).

    Notes
    -----
    forward = KL(π_N || π_θ), backward = KL(π_θ || π_N),
    jeffreys = (1-β) forward + β backward (BOND, Sessa et al. 2024, Section 4.2, eq. 11). The
    gradients are exact: :func:`bonmath.kl_divergence` and :func:`bonmath.bon_log_probs`
    are differentiable end to end.

    Examples
    --------
    >>> import numpy as np
    >>> d = bond_divergences(np.log([0.5, 0.5]), np.log([0.5, 0.5]), [0, 1], n=2)
    >>> [round(float(x), 4) for x in d]
    [0.1308, 0.1438, 0.1373]
    """
    n = check_n(n)
    backward_weight = check_positive(backward_weight, "backward_weight", inclusive=True)
    if backward_weight > 1:
        raise ValueError(f"backward_weight must lie in [0, 1]; got {backward_weight:g}")
    _, (policy_log_probs, ref_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs},
        {"rewards": rewards},
        normalize=normalize,
    )
    bon = bon_log_probs(ref_log_probs, rewards, n)
    forward = kl_divergence(bon, policy_log_probs)
    backward = kl_divergence(policy_log_probs, bon)
    if backward_weight == 0.0:
        jeffreys = forward
    elif backward_weight == 1.0:
        jeffreys = backward
    else:
        jeffreys = (1.0 - backward_weight) * forward + backward_weight * backward
    return BondDivergences(forward, backward, jeffreys)
