"""An enumerable task: a reference causal LM over a few prompts, every continuation, its reward.

A :class:`Task` enumerates each prompt's whole continuation space once (at most
``max_new_tokens`` tokens) and keeps what the exact mathematics needs on it:
log π_ref(y | x_p), r(x_p, y), the reward CDF (F_lt, F_le, q per string), the exact
BoN law per N and the log-CDF of the finite vBoN bound L̃. Training
(:mod:`bonmath.train`) and evaluation (:mod:`bonmath.evaluation`) both work on a
Task; the review task of the vBoN sentiment experiment is built by
:func:`bonmath.sentiment.review_task`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from bonmath.backend import InputTypeError, to_numpy
from bonmath.bon import bon_log_probs, bon_log_ratio
from bonmath.cache import fingerprint
from bonmath.enumeration import Enumeration
from bonmath.hf import CausalLMPolicy
from bonmath.levels import reward_levels
from bonmath.objectives import vbon_finite_bound_log_cdf
from bonmath.tabular import num_sequences
from bonmath.validation import check_count, check_n, check_rng, prepare

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["MAX_TABLE_SIZE", "Task", "sample_indices"]

Continuation = tuple[int, ...]
RewardFunction = Callable[[str, tuple[int, ...], list[Continuation]], np.ndarray]

MAX_TABLE_SIZE = 20_000_000
"""Largest prompts x continuations a Task enumerates (each (P, S) float64 table is then 160 MB)."""


def sample_indices(
    log_probs: np.ndarray, size: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """``size`` independent draws per row of an enumerated law, by inverse CDF, shape (P, size).

    Parameters
    ----------
    log_probs : float64 array of shape (P, S)
    size : int
    rng : numpy.random.Generator, int or None, default None
        Source of the draws: a Generator, a seed >= 0, or None (fresh entropy).

    Examples
    --------
    >>> sample_indices(np.log([[1e-300, 1.0]]), 3, rng=0).tolist()
    [[1, 1, 1]]
    """
    _, (log_probs,) = prepare({"log_probs": log_probs})
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs must have shape (P, S); got {tuple(log_probs.shape)}")
    log_probs = to_numpy(log_probs).astype(np.float64)
    size = check_count(size, "size", minimum=0)
    rng = check_rng(rng)
    if log_probs.shape[0] == 0:
        return np.empty((0, size), dtype=np.int64)
    cdf = np.cumsum(np.exp(log_probs), axis=-1)
    cdf /= cdf[:, -1:]
    u = rng.random((log_probs.shape[0], size))
    return np.stack([np.minimum(np.searchsorted(c, x, side="right"), len(c) - 1) for c, x in zip(cdf, u)])


class Task:
    """An enumerated reference LM over a few prompts, with rewards and the exact BoN law.

    Parameters
    ----------
    model : transformers causal LM
        The reference model, float64, eval mode. The task keeps it; trainers copy it.
    prompts : sequence of (str, sequence of int)
        Each prompt's text (a label) and token ids.
    max_new_tokens : int
        Longest continuation ``L``.
    rewards : callable (prompt text, prompt ids, list of continuations) -> float array
        The reward of every continuation of one prompt (e.g. VADER, see
        :func:`bonmath.sentiment.review_task`).
    eos_token_id : int, None or "config"
        As for :class:`bonmath.hf.CausalLMPolicy`.
    tokenizer : optional
        Kept as ``self.tokenizer`` for decoding; the task does not use it.

    Attributes
    ----------
    support : Enumeration
        Every continuation, (S, L) with PAD after EOS, in
        :meth:`bonmath.hf.CausalLMPolicy.enumerate` order (the same for every prompt: without
        top-k the support does not depend on the prompt).
    sequences : list of S tuples of int
        The same strings as tuples.
    ref_log_probs, rewards : float64 arrays of shape (P, S)
        log π_ref(y | x_p) and r(x_p, y).
    log_cdf_lt, log_cdf_le, log_level_mass : float64 arrays of shape (P, S)
        log F_lt, log F_le and log q of each string's reward level under π_ref.

    Raises
    ------
    ValueError
        For no prompts, more than :data:`MAX_TABLE_SIZE` prompt-continuation pairs
        (the message gives the size), prompts with different supports, or rewards
        that are not finite of shape (S,).

    Examples
    --------
    A random 1-layer GPT-2 over 5 tokens (EOS = 4), one prompt, continuations of up to 2
    tokens (4 × 5 + 1 = 21 strings), rewarded by their count of token 1:

    >>> import numpy as np, torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> config = GPT2Config(vocab_size=5, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=4)
    >>> model = GPT2LMHeadModel(config).to(torch.float64).eval()
    >>> task = Task(model, [("prompt", [1, 2])], 2, lambda text, ids, seqs: [float(s.count(1)) for s in seqs])
    >>> task.ref_log_probs.shape, task.sequences[5:7], task.rewards[0, 5:7].tolist(), task.sequences[-1]
    ((1, 21), [(1, 0), (1, 1)], [1.0, 2.0], (4,))
    >>> round(float(np.exp(task.bon_log_probs(4)).sum()), 12)  # the exact BoN law sums to 1
    1.0
    """

    def __init__(
        self,
        model: PreTrainedModel,
        prompts: Sequence[tuple[str, Sequence[int]]],
        max_new_tokens: int,
        rewards: RewardFunction,
        eos_token_id: int | None | Literal["config"] = "config",
        tokenizer: Any = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise InputTypeError(f"model must be a transformers causal LM; got {type(model).__name__}")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InputTypeError(f"prompts must be a sequence of (text, token ids) pairs; got {prompts!r}")
        if not prompts:
            raise ValueError("prompts is empty: a task needs at least one prompt")
        for prompt in prompts:
            if not (isinstance(prompt, (tuple, list)) and len(prompt) == 2 and isinstance(prompt[0], str)
                    and isinstance(prompt[1], Sequence) and not isinstance(prompt[1], str)):
                raise InputTypeError(f"prompts must hold (text, token ids) pairs; got {prompt!r}")
            for t in prompt[1]:
                check_count(t, "prompts", minimum=0)
        if not callable(rewards):
            raise InputTypeError(f"rewards must be a callable (text, ids, continuations) -> array; got {rewards!r}")
        if not (eos_token_id is None or (isinstance(eos_token_id, str) and eos_token_id == "config")):
            check_count(eos_token_id, "eos_token_id", minimum=0)
        if tokenizer is not None and not hasattr(tokenizer, "decode"):
            raise InputTypeError(f"tokenizer must be None or a tokenizer (with decode); got {tokenizer!r}")
        self.max_new_tokens = check_count(max_new_tokens, "max_new_tokens")
        size = len(prompts) * num_sequences(model.config.vocab_size, self.max_new_tokens)
        if size > MAX_TABLE_SIZE:
            raise ValueError(
                f"{len(prompts)} prompts x continuations of up to {max_new_tokens} tokens over a vocabulary "
                f"of {model.config.vocab_size} is {size:,} strings, more than MAX_TABLE_SIZE = {MAX_TABLE_SIZE:,}"
            )
        self.model = model
        self.eos_token_id = eos_token_id
        self.tokenizer = tokenizer
        self.prompt_texts = [str(text) for text, _ in prompts]
        self.prompt_ids = [tuple(int(t) for t in ids) for _, ids in prompts]
        support: Enumeration | None = None
        log_probs, reward_rows = [], []
        for p, (text, ids) in enumerate(zip(self.prompt_texts, self.prompt_ids)):
            with torch.no_grad():
                enumeration = self.policy(model, p).enumerate()
            if support is None:
                support = enumeration
            elif not torch.equal(enumeration.sequences, support.sequences):
                raise ValueError("prompts have different continuation supports (top_k is not supported)")
            log_probs.append(enumeration.log_probs.detach().to(torch.float64).cpu().numpy())
            seqs = support.keys()
            r = np.asarray(rewards(text, ids, seqs), dtype=np.float64)
            if r.shape != (len(seqs),) or not np.isfinite(r).all():
                raise ValueError(f"rewards for prompt {text!r} must be finite, of shape ({len(seqs)},)")
            reward_rows.append(r)
        assert support is not None  # prompts is non-empty (refused above): narrows the type
        self.support: Enumeration = support
        self.sequences: list[Continuation] = support.keys()
        self.ref_log_probs = np.stack(log_probs)
        self.rewards = np.stack(reward_rows)
        levels = reward_levels(self.ref_log_probs, self.rewards, np)
        self.log_cdf_lt = levels.per_string(levels.log_cdf_lt, np)
        self.log_cdf_le = levels.per_string(levels.log_cdf_le, np)
        self.log_level_mass = levels.per_string(levels.log_mass, np)
        self._bon: dict[float, np.ndarray] = {}
        self._ratio: dict[float, np.ndarray] = {}
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ basics

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids)

    def policy(self, model: torch.nn.Module, prompt: int) -> CausalLMPolicy:
        """The continuation distribution of ``model`` for prompt ``prompt``."""
        prompt = check_count(prompt, "prompt", minimum=0)
        if prompt >= self.num_prompts:
            raise ValueError(f"prompt must be < {self.num_prompts}, the number of prompts; got {prompt}")
        return CausalLMPolicy(model, self.prompt_ids[prompt], self.max_new_tokens, self.eos_token_id)

    def lookup(self, continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """Support indices of complete continuations, shape (k,)."""
        try:
            return self.support.index(continuations)
        except ValueError as err:  # the lookup names its argument "strings"
            raise type(err)(f"continuations: {err}") from None

    @torch.no_grad()
    def enumerate_log_probs(self, model: torch.nn.Module) -> np.ndarray:
        """log π_θ(y | x_p) of ``model`` on the whole support, float64 of shape (P, S)."""
        rows = []
        for p in range(self.num_prompts):
            enumeration = self.policy(model, p).enumerate()
            if not torch.equal(enumeration.sequences, self.support.sequences):
                raise ValueError("the model's support differs from the task's")
            rows.append(enumeration.log_probs.to(torch.float64).cpu().numpy())
        return np.stack(rows)

    # ------------------------------------------------------------ exact BoN law

    def bon_log_probs(self, n: float) -> np.ndarray:
        """log π_N for every prompt, shape (P, S) (cached)."""
        n = check_n(n)
        if n not in self._bon:
            self._bon[n] = bon_log_probs(self.ref_log_probs, self.rewards, n)
        return self._bon[n]

    def bon_log_ratio(self, n: float) -> np.ndarray:
        """R_N = log π_N - log π_ref for every prompt, shape (P, S) (cached)."""
        n = check_n(n)
        if n not in self._ratio:
            self._ratio[n] = bon_log_ratio(self.ref_log_probs, self.rewards, n)
        return self._ratio[n]

    def bound_log_cdf(self, n: float) -> np.ndarray:
        """log F̃ of the finite bound L̃ for every prompt, shape (P, S), n > 1.

        :func:`bonmath.vbon_finite_bound_log_cdf`: log F_lt, with log q - log N/(N-1)
        where F_lt = 0, so that the bound's per-string value there is the exact R_N.
        """
        return vbon_finite_bound_log_cdf(self.ref_log_probs, self.rewards, n)

    def fingerprint(self) -> str:
        """sha256 of the model weights and config, the prompts, L, EOS and the rewards.

        The config's ``_name_or_path`` (the directory the model was loaded from) is left
        out: the same model read from another checkout has the same fingerprint.
        """
        if self._fingerprint is None:
            config = {k: v for k, v in self.model.config.to_dict().items() if k != "_name_or_path"}
            header = {
                "prompts": [list(ids) for ids in self.prompt_ids],
                "max_new_tokens": self.max_new_tokens,
                "eos_token_id": self.eos_token_id,
                "config": json.dumps(config, sort_keys=True, default=str),
                "num_sequences": len(self.sequences),
            }
            state = sorted(self.model.state_dict().items())
            arrays = [a for name, tensor in state
                      for a in (name.encode(), tensor.detach().to(torch.float64).cpu().numpy())]
            self._fingerprint = fingerprint(header, [*arrays, self.rewards])
        return self._fingerprint
