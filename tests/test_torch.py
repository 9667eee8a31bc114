"""torch tensors: same numbers as numpy, dtype and device kept, finite gradients at -inf,
and autograd against central finite differences (Vieira, "How to test gradient implementations")."""

import math

import numpy as np
import pytest
from conftest import ATOL_LOG_FLOAT32

import bonmath

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REWARDS = np.array([0.0, 1.0, 1.0, 2.0, 0.0, 3.0, 3.0])  # ties
ZERO = 4  # a zero-mass string on the lowest level


def support(requires_grad=False, dtype=torch.float64):
    logits = torch.tensor([0.3, -1.0, 0.5, 0.1, 0.0, -0.4, 0.9], dtype=dtype)
    mask = torch.zeros(7, dtype=dtype)
    mask[ZERO] = -torch.inf
    logits = (logits + mask).requires_grad_(requires_grad)
    return logits


def log_softmax(logits):
    return logits - torch.logsumexp(logits, 0)


POLICY = np.log([1.0, 0.1, 0.2, 0.2, 1.0, 0.3, 0.2]) + [-np.inf, 0, 0, 0, -np.inf, 0, 0]  # none on the lowest level

CASES = {
    "bon_log_probs": lambda ref, r: bonmath.bon_log_probs(ref, r, 5),
    "bon_log_probs_real_n": lambda ref, r: bonmath.bon_log_probs(ref, r, 0.6),
    "bon_log_ratio": lambda ref, r: bonmath.bon_log_ratio(ref, r, 3),
    "reward_cdf_lt": lambda ref, r: bonmath.reward_cdf(ref, r)[0],
    "reward_cdf_le": lambda ref, r: bonmath.reward_cdf(ref, r)[1],
    "tilted_log_probs": lambda ref, r: bonmath.tilted_log_probs(ref, r, 0.7),
    "vbon_bound_optimum": lambda ref, r: bonmath.vbon_bound_optimum(ref, r, 4),
    "entropy": lambda ref, r: bonmath.entropy(ref),
    "kl_divergence": lambda ref, r: bonmath.kl_divergence(bonmath.bon_log_probs(ref, r, 4), ref),
    "win_rate": lambda ref, r: bonmath.win_rate(bonmath.bon_log_probs(ref, r, 4), ref, r),
    "vbon_objective": lambda ref, r: bonmath.vbon_objective(_like(POLICY, ref), ref, r, 4),
    "vbon_lower_bound": lambda ref, r: bonmath.vbon_lower_bound(_like(POLICY, ref), ref, r, 4),
    "kl_rl_objective": lambda ref, r: bonmath.kl_rl_objective(_like(POLICY, ref), ref, r, 0.5),
}


def _like(values, ref):
    return torch.as_tensor(values, dtype=ref.dtype) if isinstance(ref, torch.Tensor) else values


@pytest.mark.parametrize("name", CASES)
def test_numpy_and_torch_give_the_same_numbers(name):
    """Each formula is written once: numpy and torch agree to rounding."""
    ref_torch = log_softmax(support())
    have = CASES[name](ref_torch, torch.as_tensor(REWARDS)).detach().numpy()
    want = CASES[name](ref_torch.detach().numpy(), REWARDS)
    np.testing.assert_allclose(have, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", CASES)
def test_torch_gradients_are_finite_at_minus_inf(name):
    """A zero-mass string (log-prob -inf) and the lowest level give finite gradients, never NaN."""
    logits = support(requires_grad=True)
    out = CASES[name](log_softmax(logits), torch.as_tensor(REWARDS))
    torch.where(torch.isfinite(out), out, 0.0).sum().backward()
    assert torch.isfinite(logits.grad).all(), logits.grad


@pytest.mark.parametrize("name", CASES)
def test_torch_gradients_match_central_finite_differences(name):
    """d/dε f(θ + ε d) at ε = 0 by autograd equals the central difference along 3 random
    directions d (relative error < 1e-6 with step 1e-6 in float64)."""
    generator = torch.Generator().manual_seed(0)
    logits = support(requires_grad=True)
    rewards = torch.as_tensor(REWARDS)
    weights = torch.randn(7, generator=generator, dtype=torch.float64)

    def f(theta):
        out = CASES[name](log_softmax(theta), rewards)
        if out.ndim:
            out = torch.where(torch.isfinite(out), out, 0.0) @ weights
        return out

    f(logits).backward()
    for _ in range(3):
        direction = torch.randn(7, generator=generator, dtype=torch.float64)
        direction[ZERO] = 0.0
        have = float(logits.grad @ direction)
        step = 1e-6
        with torch.no_grad():
            want = float((f(logits + step * direction) - f(logits - step * direction)) / (2 * step))
        assert abs(have - want) <= 1e-6 * max(1.0, abs(want)), (have, want)


def test_float32_tensors_keep_their_dtype():
    """torch inputs keep dtype: float32 in, float32 out (rewards stay as given)."""
    ref = log_softmax(support(dtype=torch.float32))
    out = bonmath.bon_log_probs(ref, torch.as_tensor(REWARDS), 3)
    assert out.dtype == torch.float32 and out.device == ref.device
    want = bonmath.bon_log_probs(ref.double().numpy(), REWARDS, 3, normalize=True)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)


def test_numpy_rewards_with_torch_log_probs():
    """Mixed input: numpy rewards become a float64 tensor; the result is a tensor."""
    out = bonmath.bon_log_probs(log_softmax(support()), REWARDS, 3)
    assert isinstance(out, torch.Tensor)


def test_sample_bon_returns_a_tensor_for_tensor_input():
    idx = bonmath.sample_bon(log_softmax(support()), torch.as_tensor(REWARDS), 3, 10, rng=0)
    assert isinstance(idx, torch.Tensor) and idx.shape == (10,)


def test_tabular_lm_with_torch_logits_is_differentiable():
    """A TabularLM built from torch logits enumerates differentiably; its gradient of
    E[reward] matches finite differences."""
    base = bonmath.TabularLM.random(3, 2, rng=0)
    logits = [torch.tensor(t, requires_grad=True) for t in base.tables]
    lm = bonmath.TabularLM.from_logits(logits)
    sequences, log_probs = lm.enumerate()
    rewards = torch.as_tensor((sequences.numpy() == 1).sum(axis=1), dtype=torch.float64)
    value = (log_probs.exp() * rewards).sum()
    value.backward()
    direction = [torch.randn(t.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) for t in logits]
    have = sum(float((t.grad * d).sum()) for t, d in zip(logits, direction))

    def value_at(eps):
        shifted = bonmath.TabularLM.from_logits([t.detach() + eps * d for t, d in zip(logits, direction)])
        return float((shifted.enumerate().log_probs.exp() * rewards).sum())

    want = (value_at(1e-6) - value_at(-1e-6)) / 2e-6
    assert abs(have - want) <= 1e-6 * max(1.0, abs(want))


def test_batched_supports_agree_with_numpy_row_by_row():
    """A batch of tensors with different tie patterns (and a string holding most of its
    level) gives each row's numpy values: level indices are per row."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 4, 7)) * 3
    logits[0, 0, 2] = -np.inf
    ref = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    rewards = rng.integers(0, 3, size=(3, 4, 7)).astype(float)
    rewards[1, 2] = np.arange(7)  # a row without ties
    for func in (lambda ref, r: bonmath.bon_log_probs(ref, r, 4), lambda ref, r: bonmath.reward_cdf(ref, r)[0]):
        have = func(torch.as_tensor(ref), torch.as_tensor(rewards)).numpy()
        for i, j in np.ndindex(3, 4):
            np.testing.assert_allclose(have[i, j], func(ref[i, j], rewards[i, j]), rtol=1e-13, atol=0)


def test_large_supports_agree_between_numpy_blocks_and_torch():
    """numpy evaluates long elementwise chains block by block (bonmath.backend.blockwise);
    on 300 000 strings with ties and zero-mass strings it agrees with torch, which does not."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(300_000)
    logits[rng.random(300_000) < 0.01] = -np.inf
    ref = logits - np.logaddexp.reduce(logits)
    rewards = np.round(rng.random(300_000), 3)
    rewards[:150_000] = np.arange(150_000)  # half distinct, half tied
    for n in (3, 1000):
        want = bonmath.bon_log_probs(torch.as_tensor(ref), torch.as_tensor(rewards), n).numpy()
        np.testing.assert_allclose(bonmath.bon_log_probs(ref, rewards, n), want, rtol=1e-12, atol=0)
        want = bonmath.bon_log_ratio(torch.as_tensor(ref), torch.as_tensor(rewards), n).numpy()
        np.testing.assert_allclose(bonmath.bon_log_ratio(ref, rewards, n), want, rtol=1e-12, atol=1e-12)


def test_a_read_only_numpy_constant_becomes_a_torch_tensor_of_its_own():
    """backend.as_constant copies: the cached, read-only coefficient tables of the estimators
    are not shared with (and cannot be written through) the torch tensors built from them."""
    from bonmath.backend import as_constant, namespace

    table = np.array([0.25, 0.5])
    table.flags.writeable = False
    like = torch.zeros(2, dtype=torch.float64)
    constant = as_constant(table, like, namespace(like))
    constant += 1.0
    assert table.tolist() == [0.25, 0.5] and constant.tolist() == [1.25, 1.5]


@pytest.mark.parametrize("scale", [1e-300, 1e-40, 1e40, 1e300])
def test_float32_tensors_take_temperatures_beyond_float32_range(scale):
    """A temperature or β outside float32's normal range (1.2e-38 .. 3.4e38) is legal with
    float32 tensors: the tilt (bonmath.optimal) and soft BoN (theory.soft_bon) agree with
    the float64 result (they divided in float32, where 1e-300 is 0: NaN or all -inf)."""
    ref = log_softmax(support())
    rewards = torch.as_tensor(REWARDS) * 1e30  # moves the tilt at scale 1e40
    for law in (
        lambda ref, r: bonmath.tilted_log_probs(ref, r, scale),
        lambda ref, r: bonmath.soft_bon_log_probs(ref, r, 3, scale),
    ):
        out = law(ref.float(), rewards.float())
        want = law(ref, rewards)
        assert out.dtype == torch.float32
        # float64's -1e70 is float32's -inf (a probability of e^-1e70 is 0 there)
        np.testing.assert_allclose(out.numpy(), want.float().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1e-300, 1e-50, 1e40, 1e300])
def test_float32_tensors_take_numbers_of_samples_beyond_float32_range(n):
    """n = 1e40 or 1e-50 BoN samples is legal with float32 tensors: bon_log_probs, bon_log_ratio and
    bon_log_ratio_from_cdf equal the float64 result, rounded to float32, to ATOL_LOG_FLOAT32 (they multiplied
    log F by n in float32, where 1e40 is inf (NaN at the top level) and 1e-50 is 0 (a point mass)); gradients
    stay finite where the law has mass."""
    logits = support(requires_grad=True, dtype=torch.float32)
    ref = log_softmax(logits)
    rewards = torch.as_tensor(REWARDS, dtype=torch.float32)
    ref64 = ref.detach().double().numpy()
    for have, want in (
        (bonmath.bon_log_probs(ref, rewards, n), bonmath.bon_log_probs(ref64, REWARDS, n, normalize=True)),
        (bonmath.bon_log_ratio(ref, rewards, n), bonmath.bon_log_ratio(ref64, REWARDS, n, normalize=True)),
        (bonmath.bon_log_ratio_from_cdf(ref[:3], ref[3:6], n), bonmath.bon_log_ratio_from_cdf(ref64[:3], ref64[3:6], n)),
    ):
        assert have.dtype == torch.float32
        with np.errstate(over="ignore"):  # float64's -1e40 is float32's -inf
            want = np.float32(want)
        np.testing.assert_allclose(have.detach().numpy(), want, rtol=0, atol=ATOL_LOG_FLOAT32)
    law = bonmath.bon_log_probs(ref, rewards, n)
    (grad,) = torch.autograd.grad(torch.where(torch.isfinite(law), law, 0.0).sum(), logits)
    assert bool(torch.isfinite(grad[np.arange(7) != ZERO]).all())


def test_float32_cdf_pairs_keep_their_own_rounding_tolerance_at_n_beyond_float32_range():
    """A float32 pair with F_lt + q = 1 + 1e-7 (float32 rounding) is the top level at n = 1e40 as
    at n = 1e30: R_N = log(1/q) (computing in float64 must not tighten the check to float64's)."""
    log_cdf_lt = torch.tensor([math.log(0.5)], dtype=torch.float32)
    log_mass = torch.tensor([math.log(0.5000001)], dtype=torch.float32)
    for n in (1e30, 1e40):
        have = bonmath.bon_log_ratio_from_cdf(log_cdf_lt, log_mass, n)
        assert have.dtype == torch.float32
        np.testing.assert_allclose(have.numpy(), [-float(log_mass)], rtol=0, atol=ATOL_LOG_FLOAT32)
