"""Claims about :class:`bonmath.hf.CausalLMPolicy`, each checked against a slow oracle.

The oracle runs every continuation separately through the model (no KV cache)
and applies transformers' own ``TemperatureLogitsWarper`` / ``TopKLogitsWarper``
to the full logits, so it also pins that the policy is the distribution that
``generate(do_sample=True, temperature=..., top_k=...)`` samples from.
"""

from __future__ import annotations

import itertools
import math

import pytest
from conftest import ATOL_LOG, ATOL_NORMALISATION, RTOL_FINITE_DIFFERENCE, Z_BOUND

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from bonmath.enumeration import string_keys  # noqa: E402
from bonmath.hf import CausalLMPolicy  # noqa: E402

pytestmark = pytest.mark.hf

# Tolerances (see STYLE.md: named, not ad hoc).
LOG_TOL = 1e-10  # float64 log-probabilities, cached vs uncached forward
GRAD_TOL = 1e-10  # float64 parameter gradients, relative to their scale
FLOAT32_LOG_TOL = 1e-4  # float32 model: cached vs padded forward

V, EOS, L, PROMPT = 6, 5, 3, (1, 2, 3)


def tiny_gpt2(
    vocab_size: int = V,
    eos_token_id: int | None = EOS,
    n_embd: int = 16,
    seed: int = 0,
    scale: float = 5.0,
    dtype: torch.dtype = torch.float64,
) -> GPT2LMHeadModel:
    """A 2-layer GPT-2 built locally, with embeddings scaled so it is far from uniform."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=16,
        n_embd=n_embd,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(scale)  # tied to lm_head
    return model.to(dtype).eval()


def complete_continuations(
    vocab_size: int, max_new_tokens: int, eos: int | None
) -> list[tuple[int, ...]]:
    """Every complete continuation, sorted: nothing after EOS; shorter than
    max_new_tokens only when it ends with EOS."""
    out = []
    for n in range(1, max_new_tokens + 1):
        for s in itertools.product(range(vocab_size), repeat=n):
            if eos is not None and eos in s[:-1]:
                continue
            if n < max_new_tokens and (eos is None or s[-1] != eos):
                continue
            out.append(s)
    return sorted(out)


def brute_force_log_prob(model, prompt, seq, temperature=1.0, top_k=None) -> torch.Tensor:
    """log pi(seq | prompt) from one uncached forward of prompt + seq and generate's warpers."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    ids = torch.tensor([*prompt, *seq]).unsqueeze(0)
    logits = model(ids, use_cache=False).logits[0].double()
    P = len(prompt)
    total = torch.zeros((), dtype=torch.float64)
    for t, token in enumerate(seq):
        scores = warpers(ids[:, : P + t], logits[P - 1 + t].unsqueeze(0))
        total = total + torch.log_softmax(scores, dim=-1)[0, token]
    return total


def brute_force(model, prompt=PROMPT, max_new_tokens=L, eos=EOS, temperature=1.0, top_k=None):
    """All continuations with positive probability and their log-probs, one forward each."""
    V_ = model.config.vocab_size
    seqs = complete_continuations(V_, max_new_tokens, eos)
    log_probs = torch.stack(
        [brute_force_log_prob(model, prompt, s, temperature, top_k) for s in seqs]
    )
    keep = torch.isfinite(log_probs)
    return [s for s, k in zip(seqs, keep.tolist(), strict=True) if k], log_probs[keep]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run as many small ops; on a shared 2-core machine, intra-op
    threads only contend (10x slower under load), so use one and restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


# ------------------------------------------------------------------ enumerate


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, None), (1.3, 3)])
def test_enumerate_equals_brute_force_without_cache(model, temperature, top_k):
    """enumerate() (prefix tree, shared KV cache) gives the same strings and
    log-probs as running every continuation separately through the model."""
    policy = CausalLMPolicy(model, PROMPT, L, temperature=temperature, top_k=top_k)
    have_seqs, have = policy.enumerate(batch_size=7)  # several chunks per depth
    have_seqs = string_keys(have_seqs)
    want_seqs, want = brute_force(model, temperature=temperature, top_k=top_k)
    assert have_seqs == want_seqs
    torch.testing.assert_close(have, want, rtol=0, atol=LOG_TOL)


@pytest.mark.parametrize(
    "eos, temperature, top_k",
    [(EOS, 1.0, None), (EOS, 0.5, None), (EOS, 2.0, 2), (None, 1.0, None), (None, 0.8, 4)],
)
def test_enumerate_log_probs_sum_to_one(model, eos, temperature, top_k):
    """The enumerated continuations form a probability distribution."""
    policy = CausalLMPolicy(
        model, PROMPT, L, eos_token_id=eos, temperature=temperature, top_k=top_k
    )
    seqs, log_probs = policy.enumerate()
    seqs = string_keys(seqs)
    assert log_probs.dtype == torch.float64
    assert len(set(seqs)) == len(seqs)
    assert abs(log_probs.logsumexp(0).item()) < ATOL_NORMALISATION


def test_enumerate_support_size_is_the_count_of_complete_continuations(model):
    """Without top_k: sum_{t<L} (V-1)^t + (V-1)^L strings with EOS, V^L without."""
    with_eos, _ = CausalLMPolicy(model, PROMPT, L).enumerate()
    with_eos = string_keys(with_eos)
    without, _ = CausalLMPolicy(model, PROMPT, L, eos_token_id=None).enumerate()
    without = string_keys(without)
    assert len(with_eos) == sum((V - 1) ** t for t in range(L)) + (V - 1) ** L
    assert len(without) == V**L
    assert all(len(s) == L for s in without)


def test_enumerate_refuses_support_above_max_support(model):
    """enumerate() raises before building more than max_support strings, and says how many."""
    n = sum((V - 1) ** t for t in range(L)) + (V - 1) ** L
    with pytest.raises(ValueError, match=rf"\b{n} continuations.*max_support={n - 1}"):
        CausalLMPolicy(model, PROMPT, L, max_support=n - 1).enumerate()
    assert len(CausalLMPolicy(model, PROMPT, L, max_support=n).enumerate().sequences) == n

    # With top_k the count depends on the model: refused exactly at the true size.
    exact = len(CausalLMPolicy(model, PROMPT, L, top_k=3).enumerate().sequences)
    with pytest.raises(ValueError, match=rf"\b{exact} continuations"):
        CausalLMPolicy(model, PROMPT, L, top_k=3, max_support=exact - 1).enumerate()
    # ... and before any forward pass when even the fewest possible is too many.
    with pytest.raises(ValueError, match=r"at least \d+ continuations"):
        CausalLMPolicy(model, PROMPT, L, top_k=3, max_support=2).enumerate()


# ------------------------------------------------------------------ log_prob


def test_log_prob_agrees_with_enumerate_in_one_padded_batch(model):
    """log_prob on all strings at once (mixed lengths, right-padded) equals enumerate()."""
    policy = CausalLMPolicy(model, PROMPT, L, temperature=0.9)
    seqs, want = policy.enumerate()
    seqs = string_keys(seqs)
    order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(0))
    shuffled = [seqs[i] for i in order.tolist()]
    assert len({len(s) for s in shuffled}) == L  # lengths 1..L mixed in the batch
    have = policy.log_prob(shuffled)
    torch.testing.assert_close(have, want[order], rtol=0, atol=LOG_TOL)


def test_token_log_probs_sum_to_log_prob_and_match_token_distributions(model):
    """log_prob is the masked sum of token_log_probs; token_distributions rows are
    normalised, and gathered at the token they equal token_log_probs."""
    policy = CausalLMPolicy(model, PROMPT, L, top_k=4, temperature=1.2)
    seqs = [(EOS,), (0, EOS), (0, 1, 2), (3, 3, EOS)]
    token_log_probs, mask = policy.token_log_probs(seqs)
    dists = policy.token_distributions(seqs)
    assert token_log_probs.shape == mask.shape == (4, L) and dists.shape == (4, L, V)
    assert mask.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]

    have = torch.where(mask, token_log_probs, 0.0).sum(-1)
    torch.testing.assert_close(have, policy.log_prob(seqs), rtol=0, atol=LOG_TOL)

    row_sums = dists.logsumexp(-1)[mask]
    torch.testing.assert_close(row_sums, torch.zeros_like(row_sums), rtol=0, atol=ATOL_NORMALISATION)
    tokens = torch.tensor([[*s, *[0] * (L - len(s))] for s in seqs])
    gathered = dists.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(gathered[mask], token_log_probs[mask])


@pytest.mark.parametrize(
    "bad, why",
    [
        ((0, EOS, 1), "continues after an EOS"),
        ((0, 1, 2, 3), "more than max_new_tokens"),
        ((0, 1), "not a complete continuation"),
        ((), "not a complete continuation"),
        ((0, V, 1), "outside"),
        ((-1, 0, 1), "outside"),
    ],
)
def test_bad_sequences_raise_value_error(model, bad, why):
    """Strings that generate could not return are refused, naming the argument."""
    policy = CausalLMPolicy(model, PROMPT, L)
    for method in (policy.log_prob, policy.token_log_probs, policy.token_distributions):
        with pytest.raises(ValueError, match=rf"sequences\[1\].*{why}"):
            method([(EOS,), bad])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"prompt_ids": [0, V]}, "prompt_ids"),
        ({"prompt_ids": []}, "prompt_ids"),
        ({"prompt_ids": [[0, 1]]}, "prompt_ids"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 15}, "max_new_tokens"),  # 3 + 15 - 1 > n_positions = 16
        ({"prompt_ids": torch.tensor([1.0, 2.0])}, "prompt_ids"),  # floats are not truncated
        ({"prompt_ids": torch.tensor([True, False])}, "prompt_ids"),
        ({"prompt_ids": [1.5, 2]}, "prompt_ids"),
        ({"eos_token_id": V}, "eos_token_id"),
        ({"eos_token_id": [2, V]}, "eos_token_id"),
        ({"eos_token_id": "eos"}, "eos_token_id"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"max_support": 0}, "max_support"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(model, kwargs, name):
    """Invalid policy arguments raise ValueError naming the argument."""
    args = {"prompt_ids": PROMPT, "max_new_tokens": L, **kwargs}
    with pytest.raises(ValueError, match=name):
        CausalLMPolicy(model, **args)


# ------------------------------------------------------------------ sample


@pytest.mark.statistical
@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 3)])
def test_sample_frequencies_agree_with_enumerate(model, temperature, top_k):
    """Monte Carlo frequencies of sample() match enumerate()'s exact probabilities.

    Each string with expected count n p >= 20 is its own cell, the rest are
    pooled; every cell's count has exact variance n p (1 - p), and |z| < Z_BOUND for
    all cells (with ~100 cells, a false alarm has probability ~1e-4)."""
    n = 20_000
    policy = CausalLMPolicy(model, PROMPT, L, temperature=temperature, top_k=top_k)
    seqs, log_probs = policy.enumerate()
    seqs = string_keys(seqs)
    samples = policy.sample(n, generator=torch.Generator().manual_seed(1234))
    assert set(samples) <= set(seqs), "sample() returned a string outside the support"
    counts = {s: 0 for s in seqs}
    for s in samples:
        counts[s] += 1
    p = log_probs.exp().tolist()
    big = [i for i, q in enumerate(p) if n * q >= 20]
    cells = [(counts[seqs[i]], p[i]) for i in big]
    small = set(range(len(seqs))) - set(big)
    cells.append((sum(counts[seqs[i]] for i in small), sum(p[i] for i in small)))
    for count, q in cells:
        if 0 < q < 1:
            z = (count - n * q) / math.sqrt(n * q * (1 - q))
            assert abs(z) < Z_BOUND, f"count {count} vs expected {n * q:.1f}: z = {z:.2f}, bound {Z_BOUND}"


def test_sample_is_reproducible_with_a_seeded_generator(model):
    """The same seeded torch.Generator gives the same draws; complete continuations only."""
    policy = CausalLMPolicy(model, PROMPT, L, top_k=4)
    first = policy.sample(200, generator=torch.Generator().manual_seed(7))
    again = policy.sample(200, generator=torch.Generator().manual_seed(7))
    other = policy.sample(200, generator=torch.Generator().manual_seed(8))
    assert first == again and first != other
    assert all((len(s) <= L and s[-1] == EOS) or len(s) == L for s in first)
    assert all(EOS not in s[:-1] for s in first)
    assert policy.sample(0) == []


# ------------------------------------------------------------------ gradients


def _gradients(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


def test_enumerate_gradients_equal_brute_force_gradients():
    """d/dθ of a function of enumerate()'s log-probs equals that of the brute-force log-probs."""
    model = tiny_gpt2(seed=3)
    policy = CausalLMPolicy(model, PROMPT, L, temperature=0.8)
    seqs, log_probs = policy.enumerate(batch_size=10)
    seqs = string_keys(seqs)
    want_seqs, want_log_probs = brute_force(model, temperature=0.8)
    assert seqs == want_seqs
    reward = torch.rand(len(seqs), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def objective(lp):  # expected reward plus a log-prob term, as in policy gradients
        return (lp.exp() * reward).sum() + (reward * lp).mean()

    have = _gradients(model, objective(log_probs))
    want = _gradients(model, objective(want_log_probs))
    for h, w in zip(have, want, strict=True):
        scale = w.abs().max().clamp_min(1.0)
        assert (h - w).abs().max() / scale < GRAD_TOL


def test_log_prob_gradients_are_finite_and_match_central_differences():
    """log_prob is differentiable: autograd matches central differences along a random direction."""
    model = tiny_gpt2(seed=4)
    policy = CausalLMPolicy(model, PROMPT, L, top_k=4)
    seqs = policy.sample(16, generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(-1, 1, len(seqs), dtype=torch.float64)
    params = list(model.parameters())

    def f() -> torch.Tensor:
        return (weights * policy.log_prob(seqs)).sum()

    grads = torch.autograd.grad(f(), params)
    assert all(torch.isfinite(g).all() for g in grads)
    gen = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    want = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
        f_plus = f().item()
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * eps * d)
        f_minus = f().item()
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
    have = (f_plus - f_minus) / (2 * eps)
    assert abs(have - want) <= RTOL_FINITE_DIFFERENCE * max(1.0, abs(want)), (have, want)


# ------------------------------------------------------------------ top_k


def test_log_prob_is_minus_inf_for_a_token_outside_top_k(model):
    """A string using a token outside the top-k set has probability 0: -inf, not an error."""
    policy = CausalLMPolicy(model, PROMPT, L, top_k=2)
    kept, _ = policy.enumerate()
    kept = string_keys(kept)
    first = policy.token_distributions([(EOS,)])[0, 0]
    outside = [t for t in range(V) if t != EOS and first[t] == -math.inf][0]
    assert all(s[0] != outside for s in kept)
    have = policy.log_prob([(outside, EOS), kept[0], kept[-1]])
    assert have[0] == -math.inf
    assert torch.isfinite(have[1:]).all()


def test_enumerate_with_top_k_contains_only_top_k_paths(model):
    """Every enumerated prefix expands exactly its k largest-logit tokens (no ties here)."""
    k = 2
    policy = CausalLMPolicy(model, PROMPT, L, top_k=k, temperature=1.5)
    seqs, _ = policy.enumerate()
    seqs = string_keys(seqs)
    untruncated = CausalLMPolicy(model, PROMPT, L, temperature=1.5)
    dists = untruncated.token_distributions(seqs)
    for i, s in enumerate(seqs):
        for t, token in enumerate(s):
            top = set(torch.topk(dists[i, t], k).indices.tolist())
            assert token in top
    children: dict[tuple[int, ...], set[int]] = {}
    for s in seqs:
        for t in range(len(s)):
            children.setdefault(s[:t], set()).add(s[t])
    assert all(len(c) == k for c in children.values())


def test_top_k_equal_to_vocab_size_is_the_untruncated_policy(model):
    """top_k = V keeps every token: the same strings and log-probs as top_k=None."""
    want_seqs, want = CausalLMPolicy(model, PROMPT, L).enumerate()
    want_seqs = string_keys(want_seqs)
    have_seqs, have = CausalLMPolicy(model, PROMPT, L, top_k=V).enumerate()
    have_seqs = string_keys(have_seqs)
    assert have_seqs == want_seqs
    assert torch.equal(have, want)


def test_top_k_keeps_every_token_tied_with_the_kth_logit():
    """Ties at the k-th logit are all kept, as in transformers' TopKLogitsWarper."""
    config = GPT2Config(
        vocab_size=V,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=EOS,
        tie_word_embeddings=False,
    )
    torch.manual_seed(5)
    model = GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():  # logits: tokens 0 and 1 share h . w, all others are exactly 0
        model.lm_head.weight.zero_()
        model.lm_head.weight[0] = model.lm_head.weight[1] = torch.randn(16, dtype=torch.float64)
    policy = CausalLMPolicy(model, PROMPT, 2, top_k=1)
    seqs, log_probs = policy.enumerate()
    seqs = string_keys(seqs)
    want_seqs, want = brute_force(model, max_new_tokens=2, top_k=1)
    assert seqs == want_seqs
    torch.testing.assert_close(log_probs, want, rtol=0, atol=LOG_TOL)
    assert len({s[0] for s in seqs}) >= 2  # top_k=1, yet a tie keeps several first tokens


def test_top_k_enumerates_a_large_vocabulary():
    """With top_k, a 4096-token vocabulary is enumerable: only kept tokens are expanded."""
    model = tiny_gpt2(vocab_size=4096, eos_token_id=7, seed=6, scale=5.0)
    policy = CausalLMPolicy(model, (11, 12), 3, top_k=3, max_support=27)
    seqs, log_probs = policy.enumerate()
    seqs = string_keys(seqs)
    assert len(seqs) <= 27
    assert abs(log_probs.logsumexp(0).item()) < ATOL_NORMALISATION
    torch.testing.assert_close(policy.log_prob(seqs), log_probs, rtol=0, atol=LOG_TOL)


# ------------------------------------------------------------------ dtypes, loading


def test_float32_model_gives_a_normalised_float64_distribution():
    """A float32 model works: log-probs are normalised in float64 and log_prob agrees
    with enumerate up to float32 rounding of the two forward paths."""
    model = tiny_gpt2(dtype=torch.float32)
    policy = CausalLMPolicy(model, PROMPT, L, top_k=4)
    seqs, log_probs = policy.enumerate()
    seqs = string_keys(seqs)
    assert log_probs.dtype == torch.float64
    assert abs(log_probs.logsumexp(0).item()) < ATOL_NORMALISATION
    torch.testing.assert_close(policy.log_prob(seqs), log_probs, rtol=0, atol=FLOAT32_LOG_TOL)


def test_save_pretrained_then_from_pretrained_gives_identical_enumerate(model, tmp_path):
    """The real loading path: a saved and reloaded model has the same exact distribution."""
    model.save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float64 and not loaded.training
    want_seqs, want = CausalLMPolicy(model, PROMPT, L).enumerate()
    want_seqs = string_keys(want_seqs)
    have_seqs, have = CausalLMPolicy(loaded, PROMPT, L).enumerate()
    have_seqs = string_keys(have_seqs)
    assert have_seqs == want_seqs
    assert torch.equal(have, want)


# ------------------------------------------------------------------ enumerate_pair


def brute_force_law(model, prompt=PROMPT, max_new_tokens=L, eos=EOS, temperature=1.0, top_k=None):
    """{continuation: log-prob} over every complete continuation, one uncached forward each
    (probability-0 continuations included, as -inf)."""
    return {
        s: float(brute_force_log_prob(model, prompt, s, temperature, top_k).detach())
        for s in complete_continuations(model.config.vocab_size, max_new_tokens, eos)
    }


def perturbed(model, noise=0.5, seed=1):
    """A copy of ``model`` with Gaussian noise on every parameter: a policy near it."""
    import copy

    policy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return policy


def brute_force_objective(policy_law, ref_law, n):
    """J = -KL(π || π_N) from two {string: log-prob} brute-force laws, aligned by string."""
    import bonmath

    keys = sorted(set(policy_law) | set(ref_law))
    policy_lp = torch.tensor([policy_law[s] for s in keys], dtype=torch.float64)
    ref_lp = torch.tensor([ref_law[s] for s in keys], dtype=torch.float64)
    rewards = torch.tensor([float(sum(s) % 3) for s in keys], dtype=torch.float64)
    return float(bonmath.vbon_objective(policy_lp, ref_lp, rewards, n))


@pytest.mark.parametrize(
    "policy_kwargs, ref_kwargs, finite",
    [
        ({"top_k": 2, "temperature": 1.3}, {}, True),  # policy inside the reference's support
        ({"top_k": 3}, {"top_k": 4, "temperature": 0.7}, None),  # different top-k sets
        ({}, {"top_k": 2}, False),  # policy outside the reference's support
    ],
)
def test_enumerate_pair_is_the_union_of_supports_and_gives_the_brute_force_objective(
    model, policy_kwargs, ref_kwargs, finite
):
    """enumerate_pair enumerates the union of the two top-k supports; each model's
    log-probabilities on it equal the brute-force ones (-inf off its support, summing
    to 1), and J = -KL(π_θ || π_N) equals the brute-force J: finite (within ATOL_LOG)
    when the policy is inside the reference's support, exactly -inf otherwise."""

    import bonmath

    policy_model = perturbed(model)
    policy = CausalLMPolicy(policy_model, PROMPT, L, **policy_kwargs)
    reference = CausalLMPolicy(model, PROMPT, L, **ref_kwargs)
    pair = bonmath.enumerate_pair(policy, reference)
    policy_law = brute_force_law(policy_model, **policy_kwargs)
    ref_law = brute_force_law(model, **ref_kwargs)
    union = sorted(s for s in policy_law if policy_law[s] > -math.inf or ref_law[s] > -math.inf)
    assert pair.keys() == union
    for have, law in ((pair.policy_log_probs, policy_law), (pair.ref_log_probs, ref_law)):
        want = torch.tensor([law[s] for s in union], dtype=torch.float64)
        assert torch.equal(have == -math.inf, want == -math.inf)
        finite_ = want > -math.inf
        torch.testing.assert_close(have[finite_], want[finite_], rtol=0, atol=LOG_TOL)
        assert abs(float(have.detach().logsumexp(0))) < ATOL_NORMALISATION
    rewards = torch.tensor([float(sum(s) % 3) for s in union], dtype=torch.float64)
    have = float(bonmath.vbon_objective(pair.policy, pair.reference, rewards, n=4).detach())
    want = brute_force_objective(
        {s: policy_law[s] for s in union}, {s: ref_law[s] for s in union}, n=4
    )
    outside = bool(((pair.policy_log_probs > -math.inf) & (pair.ref_log_probs == -math.inf)).any())
    if finite is not None:
        assert outside == (not finite)
    if outside:
        assert have == -math.inf and want == -math.inf
    else:
        assert math.isfinite(have) and abs(have - want) <= ATOL_LOG


def test_enumerate_pair_per_token_views_agree_with_the_models(model):
    """The pair's per-token log-probabilities, mask and token distributions are the
    models' own (token_log_probs / token_distributions on the same strings), and the
    policy's stay differentiable."""
    import bonmath

    policy = CausalLMPolicy(perturbed(model), PROMPT, L, top_k=3)
    reference = CausalLMPolicy(model, PROMPT, L, top_k=2)
    pair = bonmath.enumerate_pair(policy, reference)
    want, mask = policy.token_log_probs(pair.sequences)
    assert torch.equal(pair.mask, mask)
    torch.testing.assert_close(pair.token_log_probs, want, rtol=0, atol=LOG_TOL)  # cached vs padded forward
    torch.testing.assert_close(
        pair.ref_token_log_probs, reference.token_log_probs(pair.sequences)[0], rtol=0, atol=LOG_TOL
    )
    assert torch.equal(pair.token_distributions, policy.token_distributions(pair.sequences))
    assert torch.equal(pair.ref_token_distributions, reference.token_distributions(pair.sequences))
    assert pair.policy_log_probs.requires_grad and not pair.ref_log_probs.requires_grad
    torch.testing.assert_close(pair.token_log_probs.sum(-1), pair.policy_log_probs, rtol=0, atol=LOG_TOL)


def test_enumerate_pair_refuses_policies_that_generate_different_strings(model):
    """Different prompts, lengths or EOS sets cannot share one support: ValueError naming it."""
    import bonmath

    reference = CausalLMPolicy(model, PROMPT, L)
    for other, what in (
        (CausalLMPolicy(model, (1, 2), L), "prompts"),
        (CausalLMPolicy(model, PROMPT, L - 1), "max_new_tokens"),
        (CausalLMPolicy(model, PROMPT, L, eos_token_id=[4, EOS]), "eos_token_ids"),
    ):
        with pytest.raises(ValueError, match=what):
            bonmath.enumerate_pair(other, reference)


def test_enumerate_pair_batches_prompts_with_supports_of_different_sizes(model):
    """A list of prompts gives a leading prompt axis: each row is that prompt's pair, padded
    with PAD strings of -inf log-probability, and core functions work on the batch unchanged."""
    import bonmath

    policy_model = perturbed(model)
    prompts = [(1, 2, 3), (4,), (2, 2)]
    policies = [CausalLMPolicy(policy_model, p, L, top_k=2) for p in prompts]
    references = [CausalLMPolicy(model, p, L, top_k=3) for p in prompts]
    batch = bonmath.enumerate_pair(policies, references)
    singles = [bonmath.enumerate_pair(p, r) for p, r in zip(policies, references)]
    sizes = [len(s.sequences) for s in singles]
    assert len(set(sizes)) > 1, "the test needs supports of different sizes"
    assert batch.sequences.shape == (len(prompts), max(sizes), L)
    rewards = (batch.sequences.clamp_min(0).sum(-1) % 3).to(torch.float64)
    have = bonmath.vbon_objective(batch.policy, batch.reference, rewards, n=3)
    assert have.shape == (len(prompts),)
    for b, (single, size) in enumerate(zip(singles, sizes)):
        assert torch.equal(batch.sequences[b, :size], single.sequences)
        assert (batch.sequences[b, size:] == bonmath.PAD).all()
        assert (batch.policy_log_probs[b, size:] == -math.inf).all()
        assert (batch.ref_log_probs[b, size:] == -math.inf).all()
        assert torch.equal(batch.policy_log_probs[b, :size], single.policy_log_probs)
        assert torch.equal(batch.token_distributions[b, :size], single.token_distributions)
        want = bonmath.vbon_objective(single.policy, single.reference, rewards[b, :size], n=3)
        torch.testing.assert_close(have[b], want, rtol=0, atol=LOG_TOL)
        assert torch.equal(batch.policy.row(b).sequences, single.sequences)


# ------------------------------------------------------------------ several EOS ids, dropout


def test_several_eos_ids_from_the_generation_config_end_continuations(model):
    """With generation_config.eos_token_id a list (as many HF models ship), "config" reads it:
    every continuation ends at the first of either EOS token, and the support has
    sum_{t<L} E (V-E)^t + (V-E)^L strings with E = 2; the law equals brute force."""
    import copy

    two_eos = copy.deepcopy(model)
    two_eos.generation_config.eos_token_id = [4, EOS]
    policy = CausalLMPolicy(two_eos, PROMPT, L)
    assert policy.eos_token_ids == (4, EOS)
    sequences, log_probs = policy.enumerate()
    keys = string_keys(sequences)
    assert len(keys) == sum(2 * (V - 2) ** t for t in range(L)) + (V - 2) ** L
    assert all(s[-1] in (4, EOS) or len(s) == L for s in keys)
    assert not any(t in (4, EOS) for s in keys for t in s[:-1])
    want = torch.stack([brute_force_log_prob(two_eos, PROMPT, s) for s in keys])
    torch.testing.assert_close(log_probs, want, rtol=0, atol=LOG_TOL)


@pytest.mark.statistical
def test_enumerated_law_with_several_eos_ids_is_generates_sampling_law(model):
    """model.generate(do_sample=True) with two EOS ids in its generation config samples the
    enumerated law: Pearson chi-square with small cells pooled (fixed seed) does not reject
    at the 1e-6 level (false-alarm rate 1e-6)."""
    import copy

    from bonmath.testing import goodness_of_fit

    two_eos = copy.deepcopy(model)
    two_eos.generation_config.eos_token_id = [4, EOS]
    two_eos.generation_config.pad_token_id = EOS
    support = CausalLMPolicy(two_eos, PROMPT, L, top_k=V).enumerate()
    torch.manual_seed(2024)
    n = 20_000
    out = two_eos.generate(
        torch.tensor([PROMPT]), do_sample=True, max_new_tokens=L, num_return_sequences=n, top_k=V
    )[:, len(PROMPT):].tolist()
    samples = []
    for row in out:
        ends = [i for i, t in enumerate(row) if t in (4, EOS)]
        samples.append(tuple(row[: ends[0] + 1] if ends else row))
    result = goodness_of_fit(support.index(samples), support.log_probs.detach().numpy())
    assert result.p_value > 1e-6, result


def test_training_mode_model_is_enumerated_with_dropout_off_and_its_modes_restored(model):
    """A model in training mode (dropout 0.1) gives the same exact law every call, equal to
    the eval-mode law; afterwards every submodule is back in the mode it had."""
    import copy

    training = copy.deepcopy(model).train()
    training.transformer.h[0].eval()  # a mixed state, restored exactly
    modes = [m.training for m in training.modules()]
    policy = CausalLMPolicy(training, PROMPT, L)
    first = policy.enumerate().log_probs
    second = policy.enumerate().log_probs
    want = CausalLMPolicy(model, PROMPT, L).enumerate().log_probs
    assert torch.equal(first, second)
    torch.testing.assert_close(first, want, rtol=0, atol=LOG_TOL)
    seqs = [(EOS,), (0, 1, 2)]
    torch.testing.assert_close(policy.log_prob(seqs), policy.log_prob(seqs), rtol=0, atol=0)
    assert [m.training for m in training.modules()] == modes
