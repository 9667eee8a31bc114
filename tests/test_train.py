"""Claims about the trainers of :mod:`bonmath.train` and the task of :mod:`bonmath.task`.

The task is a 1-layer GPT-2 built from ``GPT2Config`` (vocabulary 5, EOS = 4), one
prompt, continuations of at most 2 tokens (21 strings), and an integer reward
(#token 1 - #token 2) so that strings tie.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import ATOL_LOG, ATOL_NORMALISATION

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import bonmath  # noqa: E402
from bonmath.task import MAX_TABLE_SIZE, Task  # noqa: E402
from bonmath.train import (  # noqa: E402
    METHODS,
    BoNSFTConfig,
    KLRLConfig,
    TrainConfig,
    VBoNBoundConfig,
    VBoNConfig,
    make_config,
    train,
    train_cached,
)

pytestmark = pytest.mark.hf

V, EOS, L, PROMPT = 5, 4, 2, (1, 2)


def integer_rewards(text, prompt_ids, sequences):
    """#token 1 - #token 2: few levels, many ties."""
    return np.array([s.count(1) - s.count(2) for s in sequences], dtype=np.float64)


def tiny_task(seed: int = 0, max_new_tokens: int = L) -> Task:
    config = GPT2Config(vocab_size=V, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=EOS)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(3.0)
    return Task(model.to(torch.float64).eval(), [("prompt", PROMPT)], max_new_tokens, integer_rewards)


@pytest.fixture(scope="module")
def task() -> Task:
    return tiny_task()


CONFIGS = [
    VBoNConfig(n=4, steps=3, k=4, lr=1e-2),
    VBoNBoundConfig(n=4, steps=3, k=4, lr=1e-2),
    VBoNBoundConfig(n=4, num_ref_samples=8, steps=3, k=4, lr=1e-2),
    KLRLConfig(beta=0.5, steps=3, k=4, lr=1e-2),
    BoNSFTConfig(n=4, steps=3, k=4, lr=1e-2),
]


def test_configs_cover_every_method():
    """The test configs cover every entry of METHODS, and each entry's config names its method."""
    assert {c.method for c in CONFIGS} == set(METHODS)
    assert all(method.config.method == name for name, method in METHODS.items())


def test_task_refuses_a_support_over_the_size_limit():
    """A task whose enumeration would exceed MAX_TABLE_SIZE is refused before enumerating,
    with the size in the message."""
    config = GPT2Config(vocab_size=1000, n_positions=8, n_embd=4, n_layer=1, n_head=1, eos_token_id=999)
    model = GPT2LMHeadModel(config).to(torch.float64).eval()
    size = 1 + 999 + 999**2 + 999**3
    assert size > MAX_TABLE_SIZE
    with pytest.raises(ValueError, match=f"{size:,} strings"):
        Task(model, [("prompt", (1,))], 3, integer_rewards)


def test_task_fingerprint_does_not_depend_on_the_model_directory(tmp_path):
    """The same model saved to and loaded from two directories gives one task fingerprint
    (so a cache of trained models survives a move of the checkout), and other weights another."""
    from transformers import AutoModelForCausalLM

    fingerprints = []
    for folder in ("a", "b"):
        tiny_task().model.save_pretrained(tmp_path / folder)
        model = AutoModelForCausalLM.from_pretrained(tmp_path / folder, dtype=torch.float64).eval()
        assert model.config._name_or_path == str(tmp_path / folder)
        fingerprints.append(Task(model, [("prompt", PROMPT)], L, integer_rewards).fingerprint())
    assert fingerprints[0] == fingerprints[1]
    assert tiny_task(seed=1).fingerprint() != fingerprints[0]


def test_task_matches_the_policy(task):
    """The task's support, log-probabilities and CDF are the policy's and bonmath's."""
    policy = task.policy(task.model, 0)
    assert len(task.sequences) == 1 + (V - 1) + (V - 1) ** 2
    with torch.no_grad():
        want = policy.log_prob(task.sequences).numpy()
    np.testing.assert_allclose(task.ref_log_probs[0], want, atol=ATOL_LOG)
    lt, le = bonmath.reward_cdf(task.ref_log_probs, task.rewards)
    np.testing.assert_array_equal(task.log_cdf_lt, lt)
    np.testing.assert_array_equal(task.log_cdf_le, le)
    assert task.lookup(task.sequences[::-1]).tolist() == list(range(len(task.sequences)))[::-1]
    np.testing.assert_allclose(task.enumerate_log_probs(task.model), task.ref_log_probs, atol=0)


def test_bound_log_cdf_is_a_lower_bound_equal_to_L_where_finite(task):
    """log N + (N-1) log F̃ <= R_N everywhere, = R_N on the lowest level, = L's value elsewhere."""
    for n in (2.0, 4.0, 16.0):
        value = math.log(n) + (n - 1) * task.bound_log_cdf(n)
        ratio = task.bon_log_ratio(n)
        lowest = task.log_cdf_lt == -math.inf
        assert lowest.any() and (~lowest).any()
        assert np.all(value <= ratio + ATOL_LOG)
        np.testing.assert_allclose(value[lowest], ratio[lowest], atol=ATOL_LOG)
        np.testing.assert_array_equal(task.bound_log_cdf(n)[~lowest], task.log_cdf_lt[~lowest])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label)
def test_trainer_moves_parameters_with_finite_loss(task, cfg):
    """Every trainer changes the weights, logs finite losses and leaves the reference alone."""
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    result = train(task, cfg, progress=False)
    assert len(result.loss) == cfg.steps and np.isfinite(result.loss).all() and np.isfinite(result.objective).all()
    moved = [not torch.equal(p, before[k]) for k, p in result.model.state_dict().items() if k in before]
    assert any(moved)
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k]), f"the reference model's {k} changed"
    log_probs = task.enumerate_log_probs(result.model)
    assert np.all(np.isfinite(log_probs)) and abs(np.logaddexp.reduce(log_probs[0])) < ATOL_NORMALISATION


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[4]], ids=lambda c: c.label)
def test_training_is_deterministic_given_the_seed(task, cfg):
    """The same config trains the same weights; another seed trains other weights."""
    a = train(task, cfg, progress=False).model.state_dict()
    b = train(task, cfg, progress=False).model.state_dict()
    c = train(task, dataclasses.replace(cfg, seed=1), progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_training_only_samples(task, monkeypatch):
    """No step enumerates the policy being trained: training sees samples only."""
    def refuse(*args, **kwargs):
        raise AssertionError("enumerate() called during training")

    monkeypatch.setattr("bonmath.hf.CausalLMPolicy.enumerate", refuse)
    for cfg in CONFIGS:
        train(task, cfg, progress=False)


def test_vbon_training_approaches_pi_n(task):
    """60 vBoN steps cut KL(π_θ || π_N) at least in half (fixed seed)."""
    n = 4
    target = task.bon_log_probs(n)
    before = float(bonmath.kl_divergence(task.ref_log_probs, target)[0])
    model = train(task, VBoNConfig(n=n, steps=60, k=8, lr=3e-2), progress=False).model
    after = float(bonmath.kl_divergence(task.enumerate_log_probs(model), target)[0])
    assert after < 0.5 * before, (before, after)


def test_kl_rl_training_increases_reward(task):
    """60 KL-RL steps at beta = 0.1 raise E[r] by more than 0.2 (fixed seed)."""
    model = train(task, KLRLConfig(beta=0.1, steps=60, k=8, lr=3e-2), progress=False).model
    log_probs = task.enumerate_log_probs(model)
    have = float(np.exp(log_probs[0]) @ task.rewards[0])
    want = float(np.exp(task.ref_log_probs[0]) @ task.rewards[0])
    assert have > want + 0.2, (want, have)


def test_train_cached_roundtrip_and_refuses_stale_entries(task, tmp_path, monkeypatch):
    """A cached model is read back without retraining; an entry holding another config is an error."""
    cfg = CONFIGS[0]
    first = train_cached(task, cfg, tmp_path, progress=False)
    assert first.path is not None and (first.path / "state_dict.pt").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("retrained although the cache holds the model")

    monkeypatch.setattr("bonmath.train.train", refuse)
    second = train_cached(task, cfg, tmp_path, progress=False)
    np.testing.assert_array_equal(first.log_probs, second.log_probs)
    assert set(second.state_dict()) == set(task.model.state_dict())
    # a damaged entry (another config under this key) is an error, not silently reused
    meta = first.path / "meta.json"
    meta.write_text(meta.read_text().replace('"steps": 3', '"steps": 4'))
    with pytest.raises(RuntimeError, match="stale or damaged"):
        train_cached(task, cfg, tmp_path, progress=False)


def test_cache_key_depends_on_config_and_task(task):
    """The key changes with the config and the task's weights, and not between equal tasks."""
    from bonmath.train import cache_key

    other = tiny_task(seed=1)
    assert cache_key(task, CONFIGS[0]) != cache_key(task, CONFIGS[1])
    assert cache_key(task, CONFIGS[0]) != cache_key(other, CONFIGS[0])
    assert cache_key(task, CONFIGS[0]) == cache_key(tiny_task(), CONFIGS[0])


@pytest.mark.parametrize("make", [
    lambda: make_config("ppo"),
    lambda: VBoNConfig(n=0),
    lambda: VBoNBoundConfig(n=1),
    lambda: VBoNBoundConfig(n=4, num_ref_samples=0),
    lambda: KLRLConfig(beta=0.0),
    lambda: KLRLConfig(beta=math.nan),
    lambda: VBoNConfig(n=4, k=1),
    lambda: VBoNConfig(n=4, steps=-1),
    lambda: VBoNConfig(n=4, lr=0.0),
    lambda: VBoNConfig(n=4, max_grad_norm=0.0),
    lambda: BoNSFTConfig(n=2.5),
    lambda: BoNSFTConfig(n=True),
], ids=range(12))
def test_bad_configs_are_rejected(make):
    """Each method's config refuses values outside its domain with a ValueError."""
    with pytest.raises(ValueError):
        make()


def test_configs_have_only_their_methods_fields():
    """A field of another method is a TypeError, and the shared base is not a method."""
    with pytest.raises(TypeError):
        VBoNConfig(n=4, num_ref_samples=8)
    with pytest.raises(TypeError):
        KLRLConfig(n=4)
    with pytest.raises(TypeError, match="base"):
        TrainConfig()


def test_review_task(tmp_path):
    """The shipped review LM with one prompt and 2 new tokens: 1 + (V-1) + (V-1)^2 strings with
    VADER rewards, and vBoN's first logged objective is the mean of log π_ref/π_N over the first
    k reference samples, π_N the tie-aware BoN law computed here from its definition."""
    pytest.importorskip("vaderSentiment")
    from bonmath.sentiment import REVIEW_LM_PATH, continuation_rewards, review_task

    if not (REVIEW_LM_PATH / "config.json").is_file():
        pytest.skip("models/review_lm is not built")
    task = review_task(prompts=[0], max_new_tokens=2, reward_cache_dir=tmp_path)
    vocab = len(task.tokenizer)
    assert len(task.sequences) == 1 + (vocab - 1) + (vocab - 1) ** 2
    want = continuation_rewards(task.tokenizer, task.prompt_texts[0], task.sequences)
    np.testing.assert_array_equal(task.rewards[0], want)
    assert len(np.unique(task.rewards[0])) < len(task.sequences)  # ties

    cfg = VBoNConfig(n=8, steps=1, k=4)
    result = train(task, cfg, progress=False)
    samples = task.policy(task.model, 0).sample(cfg.k, torch.Generator().manual_seed(cfg.seed))
    idx = task.lookup(samples)
    q, r = np.exp(task.ref_log_probs[0]), task.rewards[0]
    lt = np.array([q[r < x].sum() for x in r])
    le = np.array([q[r <= x].sum() for x in r])
    bon = q / (le - lt) * (le**cfg.n - lt**cfg.n)
    want_objective = float(np.mean(np.log(q[idx]) - np.log(bon[idx])))
    assert result.objective[0] == pytest.approx(want_objective, abs=ATOL_LOG)
