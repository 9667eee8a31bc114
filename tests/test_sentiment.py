"""Tests of bonmath.sentiment: the VADER reward and the shipped reference review LM."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import ATOL_NORMALISATION

from bonmath.sentiment import REVIEW_LM_PATH, continuation_rewards, load_review_lm, vader_reward

REVIEWS = [
    "the movie was good",
    "the movie was not good",
    "the movie was not very good",
    "the acting was good but the plot was dull",
    "the plot is really awful",
    "the film is",
]


@pytest.fixture(scope="module")
def vader():
    module = pytest.importorskip("vaderSentiment.vaderSentiment")
    return module.SentimentIntensityAnalyzer()


@pytest.fixture(scope="module")
def review_lm():
    pytest.importorskip("transformers")
    return load_review_lm()


def test_vader_reward_is_the_rounded_compound_score(vader):
    """vader_reward is VADER's compound score (Hutto & Gilbert 2014) rounded to `decimals`."""
    for decimals in (4, 2, 0):
        have = vader_reward(REVIEWS, decimals=decimals)
        want = np.array([round(vader.polarity_scores(t)["compound"], decimals) for t in REVIEWS])
        assert have.dtype == np.float64
        np.testing.assert_array_equal(have, want)


def test_vader_reward_keeps_the_shape_of_texts(vader):
    assert vader_reward("the movie was good").shape == ()
    assert vader_reward([]).shape == (0,)
    grid = np.array([REVIEWS[:3], REVIEWS[3:]])
    np.testing.assert_array_equal(vader_reward(grid), vader_reward(REVIEWS).reshape(2, 3))


def test_vader_reward_ties_distinct_texts(vader):
    """Distinct texts share reward levels, the more so with fewer decimals."""
    texts = ["the movie was good", "the film was good", "the plot is", "the acting was"]
    have = vader_reward(texts)
    assert have[0] == have[1] and have[2] == have[3] == 0.0
    coarse = vader_reward(REVIEWS, decimals=1)
    assert np.unique(coarse).size < np.unique(vader_reward(REVIEWS)).size


@pytest.mark.parametrize(
    ("texts", "decimals", "argument"),
    [
        (["the movie was good", 3], 4, "texts"),
        ([b"the movie"], 4, "texts"),
        ([None], 4, "texts"),
        (["good"], -1, "decimals"),
        (["good"], 1.5, "decimals"),
        (["good"], True, "decimals"),
    ],
)
def test_vader_reward_rejects_bad_input(texts, decimals, argument):
    with pytest.raises(ValueError, match=argument):
        vader_reward(texts, decimals=decimals)


def test_import_does_not_pull_in_torch():
    """bonmath.sentiment imports without torch or transformers (they load lazily)."""
    code = (
        "import sys, bonmath.sentiment; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'vaderSentiment')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_review_lm_explains_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_review_lm.py"):
        load_review_lm(tmp_path)


@pytest.mark.hf
def test_load_review_lm_loads_the_shipped_model(review_lm):
    model, tokenizer, prompts = review_lm
    assert REVIEW_LM_PATH.is_dir()
    assert not model.training
    assert all(
        p.dtype.is_floating_point and str(p.dtype) == "torch.float64" for p in model.parameters()
    )
    assert model.config.vocab_size == len(tokenizer) <= 30
    assert tokenizer.eos_token_id is not None and tokenizer.unk_token_id is not None
    assert 4 <= len(prompts) <= 8


@pytest.mark.hf
def test_load_review_lm_rejects_a_non_float_dtype():
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="dtype"):
        load_review_lm(dtype="int64")


@pytest.mark.hf
def test_tokenizer_round_trips_the_prompts(review_lm):
    _, tokenizer, prompts = review_lm
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == prompt


@pytest.mark.hf
def test_next_token_distribution_is_normalised(review_lm):
    """The model's next-token law after each prompt sums to one and puts almost all of
    its mass on words that continue a review (not on UNK)."""
    import torch

    model, tokenizer, prompts = review_lm
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            log_probs = torch.log_softmax(model(ids).logits[0, -1], dim=-1)
            assert log_probs.dtype == torch.float64
            assert abs(float(torch.logsumexp(log_probs, 0))) < ATOL_NORMALISATION
            assert float(log_probs[tokenizer.unk_token_id].exp()) < 1e-2


@pytest.mark.hf
def test_continuation_rewards_strip_eos_and_decode_after_the_prompt(review_lm, vader):
    _, tokenizer, _ = review_lm
    good, eos, not_, very = tokenizer.convert_tokens_to_ids(
        ["good", tokenizer.eos_token, "not", "very"]
    )
    continuations = [(good, eos), (good,), (not_, very, good, eos), (eos,), ()]
    have = continuation_rewards(tokenizer, "the movie was", continuations)
    want = vader_reward(
        [
            "the movie was good",
            "the movie was good",
            "the movie was not very good",
            "the movie was",
            "the movie was",
        ]
    )
    np.testing.assert_array_equal(have, want)


@pytest.mark.hf
def test_continuation_rewards_reject_bad_continuations(review_lm):
    _, tokenizer, _ = review_lm
    good, eos = tokenizer.convert_tokens_to_ids(["good", tokenizer.eos_token])
    for bad in [[(eos, good)], [(len(tokenizer),)], [(-1,)], [(1.5,)], [("good",)], "good"]:
        with pytest.raises(ValueError, match="continuations"):
            continuation_rewards(tokenizer, "the movie was", bad)
    with pytest.raises(ValueError, match="prompt"):
        continuation_rewards(tokenizer, 3, [(good,)])


@pytest.mark.hf
def test_continuation_rewards_cache(review_lm, tmp_path):
    """The cache is keyed by prompt and continuations, read back, and never overwritten."""
    _, tokenizer, _ = review_lm
    good, bad, eos = tokenizer.convert_tokens_to_ids(["good", "bad", tokenizer.eos_token])
    continuations = [(good, eos), (bad, eos), (bad,)]
    want = continuation_rewards(tokenizer, "the movie was", continuations)

    have = continuation_rewards(tokenizer, "the movie was", continuations, cache_dir=tmp_path)
    np.testing.assert_array_equal(have, want)
    files = list(tmp_path.glob("vader_*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.load(files[0]), want)

    # a second call reads the file: plant a marker value to prove it
    np.save(files[0], np.array([9.0, 9.0, 9.0]))
    again = continuation_rewards(tokenizer, "the movie was", continuations, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, [9.0, 9.0, 9.0])

    # another prompt, or other continuations, get their own files
    continuation_rewards(tokenizer, "the plot is", continuations, cache_dir=tmp_path)
    continuation_rewards(tokenizer, "the movie was", continuations[:2], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("vader_*.npy"))) == 3
    assert not list(tmp_path.glob("*.tmp"))

    # a damaged file is reported, not silently replaced
    np.save(files[0], np.array([1.0]))
    with pytest.raises(RuntimeError, match="delete it"):
        continuation_rewards(tokenizer, "the movie was", continuations, cache_dir=tmp_path)
    np.testing.assert_array_equal(np.load(files[0]), [1.0])


def test_review_lm_path_is_at_the_repository_root():
    """REVIEW_LM_PATH is models/review_lm at the repository root."""
    module = importlib.import_module("bonmath.sentiment")
    assert module.REVIEW_LM_PATH.parts[-2:] == ("models", "review_lm")
    assert (module.REVIEW_LM_PATH.parent.parent / "bonmath" / "sentiment.py").is_file()
