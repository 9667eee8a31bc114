"""Issue #11 (the precision audit): each class of wrong numbers it found, tested at the
failing point and across the parameter range against mpmath or exact rationals.

One test per class, named after the claim; the class is cited in the docstring.
"""

import math

import mpmath
import numpy as np
import pytest
from conftest import ATOL_NEAR_ZERO, ATOL_NORMALISATION, NEAR_ZERO, RTOL_MPMATH

import bonmath
from bonmath.testing import mp_bon_log_probs

DPS = 650
"""mpmath digits: a^n - b^n cancels ~320 digits for levels 1e-300 apart."""
N_SWEEP = [*np.logspace(-3, 15, 13).tolist(), 1 - 1e-12, 1 + 1e-12, 2.0]
"""n from 1e-3 to 1e15, log-spaced, and next to 1."""


def assert_close(have, want, what):
    """|have - want| <= RTOL_MPMATH |want|, or <= ATOL_NEAR_ZERO where |want| < NEAR_ZERO;
    infinities must match exactly."""
    have = float(have)
    if math.isinf(float(want)):  # beyond float64's range: the float answer is ±inf
        assert have == float(want), f"{what}: have {have}, want {mpmath.nstr(want, 17)}"
        return
    assert math.isfinite(have), f"{what}: have {have}, want {mpmath.nstr(want, 17)}"
    error = abs(mpmath.mpf(have) - want)
    tolerance = ATOL_NEAR_ZERO if abs(want) < NEAR_ZERO else RTOL_MPMATH * abs(want)
    assert error <= tolerance, f"{what}: have {have!r}, want {mpmath.nstr(want, 17)}, error {float(error):.3g}"


# --------------------------------------------------------- class 1: the exact vBoN reward


def mp_log_ratio(b, q, n, a=None, top=False):
    """R_N = log[(a^n - b^n)/q] at DPS digits, a = b + q unless given. ``top``: a = 1, the
    smaller of b and q kept and the other one minus it (a float pair (F_lt, q) summing to
    1 to rounding cannot say more)."""
    with mpmath.workdps(DPS):
        b, q, n = mpmath.mpf(b), mpmath.mpf(q), mpmath.mpf(n)
        if top:
            a, b, q = 1, *((b, 1 - b) if b < q else (1 - q, q))
        a = b + q if a is None else mpmath.mpf(a)
        if b == 0:
            return (n - 1) * mpmath.log(q)
        return mpmath.log((a**n - b**n) / q)


def mp_support_log_ratio(log_probs, rewards, n):
    """R_N per string of an enumerated support, the float log-probabilities taken as exact.

    Their exponentials sum to 1 only to ~1e-17, which decides R_N for a level within that
    distance of the top at n = 1e15; as REFERENCE.md prescribes, the CDF at a level
    boundary is the mass below it where that is < 1/2 and one minus the mass above it
    otherwise (so F_le = 1 on the top level).
    """
    with mpmath.workdps(DPS):
        p = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
        values = sorted(set(rewards))
        mass = [mpmath.fsum(pi for pi, r in zip(p, rewards) if r == v) for v in values]

        def boundary(j):
            below = mpmath.fsum(mass[:j])
            return below if below < 0.5 else 1 - mpmath.fsum(mass[j:])

        per_level = {v: mp_log_ratio(boundary(j), mass[j], n, a=boundary(j + 1)) for j, v in enumerate(values)}
        return [per_level[r] for r in rewards]


def exact_log_probs(masses):
    """Correctly rounded logs of masses normalised in mpmath."""
    with mpmath.workdps(50):
        masses = [mpmath.mpf(m) for m in masses]
        total = mpmath.fsum(masses)
        return [float(mpmath.log(m / total)) for m in masses]


def test_bon_log_ratio_is_accurate_for_n_up_to_1e15():
    """Class 1: R_N = log[(F_le^n - F_lt^n)/q] (REFERENCE.md, "Computing it accurately") to
    relative error RTOL_MPMATH (absolute ATOL_NEAR_ZERO within NEAR_ZERO of 0) for n from
    1e-3 to 1e15, from an enumerated support (bon_log_ratio) and from (F_lt, q) pairs
    (bon_log_ratio_from_cdf), including the top level F_le = 1; log π_N keeps its accuracy."""
    # the audit's points
    assert_close(bonmath.bon_log_ratio(np.log([0.5, 0.5]), [0, 1], 1e12)[1], mpmath.log(2), "R at n = 1e12")
    assert_close(bonmath.bon_log_ratio(np.log([0.5, 0.5]), [0, 1], 1e9)[1], mpmath.log(2), "R at n = 1e9")
    have = bonmath.bon_log_ratio_from_cdf(math.log(1e-3), math.log(0.999), 1e6)
    assert_close(have, mp_log_ratio(1e-3, 0.999, 1e6, top=True), "from_cdf at F_lt = 1e-3, q = 0.999 (top)")
    # an enumerated support: a middle level (b, q) below a rest, and a top level (b, q)
    masses = [1e-300, 1e-20, 1e-3, 0.3, 1 - 1e-8]
    for n in N_SWEEP:
        for b in masses:
            for q in masses:
                for rest in ([], [1e-15], [0.1]):
                    log_probs = exact_log_probs([b, q, *rest])
                    rewards = [0.0, 1.0, 2.0][: len(log_probs)]
                    have = bonmath.bon_log_ratio(np.array(log_probs), rewards, n)
                    want = mp_support_log_ratio(log_probs, rewards, n)
                    for j, (h, w) in enumerate(zip(have, want)):
                        assert_close(h, w, f"bon_log_ratio level {j} of {[b, q, *rest]}, n = {n}")
    # (F_lt, q) pairs; a pair whose sum is 1 to rounding is the top level
    log_values = [-745.0, -1e-20, *np.log([1e-300, 1e-20, 1e-8, 1e-3, 0.3, 0.5, 1 - 1e-8]).tolist()]
    for n in N_SWEEP:
        for log_b in log_values:
            for log_q in [*log_values, math.log(-math.expm1(log_b))]:
                log_le = np.logaddexp(log_b, log_q)
                if log_le > 1e-15:
                    continue
                have = bonmath.bon_log_ratio_from_cdf(log_b, log_q, n)
                with mpmath.workdps(DPS):
                    want = mp_log_ratio(mpmath.exp(log_b), mpmath.exp(log_q), n, top=log_le >= -1e-15)
                assert_close(have, want, f"from_cdf(log b = {log_b}, log q = {log_q}, n = {n})")
    # log π_N itself, on supports with levels within 1e-15 of the top
    for n in N_SWEEP:
        log_probs = exact_log_probs([0.3, 1e-15, 0.7 - 2e-15, 1e-15])
        have = bonmath.bon_log_probs(np.array(log_probs), [0.0, 1.0, 2.0, 3.0], n)
        for h, w in zip(have, mp_bon_log_probs(log_probs, [0.0, 1.0, 2.0, 3.0], n, dps=DPS)):
            assert_close(h, w, f"log π_N at n = {n}")


# --------------------------------------------------------- class 2: soft BoN at small temperature


def mp_soft_bon_log_probs(log_probs, rewards, n, lam, dps=60):
    """Soft BoN by enumerating the k^n draws, softmax(r/λ) from exact reward differences
    (e^x taken as 0 or inf beyond |x| = 1e4, far below any float's resolution)."""
    import itertools

    def exp_capped(x):
        return mpmath.mpf(0) if x < -1e4 else mpmath.inf if x > 1e4 else mpmath.exp(x)

    with mpmath.workdps(dps):
        p = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
        r = [mpmath.mpf(v) for v in rewards]
        law = [mpmath.mpf(0)] * len(p)
        for draws in itertools.product(range(len(p)), repeat=n):
            weight = mpmath.fprod(p[i] for i in draws)
            for i in draws:
                law[i] += weight / mpmath.fsum(exp_capped((r[j] - r[i]) / lam) for j in draws)
        return [mpmath.log(x) for x in law]


SOFT_BON_REWARDS = [[0.0, 1.0, 2.0], [0.0, 1e4, 2e4], [0.0, 1e308, -1e308], [0.0, 1.0, 1.0], [1e308, -1e308, -1e308]]


def test_soft_bon_normalises_and_tends_to_bon_for_any_r_over_lambda():
    """Class 2: soft BoN (Verdun et al. 2025) normalises and matches the enumerated law to
    RTOL_MPMATH for λ from 1e-300 to 1e300 and rewards up to ±1e308 (r/λ far beyond float
    range); as r/λ → ∞ it is BoN with uniform ties (REFERENCE.md, "Related results")."""
    log_probs = np.log([0.2, 0.3, 0.5])
    have = bonmath.soft_bon_log_probs(log_probs, [0, 1, 2], 3, 1e-16)
    np.testing.assert_allclose(have, bonmath.bon_log_probs(log_probs, [0, 1, 2], 3), rtol=RTOL_MPMATH)
    for lam in [*np.logspace(-300, 300, 13).tolist(), 1e-16, 1e-12, 0.37, 3e4]:
        for rewards in SOFT_BON_REWARDS:
            for n in (2, 4):
                have = bonmath.soft_bon_log_probs(log_probs, rewards, n, lam)
                assert abs(np.logaddexp.reduce(have)) <= ATOL_NORMALISATION, (lam, rewards, n, have)
                for h, w in zip(have, mp_soft_bon_log_probs(log_probs.tolist(), rewards, n, lam)):
                    assert_close(h, w, f"soft BoN, rewards {rewards}, n = {n}, λ = {lam}")
        if lam < 1e-16:
            for rewards in SOFT_BON_REWARDS:
                want = bonmath.bon_log_probs(log_probs, rewards, 5)
                np.testing.assert_allclose(bonmath.soft_bon_log_probs(log_probs, rewards, 5, lam), want, rtol=RTOL_MPMATH)


# --------------------------------------------------------- class 3: Best-of-Poisson at large μ


def mp_level_law(log_probs, rewards, level_cdf_map):
    """log π(y) = log π_ref(y) - log q + log(G(F_le) - G(F_lt)) for a law that maps the level
    CDF F to G(F) (BoN: F^n; Best-of-Poisson: F e^(μ(F-1))), at DPS digits, with the CDF
    convention of :func:`mp_support_log_ratio` (F_le = 1 on the top level)."""
    with mpmath.workdps(DPS):
        p = [mpmath.exp(mpmath.mpf(x)) for x in log_probs]
        values = sorted(set(rewards))
        mass = [mpmath.fsum(pi for pi, r in zip(p, rewards) if r == v) for v in values]

        def boundary(j):
            below = mpmath.fsum(mass[:j])
            return below if below < 0.5 else 1 - mpmath.fsum(mass[j:])

        out = []
        for pi, r in zip(p, rewards):
            j = values.index(r)
            gain = level_cdf_map(boundary(j + 1)) - level_cdf_map(boundary(j))
            out.append(mpmath.log(pi / mass[j] * gain))
        return out


POISSON_SUPPORTS = [
    (exact_log_probs([0.5, 0.5]), [0.0, 1.0]),
    (exact_log_probs([0.3, 1e-300, 0.2, 0.1, 1e-200]), [0.0, 1.0, 2.0, 2.0, 3.0]),
    (exact_log_probs([0.7, 0.3 - 1e-15, 1e-15]), [0.0, 1.0, 2.0]),
    ([math.log(0.25), math.log(0.75), -1000.0], [1.0, 0.0, 2.0]),
]


def test_best_of_poisson_is_accurate_for_mu_up_to_float_max():
    """Class 3: Best-of-Poisson (n - 1 ~ Poisson(μ); its level CDF is F e^(μ(F-1))) matches
    mpmath to RTOL_MPMATH (ATOL_NEAR_ZERO near 0), normalises and has no positive
    log-probability, for μ from 1e-6 to float64's maximum."""
    have = bonmath.best_of_poisson_log_probs(np.log([0.5, 0.5]), [0, 1], 1e9)
    assert have[1] <= 0.0 and abs(have[1]) <= ATOL_NEAR_ZERO  # the audit's +2.4e-7
    for mu in [*np.logspace(-6, 308, 17).tolist(), 1e9, 1e15, 1e300, np.finfo(float).max]:
        for log_probs, rewards in POISSON_SUPPORTS:
            have = bonmath.best_of_poisson_log_probs(np.array(log_probs), rewards, mu)
            assert np.all(have <= 0.0) and abs(np.logaddexp.reduce(have)) <= ATOL_NORMALISATION, (mu, have)
            mu_mp = mpmath.mpf(mu)
            want = mp_level_law(log_probs, rewards, lambda f, mu_mp=mu_mp: f * mpmath.exp(mu_mp * (f - 1)))
            for h, w in zip(have, want):
                assert_close(h, w, f"Best-of-Poisson, μ = {mu}, support {log_probs}")


# --------------------------------------------------------- class 4: r/β overflow in the tilted policy


def exp_capped(x):
    """e^x in mpmath, taken as 0 below x = -1e4 and inf above 1e4 (far beyond any float's
    resolution); mpmath would otherwise spend its time on e^(1e600)."""
    return mpmath.mpf(0) if x < -1e4 else mpmath.inf if x > 1e4 else mpmath.exp(x)


def mp_tilted_log_probs(log_probs, values, beta):
    """log π_ref + (v - max v)/β - log Z at 60 digits, from exact differences; -inf for a
    value of -inf or a string without mass."""
    with mpmath.workdps(60):
        values = [mpmath.mpf(v) for v in values]
        best = max(v for v, lp in zip(values, log_probs) if lp > -math.inf)
        terms = [
            lp + (v - best) / beta if v > -mpmath.inf and lp > -math.inf else -mpmath.inf
            for v, lp in zip(values, log_probs)
        ]
        log_z = mpmath.log(mpmath.fsum(exp_capped(t) for t in terms if t > -mpmath.inf))
        return [t - log_z for t in terms]


TILT_REWARDS = [[0.0, 1.0, 2.0], [0.0, 1e308, -1e308], [0.0, 1.0, 1.0], [-math.inf, 0.0, 3.0], [5.0, 5.0, 5.0]]


def test_tilted_policy_is_the_limit_law_when_r_over_beta_overflows():
    """Class 4: π_β = π_ref e^(r/β)/Z (REFERENCE.md, "vBoN") matches mpmath for β from 1e-320
    to 1e300 and rewards up to ±1e308, with no NaN: where r/β overflows it is the limit, the
    law on the best reward with ties ∝ π_ref. The same holds where β multiplies or divides
    inside other laws: the released exact mode (β = 1e-320), the vBoN-bound optimum
    (n = 1e308), the BoNBoN tilt (c = 1.7e308) and regularized BoN (|β| = 1e307)."""
    log_probs = np.log([0.2, 0.3, 0.5])
    np.testing.assert_array_equal(bonmath.tilted_log_probs(log_probs, [0, 1, 2], 1e-310), [-np.inf, -np.inf, 0.0])
    for beta in [*np.logspace(-320, 300, 32).tolist(), 5e-324, 0.5]:
        for rewards in TILT_REWARDS:
            for ref in (log_probs, np.array([-np.inf, math.log(0.4), math.log(0.6)])):
                have = bonmath.tilted_log_probs(ref, rewards, beta)
                for h, w in zip(have, mp_tilted_log_probs(ref.tolist(), rewards, beta)):
                    assert_close(h, w, f"tilted, rewards {rewards}, β = {beta}")
    rewards = [0.0, 1.0, 2.0]
    have = bonmath.released_exact_mode_optimum(log_probs, rewards, 4, beta=1e-320)
    np.testing.assert_array_equal(have, [-np.inf, -np.inf, 0.0])
    for n in (2.0, 1e3, 1e15, 1e308):
        have = bonmath.vbon_bound_optimum(log_probs, rewards, n)
        log_cdf_lt = [-math.inf, math.log(0.2), math.log(0.5)]
        for h, w in zip(have, mp_tilted_log_probs(log_probs.tolist(), log_cdf_lt, 1 / mpmath.mpf(n - 1))):
            assert_close(h, w, f"vbon_bound_optimum, n = {n}")
    for c in (1.0, 1e300, 1.7e308):
        have = bonmath.bonbon_tilt_log_probs(log_probs, rewards, c)
        mid = [mpmath.mpf(0.1), mpmath.mpf(0.35), mpmath.mpf(0.75)]
        for h, w in zip(have, mp_tilted_log_probs(log_probs.tolist(), mid, 1 / mpmath.mpf(c))):
            assert_close(h, w, f"bonbon tilt, c = {c}")
    # regularized BoN ranks by r + β log π_ref; at |β| = 1e307 the product overflows for
    # log π_ref = -700 and -800, which must still rank in that order
    ref = np.array([math.log(0.3), -700.0, math.log(0.7), -800.0])
    for beta, order in ((1e307, [3, 1, 0, 2]), (-1e307, [2, 0, 1, 3])):
        have = bonmath.regularized_bon_log_probs(ref, [0.0, 0.0, 0.0, 0.0], 3, beta)
        want = bonmath.bon_log_probs(ref, np.argsort(order).astype(float), 3)
        np.testing.assert_allclose(have, want, rtol=RTOL_MPMATH)
