"""The audit's models: a tiny enumerable GPT-2 reference and policy, their tokenizer, and the reward.

:func:`build_tiny_setup` builds a seeded word-level GPT-2 pair and saves the reference
(and tokenizer) to disk, where TRL loads its reference model from;
:func:`count_token_reward` is the TRL reward function of the base rows;
:func:`support_rewards` scores every enumerated completion as TRL does; ``_enumerate_pair``
enumerates policy and reference under TRL's sampling settings (the one enumeration of the
audit; :func:`bonmath.trl_audit.sampling_law_test` checks TRL samples from this law).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from bonmath.enumeration import EnumeratedPair, enumerate_pair, string_keys
from bonmath.hf import CausalLMPolicy
from bonmath.validation import check_count

__all__ = ["EOS", "TinySetup", "build_tiny_setup", "count_token_reward", "support_rewards"]

EOS = "<eos>"
"""The tiny tokenizer's EOS word (id 0); it is also the padding token."""


@dataclass
class TinySetup:
    """A tiny GPT-2 reference saved to disk, a perturbed policy, and their tokenizer.

    Attributes
    ----------
    reference_path : str
        Folder with the reference weights (float64) and the tokenizer. The policy's
        ``config._name_or_path`` is this folder, which is where TRL loads its
        reference model from when ``beta != 0``.
    policy, reference : GPT2LMHeadModel
        float64, no dropout; the reference frozen.
    tokenizer : PreTrainedTokenizerFast
        Word-level: ``<eos>`` (id 0, also padding) and the words a, b, c, ...
    prompt : str
    prompt_ids : tuple of int
    max_completion_length : int

    Examples
    --------
    The smallest setup of the audit's examples: V = 3 tokens, completions of at most 2
    tokens (7 of them); the reference is frozen, the policy a trainable perturbed copy:

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> setup.prompt, setup.prompt_ids, setup.eos_token_id, setup.tokenizer.decode([1, 2, 0], skip_special_tokens=True)
    ('a b', (1, 2), 0, 'a b')
    >>> setup.policy.dtype, any(p.requires_grad for p in setup.reference.parameters())
    (torch.float64, False)
    >>> folder.cleanup()
    """

    reference_path: str
    policy: Any
    reference: Any
    tokenizer: Any
    prompt: str
    prompt_ids: tuple[int, ...]
    max_completion_length: int

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)


def build_tiny_setup(
    folder: str | os.PathLike,
    *,
    vocab_size: int = 5,
    max_completion_length: int = 3,
    seed: int = 0,
    scale: float = 3.0,
    noise: float = 2.0,
    prompt: str = "a b",
) -> TinySetup:
    """Build and save a seeded tiny GPT-2 reference, and a perturbed policy loaded from it.

    Parameters
    ----------
    folder : path
        The reference and its tokenizer are written to ``folder/reference``.
    vocab_size : int
        V >= 2 tokens: EOS (id 0) and V - 1 words ``a, b, c, ...`` (V <= 27).
    max_completion_length : int
        L >= 1; the support has Σ_{t<L} (V-1)^t + (V-1)^L completions.
    seed : int
        Seeds the reference weights (``seed``) and the perturbation (``seed + 1``); torch's
        global generator is left as it was.
    scale : float
        Factor on the (tied) token embeddings: next-token distributions away from uniform.
    noise : float
        Policy = reference + ``noise`` · std(parameter) · N(0, 1), per parameter: KL > 0.
    prompt : str
        Whitespace-separated words of the vocabulary.

    Returns
    -------
    TinySetup

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=4, max_completion_length=2)
    >>> setup.prompt_ids, setup.tokenizer.convert_ids_to_tokens([0, 1, 2, 3])
    ((1, 2), ['<eos>', 'a', 'b', 'c'])
    >>> setup.policy.config._name_or_path == setup.reference_path
    True
    >>> folder.cleanup()
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    if vocab_size > 27:
        raise ValueError(f"vocab_size must be <= 27 (EOS and the words a..z), got {vocab_size}")
    max_completion_length = check_count(max_completion_length, "max_completion_length")
    words = [EOS] + [chr(ord("a") + i) for i in range(vocab_size - 1)]
    vocab = {w: i for i, w in enumerate(words)}
    unknown = [w for w in prompt.split() if w not in vocab]
    if not prompt.split() or unknown:
        raise ValueError(f"prompt must be non-empty words of {words[1:]}, got {prompt!r}")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS, unk_token=EOS)
    prompt_ids = tuple(tokenizer(prompt)["input_ids"])
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=len(prompt_ids) + max_completion_length + 4,
        n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # training mode = eval mode
    )
    with torch.random.fork_rng():  # GPT-2's initialisation draws from the global generator: leave it alone
        torch.manual_seed(seed)
        reference = GPT2LMHeadModel(config)
    with torch.no_grad():
        reference.transformer.wte.weight.mul_(scale)
    path = Path(folder) / "reference"
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to): mypy then types the bound
    # method as still taking self, so the dtype is reported as the wrong first argument
    reference.to(torch.float64).save_pretrained(path)  # type: ignore[arg-type]
    tokenizer.save_pretrained(path)
    reference = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return TinySetup(
        reference_path=str(path), policy=policy, reference=reference, tokenizer=tokenizer,
        prompt=prompt, prompt_ids=prompt_ids, max_completion_length=max_completion_length,
    )


def count_token_reward(token_id: int = 1, value: float = 1.0) -> Callable[..., list[float]]:
    """A TRL reward function: ``value`` times the number of ``token_id`` in the completion.

    Deterministic in the completion ids, with many ties (85 completions, 4 values).
    A small ``value`` makes the KL term matter against the reward at a small β.

    Examples
    --------
    >>> reward = count_token_reward(1)
    >>> reward(prompts=["a b"] * 2, completions=["a a", "b"], completion_ids=[[1, 1, 0], [2, 0]])
    [2.0, 0.0]
    """

    def count_token(prompts, completions, completion_ids, **kwargs) -> list[float]:
        return [value * sum(1 for t in ids if t == token_id) for ids in completion_ids]

    count_token.__name__ = f"count_token_{token_id}"
    return count_token


class _PolicySettings(TypedDict):
    max_new_tokens: int
    eos_token_id: int | None
    top_k: int | None
    temperature: float


def _enumerate_pair(setup: TinySetup, policy_model, temperature: float) -> EnumeratedPair:
    """Policy and reference on the support TRL samples from (the one enumeration of this module).

    TRL's generation: ``do_sample=True``, ``temperature``, top_k = 0 and top_p = 1 (no
    truncation), EOS = the tokenizer's, at most ``max_completion_length`` tokens; its
    loss scores tokens with ``log_softmax(logits / temperature)``. ``CausalLMPolicy``
    with the same temperature, no top-k and the same EOS and length is that law.
    """
    settings = _PolicySettings(max_new_tokens=setup.max_completion_length, eos_token_id=setup.eos_token_id,
                               top_k=None, temperature=temperature)
    policy = CausalLMPolicy(policy_model, setup.prompt_ids, **settings)
    reference = CausalLMPolicy(setup.reference, setup.prompt_ids, **settings)
    return enumerate_pair(policy, reference)


def _noop(*args, **kwargs) -> None:
    return None


def support_rewards(reward_func: Callable[..., Sequence[float]], setup: TinySetup, sequences, *,
                    float32: bool = True) -> torch.Tensor:
    """The TRL reward function's value on every enumerated completion, as TRL uses it.

    Called as ``GRPOTrainer`` calls a reward function (``prompts``, decoded
    ``completions`` with special tokens skipped, ``completion_ids``, and the
    ``trainer_state``/``log_extra``/``log_metric`` keywords, here None and no-ops),
    then rounded to float32 like TRL's reward tensor (``float32=False``: the float64
    values the function returned).

    Returns
    -------
    float64 tensor of shape (S,)

    Raises
    ------
    ValueError
        If the reward function returns the wrong number of values or a non-finite one.

    Examples
    --------
    Three completions (token ids, EOS = 0) scored by 0.1 × (number of token ``a``): as TRL
    uses the values (float32) and as the function returns them; a reward function that
    returns one value for three completions is refused:

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> completions = [(0,), (1, 0), (1, 1)]
    >>> support_rewards(count_token_reward(1, 0.1), setup, completions).tolist()
    [0.0, 0.10000000149011612, 0.20000000298023224]
    >>> support_rewards(count_token_reward(1, 0.1), setup, completions, float32=False).tolist()
    [0.0, 0.1, 0.2]
    >>> support_rewards(lambda completion_ids, **kwargs: [1.0], setup, completions)
    Traceback (most recent call last):
    ...
    ValueError: reward_func must return 3 finite rewards, got [1.0]...
    >>> folder.cleanup()
    """
    ids = [list(s) for s in string_keys(sequences)]
    completions = setup.tokenizer.batch_decode(ids, skip_special_tokens=True)
    values = reward_func(prompts=[setup.prompt] * len(ids), completions=completions, completion_ids=ids,
                         trainer_state=None, log_extra=_noop, log_metric=_noop)
    values = [float("nan") if v is None else float(v) for v in values]
    if len(values) != len(ids) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"reward_func must return {len(ids)} finite rewards, got {values[:8]}...")
    return torch.tensor(values, dtype=torch.float32 if float32 else torch.float64).to(torch.float64)
