"""Monte Carlo gradient estimators against exact gradients, on TabularLMs and a tiny GPT-2.

Each test is one claim of :mod:`bonmath.estimators` (docs/math.md, "Gradients").
Exact checks enumerate every k-tuple of samples (weights = product of policy
probabilities) and push it through the real surrogate losses: the expectation of
the estimate is then the gradient of Σ_tuples w · loss, one backward pass. Monte
Carlo checks draw samples with the models' own samplers and compare the mean of R
estimates with the exact gradient in units of the *exact* standard error
(:func:`bonmath.estimator_moments.exact_moments`), Bonferroni-adjusted.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
from conftest import ATOL_LOG, ATOL_NORMALISATION, BIAS_FLOOR, RTOL_EXACT, RTOL_MPMATH, Z_BOUND

torch = pytest.importorskip("torch")
from scipy.stats import norm  # noqa: E402

from bonmath import (  # noqa: E402
    PAD,
    TabularLM,
    estimate_log_cdf,
    kl_rl_objective,
    log_cdf_estimate_moments,
)
from bonmath.estimator_moments import (  # noqa: E402
    exact_moments,
    pair_scores,
    per_output_gradients,
    placement_vectors,
    shared_log_cdf_estimate_moments,
)
from bonmath.estimators import (  # noqa: E402
    advantages,
    exact_gradient,
    flat_gradient,
    kl_penalty_surrogate,
    reverse_kl_surrogate,
    reward_surrogate,
    tabular_token_log_probs,
    token_kl_estimates,
    vbon_bound_surrogate,
    vbon_surrogate,
)
from bonmath.zoo import PolicyPair, gpt2_pair, tabular_pair  # noqa: E402

FAMILY_RATE = 2 * norm.sf(Z_BOUND)
"""Family-wise false-alarm rate of a Monte Carlo test: that of one Z_BOUND = 5 comparison (5.7e-7)."""
N_BON = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one intra-op thread is fastest (and robust on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------ the zoo


@pytest.fixture(scope="module")
def tiny():
    """7 strings (V=3, T=2), policy never starts with EOS: tuples of up to 4 samples enumerable."""
    return tabular_pair(3, 2, seed=1)


@pytest.fixture(scope="module")
def tabular():
    """40 strings (V=4, T=3)."""
    return tabular_pair(4, 3, seed=2)


@pytest.fixture(scope="module")
def gpt2():
    """21 strings (V=5, L=2), policy top-4."""
    pytest.importorskip("transformers")
    return gpt2_pair(5, 2, seed=0)


def cases(request, names):
    return [request.getfixturevalue(n) for n in names]


# ------------------------------------------------------------------ tuple machinery


def tuples(case: PolicyPair, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k-tuple of support strings and its probability (product of policy probabilities)."""
    support = case.support
    index = torch.tensor(list(itertools.product(support.tolist(), repeat=k)), dtype=torch.long).reshape(-1, k)
    return index, case.probs[index].prod(-1)


def gathered(case: PolicyPair, index: torch.Tensor, n=N_BON) -> dict:
    """Per-sample quantities of the tuples, the policy's with autograd graph."""
    pair = case.pair
    return dict(
        lp=pair.policy_log_probs[index],
        ref_lp=pair.ref_log_probs.detach()[index],
        values=pair.token_log_probs[index],
        ref_values=pair.ref_token_log_probs[index],
        mask=pair.mask[index],
        token_kl=pair.token_kl[index],
        rewards=case.rewards[index],
        log_ratio=case.log_ratio(n)[index],
        log_cdf=case.log_cdf_lt()[index],
    )


def expected_gradient(case: PolicyPair, k: int, loss) -> torch.Tensor:
    """E[∇ loss] over k i.i.d. samples from the policy, by enumerating every k-tuple."""
    index, weights = tuples(case, k)
    return flat_gradient((weights * loss(gathered(case, index))).sum(), case.params)


def assert_gradient_equal(have, want, what):
    scale = max(1.0, float(want.abs().max()))
    err = float((have - want).abs().max()) / scale
    assert err <= RTOL_EXACT, f"{what}: max |E[ĝ] - g| / max(1, ‖g‖∞) = {err:.3g} > {RTOL_EXACT}"


def relative_bias(have, want) -> float:
    return float((have - want).norm() / want.norm())


# ============================================================ exact: unbiasedness


@pytest.mark.parametrize("model", ["tiny", "gpt2"])
@pytest.mark.parametrize("baseline", ["none", "loo"])
@pytest.mark.parametrize("k", [2, 3])
def test_vbon_score_function_is_unbiased_for_reverse_kl_to_bon(request, model, baseline, k):
    """E[∇ vbon_surrogate] = ∇ KL(π_θ||π_N) = -∇J for no baseline and RLOO (docs/math.md,
    "Gradients": the score-function identity; Kool et al. 2019 for leave-one-out)."""
    case = request.getfixturevalue(model)
    have = expected_gradient(case, k, lambda b: vbon_surrogate(b["lp"], b["ref_lp"], b["log_ratio"], baseline))
    assert_gradient_equal(have, case.gradient("vbon", n=N_BON), f"{case.description}, {baseline}, k={k}")


@pytest.mark.parametrize("model", ["tiny", "gpt2"])
@pytest.mark.parametrize("k", [2, 3])
def test_mean_baseline_scales_the_gradient_by_k_minus_one_over_k(request, model, k):
    """Subtracting the mean of all k values gives E[ĝ] = (k-1)/k ∇KL: biased by -g/k."""
    case = request.getfixturevalue(model)
    want = case.gradient("vbon", n=N_BON)
    have = expected_gradient(case, k, lambda b: vbon_surrogate(b["lp"], b["ref_lp"], b["log_ratio"], "mean"))
    assert_gradient_equal(have, (k - 1) / k * want, f"{case.description}: (k-1)/k scaling")
    assert relative_bias(have, want) == pytest.approx(1 / k, rel=RTOL_EXACT), "the bias is exactly ‖g‖/k"


@pytest.mark.parametrize("k", [2, 3, 7])
def test_mean_baseline_is_rloo_scaled_by_k_minus_one_over_k(k):
    """v_i - mean(v) = (k-1)/k (v_i - mean of the others), sample by sample: the mean baseline is
    RLOO with a (k-1)/k smaller step in the same direction, so its bias is a step-size change."""
    values = torch.randn(5, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    torch.testing.assert_close(advantages(values, "mean"), (k - 1) / k * advantages(values, "loo"),
                               rtol=RTOL_EXACT, atol=RTOL_EXACT)


@pytest.mark.parametrize("values", [[1e300, -1e300, 0.0], [1e200, 0.0, 0.0], [1e-300, 0.0, 2e-300], [3e-310, 0.0]])
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_group_scaled_advantages_divide_by_the_std_without_overflow_or_underflow(values, eps):
    """v_i/(std + eps) (GRPO's scale_rewards='group') matches mpmath (50 digits) to RTOL_MPMATH where the squared
    deviations overflow (1e200: std = inf, every advantage 0) or underflow (1e-300 with eps = 0: std = 0, inf)."""
    with mpmath.workdps(50):
        exact = [mpmath.mpf(v) for v in values]
        mean = sum(exact) / len(exact)
        std = mpmath.sqrt(sum((v - mean) ** 2 for v in exact) / (len(exact) - 1))
        want = [float(v / (std + eps)) for v in exact]
    have = advantages(torch.tensor(values, dtype=torch.float64), "none", "group", eps=eps)
    assert have.tolist() == pytest.approx(want, rel=RTOL_MPMATH, abs=0)


@pytest.mark.parametrize("model", ["tiny", "gpt2"])
def test_loo_reward_surrogate_is_unbiased_for_expected_reward(request, model):
    """E[∇ reward_surrogate(loo)] = -∇E_θ[r]."""
    case = request.getfixturevalue(model)
    have = expected_gradient(case, 3, lambda b: reward_surrogate(b["lp"], b["rewards"], "loo"))
    assert_gradient_equal(have, case.gradient("reward"), case.description)


@pytest.mark.parametrize("model", ["tiny", "gpt2"])
def test_grpo_std_normalisation_is_biased(request, model):
    """GRPO's advantages (r - mean)/(std + 1e-4) do not give a multiple of ∇E[r]: the bias is
    measured after the best rescaling (the direction itself is wrong), k = 3. Measured: relative
    bias 0.350 (tiny tabular) and 0.110 (GPT-2); after the best rescaling 0.099 and 0.008."""
    case = request.getfixturevalue(model)
    want = case.gradient("reward")
    have = expected_gradient(case, 3, lambda b: reward_surrogate(b["lp"], b["rewards"], "mean", "group"))
    best_scale = float(have @ want / (want @ want))
    residual = relative_bias(have, best_scale * want)
    assert residual > BIAS_FLOOR, (
        f"{case.description}: E[ĝ_GRPO] is parallel to ∇E[r] (residual {residual:.3g}): no bias to show"
    )
    assert relative_bias(have, want) > 0.05, f"{case.description}: GRPO bias {relative_bias(have, want):.3g}"
    print(f"{case.description}: GRPO std-normalised, k=3: relative bias {relative_bias(have, want):.3f}, "
          f"off-direction residual {residual:.3f}, cos {best_scale * float(want.norm() / have.norm()):.4f}")


def test_single_token_kl_losses_have_the_documented_expected_gradients():
    """On one token (T = 1): E[∇k1] = 0, E[∇k2] = ∇KL(π_θ||π_ref), E[∇k3] = ∇KL(π_ref||π_θ)
    (Schulman's estimators as losses; docs/math.md, "Gradients")."""
    case = tabular_pair(5, 1, seed=3, block_first_eos=False)
    pair = case.pair
    expect = {}
    for estimator in ("k1", "k2", "k3"):
        per_string = token_kl_estimates(pair.token_log_probs[:, 0], pair.ref_token_log_probs[:, 0], estimator)
        expect[estimator] = flat_gradient((case.probs * per_string).sum(), case.params)
    forward = exact_gradient("kl", pair.ref_log_probs.detach(), pair.policy_log_probs, case.params)
    assert float(expect["k1"].abs().max()) < RTOL_EXACT
    assert_gradient_equal(expect["k2"], case.gradient("kl"), "k2 as a loss: reverse KL")
    assert_gradient_equal(expect["k3"], forward, "k3 as a loss: forward KL")
    assert relative_bias(expect["k3"], case.gradient("kl")) > BIAS_FLOOR


@pytest.mark.parametrize("model", ["tiny", "tabular", "gpt2"])
@pytest.mark.parametrize("placement", ["k1_reward", "reward_to_go", "analytic_score"])
@pytest.mark.parametrize("baseline", ["none", "loo"])
def test_sequence_level_kl_placements_are_unbiased(request, model, placement, baseline):
    """k1 in the reward, reward-to-go, and the analytic per-token KL plus its score terms
    all have E[ĝ] = ∇KL(π_θ||π_ref) on sequences (docs/math.md, "Gradients"); k = 2."""
    case = request.getfixturevalue(model)
    have = expected_gradient(case, 2, lambda b: kl_penalty_surrogate(
        b["values"], b["ref_values"], b["mask"], placement, baseline, b["token_kl"]))
    assert_gradient_equal(have, case.gradient("kl"), f"{case.description}, {placement}, {baseline}")


@pytest.mark.parametrize("model", ["tiny", "tabular", "gpt2"])
def test_per_token_kl_losses_drop_the_future_terms(request, model):
    """Per-token placements in the loss are biased on sequences: k1 has E[∇] = 0; k2 and
    the analytic per-token KL have the same expectation (the analytic one is k2 Rao-Blackwellised),
    the partial gradient E[Σ_t log(π_θ/π_ref)_t ∇log π_t]; k3 (TRL GRPO) differs again.
    Measured ‖E[ĝ] - ∇KL‖/‖∇KL‖ (k2 | k3): tiny tabular 0.038 | 0.295, V=4 T=3 tabular
    0.176 | 0.567, GPT-2 0.030 | 0.424; printed with pytest -s, asserted beyond floating error."""
    case = request.getfixturevalue(model)
    want = case.gradient("kl")
    have = {
        p: expected_gradient(case, 1, lambda b, p=p: kl_penalty_surrogate(
            b["values"], b["ref_values"], b["mask"], p, "none", b["token_kl"]))
        for p in ("k1_loss", "k2_loss", "k3_loss", "analytic")
    }
    assert float(have["k1_loss"].abs().max()) < RTOL_EXACT * max(1.0, float(want.abs().max()))
    assert_gradient_equal(have["analytic"], have["k2_loss"], "analytic per-token KL vs k2")
    for p in ("k2_loss", "k3_loss"):
        bias = relative_bias(have[p], want)
        print(f"{case.description}: {p}: ‖E[ĝ] - ∇KL‖/‖∇KL‖ = {bias:.4f}")
        assert bias > BIAS_FLOOR, f"{case.description}: {p} relative bias {bias:.3g} is not beyond floating error"


@pytest.mark.parametrize("model", ["tiny", "gpt2"])
@pytest.mark.parametrize("baseline", ["none", "loo"])
def test_bound_surrogate_is_unbiased_for_minus_grad_lower_bound(request, model, baseline):
    """With the exact F, E[∇ vbon_bound_surrogate] = -∇L (scale "bound") and -∇L/(N-1)
    (scale "kl_rl"), the latter the gradient of the KL-RL objective with reward log F_lt and
    β = 1/(N-1) (the vBoN paper's released code)."""
    case = request.getfixturevalue(model)
    want = case.gradient("vbon_bound", n=N_BON)
    for scale, factor in (("bound", 1.0), ("kl_rl", 1.0 / (N_BON - 1))):
        have = expected_gradient(case, 2, lambda b, s=scale: vbon_bound_surrogate(
            b["lp"], b["ref_lp"], b["log_cdf"], N_BON, baseline, s))
        assert_gradient_equal(have, factor * want, f"{case.description}, scale={scale}")
    finite_log_cdf = torch.where(case.probs > 0, case.log_cdf_lt(), 0.0)  # -inf only where π_θ = 0
    kl_rl = kl_rl_objective(case.pair.policy_log_probs, case.pair.ref_log_probs.detach(), finite_log_cdf,
                            beta=1.0 / (N_BON - 1))
    assert_gradient_equal(-flat_gradient(kl_rl, case.params), want / (N_BON - 1), "KL-RL form")


# ============================================================== exact: estimated F


def test_estimated_cdf_makes_the_bound_estimator_biased(tiny):
    """F̂ = (1 + #{r_j < r})/(M+1) from M reference samples (shared by the k policy samples):
    enumerating policy tuples and reference tuples, E[ĝ] = -∇L + (N-1) E_θ[∇log π (E log F̂ -
    log F_lt)], a bias that shrinks with M but is there at every M. Measured (N = 4, k = 2):
    ‖E ĝ + ∇L‖/‖∇L‖ = 0.749, 0.530, 0.399, 0.079, 0.0049 for M = 1, 2, 3, 16, 256."""
    case, k = tiny, 2
    want = case.gradient("vbon_bound", n=N_BON)
    log_cdf = case.log_cdf_lt()
    index, weights = tuples(case, k)
    all_strings = torch.arange(len(case.rewards))
    ref_probs = case.pair.ref_log_probs.detach().exp()
    score_weighted = {}
    for m in (1, 2, 3):
        ref_index = torch.tensor(list(itertools.product(all_strings.tolist(), repeat=m)))
        ref_weights = ref_probs[ref_index].prod(-1)
        pi = index.repeat_interleave(len(ref_index), 0)
        ri = ref_index.repeat(len(index), 1)
        w = weights.repeat_interleave(len(ref_index)) * ref_weights.repeat(len(index))
        log_cdf_hat = estimate_log_cdf(case.rewards[ri], case.rewards[pi])
        loss = vbon_bound_surrogate(case.pair.policy_log_probs[pi], case.pair.ref_log_probs.detach()[pi],
                                    log_cdf_hat, N_BON, "loo")
        have = flat_gradient((w * loss).sum(), case.params)
        mean_hat, _ = log_cdf_estimate_moments(log_cdf, m)
        closed_form = want + flat_gradient(
            (case.probs * case.pair.policy_log_probs * (N_BON - 1) * torch.where(
                case.probs > 0, log_cdf - mean_hat, 0.0)).sum(), case.params)
        assert_gradient_equal(have, closed_form, f"M={m}: closed form of the bias")
        score_weighted[m] = relative_bias(have, want)
        assert score_weighted[m] > BIAS_FLOOR, f"M={m}: relative bias {score_weighted[m]:.3g} is not there"
    for m in (16, 256):
        mean_hat, _ = log_cdf_estimate_moments(log_cdf, m)
        score_weighted[m] = float((N_BON - 1) * flat_gradient((case.probs * case.pair.policy_log_probs * torch.where(
            case.probs > 0, log_cdf - mean_hat, 0.0)).sum(), case.params).norm() / want.norm())
    sizes = [score_weighted[m] for m in sorted(score_weighted)]
    print("estimated-F bias ‖E ĝ + ∇L‖/‖∇L‖ by M:", {m: round(v, 4) for m, v in sorted(score_weighted.items())})
    assert sizes[-1] < sizes[0] and sizes[-1] > 0, sizes


def test_shared_log_cdf_moments_match_enumeration_of_reference_samples(tiny):
    """E[log F̂(y) log F̂(y')] with one shared set of M reference samples, against all M-tuples."""
    case, m = tiny, 3
    ref_probs = case.pair.ref_log_probs.detach().exp()
    log_cdf = case.log_cdf_lt()
    ref_index = torch.tensor(list(itertools.product(range(len(ref_probs)), repeat=m)))
    weights = ref_probs[ref_index].prod(-1)
    hat = estimate_log_cdf(case.rewards[ref_index], case.rewards)  # (M-tuples, S)
    want_mean = weights @ hat
    want_second = torch.einsum("r,ra,rb->ab", weights, hat, hat)
    have_mean, have_second = shared_log_cdf_estimate_moments(log_cdf, m)
    torch.testing.assert_close(have_mean, want_mean, rtol=0, atol=RTOL_EXACT)
    torch.testing.assert_close(have_second, want_second, rtol=0, atol=RTOL_EXACT)
    torch.testing.assert_close(have_mean, log_cdf_estimate_moments(log_cdf, m)[0], rtol=0, atol=RTOL_EXACT)


# ====================================================== exact: moments of estimators


def per_tuple_gradients(case, index, loss) -> torch.Tensor:
    """∇ of each tuple's surrogate loss, one backward pass per tuple, shape (tuples, P)."""
    batch = gathered(case, index)
    return per_output_gradients(loss(batch), case.params)


def string_vectors(case, placement):
    keep = case.support
    token_scores, kl_gradient = pair_scores(case.pair, case.params, keep)
    pair = case.pair
    lr = torch.where(pair.mask, pair.token_log_probs.detach() - pair.ref_token_log_probs, 0.0)[keep]
    v, f = placement_vectors(placement, token_scores, pair.mask[keep], lr,
                             token_kl=pair.token_kl.detach()[keep], kl_gradient=kl_gradient)
    return keep, token_scores.sum(1), v, f


@pytest.mark.parametrize("placement", ["k1_reward", "k2_loss", "k3_loss", "reward_to_go", "analytic",
                                       "analytic_score"])
@pytest.mark.parametrize("baseline", ["none", "loo", "mean"])
@pytest.mark.parametrize("k", [2, 3])
def test_exact_moments_equal_enumeration_of_tuples(tiny, placement, baseline, k):
    """exact_moments (U-statistic formulas on the per-string decomposition of placement_vectors)
    gives the mean and E‖ĝ‖² of the real surrogate, enumerated over all k-tuples."""
    case = tiny
    index, weights = tuples(case, k)

    def loss(b):
        return reward_surrogate(b["lp"], b["log_ratio"], baseline) + kl_penalty_surrogate(
            b["values"], b["ref_values"], b["mask"], placement, baseline, b["token_kl"])

    grads = per_tuple_gradients(case, index, loss)
    want_mean = weights @ grads
    want_second = float(weights @ (grads**2).sum(1))
    keep, score, v, f = string_vectors(case, placement)
    f = f - case.log_ratio(N_BON)[keep]
    have = exact_moments(case.probs[keep], v, score, f, k=k, baseline=baseline)
    torch.testing.assert_close(have.mean, want_mean, rtol=0, atol=RTOL_EXACT * max(1.0, float(want_mean.norm())))
    assert have.second_moment == pytest.approx(want_second, rel=RTOL_EXACT)


@pytest.mark.parametrize("baseline", ["none", "loo", "mean"])
def test_exact_moments_with_a_shared_estimated_cdf(tiny, baseline):
    """With F̂ from M = 2 reference samples shared by the k = 2 policy samples, exact_moments with
    the two-point function of f = log π_θ - log π_ref - (N-1) log F̂ equals enumeration of policy and
    reference tuples."""
    case, k, m = tiny, 2, 2
    keep = case.support
    index, weights = tuples(case, k)
    ref_probs = case.pair.ref_log_probs.detach().exp()
    ref_index = torch.tensor(list(itertools.product(range(len(ref_probs)), repeat=m)))
    score = per_output_gradients(case.pair.policy_log_probs[keep], case.params)
    position = torch.full((len(case.rewards),), -1, dtype=torch.long)
    position[keep] = torch.arange(len(keep))
    mean = torch.zeros(score.shape[1], dtype=torch.float64)
    second = 0.0
    lr = (case.pair.policy_log_probs.detach() - case.pair.ref_log_probs.detach())
    for ref_tuple, ref_weight in zip(ref_index, ref_probs[ref_index].prod(-1)):
        log_cdf_hat = estimate_log_cdf(case.rewards[ref_tuple], case.rewards)
        lp_leaf = case.pair.policy_log_probs.detach()[index].clone().requires_grad_(True)
        loss = vbon_bound_surrogate(lp_leaf, case.pair.ref_log_probs.detach()[index], log_cdf_hat[index],
                                    N_BON, baseline)
        (d_lp,) = torch.autograd.grad(loss.sum(), lp_leaf)
        grads = torch.einsum("ri,rip->rp", d_lp, score[position[index]])
        mean += ref_weight * (weights @ grads)
        second += float(ref_weight * (weights @ (grads**2).sum(1)))
    hat_mean, hat_second = shared_log_cdf_estimate_moments(case.log_cdf_lt()[keep], m)
    lr = lr[keep]
    f_mean = lr - (N_BON - 1) * hat_mean
    f_second = (torch.outer(lr, lr) - (N_BON - 1) * (torch.outer(lr, hat_mean) + torch.outer(hat_mean, lr))
                + (N_BON - 1) ** 2 * hat_second)
    have = exact_moments(case.probs[keep], None, score, f_mean, f_second, k=k, baseline=baseline)
    torch.testing.assert_close(have.mean, mean, rtol=0, atol=RTOL_EXACT * max(1.0, float(mean.norm())))
    assert have.second_moment == pytest.approx(second, rel=RTOL_EXACT)


# ======================================================================= TRL pins


def sampled_batch(case: PolicyPair, k: int, seed: int):
    seqs = case.sample_policy(k, seed)
    values, mask = case.token_log_probs(seqs)
    ref_values, _ = case.ref_token_log_probs(seqs)
    rows = case.pair.index(seqs)
    return values, ref_values, mask, case.rewards[rows]


def test_k1_in_the_reward_with_loo_is_trls_rloo_loss(gpt2):
    """reward_surrogate(loo) + β kl_penalty_surrogate(k1_reward, loo) is TRL RLOOTrainer's loss:
    kl = logprobs - ref_logprobs; rlhf_reward = scores + (-kl_coef * kl).sum(1);
    baseline = (rlhf_reward.sum(0) - rlhf_reward) / (rloo_k - 1); loss = mean(-advantages * logprobs.sum(1)).
    Same value and gradient (samples on axis 0 there, on the last axis here)."""
    values, ref_values, mask, scores = sampled_batch(gpt2, 6, seed=5)
    kl_coef, rloo_k = 0.3, 6
    # --- TRL (RLOOTrainer, one prompt), with padded positions holding 0
    logprobs = torch.where(mask, values, 0.0)
    ref_logprobs = torch.where(mask, ref_values, 0.0)
    with torch.no_grad():
        kl = logprobs - ref_logprobs
        non_score_reward = (-kl_coef * kl).sum(1)
        rlhf_reward = (scores + non_score_reward).reshape(rloo_k, -1)
        baseline = (rlhf_reward.sum(0) - rlhf_reward) / (rloo_k - 1)
        trl_advantages = (rlhf_reward - baseline).flatten()
    trl_loss = torch.mean(-trl_advantages * logprobs.sum(1))
    # --- bonmath
    ours = reward_surrogate(values.sum(-1), scores, "loo") + kl_coef * kl_penalty_surrogate(
        values, ref_values, mask, "k1_reward", "loo")
    torch.testing.assert_close(ours, trl_loss, rtol=RTOL_EXACT, atol=RTOL_EXACT)
    torch.testing.assert_close(flat_gradient(ours, gpt2.params), flat_gradient(trl_loss, gpt2.params),
                               rtol=RTOL_EXACT, atol=RTOL_EXACT)
    # ... and it is reverse_kl_surrogate to π_ref plus the reward term
    direct = reward_surrogate(values.sum(-1), scores, "loo") + kl_coef * reverse_kl_surrogate(
        values.sum(-1), ref_values.sum(-1), "loo")
    torch.testing.assert_close(direct, ours, rtol=RTOL_EXACT, atol=RTOL_EXACT)


def test_k3_in_the_loss_with_std_advantages_is_trls_grpo_loss(gpt2):
    """reward_surrogate(mean, std) + β kl_penalty_surrogate(k3_loss) has the gradient of TRL
    GRPOTrainer's loss with loss_type="dr_grpo" (sum over tokens / (batch · max_completion_length))
    times max_completion_length: per_token_kl = exp(ref - logp) - (ref - logp) - 1;
    advantages = (r - mean) / (std + 1e-4); per_token_loss = -(exp(logp - logp.detach()) * A - β kl).
    (TRL's default "grpo" divides each sequence by its own length instead: a further reweighting.)"""
    G, beta = 6, 0.04
    values, ref_values, mask, rewards = sampled_batch(gpt2, G, seed=6)
    max_completion_length = mask.shape[1]
    # --- TRL (GRPOTrainer._compute_loss, num_iterations = 1), padded positions hold 0
    per_token_logps = torch.where(mask, values, 0.0)
    ref_per_token_logps = torch.where(mask, ref_values, 0.0)
    per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    mean_grouped_rewards = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    std_grouped_rewards = rewards.view(-1, G).std(dim=1).repeat_interleave(G, dim=0)
    trl_advantages = (rewards - mean_grouped_rewards) / (std_grouped_rewards + 1e-4)
    per_token_loss = torch.exp(per_token_logps - per_token_logps.detach()) * trl_advantages.unsqueeze(1)
    per_token_loss = -(per_token_loss - beta * per_token_kl)
    completion_mask = mask.to(per_token_loss.dtype)
    trl_loss = (per_token_loss * completion_mask).sum() / (per_token_loss.size(0) * max_completion_length)
    # --- bonmath
    ours = reward_surrogate(values.sum(-1), rewards, "mean", "group") + beta * kl_penalty_surrogate(
        values, ref_values, mask, "k3_loss")
    torch.testing.assert_close(flat_gradient(ours, gpt2.params),
                               max_completion_length * flat_gradient(trl_loss, gpt2.params), rtol=RTOL_EXACT,
                               atol=RTOL_EXACT)
    torch.testing.assert_close(advantages(rewards, "mean", "group"), trl_advantages, rtol=RTOL_EXACT, atol=RTOL_EXACT)


# ================================================================== Monte Carlo


def bonferroni_z(comparisons: int) -> float:
    """The z bound whose family-wise false-alarm rate over ``comparisons`` is that of one Z_BOUND test."""
    return float(norm.isf(FAMILY_RATE / (2 * comparisons)))


def unbiased_estimators(case: PolicyPair):
    """(name, surrogate(batch) -> loss (R,), target gradient, (v, f) on the support, baseline)."""
    keep = case.support
    lr = (case.pair.policy_log_probs.detach() - case.pair.ref_log_probs.detach())[keep]
    log_ratio = case.log_ratio(N_BON)[keep]
    log_cdf = case.log_cdf_lt()[keep]
    _, _, v_rtg, f_rtg = string_vectors(case, "reward_to_go")
    _, _, v_an, f_an = string_vectors(case, "analytic_score")
    return [
        ("vbon, none", lambda b: vbon_surrogate(b["lp"], b["ref_lp"], b["log_ratio"], "none"),
         case.gradient("vbon", n=N_BON), (None, lr - log_ratio), "none"),
        ("vbon, rloo", lambda b: vbon_surrogate(b["lp"], b["ref_lp"], b["log_ratio"], "loo"),
         case.gradient("vbon", n=N_BON), (None, lr - log_ratio), "loo"),
        ("reward, rloo", lambda b: reward_surrogate(b["lp"], b["rewards"], "loo"),
         case.gradient("reward"), (None, -case.rewards[keep]), "loo"),
        ("kl k1_reward, rloo", lambda b: kl_penalty_surrogate(b["values"], b["ref_values"], b["mask"],
                                                              "k1_reward", "loo"),
         case.gradient("kl"), (None, lr), "loo"),
        ("kl reward_to_go, rloo", lambda b: kl_penalty_surrogate(b["values"], b["ref_values"], b["mask"],
                                                                 "reward_to_go", "loo"),
         case.gradient("kl"), (v_rtg, f_rtg), "loo"),
        ("kl analytic_score, rloo", lambda b: kl_penalty_surrogate(b["values"], b["ref_values"], b["mask"],
                                                                   "analytic_score", "loo", b["token_kl"]),
         case.gradient("kl"), (v_an, f_an), "loo"),
        ("bound, rloo", lambda b: vbon_bound_surrogate(b["lp"], b["ref_lp"], b["log_cdf"], N_BON, "loo"),
         case.gradient("vbon_bound", n=N_BON), (None, lr - (N_BON - 1) * log_cdf), "loo"),
    ]


def sampled_batches(case: PolicyPair, reps: int, k: int, seed: int) -> dict:
    """R·k strings from the policy's own sampler, scored by the model itself (not the enumeration)."""
    seqs = case.sample_policy(reps * k, seed)
    values, mask = case.token_log_probs(seqs)
    ref_values, _ = case.ref_token_log_probs(seqs)
    token_kl = torch.where(mask, analytic_token_kl_of(case, seqs), 0.0)
    rows = torch.as_tensor(case.pair.index(seqs))
    T = values.shape[-1]

    def shaped(x):
        return x.reshape(reps, k, *x.shape[1:])

    return dict(
        lp=shaped(values.sum(-1)), ref_lp=shaped(ref_values.sum(-1)), values=shaped(values),
        ref_values=shaped(ref_values), mask=shaped(mask), token_kl=shaped(token_kl),
        rewards=shaped(case.rewards[rows]), log_ratio=shaped(case.log_ratio(N_BON)[rows]),
        log_cdf=shaped(case.log_cdf_lt()[rows]), rows=rows, T=T,
    )


def analytic_token_kl_of(case: PolicyPair, seqs) -> torch.Tensor:
    from bonmath.estimators import analytic_token_kl

    return analytic_token_kl(case.token_distributions(seqs), case.ref_token_distributions(seqs))


@pytest.mark.statistical
@pytest.mark.parametrize("model, reps, k", [
    ("tabular", 4000, 4),
    pytest.param("gpt2", 1500, 4, marks=pytest.mark.hf),
])
def test_unbiased_estimators_agree_with_exact_gradient_in_monte_carlo(request, model, reps, k):
    """The mean of R independent estimates (samples from the model's own sampler, scored by the
    model) lies within the Bonferroni-adjusted z bound of the exact gradient, projected on the
    gradient's direction and 3 fixed random directions; standard errors from the exact variance."""
    case = request.getfixturevalue(model)
    batch = sampled_batches(case, reps, k, seed=17)
    keep = case.support
    score = per_output_gradients(case.pair.policy_log_probs[keep], case.params)
    probs = case.probs[keep]
    specs = unbiased_estimators(case)
    directions = 4
    z_bound = bonferroni_z(len(specs) * directions)
    generator = torch.Generator().manual_seed(23)
    for name, surrogate, want, (v, f), baseline in specs:
        have = flat_gradient(surrogate(batch).mean(), case.params)  # mean of the R estimates
        U = torch.cat([(want / want.norm())[:, None],
                       torch.randn(want.shape[0], directions - 1, generator=generator, dtype=torch.float64)], 1)
        U = U / U.norm(dim=0)
        for j in range(directions):
            u = U[:, j:j + 1]
            moments = exact_moments(probs, None if v is None else v @ u, score @ u, f, k=k, baseline=baseline)
            assert float(moments.mean[0]) == pytest.approx(float(want @ u[:, 0]), abs=RTOL_EXACT * float(want.norm()))
            se = math.sqrt(moments.total_variance / reps)
            z = float((have - want) @ u[:, 0]) / se
            assert abs(z) < z_bound, (
                f"{case.description}, {name}, direction {j}: z = {z:.2f} beyond {z_bound:.2f} "
                f"(Z_BOUND = {Z_BOUND} Bonferroni-adjusted over {len(specs) * directions} comparisons)"
            )


# ==================================================================== helpers, API


def test_tabular_token_views_are_the_table_rows_of_each_prefix(tabular):
    """tabular_token_distributions[i, t] is the table row of the prefix y_i[:t] and
    tabular_token_log_probs[i, t] its entry at y_i[t] (the row found by hand: the prefix's
    non-EOS tokens as digits in base V - 1); the rows and the sequence log-probs normalise."""
    pair, lm = tabular.pair, tabular.policy
    assert abs(float(pair.policy_log_probs.detach().logsumexp(0))) < ATOL_NORMALISATION
    rows = pair.token_distributions.logsumexp(-1)[pair.mask]
    torch.testing.assert_close(rows, torch.zeros_like(rows), rtol=0, atol=ATOL_NORMALISATION)
    for i, string in enumerate(np.asarray(pair.sequences).tolist()):
        prefix_row = 0
        for t, token in enumerate(t for t in string if t != PAD):
            want = lm.tables[t][prefix_row].detach()
            assert torch.equal(pair.token_distributions[i, t].detach(), want), (string, t)
            assert float(pair.token_log_probs[i, t].detach()) == float(want[token]), (string, t)
            prefix_row = prefix_row * (lm.vocab_size - 1) + token - 1  # continuation ids 1..V-1 (EOS = 0)


def test_tabular_token_log_probs_sum_to_the_sequence_log_prob():
    lm = TabularLM.random(4, 3, rng=5)
    torch_lm = TabularLM([torch.as_tensor(t) for t in lm.tables])
    seqs, want = lm.enumerate()
    values, mask = tabular_token_log_probs(torch_lm, seqs)
    np.testing.assert_allclose(values.sum(-1).numpy(), want, rtol=0, atol=ATOL_LOG)
    assert mask.sum().item() == int((seqs != -1).sum())


def test_analytic_token_kl_is_zero_at_the_reference_and_ignores_zero_mass_tokens():
    p = torch.log(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64))
    q = torch.log(torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64))
    from bonmath.estimators import analytic_token_kl

    assert float(analytic_token_kl(p, p)) == 0.0
    assert float(analytic_token_kl(p, q)) == pytest.approx(math.log(2), rel=RTOL_EXACT)


@pytest.mark.parametrize("bad, match", [
    (lambda lp: advantages(lp[:1], "loo"), "k >= 2"),
    (lambda lp: advantages(lp, "median"), "unknown baseline"),
    (lambda lp: advantages(lp, "mean", "std"), "unknown scale_rewards"),
    (lambda lp: advantages(lp[:1], "none", "group"), "scale_rewards='group' needs k >= 2"),
    (lambda lp: reverse_kl_surrogate(lp, torch.full_like(lp, -math.inf)), "infinite"),
    (lambda lp: reverse_kl_surrogate(torch.full_like(lp, -math.inf), lp), "positive policy mass"),
    (lambda lp: vbon_bound_surrogate(lp, lp, torch.full_like(lp, -math.inf), 2), "lowest reward level"),
    (lambda lp: vbon_bound_surrogate(lp, lp, lp, 1, scale="kl_rl"), "n > 1"),
    (lambda lp: kl_penalty_surrogate(lp[None], lp[None], torch.ones(2, 3, dtype=torch.bool)), "one shape"),
    (lambda lp: kl_penalty_surrogate(lp[None], lp[None], torch.ones_like(lp[None], dtype=torch.bool),
                                     "analytic"), "needs token_kl"),
    (lambda lp: reward_surrogate(lp, lp.long()), "floating"),
])
def test_estimators_reject_bad_input(bad, match):
    lp = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        bad(lp)


def test_exact_gradient_rejects_an_infinite_bound():
    """L = -inf when the policy has mass on the lowest level: no gradient, an error."""
    case = tabular_pair(3, 2, seed=1, block_first_eos=False)
    with pytest.raises(ValueError, match="-inf"):
        case.gradient("vbon_bound", n=N_BON)
