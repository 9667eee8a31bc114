"""Issue #11 (the precision audit): each class of wrong numbers it found, tested at the
failing point and across the parameter range against mpmath or exact rationals.

One test per class, named after the claim; the class is cited in the docstring.
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
from conftest import (
    ATOL_NEAR_ZERO,
    ATOL_NORMALISATION,
    NEAR_ZERO,
    RTOL_FINITE_DIFFERENCE,
    RTOL_MPMATH,
)

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


def exp_capped(x):
    """e^x in mpmath, taken as 0 below x = -1e4 and inf above 1e4 (far beyond any float's
    resolution); mpmath would otherwise spend its time on e^(1e600)."""
    return mpmath.mpf(0) if x < -1e4 else mpmath.inf if x > 1e4 else mpmath.exp(x)


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
    distance of the top at n = 1e15; as docs/math.md prescribes, the CDF at a level
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
    """Class 1: R_N = log[(F_le^n - F_lt^n)/q] (docs/math.md, "Computing it accurately") to
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
    range); as r/λ → ∞ it is BoN with uniform ties (docs/math.md, "Related results")."""
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
    """Class 4: π_β = π_ref e^(r/β)/Z (docs/math.md, "vBoN") matches mpmath for β from 1e-320
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


# --------------------------------------------------------- class 5: Rényi divergence near α = 1


def mp_renyi(log_p, log_q, alpha):
    """D_α of the renormalised p and q at 80 digits (α = 1: KL); +inf where α >= 1 and p > 0 = q."""
    with mpmath.workdps(80):
        p = [mpmath.exp(mpmath.mpf(x)) for x in log_p]
        q = [mpmath.exp(mpmath.mpf(x)) for x in log_q]
        p_total, q_total = mpmath.fsum(p), mpmath.fsum(q)
        p, q = [x / p_total for x in p], [x / q_total for x in q]
        if alpha >= 1 and any(pi > 0 and qi == 0 for pi, qi in zip(p, q)):
            return mpmath.inf
        pairs = [(pi, qi) for pi, qi in zip(p, q) if pi > 0 and qi > 0]
        if alpha == 1:
            return mpmath.fsum(pi * mpmath.log(pi / qi) for pi, qi in pairs)
        alpha = mpmath.mpf(alpha)
        # log Σ p^α q^(1-α) as a log-sum of exact exponents (α may be 1e308)
        exponents = [alpha * mpmath.log(pi) + (1 - alpha) * mpmath.log(qi) for pi, qi in pairs]
        top = max(exponents)
        return (top + mpmath.log(mpmath.fsum(exp_capped(e - top) for e in exponents))) / (alpha - 1)


def divergence_pairs():
    """(p, q) pairs: far apart, within 1e-8 of each other, with atoms of 1e-300 and zeros."""
    rng = np.random.default_rng(11)
    pairs = []
    for _ in range(4):
        x, y = rng.standard_normal(5), rng.standard_normal(5)
        pairs.append((x - np.logaddexp.reduce(x), y - np.logaddexp.reduce(y)))
        z = x + 1e-8 * y
        pairs.append((x - np.logaddexp.reduce(x), z - np.logaddexp.reduce(z)))
    pairs.append((np.log([0.25, 0.75]), np.log([0.5, 0.5])))
    pairs.append((np.array(exact_log_probs([0.5, 0.5 - 1e-300, 1e-300])), np.log([0.2, 0.3, 0.5])))
    pairs.append((np.array([math.log(0.4), math.log(0.6), -np.inf]), np.log([0.2, 0.3, 0.5])))
    pairs.append((np.log([0.2, 0.3, 0.5]), np.array([math.log(0.4), math.log(0.6), -np.inf])))
    return pairs


ALPHAS = sorted({*(1 + s * 10.0**-k for k in range(1, 17) for s in (-1, 1)), *np.logspace(-12, 308, 17).tolist(), 0.5, 2.0, 1.0})


def test_renyi_divergence_is_continuous_through_alpha_one():
    """Class 5: D_α(p || q) = (1/(α-1)) log Σ p^α q^(1-α) (Rényi 1961) matches mpmath to
    RTOL_MPMATH (ATOL_NEAR_ZERO near 0) for α from 1e-12 to 1e308, including α = 1 ± 1e-16
    where it must equal KL(p || q); so does the continuous-limit BoN bound
    (1/(α-1)) log(n^α/(α(n-1)+1)) for n from 1 + 1e-12 to 1e308."""
    p, q = np.log([0.4, 0.6]), np.log([0.2, 0.8])
    assert_close(bonmath.theory.renyi_divergence(p, q, 1 + 1e-15), mp_renyi(p.tolist(), q.tolist(), 1), "audit point")
    assert_close(bonmath.theory.bon_renyi_upper_bound(2, 1 + 1e-15), mpmath.log(2) - mpmath.mpf(1) / 2, "audit bound")
    for log_p, log_q in divergence_pairs():
        for alpha in ALPHAS:
            have = bonmath.theory.renyi_divergence(log_p, log_q, alpha)
            assert have >= 0.0, (alpha, have)
            assert_close(have, mp_renyi(log_p.tolist(), log_q.tolist(), alpha), f"D_{alpha}({log_p}, {log_q})")
    for n in [1 + 1e-12, 1 + 1e-6, 1.5, 2.0, 1e3, 1e15, 1e300, 1e308]:
        for alpha in ALPHAS:
            with mpmath.workdps(100):
                a, m = mpmath.mpf(alpha), mpmath.mpf(n)
                want = (a * mpmath.log(m) - mpmath.log(a * (m - 1) + 1)) / (a - 1) if alpha != 1 else mpmath.log(m) - (m - 1) / m
            assert_close(bonmath.theory.bon_renyi_upper_bound(n, alpha), want, f"Rényi bound n = {n}, α = {alpha}")


# --------------------------------------------------------- class 6: scalar curves at extremes


def digits_for(x, power=1):
    """mpmath digits for a formula that cancels ~power·|log10 x| digits at a tiny or huge x."""
    return 40 + power * int(abs(math.log10(x))) if x > 0 else 40


def mp_bonbon_win_rate(c):
    with mpmath.workdps(digits_for(c, 2)):  # 1/(1 - e^-c) and 1/c agree to ~600 digits at c = 1e-300
        c = mpmath.mpf(c)
        return 1 / (1 - mpmath.exp(-c)) - 1 / c


def mp_bonbon_kl(c):
    with mpmath.workdps(digits_for(c, 3)):  # and KL ~ c²/24 is ~300 digits below its terms
        c = mpmath.mpf(c)
        return c * (1 / (1 - mpmath.exp(-c)) - 1 / c) - mpmath.log((mpmath.exp(c) - 1) / c)


def mp_beirami(eps, n):
    with mpmath.workdps(digits_for(eps, 2)):
        eps, n = mpmath.mpf(eps), mpmath.mpf(n)
        stay = (1 - eps) ** n
        continuous = stay * (mpmath.log(n) + (n - 1) * mpmath.log(1 - eps) - (n - 1) / n) if stay else 0
        return continuous + (1 - stay) * mpmath.log((1 - stay) / eps)


C_SWEEP = [0.0, *np.logspace(-300, 308, 39).tolist(), 0.05, 700.0, 710.0]
N_SCALAR_SWEEP = [1.0, 1 + 1e-12, 1 + 1e-6, *np.logspace(-3, 308, 23).tolist(), np.finfo(float).max]


def test_scalar_curves_are_right_over_their_whole_range():
    """Class 6: every scalar curve of bonmath.theory (BoNBoN's W(c), KL(c) and its inverse,
    margin and β*; Beirami's bounds and KL estimate; the χ² and KL bounds) matches mpmath
    to RTOL_MPMATH (ATOL_NEAR_ZERO near 0), log-spaced over its legal range, and gives
    the right limit (inf where the true value is inf or beyond float range)."""
    theory = bonmath.theory
    assert theory.bonbon_kl(math.inf) == math.inf and theory.bonbon_win_rate(math.inf) == 1.0
    assert_close(theory.bonbon_c_for_kl(1e-200), mpmath.sqrt(24 * mpmath.mpf(1e-200)), "c for KL = 1e-200")
    assert_close(theory.bon_renyi_upper_bound(1e308, 2), mpmath.log(mpmath.mpf(1e308) ** 2 / (2 * mpmath.mpf(1e308) - 1)), "D_2 bound")
    assert_close(theory.bon_chi2_upper_bound(1e308), (mpmath.mpf(1e308) - 1) ** 2 / (2 * mpmath.mpf(1e308) - 1), "χ² bound")
    for c in C_SWEEP:
        if c > 0:
            assert_close(theory.bonbon_win_rate(c), mp_bonbon_win_rate(c), f"W({c})")
            assert_close(theory.bonbon_kl(c), mp_bonbon_kl(c), f"KL({c})")
    for kl in [0.0, *np.logspace(-300, math.log10(708), 25).tolist(), 708.3]:
        have = theory.bonbon_c_for_kl(kl)
        if kl == 0:
            assert have == 0.0
            continue
        # the relative error of c is |KL(c) - kl| / (c KL'(c)), with KL'(c) = c W'(c)
        with mpmath.workdps(digits_for(have, 3)):
            c = mpmath.mpf(have)
            slope = c * (1 / c**2 - mpmath.exp(-c) / (1 - mpmath.exp(-c)) ** 2)
            relative_error = abs(mp_bonbon_kl(c) - mpmath.mpf(kl)) / (c * slope)
        assert relative_error <= RTOL_MPMATH, f"c for KL = {kl}: have {have}, relative error {float(relative_error):.3g}"
    assert theory.bonbon_c_for_kl(709.0) == math.inf  # KL(float max) = 708.4: c is beyond float range
    for n in N_SCALAR_SWEEP:
        with mpmath.workdps(100):
            m = mpmath.mpf(n)
            assert_close(bonmath.bon_kl_upper_bound(n), mpmath.log(m) - (m - 1) / m, f"KL bound n = {n}")
            assert_close(theory.bon_win_rate_upper_bound(n), m / (m + 1), f"win-rate bound n = {n}")
            chi2 = (m - 1) ** 2 / (2 * m - 1) if n > 0.5 else mpmath.inf
            assert_close(theory.bon_chi2_upper_bound(n), chi2, f"χ² bound n = {n}")
            if n >= 1:
                margin = (m - 1) * mpmath.harmonic(m - 1)
                assert_close(theory.bonbon_margin(n), margin, f"margin n = {n}")
            if n > 1:
                assert_close(theory.bonbon_beta(n), 1 / (2 * margin), f"β* n = {n}")
        if n >= 1:
            for eps in [*np.logspace(-300, 0, 16).tolist(), 0.5, 1 - 2**-53]:
                assert_close(theory.beirami_kl_estimate(eps, n), mp_beirami(eps, n), f"Beirami KL̂ ε = {eps}, n = {n}")


# --------------------------------------------------------- class 7: divergences never below 0


def mp_kl(log_p, log_q):
    return mp_renyi(log_p, log_q, 1)


def test_divergences_are_never_negative_by_rounding():
    """Class 7: KL (docs/math.md, "Divergences"), χ², Rényi and BOND's divergences are >= 0
    on every input, summed from terms that are each >= 0, and still match mpmath (of the
    renormalised inputs) to RTOL_MPMATH (ATOL_NEAR_ZERO near 0): KL(π_N || π_ref) for n
    within 1e-16..1e-1 of 1, where Σ p log(p/q) rounded below 0 in a third of cases."""
    rng = np.random.default_rng(7)
    theory = bonmath.theory
    for trial in range(60):
        logits = rng.standard_normal(6)
        ref = logits - np.logaddexp.reduce(logits)
        rewards = rng.integers(0, 3, 6).astype(float)
        if trial % 3 == 0:
            ref[rng.integers(6)] = -np.inf
            ref = ref - np.logaddexp.reduce(ref)
        n = 1 + 10.0 ** -rng.uniform(1, 16)
        bon = bonmath.bon_log_probs(ref, rewards, n)
        for p, q in ((bon, ref), (ref, bon)):
            kl = bonmath.kl_divergence(p, q)
            assert kl >= 0.0, (n, kl)
            assert_close(kl, mp_kl(p.tolist(), q.tolist()), f"KL at n = {n}")
            assert theory.chi2_divergence(p, q) >= 0.0
            for alpha in (0.3, 1 - 1e-9, 1 + 1e-9, 3.0):
                assert theory.renyi_divergence(p, q, alpha) >= 0.0
        for divergence in theory.bond_divergences(ref, ref, rewards, n):
            assert divergence >= 0.0
    np.testing.assert_array_equal(bonmath.kl_divergence(np.log([0.5, 0.5]), [0.0, -np.inf]), np.inf)
    assert bonmath.kl_divergence(np.array([-1000.0, 0.0]), np.array([-np.inf, 0.0])) == np.inf  # p > 0 = q below float range


# --------------------------------------------------------- class 8: NaN gradients


def _torch():
    return pytest.importorskip("torch")


GRAD_REWARDS = [0.0, 1.0, 1.0, 2.0, 0.0, 3.0, 3.0, 4.0]
GRAD_ZERO = [4, 7]
"""Zero-mass strings: one tied with the lowest level (F_lt = 0), one alone on top (F_lt = 1)."""
GRAD_POLICY = [-math.inf, -1.0, 0.2, 0.2, -math.inf, 0.3, 0.2, -math.inf]
"""A policy's logits (normalised in the test): no mass where the reference has none, nor on the lowest level."""


def support_cases(torch):
    """f(ref) for every support-valued public function, ref = log π_ref with -inf entries."""
    theory = bonmath.theory
    r = torch.tensor(GRAD_REWARDS, dtype=torch.float64)
    policy = torch.tensor(GRAD_POLICY, dtype=torch.float64)
    policy = policy - torch.logsumexp(policy, 0)
    other = torch.tensor([0.1, 0.2, 0.1, 0.1, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64).log()  # KL(ref || other) = inf
    true = torch.tensor([1.0, 0.0, 2.0, -1.0, 0.5, 1.0, -2.0, 0.0], dtype=torch.float64)  # a true reward beside r

    def bon(ref):
        return bonmath.bon_log_probs(ref, r, 4)

    return {
        "bon_log_probs": lambda ref: bonmath.bon_log_probs(ref, r, 5),
        "bon_log_probs n = 0.6": lambda ref: bonmath.bon_log_probs(ref, r, 0.6),
        "bon_log_ratio": lambda ref: bonmath.bon_log_ratio(ref, r, 3),
        "bon_log_ratio n = 1e12": lambda ref: bonmath.bon_log_ratio(ref, r, 1e12),
        "reward_cdf": lambda ref: torch.cat(bonmath.reward_cdf(ref, r)),
        "tilted_log_probs": lambda ref: bonmath.tilted_log_probs(ref, r, 0.7),
        "tilted_log_probs β = 1e-300": lambda ref: bonmath.tilted_log_probs(ref, r, 1e-300),
        "vbon_bound_optimum": lambda ref: bonmath.vbon_bound_optimum(ref, r, 4),
        "entropy": lambda ref: bonmath.entropy(ref),
        "kl_divergence": lambda ref: torch.stack([bonmath.kl_divergence(bon(ref), ref), bonmath.kl_divergence(ref, bon(ref))]),
        "kl_divergence inf": lambda ref: bonmath.kl_divergence(ref, other),
        "win_rate": lambda ref: bonmath.win_rate(bon(ref), ref, r),
        "vbon_objective": lambda ref: bonmath.vbon_objective(policy, ref, r, 4),
        "vbon_lower_bound": lambda ref: bonmath.vbon_lower_bound(policy, ref, r, 4),
        "kl_rl_objective": lambda ref: bonmath.kl_rl_objective(policy, ref, r, 0.5),
        "best_of_poisson_log_probs": lambda ref: theory.best_of_poisson_log_probs(ref, r, 3.0),
        "best_of_poisson_log_probs μ = 1e300": lambda ref: theory.best_of_poisson_log_probs(ref, r, 1e300),
        "bon_expected_margin": lambda ref: theory.bon_expected_margin(ref, r, 3),
        "bonbon_tilt_log_probs": lambda ref: theory.bonbon_tilt_log_probs(ref, r, 2.0),
        "bond_divergences": lambda ref: torch.stack(list(theory.bond_divergences(policy, ref, r, 3))),
        "bond_log_probs": lambda ref: theory.bond_log_probs(ref, r, 3),
        "chi2_divergence": lambda ref: theory.chi2_divergence(bon(ref), ref),
        "chi2_divergence inf": lambda ref: theory.chi2_divergence(ref, other),
        "renyi_divergence": lambda ref: torch.stack(
            [theory.renyi_divergence(bon(ref), ref, a) for a in (0.01, 0.5, 1 + 1e-9, 3.0, 1e6, math.inf)]
        ),
        "renyi_divergence inf": lambda ref: torch.stack([theory.renyi_divergence(ref, other, a) for a in (0.5, 3.0)]),
        "expected_beirami_kl_estimate": lambda ref: theory.expected_beirami_kl_estimate(ref, r, 3),
        "regularized_bon_log_probs": lambda ref: theory.regularized_bon_log_probs(ref, r, 3, -0.5),
        "released_exact_mode_optimum": lambda ref: theory.released_exact_mode_optimum(ref, r, 3),
        "soft_bon_log_probs": lambda ref: theory.soft_bon_log_probs(ref, r, 4, 0.7),
        "soft_bon_log_probs λ = 1e-300": lambda ref: theory.soft_bon_log_probs(ref, r, 3, 1e-300),
        "vbon_finite_lower_bound": lambda ref: bonmath.vbon_finite_lower_bound(policy, ref, r, 4),
        "vbon_finite_bound_log_cdf": lambda ref: bonmath.vbon_finite_bound_log_cdf(ref, r, 4),
        "max_at_k": lambda ref: bonmath.max_at_k(ref, r, 3),
        "pass_at_k": lambda ref: bonmath.pass_at_k(ref, (r > 1.5).to(torch.float64), 3),
        "bon_true_reward": lambda ref: bonmath.bon_true_reward(ref, r, true, 3),
        "bon_true_reward_dn": lambda ref: bonmath.bon_true_reward_dn(ref, r, true, 3),
        "calibrated_reward": lambda ref: theory.calibrated_reward(ref, r),
        "infalign_optimum_log_probs": lambda ref: theory.infalign_optimum_log_probs(ref, r, 0.5),
        "inference_time_win_rate": lambda ref: theory.inference_time_win_rate(policy, ref, r, 3),
        "jbond_expected_reward": lambda ref: theory.jbond_expected_reward(ref, r),
        "pessimism_log_probs": lambda ref: theory.pessimism_log_probs(ref, r, 0.5),
        "pessimism_sampler_log_probs": lambda ref: theory.pessimism_sampler_log_probs(ref, r, 3, 0.5),
    }


def array_cases(torch):
    """(f, x0, directions mask) for the public functions of a log CDF, a probability or c;
    the mask excludes the boundary points (F = 1, log F = -inf, ε = 1, c = 0) from the
    finite differences, which would step outside the domain."""
    theory = bonmath.theory
    log_cdf = [0.0, -math.inf, -1e-20, -0.5, -3.0, -800.0]
    interior = [0, 0, 0, 1, 1, 1]
    cases = {}
    for method in bonmath.cdf_estimation.METHODS:
        cases[f"log_cdf_estimate_moments {method}"] = (
            lambda t, method=method: torch.stack(bonmath.log_cdf_estimate_moments(t, 5, method)), log_cdf, interior)
        cases[f"log_cdf_estimate_bias {method}"] = (
            lambda t, method=method: bonmath.log_cdf_estimate_bias(t, 5, method), log_cdf, interior)
    lt = torch.tensor([-math.inf, -math.inf, -0.5, math.log(0.3), -1e-5, -700.0], dtype=torch.float64)
    mass = [0.0, -1.0, math.log1p(-math.exp(-0.5)), -2.0, -46.0, -700.0]  # F = 0 twice, a top level (F_le = 1)
    cases["bon_log_ratio_from_cdf q"] = (lambda t: bonmath.bon_log_ratio_from_cdf(lt, t, 1e3), mass, [0, 1, 0, 1, 1, 1])
    cases["bon_log_ratio_from_cdf F_lt"] = (
        lambda t: bonmath.bon_log_ratio_from_cdf(t, torch.tensor(mass, dtype=torch.float64), 1e3), lt.tolist(), [0, 0, 0, 1, 0, 1])
    cases["beirami_kl_estimate"] = (lambda t: theory.beirami_kl_estimate(t, 3.0), [1.0, 0.5, 1e-300, 1e-3], [0, 1, 0, 1])
    cases["bonbon_kl"] = (lambda t: theory.bonbon_kl(t), [0.0, 1e-4, 0.01, 1.0, 800.0], [0, 1, 1, 1, 1])
    cases["bonbon_win_rate"] = (lambda t: theory.bonbon_win_rate(t), [0.0, 1e-4, 0.01, 1.0, 800.0], [0, 1, 1, 1, 1])
    return cases


NOT_DIFFERENTIABLE = {
    "PAD", "TabularLM", "BondDivergences",  # a constant and types (TabularLM's gradients: tests/test_torch.py)
    "estimate_log_cdf", "sample_bon",  # counts and indices
    "bon_kl_upper_bound", "bon_chi2_upper_bound", "bon_renyi_upper_bound", "bon_win_rate_upper_bound",
    "bonbon_beta", "bonbon_c_for_kl", "bonbon_margin", "bonbon_tilt_c_for_kl",  # Python floats in and out
    "Enumeration", "EnumeratedPair", "enumerate_pair",  # types and their constructor (gradients: test_hf, test_enumeration)
    "InfAlignBestT", "TrueRewardCurves", "true_reward_curves",  # results of the functions tested above
    "hedgetune_n", "jbond_anchor_reward",  # an integer N*; a step function of the rewards
    "infalign_beta_for_kl", "infalign_best_t",  # root finding: Python floats out
}
NO_FINITE_DIFFERENCES = {"tilted_log_probs β = 1e-300"}
"""Outputs of -1e300: a step of 1e-6 in log π_ref is below their resolution."""


def directional_check(torch, f, x, mask, name, check_differences=True):
    """Finite autograd gradient of Σ w·f (w random, infinite outputs dropped), and, along 3
    random directions within ``mask``, agreement with central differences (step 1e-6)."""
    generator = torch.Generator().manual_seed(0)

    def loss(theta):
        out = f(theta)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        return (torch.where(torch.isfinite(out), out, 0.0) * weights).sum()

    x = x.detach().requires_grad_(True)
    loss(x).backward()
    assert torch.isfinite(x.grad).all(), f"{name}: gradient {x.grad}"
    if not check_differences:
        return
    for _ in range(3):
        direction = torch.randn(x.shape, generator=generator, dtype=torch.float64) * mask
        have = float(x.grad @ direction)
        with torch.no_grad():
            want = float((loss(x + 1e-6 * direction) - loss(x - 1e-6 * direction)) / 2e-6)
        assert abs(have - want) <= RTOL_FINITE_DIFFERENCE * max(1.0, abs(want)), (name, have, want)


def test_torch_gradients_are_finite_at_zero_mass_and_at_f_zero_and_one():
    """Class 8: every torch-differentiable public function (bonmath.__all__) gives finite
    gradients, never NaN, through log-probabilities of -inf, the lowest level (F = 0) and
    the top level (F = 1), and they agree with central finite differences along random
    directions where the function is differentiable (RTOL_FINITE_DIFFERENCE; Vieira,
    "How to test gradient implementations"). A where() whose masked branch has an inf
    gradient gives 0·inf = NaN: each masked branch must see finite stand-ins."""
    torch = _torch()
    # the audit's points
    p = torch.tensor(np.log([0.5, 0.5]), requires_grad=True)
    bonmath.theory.chi2_divergence(p, torch.tensor([0.0, -math.inf], dtype=torch.float64)).backward()
    assert torch.isfinite(p.grad).all()
    log_cdf = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    bonmath.log_cdf_estimate_moments(log_cdf, 5, "empirical_le")[0].backward()
    assert torch.isfinite(log_cdf.grad)
    # every public function
    cases, arrays = support_cases(torch), array_cases(torch)
    covered = {name.split(" ")[0] for name in [*cases, *arrays]}
    assert set(bonmath.__all__) - NOT_DIFFERENTIABLE == covered, "a public function without a gradient test"
    logits = torch.tensor([0.3, -1.0, 0.5, 0.1, 0.0, -0.4, 0.9, 0.2], dtype=torch.float64)
    logits[GRAD_ZERO] = -math.inf
    mask = torch.ones(8, dtype=torch.float64)
    mask[GRAD_ZERO] = 0.0
    for name, f in cases.items():
        directional_check(torch, lambda theta, f=f: f(theta - torch.logsumexp(theta, 0)), logits, mask, name,
                          check_differences=name not in NO_FINITE_DIFFERENCES)
    for name, (f, x0, interior) in arrays.items():
        x = torch.tensor(x0, dtype=torch.float64)
        directional_check(torch, f, x, torch.tensor(interior, dtype=torch.float64), name)
    # at F = 1 the gradient of E[log F̂] is the one-sided derivative
    at_one = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    mean = bonmath.log_cdf_estimate_moments(at_one, 5, "add_one")[0]
    mean.backward()
    below = bonmath.log_cdf_estimate_moments(torch.tensor(-1e-7, dtype=torch.float64), 5, "add_one")[0]
    assert abs(float(at_one.grad) - float(mean.detach() - below) / 1e-7) <= RTOL_FINITE_DIFFERENCE
