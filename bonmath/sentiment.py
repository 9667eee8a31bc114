"""Sentiment rewards and the reference review LM of the vBoN sentiment experiment.

The reward is VADER's compound score (Hutto & Gilbert, 2014), rounded so that many
distinct strings share a reward level. The reference policy is the tiny word-level
GPT-2 built by ``models/build_review_lm.py`` into ``models/review_lm/``.

This module imports only numpy at import time; VADER, torch and transformers are
imported inside the functions that need them (extras ``experiments`` and ``hf``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bonmath.backend import is_torch
from bonmath.cache import fingerprint, package_version, write_once
from bonmath.enumeration import string_keys

__all__ = ["REVIEW_LM_PATH", "continuation_rewards", "load_review_lm", "review_task", "vader_reward"]


def _review_lm_path() -> Path:
    """``models/review_lm`` of a clone, else the copy the wheel ships as ``bonmath._models``."""
    clone = Path(__file__).resolve().parent.parent / "models" / "review_lm"
    if clone.is_dir():
        return clone
    return Path(str(importlib.resources.files("bonmath._models") / "review_lm"))


#: The reference model: where ``python models/build_review_lm.py`` writes it in a clone,
#: or the copy installed with the package.
REVIEW_LM_PATH: Path = _review_lm_path()

_CACHE_FORMAT = 1  # bump when the meaning of a cached reward file changes


@lru_cache(maxsize=1)
def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "vader_reward needs vaderSentiment: pip install 'bonmath[experiments]'"
        ) from err
    return SentimentIntensityAnalyzer()


def _check_decimals(decimals: Any) -> int | None:
    if decimals is None:
        return None
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer or None; got {decimals!r}")
    return int(decimals)


def vader_reward(texts: str | Sequence[str] | np.ndarray, decimals: int | None = 4) -> np.ndarray:
    """VADER compound sentiment of each text, rounded to ``decimals`` decimals.

    Parameters
    ----------
    texts : str, or sequence / array of str of shape (...)
        The texts to score. A single string gives a 0-d array.
    decimals : int or None, default 4
        Decimals kept by :func:`numpy.round`; ``None`` keeps VADER's own value (which
        VADER itself already rounds to 4 decimals). Rounding makes distinct texts tie,
        on purpose: Best-of-N laws depend on the reward only through its levels.

    Returns
    -------
    rewards : float64 array of the shape of ``texts``
        Values in [-1, 1]; 0 for texts without sentiment-bearing words.

    Raises
    ------
    ValueError
        If ``texts`` holds anything but strings (or is ragged), or ``decimals`` is not
        a non-negative integer or None.

    Notes
    -----
    VADER sums hand-rated word valences (in [-4, 4]) after its rules for boosters
    ("very" adds 0.293 to the magnitude), negation ("not" multiplies by -0.74), the
    contrastive "but" (words before it weigh 0.5, after it 1.5) and punctuation, and
    squashes the sum :math:`s` to the compound score :math:`s / \\sqrt{s^2 + 15}`
    (Hutto & Gilbert, 2014, Sec. 3). The texts are scored once each, duplicates
    included only once, with one shared ``SentimentIntensityAnalyzer``; that costs
    about 20 µs per short review on one CPU core.

    References
    ----------
    C. J. Hutto and E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment
    Analysis of Social Media Text", Proc. ICWSM 2014.

    Examples
    --------
    >>> vader_reward(["the movie was good", "the movie was not good", "the movie was"])
    array([ 0.4404, -0.3412,  0.    ])
    >>> vader_reward(["the movie was good", "the film was good"], decimals=1)
    array([0.4, 0.4])
    >>> float(vader_reward("the plot was awful and boring"))
    -0.6486
    """
    decimals = _check_decimals(decimals)
    try:
        array = np.asarray(texts, dtype=object)
    except ValueError as err:
        raise ValueError(f"texts must be a string or an array of strings; {err}") from None
    flat = array.reshape(-1)
    for i, text in enumerate(flat):
        if not isinstance(text, str):
            raise ValueError(
                f"texts must contain only strings; item {i} is {type(text).__name__} {text!r}"
            )
    analyzer = _analyzer()
    scores: dict[str, float] = {}
    for text in flat:
        if text not in scores:
            scores[text] = analyzer.polarity_scores(text)["compound"]
    rewards = np.fromiter((scores[t] for t in flat), dtype=np.float64, count=flat.size)
    if decimals is not None:
        rewards = np.round(rewards, decimals)
    return rewards.reshape(array.shape)


def load_review_lm(path: str | os.PathLike = REVIEW_LM_PATH, dtype: Any = "float64"):
    """Load the reference review LM, its tokenizer and its prompts from a local directory.

    Parameters
    ----------
    path : path-like, default :data:`REVIEW_LM_PATH`
        A directory written by ``python models/build_review_lm.py``. Only local files
        are read; nothing is downloaded.
    dtype : torch.dtype or str, default "float64"
        Floating dtype of the returned model (the weights are stored in float32).

    Returns
    -------
    model : transformers.PreTrainedModel
        A causal LM (``GPT2LMHeadModel``) in eval mode, converted to ``dtype``.
    tokenizer : transformers.PreTrainedTokenizerFast
        Word-level tokenizer; ``tokenizer.eos_token`` ends a review and doubles as
        the padding token.
    prompts : list of str
        The review openings of the experiment, from ``prompts.json``.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no model; the message says how to build it.
    ValueError
        If ``dtype`` is not a floating torch dtype.

    Examples
    --------
    >>> model, tokenizer, prompts = load_review_lm()
    >>> prompts[0], model.dtype
    ('the movie was', torch.float64)
    """
    path = Path(path)
    missing = [
        f for f in ("config.json", "tokenizer.json", "prompts.json") if not (path / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"no review LM at {path} (missing {', '.join(missing)}); build it with "
            f"`python models/build_review_lm.py` from the repository root"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or its name; got {dtype!r}")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to): mypy then types the bound
    # method as still taking self, so the dtype is reported as the wrong first argument
    model = model.to(torch_dtype).eval()  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    prompts = json.loads((path / "prompts.json").read_text())
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{path / 'prompts.json'} must hold a JSON list of strings")
    return model, tokenizer, prompts


def _continuation_ids(continuations: Any, eos_id: int, vocab_size: int) -> list[list[int]]:
    """Validated token ids of each continuation, a final EOS removed."""
    if is_torch(continuations) or (isinstance(continuations, np.ndarray) and continuations.ndim == 2):
        continuations = string_keys(continuations)  # rows padded with PAD, as enumerate() returns
    if isinstance(continuations, (str, bytes)) or not isinstance(
        continuations, (Sequence, np.ndarray)
    ):
        raise ValueError(
            "continuations must be a sequence of token-id sequences; "
            f"got {type(continuations).__name__}"
        )
    stripped = []
    for i, continuation in enumerate(continuations):
        try:
            ids = [int(t) for t in continuation]
            exact = all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in continuation
            )
        except (TypeError, ValueError):
            exact = False
        if not exact:
            raise ValueError(
                f"continuations[{i}] must be a sequence of integer token ids; got {continuation!r}"
            )
        if any(t < 0 or t >= vocab_size for t in ids):
            raise ValueError(f"continuations[{i}] has a token id outside [0, {vocab_size}): {ids}")
        if ids and ids[-1] == eos_id:
            ids = ids[:-1]
        if eos_id in ids:
            raise ValueError(
                f"continuations[{i}] has EOS (id {eos_id}) before its end: {list(continuation)}"
            )
        stripped.append(ids)
    return stripped


def _cache_key(tokenizer, prompt: str, continuations: list[list[int]], eos_id: int) -> str:
    header = {
        "format": _CACHE_FORMAT,
        "reward": "vader_reward(decimals=4)",
        "vaderSentiment": package_version("vaderSentiment"),
        "prompt": prompt,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "eos_id": eos_id,
    }
    lengths = np.fromiter((len(c) for c in continuations), dtype=np.int64, count=len(continuations))
    flat = np.fromiter(
        (t for c in continuations for t in c), dtype=np.int64, count=int(lengths.sum())
    )
    return fingerprint(header, [lengths, flat])


def _load_cached(path: Path, n: int) -> np.ndarray:
    rewards = np.load(path, allow_pickle=False)
    if rewards.dtype != np.float64 or rewards.shape != (n,):
        raise RuntimeError(
            f"cached rewards {path} hold {rewards.dtype} {rewards.shape}, not float64 ({n},); "
            "the file is stale or damaged: delete it to recompute"
        )
    return rewards


def continuation_rewards(
    tokenizer: Any,
    prompt: str,
    continuations: Sequence[Sequence[int]],
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """VADER reward of the prompt followed by each continuation.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The policy's tokenizer; it must define ``eos_token_id``.
    prompt : str
        The prompt text the continuations extend.
    continuations : sequence of length n of sequences of int, or int array of shape (n, L)
        Token ids of each continuation (rows padded with ``PAD``, as
        ``CausalLMPolicy.enumerate().sequences``, are accepted); a final EOS (how a
        finished continuation ends) is dropped before decoding, an EOS anywhere
        else is an error.
    cache_dir : path-like, optional
        If given, the rewards are cached there as ``vader_<sha256>.npy``, keyed by the
        prompt, the tokenizer's vocabulary, the VADER version and the continuations.
        An existing file is read, never overwritten.

    Returns
    -------
    rewards : float64 array of shape (n,)
        ``vader_reward(text)`` with 4 decimals, where ``text`` decodes the prompt's
        tokens followed by the continuation's, so it reads as the model wrote it.

    Raises
    ------
    ValueError
        For a non-string prompt, a token id outside the vocabulary, a non-integer
        token, or an EOS before the end of a continuation.

    Notes
    -----
    Decoding uses the tokenizer's batched (Rust) decoder and VADER runs once per
    distinct text, so 3e5 short reviews take a few seconds.

    Examples
    --------
    >>> from bonmath.sentiment import load_review_lm
    >>> _, tokenizer, _ = load_review_lm()
    >>> good, eos = tokenizer.convert_tokens_to_ids(["good", tokenizer.eos_token])
    >>> continuation_rewards(tokenizer, "the movie was", [(good, eos), ()])
    array([0.4404, 0.    ])
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string; got {type(prompt).__name__}")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise ValueError("tokenizer must define eos_token_id")
    stripped = _continuation_ids(continuations, eos_id, len(tokenizer))

    path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"vader_{_cache_key(tokenizer, prompt, stripped, eos_id)}.npy"
        if path.is_file():
            return _load_cached(path, len(stripped))

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    texts = tokenizer.batch_decode(
        [prompt_ids + ids for ids in stripped],
        skip_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    rewards = vader_reward(texts)
    if path is not None:
        write_once(
            path,
            lambda tmp: np.save(tmp, rewards),
            lambda existing: np.array_equal(_load_cached(existing, rewards.size), rewards),
        )
    return rewards


def review_task(
    prompts: Sequence[int] | None = None,
    max_new_tokens: int = 4,
    path: str | os.PathLike | None = None,
    reward_cache_dir: str | os.PathLike | None = None,
):
    """The review task: :func:`load_review_lm` with VADER rewards, as a :class:`bonmath.task.Task`.

    Parameters
    ----------
    prompts : sequence of int, optional
        Indices into ``prompts.json``; all prompts by default.
    max_new_tokens : int, default 4
    path : path-like, optional
        Model directory (default :data:`REVIEW_LM_PATH`).
    reward_cache_dir : path-like, optional
        Passed to :func:`continuation_rewards`.

    Returns
    -------
    bonmath.task.Task
        With ``task.tokenizer`` the review LM's tokenizer.

    Examples
    --------
    >>> task = review_task(prompts=[0], max_new_tokens=1)
    >>> task.prompt_texts, task.rewards.shape
    (['the movie was'], (1, 23))
    """
    from bonmath.task import Task

    model, tokenizer, texts = load_review_lm(REVIEW_LM_PATH if path is None else path)
    chosen = range(len(texts)) if prompts is None else prompts
    pairs = [(texts[i], tokenizer(texts[i], add_special_tokens=False)["input_ids"]) for i in chosen]

    def rewards(text, ids, seqs):
        return continuation_rewards(tokenizer, text, seqs, cache_dir=reward_cache_dir)

    return Task(model, pairs, max_new_tokens, rewards, tokenizer=tokenizer)
