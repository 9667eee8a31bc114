"""InfAlign (Balashankar et al. 2024, "InfAlign: Inference-aware language model
alignment", arXiv 2412.19792; sections as numbered in v5, ICML 2025): calibrate-and-transform
RL, exactly, with ties.

**Calibrated reward.** InfAlign replaces the reward by its CDF under the reference,
C(y) = P_{Y'~π_ref}(r(Y') ≲ r(y)), which is Uniform(0, 1) under π_ref when the reward
has no ties. With ties the comparison needs a convention:

* ``"mid"`` (default): C = (F_lt + F_le)/2 = P(r(Y') < r(y)) + ½ P(r(Y') = r(y)), the win
  probability of y against one reference sample with ties counting ½ -- so
  E_π[C] = W(π, π_ref) exactly (BoNBoN's F_mid, :mod:`bonmath.theory.bonbon`);
* ``"lt"``: C = F_lt, the convention that makes the log transform with β = 1/(N-1)
  *exactly* vBoN's bound optimum π_ref F_lt^(N-1)/Z (:func:`bonmath.vbon_bound_optimum`);
* ``"le"``: C = F_le, BOND's p_≤.

Which of these the paper's definition writes could not be checked here (only its
abstract and section titles were readable); its analysis assumes a tie-free reward, where
all three agree.

**Transformed-reward optimum.** CTRL maximises E_π[Φ(C)] - β KL(π || π_ref), whose
optimum is π_ref exp(Φ(C)/β)/Z (:func:`bonmath.tilted_log_probs`), for

* ``"log"``: Φ = log C (0 mass where C = 0);
* ``"identity"``: Φ = C (with "mid": the exact win-rate-vs-KL frontier of BoNBoN);
* ``"exp"``: Φ_t = (e^(tC) - 1)/t, t real (t = 0 is the identity). For t > 0 this is
  e^(tC) up to a positive factor 1/t and a constant, so the optimum at β equals the
  paper's e^(tC) optimum at β·t; for t < 0 it is the *increasing* -e^(tC) scaled by 1/|t|
  (e^(tC) itself would reward low C). At a fixed KL only the sign of t matters for
  which family member is chosen, so :func:`infalign_best_t` is unaffected by the scaling.

**Inference-time win rate.** For a procedure T (best-of-n, or worst-of-n: the min
instead of the max), W_T(π) = W(T(π), T(π_ref)) with ties counting ½, computed from
the exact BoN laws of π and of π_ref (:func:`bonmath.bon_log_probs`; worst-of-n is
BoN of -r).

**The best t.** For a given n and KL budget, :func:`infalign_best_t` solves for β at
the target KL(π || π_ref) for each t and maximises W_T over t. InfAlign reports
t > 0 best for best-of-n and t < 0 best for worst-of-n (the authors' summary of their
results; Section 5 is "Experiment results"). ``tests/test_theory_inference_aware.py``
finds both near the continuous limit and on every tied support tried (not a proof).
Large |t| needs care: e^(tC) written out loses the differences between calibrated
rewards to rounding once e^t is large, so the transform is evaluated as
e^(t·top) expm1(t(C - top))/t.

(Over 400 lines on purpose: one method's calibration, transforms and KL solver, each
needed by the others; almost half is docstrings.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar

from bonmath.backend import (
    LOG_HALF,
    NEG_INF,
    Array,
    InputTypeError,
    logaddexp,
    logsumexp,
    masked_ieee,
    to_numpy,
)
from bonmath.bon import bon_log_probs
from bonmath.divergences import win_rate
from bonmath.levels import reward_levels
from bonmath.optimal import tilted_log_probs
from bonmath.theory.bonbon import (
    _solve_increasing,  # the increasing-root solver, shared within theory
)
from bonmath.validation import check_choice, check_n, check_positive, check_real, prepare

CONVENTIONS = ("mid", "lt", "le")
"""Tie conventions of the calibrated reward: (F_lt + F_le)/2, F_lt, F_le."""
TRANSFORMS = ("log", "identity", "exp")
"""Transformations Φ of the calibrated reward."""
PROCEDURES = ("best", "worst")
"""Inference-time procedures: best-of-n and worst-of-n (best-of-n jailbreaking)."""

DEFAULT_T_RANGE = (-64.0, 64.0)
"""The t interval :func:`infalign_best_t` searches."""


def _log_calibrated(ref_log_probs: Array, rewards: Array, convention: str, xp) -> Array:
    """log C(y) for every string of a validated support."""
    levels = reward_levels(ref_log_probs, rewards, xp)
    if convention == "lt":
        per_level = levels.log_cdf_lt
    elif convention == "le":
        per_level = levels.log_cdf_le
    else:
        per_level = logaddexp(levels.log_cdf_lt, levels.log_cdf_le, xp) + LOG_HALF
    return levels.per_string(per_level, xp)


@masked_ieee
def calibrated_reward(
    ref_log_probs: Array, rewards: Array, *, convention: str = "mid", normalize: bool = False
) -> Array:
    """InfAlign's calibrated reward C(y): the reference CDF of the reward, with ties.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    convention : {"mid", "lt", "le"}, default "mid"
        (F_lt + F_le)/2, F_lt or F_le (module docstring).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        C(y) in [0, 1].

    Notes
    -----
    InfAlign (Balashankar et al. 2024, Section 4, "InfAlign-CTRL"), calibrate-and-transform
    RL, step 1. With "mid", E_π[C] = W(π, π_ref) exactly (ties count ½).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.25, 0.25, 0.5])
    >>> calibrated_reward(ref, [0, 1, 1]).tolist()
    [0.125, 0.625, 0.625]
    >>> calibrated_reward(ref, [0, 1, 1], convention="lt").tolist()
    [0.0, 0.25, 0.25]
    """
    check_choice(convention, "convention", CONVENTIONS)
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    return xp.exp(_log_calibrated(ref_log_probs, rewards, convention, xp))


def _exp_transform_over_beta(calibrated: Array, top: Array, t: float, beta: float, xp) -> Array:
    """(Φ_t(C) - Φ_t(top))/β for Φ_t = (e^(tC) - 1)/t, t != 0: equal to the tilt exponent up
    to a constant. Written as -e^(t·top)/β · |expm1(t(C - top))/t|, so a huge e^(t·top)/β
    gives -inf below the top (the limit), not inf - inf."""
    step = xp.expm1(t * (calibrated - top))  # same sign as t(C - top): the ratio step/t is <= 0
    at_top = step == 0
    log_scale = t * top - math.log(beta) + xp.log(xp.abs(xp.where(at_top, 1.0, step)) / abs(t))
    return xp.where(at_top, 0.0, -xp.exp(log_scale))


@masked_ieee
def infalign_optimum_log_probs(
    ref_log_probs: Array,
    rewards: Array,
    beta: float,
    *,
    transform: str = "exp",
    t: float = 1.0,
    convention: str = "mid",
    normalize: bool = False,
) -> Array:
    """The CTRL optimum log π = log π_ref + Φ(C)/β - log Z for a transformed calibrated reward.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    beta : float
        KL coefficient β > 0.
    transform : {"log", "identity", "exp"}, default "exp"
        Φ = log C, C, or (e^(tC) - 1)/t (module docstring).
    t : float, default 1.0
        Exponent of the "exp" transform (any finite real; 0 is the identity).
    convention : {"mid", "lt", "le"}, default "mid"
        Tie convention of C (:func:`calibrated_reward`).
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        -inf where π_ref = 0, and (log transform) where C = 0.

    Notes
    -----
    The maximiser of E_π[Φ(C)] - β KL(π || π_ref) (InfAlign, Balashankar et al. 2024,
    calibrate-and-transform RL, step 2). With transform="log", convention="lt" and
    β = 1/(n-1) it is π_ref F_lt^(n-1)/Z, vBoN's bound optimum
    (:func:`bonmath.vbon_bound_optimum`); with "mid" or "le" it is not.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.5, 0.25, 0.25])
    >>> np.exp(infalign_optimum_log_probs(ref, [0, 1, 2], 1.0, transform="log", convention="lt")).round(6).tolist()
    [0.0, 0.4, 0.6]
    >>> np.exp(infalign_optimum_log_probs(ref, [0, 1, 2], 0.5, t=2.0)).round(4).tolist()
    [0.029, 0.0914, 0.8796]
    """
    beta = check_positive(beta, "beta")
    check_choice(transform, "transform", TRANSFORMS)
    check_choice(convention, "convention", CONVENTIONS)
    t = check_real(t, "t")
    if not math.isfinite(t):
        raise ValueError(f"t must be finite; got {t}")
    xp, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    log_c = _log_calibrated(ref_log_probs, rewards, convention, xp)
    if transform == "log":
        return tilted_log_probs(ref_log_probs, log_c, beta)
    calibrated = xp.exp(log_c)
    if transform == "identity" or t == 0.0:
        return tilted_log_probs(ref_log_probs, calibrated, beta)
    top = xp.max(xp.where(ref_log_probs == NEG_INF, 0.0, calibrated), axis=-1, keepdims=True)
    exponent = _exp_transform_over_beta(calibrated, top, t, beta, xp)
    return tilted_log_probs(ref_log_probs, exponent, 1.0)


@masked_ieee
def inference_time_win_rate(
    policy_log_probs: Array,
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    *,
    procedure: str = "best",
    normalize: bool = False,
) -> Array:
    """W(T_n(π), T_n(π_ref)): the win rate after best-of-n (or worst-of-n) decoding of both.

    Parameters
    ----------
    policy_log_probs, ref_log_probs : arrays of shape (..., k)
        log π and log π_ref on one support.
    rewards : array of shape (..., k)
        Rewards; ties count ½ (and tied draws are broken uniformly inside T_n).
    n : float
        Draws per decoding, any real n > 0 (n = 1: the plain win rate W(π, π_ref)).
    procedure : {"best", "worst"}, default "best"
        T_n returns the max (best-of-n) or the min (worst-of-n) of n draws.
    normalize : bool, default False
        Renormalise both instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (...)
        P(r(Y) > r(Z)) + ½ P(r(Y) = r(Z)), Y ~ T_n(π), Z ~ T_n(π_ref) independent.

    Notes
    -----
    InfAlign's inference-time win rate (Balashankar et al. 2024, Section 2, "Problem
    setup"), exactly:
    T_n(π) = :func:`bonmath.bon_log_probs` (π, ±r, n), then :func:`bonmath.win_rate`.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.log([0.5, 0.5])
    >>> float(inference_time_win_rate(ref, ref, [0, 1], 2))  # any policy against itself
    0.5
    >>> float(inference_time_win_rate(np.log([0.25, 0.75]), ref, [0, 1], 2, procedure="worst"))
    0.65625
    """
    n = check_n(n)
    check_choice(procedure, "procedure", PROCEDURES)
    _, (policy_log_probs, ref_log_probs, rewards) = prepare(
        {"policy_log_probs": policy_log_probs, "ref_log_probs": ref_log_probs},
        {"rewards": rewards},
        normalize=normalize,
    )
    scores = rewards if procedure == "best" else -rewards
    return win_rate(bon_log_probs(policy_log_probs, scores, n), bon_log_probs(ref_log_probs, scores, n), rewards)


class InfAlignBestT(NamedTuple):
    """The best exponential transform for one procedure, n and KL budget.

    Returned by :func:`infalign_best_t`; a named tuple ``(t, beta, win_rate)``.

    Examples
    --------
    >>> import numpy as np
    >>> ref, rewards = np.log([0.5, 0.25, 0.25]), np.array([0.0, 1.0, 2.0])
    >>> best = infalign_best_t(ref, rewards, n=2, kl=0.0)
    >>> best.beta, round(best.win_rate, 12)
    (inf, 0.5)
    >>> round(infalign_best_t(ref, rewards, n=2, kl=0.1).win_rate, 3)
    0.638
    """

    t: float
    """The exponent of Φ_t = (e^(tC) - 1)/t maximising the inference-time win rate."""
    beta: float
    """The β at which π_ref e^(Φ_t(C)/β)/Z has the target KL (inf at KL = 0)."""
    win_rate: float
    """The inference-time win rate W(T_n(π), T_n(π_ref)) there."""


class _ExpFamily:
    """The tilts π_ref e^(c Φ̃_t(C))/Z of one support, Φ̃_t = (e^(t(C - top)) - 1)/t <= 0.

    Φ̃_t = e^(-t·top) (Φ_t - Φ_t(top)): the same family as the exp transform, the factor
    e^(t·top) moved from the reward into c = e^(t·top)/β (better scaled for large |t|).
    """

    def __init__(self, ref_log_probs: np.ndarray, rewards: np.ndarray, convention: str):
        self.ref = ref_log_probs
        self.positive = ref_log_probs > NEG_INF
        self.calibrated = np.exp(_log_calibrated(ref_log_probs, rewards, convention, np))
        self.top = float(self.calibrated[self.positive].max())
        at_top = self.positive & (self.calibrated == self.top)
        self.max_kl = -float(logsumexp(np.where(at_top, ref_log_probs, NEG_INF), np))  # the c → ∞ limit's KL

    def reward(self, t: float) -> np.ndarray:
        shifted = self.calibrated - self.top
        return shifted if t == 0.0 else np.expm1(t * shifted) / t

    def log_probs(self, reward: np.ndarray, c: float) -> np.ndarray:
        tilted = np.where(self.positive, self.ref + c * reward, NEG_INF)
        return tilted - logsumexp(tilted, np)

    def kl(self, reward: np.ndarray, c: float) -> float:
        tilted = self.log_probs(reward, c)[self.positive]
        return float(np.dot(np.exp(tilted), tilted - self.ref[self.positive]))

    def c_for_kl(self, reward: np.ndarray, kl: float) -> float:
        """c >= 0 with KL(π_c || π_ref) = kl; KL is increasing in c (its derivative is c Var_c)."""
        if kl <= 0.0:
            return 0.0
        c = _solve_increasing(lambda c: self.kl(reward, c), kl)
        if c == math.inf:
            raise ValueError(f"no tilt reaches KL = {kl:g}")
        return c

    def beta(self, t: float, c: float) -> float:
        if c == 0.0:
            return math.inf
        return math.exp(t * self.top - math.log(c))


def _single_support(ref_log_probs: Array, rewards: Array, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    _, (ref, rewards) = prepare(
        {"ref_log_probs": to_numpy(ref_log_probs)}, {"rewards": to_numpy(rewards)}, normalize=normalize
    )
    if ref.ndim != 1:
        raise ValueError(f"ref_log_probs must be one support of shape (k,); got {ref.shape}")
    return ref, rewards


def _exp_family_for_kl(ref, rewards, kl: float, convention: str) -> _ExpFamily:
    kl = check_positive(kl, "kl", inclusive=True)
    family = _ExpFamily(ref, rewards, convention)
    if kl > 0 and kl >= family.max_kl:
        raise ValueError(
            f"kl must be < -log q_top = {family.max_kl:.6g}, the KL of π_ref restricted to the top "
            f"reward level (every tilt's limit); got {kl:g}"
        )
    return family


@masked_ieee
def infalign_beta_for_kl(
    ref_log_probs: Array,
    rewards: Array,
    kl: float,
    *,
    t: float = 1.0,
    convention: str = "mid",
    normalize: bool = False,
) -> float:
    """The β at which the exp-transform optimum (exponent t) has KL(π || π_ref) = ``kl``.

    Parameters
    ----------
    ref_log_probs : array of shape (k,)
        log π_ref of one support (no batch axes; tensors are detached).
    rewards : array of shape (k,)
    kl : float
        Target KL, 0 <= kl < -log q_top (q_top: reference mass of the top reward level).
    t : float, default 1.0
        Exponent of Φ_t = (e^(tC) - 1)/t (0: the identity).
    convention : {"mid", "lt", "le"}, default "mid"
    normalize : bool, default False

    Returns
    -------
    float
        β > 0 for :func:`infalign_optimum_log_probs` (transform="exp", t); inf at kl = 0.

    Examples
    --------
    >>> import numpy as np
    >>> import bonmath
    >>> ref, r = np.log([0.5, 0.25, 0.25]), np.array([0.0, 1.0, 2.0])
    >>> beta = infalign_beta_for_kl(ref, r, 0.1, t=3.0)
    >>> round(float(bonmath.kl_divergence(infalign_optimum_log_probs(ref, r, beta, t=3.0), ref)), 12)
    0.1
    """
    check_choice(convention, "convention", CONVENTIONS)
    t = check_real(t, "t")
    if not math.isfinite(t):
        raise ValueError(f"t must be finite; got {t}")
    ref, rewards = _single_support(ref_log_probs, rewards, normalize)
    family = _exp_family_for_kl(ref, rewards, kl, convention)
    return family.beta(t, family.c_for_kl(family.reward(t), kl))


def _t_grid(t_range: tuple[float, float]) -> np.ndarray:
    """0 and ±2^(-4..) geometric steps up to the ends of ``t_range``, inside it."""
    lo, hi = t_range
    steps = [0.0]
    for end, sign in ((hi, 1.0), (lo, -1.0)):
        if sign * end > 0:
            steps.extend(sign * np.geomspace(min(1 / 16, sign * end), sign * end, 13))
    return np.unique(np.clip(steps, lo, hi))


@masked_ieee
def infalign_best_t(
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    kl: float,
    *,
    procedure: str = "best",
    convention: str = "mid",
    t_range: tuple[float, float] = DEFAULT_T_RANGE,
    normalize: bool = False,
) -> InfAlignBestT:
    """The exponent t whose CTRL optimum, at the given KL, wins most often after T_n decoding.

    Parameters
    ----------
    ref_log_probs : array of shape (k,)
        log π_ref of one support (no batch axes; tensors are detached).
    rewards : array of shape (k,)
        Rewards; ties allowed.
    n : float
        Draws of the inference-time procedure, n > 0.
    kl : float
        KL(π || π_ref) budget, 0 <= kl < -log q_top.
    procedure : {"best", "worst"}, default "best"
    convention : {"mid", "lt", "le"}, default "mid"
        Tie convention of the calibrated reward.
    t_range : (float, float), default (-64, 64)
        Interval searched for t.
    normalize : bool, default False

    Returns
    -------
    InfAlignBestT
        ``(t, beta, win_rate)``.

    Notes
    -----
    For each t, β(t) solves KL(π_t || π_ref) = kl exactly (Brent's method on the
    monotone KL of the tilt family); W_T(t) = :func:`inference_time_win_rate` of
    π_t. t is chosen on a grid (0 and ±2^(-4)..±64 in 13 geometric steps each way),
    then refined by bounded Brent minimisation between the best point's neighbours
    (to ~1e-6 relative in t). W_T(t) need not be unimodal; the grid guards against
    a far-off local maximum, not against every one. InfAlign (Balashankar et al.
    2024, Section 5) compares exponential transforms the same way.

    Examples
    --------
    >>> import numpy as np
    >>> ref, r = np.full(20, -np.log(20)), np.arange(20.0)
    >>> best = infalign_best_t(ref, r, n=4, kl=0.5)
    >>> best.t > 0, round(best.win_rate, 3)
    (True, 0.847)
    >>> infalign_best_t(ref, r, n=4, kl=0.5, procedure="worst").t < 0
    True
    """
    n = check_n(n)
    check_choice(procedure, "procedure", PROCEDURES)
    check_choice(convention, "convention", CONVENTIONS)
    if not isinstance(t_range, (tuple, list)) or len(t_range) != 2:
        raise InputTypeError(f"t_range must be a pair (lo, hi) of real numbers; got {t_range!r}")
    lo, hi = (check_real(x, "t_range") for x in t_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"t_range must be two finite numbers lo < hi; got {t_range}")
    ref, rewards = _single_support(ref_log_probs, rewards, normalize)
    family = _exp_family_for_kl(ref, rewards, kl, convention)

    scores = rewards if procedure == "best" else -rewards
    # W(T_n(π), T_n(π_ref)) = E_{T_n(π)}[mid-CDF of T_n(π_ref)] (ties count ½)
    beats = np.exp(_log_calibrated(bon_log_probs(ref, scores, n), rewards, "mid", np))

    def evaluate(t: float) -> tuple[float, float]:
        reward = family.reward(t)
        c = family.c_for_kl(reward, kl)
        decoded = bon_log_probs(family.log_probs(reward, c), scores, n)
        return float(np.dot(np.exp(decoded), beats)), c

    grid = _t_grid((lo, hi))
    wins = [evaluate(t)[0] for t in grid]
    best = int(np.argmax(wins))
    t_best, win_best = float(grid[best]), wins[best]
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    if right > left:
        refined = minimize_scalar(
            lambda t: -evaluate(t)[0], bounds=(left, right), method="bounded",
            options={"xatol": 1e-6 * max(1.0, abs(t_best))},
        )
        if -refined.fun > win_best:
            t_best, win_best = float(refined.x), float(-refined.fun)
    win, c = evaluate(t_best)
    return InfAlignBestT(t=t_best, beta=family.beta(t_best, c), win_rate=win)
