"""Claims about :mod:`bonmath.trl`: the vBoN reward for TRL and the exact evaluation callback.

Values are checked against exact rationals (mpmath for the final log), the TRL
integration by running TRL's ``RLOOTrainer`` for a few steps on the review LM
(``models/review_lm``, continuations of at most 2 tokens: 507 per prompt), and the
multi-process path by launching two gloo processes.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import ATOL_LOG, ATOL_LOG_FLOAT32, RTOL_EXACT, RTOL_MPMATH

pytest.importorskip("trl")
import mpmath  # noqa: E402
import torch  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402

from bonmath.evaluation import policy_metrics  # noqa: E402
from bonmath.sentiment import REVIEW_LM_PATH, continuation_rewards, load_review_lm  # noqa: E402
from bonmath.task import Task  # noqa: E402
from bonmath.trl import ExactEvaluationCallback, VBoNReward, position_ids_from_attention_mask  # noqa: E402
from bonmath.trl_sentiment import (  # noqa: E402
    SMOKE,
    SentimentReward,
    TRLSentimentConfig,
    parse_args,
    train_vbon_sentiment,
)

pytestmark = pytest.mark.trl
os.environ.setdefault("HF_HUB_OFFLINE", "1")

N, L, STEPS = 4, 2, 3
REPO = Path(__file__).resolve().parents[1]


def mp_log(value: Fraction) -> float:
    with mpmath.workdps(50):
        return float(mpmath.log(mpmath.mpf(value.numerator) / value.denominator))


def oracle_bound(reward: float, reference: list[float]) -> float:
    """log F̂ = log((1 + #{r_m < r})/(M + 1)), the released code's estimator, exactly."""
    return mp_log(Fraction(1 + sum(x < reward for x in reference), len(reference) + 1))


def oracle_exact(reward: float, reference: list[float], n: int) -> float:
    """R_N = log[(a^N - b^N)/(a - b)] with b = F̂_lt, a - b = #{r_m = r}/(M + 1); N b^(N-1) at a = b."""
    m = len(reference)
    b = Fraction(1 + sum(x < reward for x in reference), m + 1)
    q = Fraction(sum(x == reward for x in reference), m + 1)
    ratio = n * b ** (n - 1) if q == 0 else ((b + q) ** n - b**n) / q
    return mp_log(ratio)


def constant_reward(prompts, completions, completion_ids, **kwargs):
    """A TRL reward function: the number of the completion's first token (ties on purpose)."""
    return [float(ids[0]) if ids else 0.0 for ids in completion_ids]


def assert_close(have, want, rtol=RTOL_MPMATH):
    np.testing.assert_allclose(np.asarray(have, dtype=float), np.asarray(want, dtype=float), rtol=rtol, atol=ATOL_LOG)


# ------------------------------------------------------------------------------ imports


def test_import_bonmath_does_not_import_trl():
    """TRL is an optional extra: ``import bonmath`` leaves it unimported."""
    code = "import sys, bonmath; assert 'trl' not in sys.modules and 'bonmath.trl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_import_without_trl_names_the_extra(monkeypatch):
    """Without TRL, importing bonmath.trl raises ImportError naming the ``trl`` extra."""
    monkeypatch.setitem(sys.modules, "trl", None)  # makes ``import trl`` fail
    monkeypatch.delitem(sys.modules, "bonmath.trl")
    with pytest.raises(ImportError, match=r"bonmath\[trl\]"):
        importlib.import_module("bonmath.trl")


# ------------------------------------------------------------------------ the reward values


REFERENCE = {"tied": [0.0, 1.0, 1.0, 1.0, 3.0, 3.0, 7.0], "single": [2.0]}
QUERIES = [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.0, 8.0]


@pytest.mark.parametrize("n", [1, 2, 8, 64])
@pytest.mark.parametrize("prompt", list(REFERENCE))
def test_exact_reward_is_the_bon_log_ratio_of_the_add_one_cdf(prompt, n):
    """objective="exact" returns log[(F̂_le^N - F̂_lt^N)/q̂] with F̂_lt = (1 + #{<})/(M+1) and
    q̂ = #{=}/(M+1) (and log N + (N-1) log F̂_lt where q̂ = 0), on tied reference rewards.
    Source: the VBoNReward docstring's derivation; docs/math.md, "The Best-of-N law"."""
    vbon = VBoNReward(constant_reward, n, reference_rewards=REFERENCE)
    have = vbon.training_rewards(prompt, QUERIES)
    assert_close(have, [oracle_exact(r, REFERENCE[prompt], n) for r in QUERIES])


@pytest.mark.parametrize("n", [2, 8, 64])
def test_bound_reward_is_the_log_of_the_add_one_cdf_estimate(n):
    """objective="bound" returns log F̂ = log((1 + #{r_m < r})/(M+1)) (the paper's released code)."""
    vbon = VBoNReward(constant_reward, n, objective="bound", reference_rewards=REFERENCE)
    assert_close(vbon.training_rewards("tied", QUERIES), [oracle_bound(r, REFERENCE["tied"]) for r in QUERIES])


@pytest.mark.parametrize("n", [2, 5, 50])
def test_bon_of_the_add_one_law_is_a_proper_law(n):
    """With q̂ = #{=}/(M+1), Σ over the reference levels of Ĝ(v) e^{R̂_N(v)} = 1 - (M+1)^-N: BoN of
    Ĝ = (δ_{-∞} + Σ δ_{r_m})/(M+1) is a probability law (its bottom atom holds (M+1)^-N)."""
    reference = REFERENCE["tied"]
    levels, counts = np.unique(reference, return_counts=True)
    vbon = VBoNReward(constant_reward, n, reference_rewards=REFERENCE)
    mass = counts / (len(reference) + 1)
    total = float(np.sum(mass * np.exp(vbon.training_rewards("tied", levels))))
    want = 1.0 - float(Fraction(1, len(reference) + 1) ** n)
    assert abs(total - want) <= RTOL_EXACT * want


def tied_support():
    """Six strings, rewards with ties, exact rational probabilities."""
    probs = [Fraction(1, 8), Fraction(1, 4), Fraction(1, 8), Fraction(1, 16), Fraction(5, 16), Fraction(1, 8)]
    rewards = [0.0, 1.0, 1.0, 2.0, 2.0, 5.0]
    return probs, rewards


@pytest.mark.parametrize("n", [1, 3, 16])
def test_exact_cdf_gives_the_exact_bon_log_ratio(n):
    """With exact_cdf, objective="exact" is R_N = log[(F_le^N - F_lt^N)/q] of the true reward law."""
    probs, rewards = tied_support()
    vbon = VBoNReward(constant_reward, n, exact_cdf={"p": (rewards, np.log([float(p) for p in probs]))})
    want = []
    for r in rewards:
        b = sum(p for p, x in zip(probs, rewards) if x < r)
        q = sum(p for p, x in zip(probs, rewards) if x == r)
        want.append(mp_log(((b + q) ** n - b**n) / q))
    assert_close(vbon.training_rewards("p", rewards), want)


def test_exact_cdf_bound_matches_r_n_on_the_lowest_level():
    """With the exact F, the bound's reward is log F_lt, and on the lowest level (F_lt = 0) the value v
    with log N + (N-1) v = R_N = (N-1) log q, so it is finite (bonmath.train.Task.bound_log_cdf)."""
    probs, rewards = tied_support()
    n = 5
    vbon = VBoNReward(constant_reward, n, objective="bound",
                      exact_cdf={"p": (rewards, np.log([float(p) for p in probs]))})
    have = vbon.training_rewards("p", rewards)
    assert_close(have[0], (mp_log(probs[0] ** (n - 1)) - math.log(n)) / (n - 1))
    for h, r in zip(have[1:], rewards[1:]):
        assert_close(h, mp_log(sum(p for p, x in zip(probs, rewards) if x < r)))


# ------------------------------------------------------------------- sources and validation


def test_reference_column_and_mapping_give_the_same_rewards():
    """A dataset column of reference rewards is read per prompt and equals the mapping source."""
    column = VBoNReward(constant_reward, 8, reference_column="refs")
    mapping = VBoNReward(constant_reward, 8, reference_rewards=REFERENCE)
    ids = [[1], [3], [0]]
    have = column(prompts=["tied"] * 3, completions=["a"] * 3, completion_ids=ids, refs=[REFERENCE["tied"]] * 3)
    assert have == mapping(prompts=["tied"] * 3, completions=["a"] * 3, completion_ids=ids)


def test_sampled_reference_rewards_are_seeded_cached_and_leave_global_rng_alone():
    """reference_model draws M completions once per prompt (cached), the same in every instance with
    the same seed (so every process agrees), without drawing from torch's global generator."""
    model, tokenizer, prompts = load_review_lm()
    calls = []

    def counted(prompts, completions, completion_ids, **kwargs):
        calls.append(len(prompts))
        return SentimentReward(tokenizer)(prompts, completions, completion_ids)

    def make():
        return VBoNReward(counted, 8, reference_model=model, tokenizer=tokenizer,
                          num_ref_samples=64, max_new_tokens=L, seed=3)

    state = torch.get_rng_state()
    a, b = make(), make()
    ra = a.reference(prompts[0])
    a.reference(prompts[0])
    rb = b.reference(prompts[0])
    assert calls == [64, 64]
    assert np.array_equal(ra, rb) and ra.shape == (64,) and np.all(np.diff(ra) >= 0)
    assert len(np.unique(ra)) > 1
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n=0, reference_rewards=REFERENCE), ValueError, "n must be"),
        (dict(n=1, objective="bound", reference_rewards=REFERENCE), ValueError, "n must be > 1"),
        (dict(n=2, objective="kl", reference_rewards=REFERENCE), ValueError, "objective"),
        (dict(n=2), ValueError, "exactly one source"),
        (dict(n=2, reference_rewards=REFERENCE, reference_column="refs"), ValueError, "exactly one source"),
        (dict(n=2, reference_rewards={"p": []}), ValueError, "'p'.*M >= 1"),
        (dict(n=2, reference_rewards={"p": [1.0, float("nan")]}), ValueError, "'p'.*NaN"),
        (dict(n=2, reference_model=REVIEW_LM_PATH), ValueError, "tokenizer"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    """Bad n, objective, sources and reference rewards raise, naming the problem."""
    with pytest.raises(error, match=match):
        VBoNReward(constant_reward, **kwargs)


def test_unknown_prompts_and_nan_rewards_are_refused_naming_the_prompt():
    """A prompt without reference rewards is a KeyError naming it; NaN or None base rewards and a
    reward outside the exact support are ValueErrors naming the prompt."""
    vbon = VBoNReward(constant_reward, 2, reference_rewards=REFERENCE)
    with pytest.raises(KeyError, match="'unseen prompt'"):
        vbon(prompts=["unseen prompt"], completions=["a"], completion_ids=[[1]])

    def nan_reward(prompts, completions, completion_ids, **kwargs):
        return [float("nan"), None][: len(prompts)]

    nan = VBoNReward(nan_reward, 2, reference_rewards=REFERENCE)
    with pytest.raises(ValueError, match="NaN.*'tied'"):
        nan(prompts=["tied"], completions=["a"], completion_ids=[[1]])
    with pytest.raises(ValueError, match="None.*'tied'"):
        nan(prompts=["tied", "tied"], completions=["a", "b"], completion_ids=[[1], [2]])
    probs, rewards = tied_support()
    exact = VBoNReward(constant_reward, 2, exact_cdf={"p": (rewards, np.log([float(p) for p in probs]))})
    with pytest.raises(ValueError, match="'p'"):
        exact(prompts=["p"], completions=["a"], completion_ids=[[4]])


# ------------------------------------------------------------------------ TRL, for real


class RecordingVBoNReward(VBoNReward):
    """VBoNReward that keeps what TRL passed and what it returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        out = super().__call__(prompts, completions, completion_ids, **kwargs)
        self.calls.append((list(prompts), [list(c) for c in completion_ids], out))
        return out


def run_rloo(with_callback: bool, tmp_path: Path):
    """STEPS steps of TRL's RLOOTrainer with the exact vBoN reward on two review prompts."""
    torch.set_num_threads(1)
    _, tokenizer, all_prompts = load_review_lm()
    prompts = all_prompts[:2]
    base = SentimentReward(tokenizer)
    vbon = RecordingVBoNReward(base, N, reference_model=REVIEW_LM_PATH, tokenizer=tokenizer,
                               num_ref_samples=32, max_new_tokens=L)
    args = trl.RLOOConfig(
        output_dir=str(tmp_path), use_cpu=True, seed=0, max_steps=STEPS, learning_rate=3e-3,
        per_device_train_batch_size=8, num_generations=4, max_completion_length=L, beta=1.0,
        disable_dropout=True, gradient_checkpointing=False, bf16=False, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True,
    )
    trainer = trl.RLOOTrainer(model=str(REVIEW_LM_PATH), reward_funcs=vbon, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts * 4}), processing_class=tokenizer)
    callback = None
    if with_callback:
        callback = ExactEvaluationCallback(trainer, prompts, base, N, eval_every=1)
        trainer.add_callback(callback)
    trainer.train()
    return trainer, vbon, callback, prompts, tokenizer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with_cb = run_rloo(True, tmp_path_factory.mktemp("with"))
    without = run_rloo(False, tmp_path_factory.mktemp("without"))
    return with_cb, without


def test_rloo_logs_the_rewards_vbon_returns(runs):
    """TRL calls VBoNReward with prompts, completions and completion_ids, and logs (as float32) exactly
    what it returns: rewards/<name>/mean of every step and the last batch's per-completion rewards."""
    trainer, vbon, _, _, _ = runs[0]
    assert len(vbon.calls) == STEPS
    logged = [e[f"rewards/{vbon.__name__}/mean"] for e in trainer.state.log_history
              if f"rewards/{vbon.__name__}/mean" in e]
    want = [torch.nanmean(torch.tensor(out, dtype=torch.float32)).item() for _, _, out in vbon.calls]
    assert logged == want
    assert list(trainer._logs["rewards"][vbon.__name__]) == torch.tensor(vbon.calls[-1][2], dtype=torch.float32).tolist()


def test_rewards_in_training_equal_the_exact_rational_values(runs):
    """Each reward VBoNReward returned inside TRL equals R̂_N computed in exact rationals from the
    completion's VADER reward and the prompt's cached reference rewards."""
    _, vbon, _, _, tokenizer = runs[0]
    for prompts, completion_ids, out in vbon.calls:
        for prompt, ids, have in zip(prompts, completion_ids, out):
            reward = float(continuation_rewards(tokenizer, prompt, [ids])[0])
            assert_close(have, oracle_exact(reward, vbon.reference(prompt).tolist(), N))


def test_callback_logs_the_exact_metrics_of_the_trained_policy(runs):
    """The exact/ metrics the callback logged after the last step equal bonmath.evaluation's
    policy_metrics (reward, KL to π_ref and π_N, the bound L̃, win rate) of the final model on the
    same prompts, and they sit in trainer.state.log_history at every step beside TRL's own logs."""
    trainer, _, callback, prompts, tokenizer = runs[0]
    ids = [(p, tokenizer(text=p)["input_ids"]) for p in prompts]
    reference = trainer.accelerator.unwrap_model(trainer.ref_model)
    task = Task(reference, ids, L, lambda text, _, seqs: continuation_rewards(tokenizer, text, seqs))
    model = trainer.model
    model.eval()
    want = policy_metrics(task, task.enumerate_log_probs(model), ns=[N], num_samples=0)
    model.train()  # as the trainer left it (the non-interference test compares modes)
    have = callback.history[-1]
    assert have["step"] == STEPS
    for key, value in (("reward", want.reward), ("kl_ref", want.kl_ref), ("win_rate", want.win_rate),
                       ("kl_bon", want.kl_to_bon(N)), ("J", -want.kl_to_bon(N)), ("bound", want.bound_at(N))):
        assert abs(have[f"exact/{key}"] - value) <= ATOL_LOG, key
    logged = [e for e in trainer.state.log_history if "exact/kl_bon" in e]
    assert [e["step"] for e in logged] == list(range(STEPS + 1))
    assert [{k: e[k] for k in e if k.startswith("exact/")} for e in logged] == [
        {k: h[k] for k in h if k != "step"} for h in callback.history]
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == list(range(1, STEPS + 1))
    start = callback.history[0]
    assert start["exact/kl_ref"] == 0.0 and abs(start["exact/win_rate"] - 0.5) <= ATOL_LOG


def precomputed_rewards(callback, prompts, tokenizer):
    """Each prompt's support (π_ref's enumeration, in reversed order) and its VADER rewards."""
    exact = {}
    for prompt, ids in zip(prompts, callback.prompt_ids):
        with torch.no_grad():
            strings = callback.policy(callback.reference_model, ids).enumerate().sequences.flip(0)
        exact[prompt] = (strings, continuation_rewards(tokenizer, prompt, strings))
    return exact


def test_precomputed_exact_rewards_give_the_metrics_of_reward_fn(runs):
    """A callback given every prompt's support rewards (exact_rewards: padded rows in another order
    than the enumeration's, or tuples with one string outside the support) and no reward_fn evaluates
    the trained model to exactly the metrics of the callback that scores the supports with reward_fn."""
    trainer, _, callback, prompts, tokenizer = runs[0]
    exact = precomputed_rewards(callback, prompts, tokenizer)
    strings, rewards = exact[prompts[1]]
    keys = [tuple(t for t in row if t >= 0) for row in strings.tolist()]
    exact[prompts[1]] = ([*keys, (1, 1, 1)], [*rewards, 0.5])
    precomputed = ExactEvaluationCallback(trainer, prompts, None, N, exact_rewards=exact)
    assert precomputed.evaluate() == callback.evaluate()
    assert precomputed.reward_seconds == 0.0


def test_exact_rewards_that_do_not_cover_the_support_are_refused(runs):
    """exact_rewards is refused (ValueError naming the prompt) when reward_fn is None and a prompt has
    no entry, for a prompt the callback does not evaluate, an entry that is not a pair, NaN or too few
    rewards, and, at the first evaluation, when a continuation of the enumerated support has no reward."""
    trainer, _, callback, prompts, tokenizer = runs[0]
    exact = precomputed_rewards(callback, prompts, tokenizer)
    strings, rewards = exact[prompts[0]]
    first = re.escape(repr(prompts[0]))
    bad = [
        (None, {prompts[1]: exact[prompts[1]]}, f"no entry for prompt {first}"),
        (constant_reward, {"unknown": exact[prompts[0]]}, "'unknown'.*not one of the prompts"),
        (constant_reward, {prompts[0]: 5}, f"{first}.*pair"),
        (constant_reward, {prompts[0]: (strings, np.where(np.arange(len(rewards)) == 3, np.nan, rewards))},
         f"{first}.*finite"),
        (constant_reward, {prompts[0]: (strings, rewards[1:])}, f"{first}.*one reward per continuation"),
    ]
    for reward_fn, exact_rewards, match in bad:
        with pytest.raises(ValueError, match=match):
            ExactEvaluationCallback(trainer, prompts, reward_fn, N, exact_rewards=exact_rewards)
    partial = ExactEvaluationCallback(trainer, prompts, constant_reward, N,
                                      exact_rewards={prompts[0]: (strings[1:], rewards[1:])})
    missing = re.escape(str([t for t in strings[0].tolist() if t >= 0]))
    with pytest.raises(ValueError, match=rf"{first}\] has no reward for the continuation {missing}"):
        partial.evaluate()


def test_exact_evaluation_does_not_change_training(runs):
    """Training with the callback (evaluating at every step) and without it gives bit-identical
    parameters: it draws no random numbers and restores the models' modes."""
    (with_cb, *_), (without, *_) = runs
    have = dict(with_cb.model.named_parameters())
    want = dict(without.model.named_parameters())
    assert have.keys() == want.keys()
    assert all(torch.equal(have[k], want[k]) for k in have)
    for a, b in ((with_cb.model, without.model), (with_cb.ref_model, without.ref_model)):
        assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    assert not all(torch.equal(have[k], p) for k, p in
                   load_review_lm(dtype="float32")[0].named_parameters())  # it did train


def test_cli_rejects_bad_values_with_exit_2(capsys):
    """python -m bonmath.trl_sentiment exits 2 with a usage message for invalid values."""
    for argv in (["--n", "0"], ["--batch-size", "10", "--num-generations", "4"], ["--objective", "kl"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_training_without_progress_prints_nothing_to_stdout(capsys):
    """train_vbon_sentiment(progress=False) turns off TRL's progress bar and the log lines its
    callbacks print to stdout (so doctests and notebooks stay clean), and the logs still reach the
    results: TRL's last training log and every exact evaluation."""
    cfg = TRLSentimentConfig(**{**SMOKE, "prompts": 1, "max_new_tokens": 1})
    results = train_vbon_sentiment(cfg, progress=False)
    assert capsys.readouterr().out == ""
    assert results["trl_log"]["step"] == cfg.steps
    assert [entry["step"] for entry in results["history"]] == list(range(cfg.steps + 1))


def test_two_process_smoke_run(tmp_path):
    """The training module runs as 2 gloo processes (accelerate launch, torchrun launcher, CPU) and
    writes the exact start/end metrics; at the start the policy is π_ref (KL 0, win rate 1/2)."""
    out = tmp_path / "smoke.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "bonmath.trl_sentiment", "--smoke", "--out", str(out)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["num_processes"] == 2 and results["trl_version"] == trl.__version__
    for key in ("start", "end", "bon"):
        assert set(results[key]) >= {"reward", "kl_ref", "kl_bon", "win_rate"}
        assert all(math.isfinite(v) for v in results[key].values())
    assert results["start"]["kl_ref"] == 0.0 and abs(results["start"]["win_rate"] - 0.5) <= ATOL_LOG
    assert results["end"]["kl_ref"] > 0.0


def test_trls_loss_sees_a_left_padded_gpt2_prompt_at_shifted_positions_unless_positions_come_from_the_mask(runs):
    """docs/trl.md: TRL scores completions with ``model(input_ids, attention_mask)`` and no
    ``position_ids``, so for a left-padded prompt GPT-2 (absolute positions) gives other
    log-probabilities than for the same prompt unpadded (what ``generate`` samples from);
    with :func:`position_ids_from_attention_mask` on the model they are the unpadded ones.
    Runs TRL's own per-token log-prob code (``_get_per_token_logps_and_entropies``); if TRL
    starts passing position ids, the first assertion fails and the page must change."""
    trainer, _, _, _, tokenizer = runs[0]
    model = trainer.model
    long, short = (tokenizer(text)["input_ids"] for text in ("the movie was", "the movie"))
    completion = tokenizer(" good fun")["input_ids"]
    assert len(long) == len(short) + 1
    input_ids = torch.tensor([long + completion, [tokenizer.pad_token_id] + short + completion])
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 0] = 0

    def trl_log_probs():
        with torch.no_grad():
            return trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                              logits_to_keep=len(completion))[0]

    def unpadded_log_probs(ids):
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0, -len(completion) - 1:-1].log_softmax(-1)
        return log_probs.gather(-1, torch.tensor(completion)[:, None])[:, 0]

    full_length, short_alone = unpadded_log_probs(long + completion), unpadded_log_probs(short + completion)
    as_trl_runs = trl_log_probs()
    torch.testing.assert_close(as_trl_runs[0], full_length, rtol=RTOL_EXACT, atol=ATOL_LOG)  # no padding: equal
    assert (as_trl_runs[1] - short_alone).abs().max() > 0.1  # 9.6 nats measured: another model's log-probs
    handle = position_ids_from_attention_mask(model)
    try:
        with_positions = trl_log_probs()
    finally:
        handle.remove()
    torch.testing.assert_close(with_positions[0], full_length, rtol=RTOL_EXACT, atol=ATOL_LOG)
    torch.testing.assert_close(with_positions[1], short_alone, rtol=RTOL_EXACT, atol=ATOL_LOG)


def test_positions_from_the_mask_leave_generate_alone_and_follow_a_kv_cache():
    """With the hook, ``generate`` on a left-padded batch draws the same tokens with the same
    scores (it passes its own position ids), and a cached step (attention mask over past and
    new tokens) gets the positions of the new tokens: the logits of the full padded call."""
    from bonmath.zoo import tiny_task

    model = tiny_task().model
    ids, mask = torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.tensor([[0, 1, 1], [1, 1, 1]])

    def generated():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=3,
                                 pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        return out.sequences, torch.stack(out.scores)

    plain = generated()
    handle = position_ids_from_attention_mask(model)
    try:
        hooked = generated()
        full = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        past = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True).past_key_values
        step = model(input_ids=ids[:, -1:], attention_mask=mask, cache=past).logits[:, -1]
    finally:
        handle.remove()
    assert torch.equal(plain[0], hooked[0]) and torch.equal(plain[1], hooked[1])
    torch.testing.assert_close(step, full, rtol=RTOL_EXACT, atol=ATOL_LOG)


def _max_gap_to_unpadded_log_probs(train, monkeypatch):
    """Run ``train()`` (one-token completions) and return, over every call of TRL's per-token
    log-prob code, the largest |TRL's log-prob - the same row's log-prob without its padding|."""
    gaps = []
    original = trl.RLOOTrainer._get_per_token_logps_and_entropies

    def spy(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = original(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        with torch.no_grad():
            for row, mask, log_probs in zip(input_ids, attention_mask, out[0]):
                ids = row[mask.bool()][None]
                logits = model(ids).logits[0, -logits_to_keep - 1:-1] / self.temperature
                alone = logits.log_softmax(-1).gather(-1, ids[0, -logits_to_keep:, None])[:, 0]
                gaps.append(float((log_probs.detach() - alone).abs().max()))
        return out

    monkeypatch.setattr(trl.RLOOTrainer, "_get_per_token_logps_and_entropies", spy)
    train()
    return max(gaps)


def test_trl_sentiment_scores_prompts_of_every_length_as_unpadded():
    """With the review prompts of 2 and 3 tokens, every log-prob TRL's loss computes in
    ``train_vbon_sentiment`` equals the unpadded one (position ids from the attention mask);
    with ``keep_padded_positions`` (TRL as is) the 2-token prompt's differ."""
    from bonmath.trl_sentiment import TRLSentimentConfig, train_vbon_sentiment

    base = dict(steps=1, num_generations=2, batch_size=12, max_new_tokens=1, num_ref_samples=4, eval_every=1,
                prompts=6)
    with pytest.MonkeyPatch.context() as monkeypatch:
        fixed = TRLSentimentConfig(**base)
        gap = _max_gap_to_unpadded_log_probs(lambda: train_vbon_sentiment(fixed, progress=False), monkeypatch)
        assert gap < ATOL_LOG_FLOAT32  # TRL loads the model in float32: padding changes only the reduction order
        kept = TRLSentimentConfig(**base, keep_padded_positions=True)
        assert _max_gap_to_unpadded_log_probs(lambda: train_vbon_sentiment(kept, progress=False), monkeypatch) > 0.1


def test_trl_task_scores_prompts_of_every_length_as_unpadded():
    """train_trl_vbon on the six review prompts (2 and 3 tokens): every log-prob TRL's loss
    computes equals the row's unpadded one. The model is float64, but TRL 1.16's fused LM
    head (trl/kernels/chunked_logprob.py) computes the log-probs in float32, padded or not."""
    from bonmath.sentiment import review_task
    from bonmath.train import VBoNConfig
    from bonmath.trl_task import train_trl_vbon

    task = review_task(max_new_tokens=1)
    assert len({len(ids) for ids in task.prompt_ids}) == 2
    with pytest.MonkeyPatch.context() as monkeypatch:
        gap = _max_gap_to_unpadded_log_probs(lambda: train_trl_vbon(task, VBoNConfig(n=4, steps=1, k=2)),
                                             monkeypatch)
    assert gap < ATOL_LOG_FLOAT32
