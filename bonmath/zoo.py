"""A small zoo of enumerable policy/reference pairs, shared by tests, benchmarks and figures.

Each member is a :class:`PolicyPair`: a trainable policy π_θ and a frozen
reference π_ref small enough that every string can be enumerated, with rewards
that tie on purpose and put the strings the policy never emits first on the
lowest level (so the vBoN lower bound L is finite). It carries everything a
gradient-estimator check needs: the :class:`bonmath.EnumeratedPair` (per-string
and per-token log-probabilities, with the policy's autograd graph), the
parameters, the models' own samplers, and the exact quantities (π_N, F_lt, exact
gradients) the estimates are compared with.

- :func:`tabular_pair`: a random :class:`bonmath.TabularLM` reference and a
  noisy copy as the policy (torch tables);
- :func:`gpt2_pair`: a seeded tiny GPT-2 (:func:`tiny_gpt2_policy_pair`, built
  from ``GPT2Config``, nothing downloaded) and a perturbed copy truncated to
  top_k = V - 1.

:func:`pair_sizes` gives a member's support size and parameter count without
building it, for size guards. This module imports torch; transformers only when
a GPT-2 member is built.

(Over 400 lines on purpose: the shared fixtures (tabular and GPT-2 pairs, rewards) in
one place for tests, benchmarks and figures; about 40 % is docstrings.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch

from bonmath.backend import InputTypeError
from bonmath.bon import bon_log_ratio
from bonmath.enumeration import EnumeratedPair, enumerate_pair
from bonmath.estimators import exact_gradient, tabular_token_distributions, tabular_token_log_probs
from bonmath.levels import reward_cdf
from bonmath.tabular import TabularLM, num_sequences
from bonmath.validation import check_choice, check_count, check_flag, check_positive, check_rng

__all__ = [
    "GPT2_SHAPE",
    "PolicyPair",
    "gpt2_pair",
    "lowest_level_rewards",
    "pair_sizes",
    "tabular_pair",
    "tiny_gpt2_policy_pair",
    "tiny_task",
]

class _GPT2Shape(TypedDict):
    n_embd: int
    n_layer: int
    n_head: int
    n_positions: int


GPT2_SHAPE: _GPT2Shape = {"n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 16}
"""The tiny GPT-2's ``GPT2Config`` sizes (besides the vocabulary)."""

_SAMPLE_CHUNK = 16384
"""GPT-2 draws per ``sample`` call: the KV cache of 10^5 rows is large."""


def lowest_level_rewards(
    pair: EnumeratedPair, rng: np.random.Generator | int | None = None, levels: int = 3
) -> torch.Tensor:
    """Small integer rewards with ties, and the policy's never-first tokens on the lowest level.

    Parameters
    ----------
    pair : bonmath.EnumeratedPair
        Unbatched.
    rng : numpy.random.Generator, int or None, default None
        Source of the rewards (a seed >= 0 makes them reproducible; None: fresh entropy).
    levels : int
        Rewards of strings whose first token the policy can emit are drawn uniformly
        from 1..levels; strings whose first token it never emits get 0.

    Returns
    -------
    float64 tensor of shape (S,)

    Notes
    -----
    With no policy mass on the lowest level, F_lt > 0 wherever π_θ > 0 and the
    vBoN lower bound L = E_θ[(N-1) log F_lt] - KL(π_θ||π_ref) is finite.

    Examples
    --------
    >>> ref = TabularLM.random(3, 2, rng=0)
    >>> policy = TabularLM.from_logits([np.array([[-np.inf, 0.0, 0.0]]), np.zeros((2, 3))])
    >>> lowest_level_rewards(enumerate_pair(policy, ref), rng=0)[0].item()  # the empty string
    0.0
    """
    if not isinstance(pair, EnumeratedPair):
        raise InputTypeError(f"pair must be a bonmath.EnumeratedPair; got {pair!r}")
    levels = check_count(levels, "levels")
    rng = check_rng(rng)
    rewards = rng.integers(1, levels + 1, size=pair.sequences.shape[0]).astype(np.float64)
    first = torch.as_tensor(pair.token_log_probs[:, 0]).detach()
    rewards[(first == -math.inf).numpy()] = 0.0
    return torch.as_tensor(rewards)


@dataclass(eq=False)
class PolicyPair:
    """A policy and a reference on an enumerated support, with rewards, samplers and parameters.

    Attributes
    ----------
    name : str
        Short name (``"tabular"``, ``"gpt2"``).
    description : str
        One line: the models and the support size.
    policy, reference : TabularLM (torch tables) or bonmath.hf.CausalLMPolicy
        The models; the policy's parameters are ``params``.
    pair : bonmath.EnumeratedPair
        Both models enumerated on the union of their supports (S strings).
    params : list of torch.Tensor
        The policy's trainable parameters (P numbers in all).
    rewards : float64 tensor of shape (S,)

    Examples
    --------
    >>> import torch
    >>> case = tabular_pair(3, 2, seed=1)
    >>> case.description, case.num_params, tuple(case.gradient("kl").shape)
    ('TabularLM V=3 (EOS=0), T=2: 7 strings', 9, (9,))
    >>> round(float((case.ref_log_probs + case.log_ratio(4)).exp().sum()), 12)  # π_4 = π_ref e^(R_4) sums to 1
    1.0
    """

    name: str
    description: str
    policy: Any
    reference: Any
    pair: EnumeratedPair
    params: list[torch.Tensor]
    rewards: torch.Tensor

    # ------------------------------------------------------------- exact views

    @property
    def probs(self) -> torch.Tensor:
        """π_θ(y) on the support, shape (S,), without graph."""
        return self.pair.policy_log_probs.detach().exp()

    @property
    def support(self) -> torch.Tensor:
        """Positions of the strings with π_θ > 0, long tensor of shape (S_θ,)."""
        return torch.nonzero(self.pair.policy_log_probs.detach() > -math.inf).squeeze(1)

    @property
    def ref_log_probs(self) -> torch.Tensor:
        """log π_ref(y) on the support, shape (S,)."""
        return self.pair.ref_log_probs.detach()

    @property
    def num_params(self) -> int:
        """P, the number of policy parameters."""
        return sum(p.numel() for p in self.params)

    def log_ratio(self, n: float) -> torch.Tensor:
        """log π_N(y)/π_ref(y), the vBoN reward R_N, shape (S,) (:func:`bonmath.bon_log_ratio`)."""
        return bon_log_ratio(self.ref_log_probs, self.rewards, n)

    def log_cdf_lt(self) -> torch.Tensor:
        """log F_lt(y) = log P_ref(r(Y) < r(y)), shape (S,) (:func:`bonmath.reward_cdf`)."""
        return reward_cdf(self.ref_log_probs, self.rewards)[0]

    def gradient(self, objective: str, **kwargs: Any) -> torch.Tensor:
        """The exact gradient of an objective's loss w.r.t. ``params``, shape (P,).

        ``objective`` and ``kwargs`` (``n``, ``beta``) as in
        :func:`bonmath.estimators.exact_gradient`; the rewards are this pair's.
        """
        return exact_gradient(objective, self.pair.policy_log_probs, self.ref_log_probs, self.params,
                              rewards=self.rewards, **kwargs)

    # -------------------------------------------------- the models themselves

    def sample_policy(self, size: int, seed: int) -> list:
        """``size`` strings drawn with the policy's own sampler (reproducible from ``seed``).

        Tabular: padded int rows, ``TabularLM.sample(size, rng=seed)``. GPT-2: tuples of
        token ids, ``CausalLMPolicy.sample`` with ``torch.Generator().manual_seed(seed)``,
        in chunks of 16384 draws.
        """
        return _sample(self.policy, size, seed)

    def sample_reference(self, size: int, seed: int) -> list:
        """``size`` strings drawn with the reference's own sampler; see :meth:`sample_policy`."""
        return _sample(self.reference, size, seed)

    def token_log_probs(self, strings: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_θ(y_t | y_<t) of k strings (with graph) and the mask of real tokens, shapes (k, T)."""
        if isinstance(self.policy, TabularLM):
            return tabular_token_log_probs(self.policy, np.stack(strings))
        return self.policy.token_log_probs(strings)

    def ref_token_log_probs(self, strings: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_ref(y_t | y_<t) of k strings (no graph) and the mask, shapes (k, T)."""
        if isinstance(self.reference, TabularLM):
            return tabular_token_log_probs(self.reference, np.stack(strings))
        with torch.no_grad():
            return self.reference.token_log_probs(strings)

    def token_distributions(self, strings: Sequence) -> torch.Tensor:
        """log π_θ(· | y_<t) at every position of k strings, shape (k, T, V), with graph."""
        if isinstance(self.policy, TabularLM):
            return tabular_token_distributions(self.policy, np.stack(strings))
        return self.policy.token_distributions(strings)

    def ref_token_distributions(self, strings: Sequence) -> torch.Tensor:
        """log π_ref(· | y_<t) at every position of k strings, shape (k, T, V), no graph."""
        if isinstance(self.reference, TabularLM):
            return tabular_token_distributions(self.reference, np.stack(strings))
        with torch.no_grad():
            return self.reference.token_distributions(strings)


def _sample(model: Any, size: int, seed: int) -> list:
    if isinstance(model, TabularLM):
        return list(model.sample(size, rng=seed).numpy())
    generator = torch.Generator().manual_seed(seed)
    out: list = []
    for start in range(0, size, _SAMPLE_CHUNK):
        out += model.sample(min(_SAMPLE_CHUNK, size - start), generator=generator)
    return out


# ------------------------------------------------------------------ the members


def tabular_pair(
    vocab_size: int,
    max_len: int,
    seed: int,
    *,
    policy_noise: float = 0.7,
    reward_levels: int = 3,
    block_first_eos: bool = True,
) -> PolicyPair:
    """A random TabularLM reference and a noisy trainable copy as the policy.

    Parameters
    ----------
    vocab_size, max_len : int
        V tokens (EOS = 0 included) and at most T tokens per string.
    seed : int
        Seeds the reference logits ~ N(0, 1), the noise and the rewards (one numpy
        Generator, in that order).
    policy_noise : float
        Policy logits = reference logits + policy_noise · N(0, 1) (the parameters).
    reward_levels : int
        See :func:`lowest_level_rewards`.
    block_first_eos : bool
        The policy never emits EOS first, so the empty string is on the lowest
        level and L is finite; ``False`` leaves the policy mass there.

    Returns
    -------
    PolicyPair
        Σ_{t<T} (V-1)^t + (V-1)^T strings; the parameters are the T logit tables.

    Examples
    --------
    >>> case = tabular_pair(3, 2, seed=1)
    >>> tuple(case.pair.sequences.shape), case.num_params, case.support.numel()
    ((7, 2), 9, 6)
    """
    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    max_len = check_count(max_len, "max_len")
    rng = np.random.default_rng(check_count(seed, "seed", minimum=0))
    policy_noise = check_positive(policy_noise, "policy_noise", inclusive=True)
    reward_levels = check_count(reward_levels, "reward_levels")
    block_first_eos = check_flag(block_first_eos, "block_first_eos")
    ref_logits = [rng.standard_normal(((vocab_size - 1) ** t, vocab_size)) for t in range(max_len)]
    params = [torch.tensor(t + policy_noise * rng.standard_normal(t.shape), requires_grad=True)
              for t in ref_logits]
    block = torch.zeros(1, vocab_size, dtype=torch.float64)
    if block_first_eos:
        block[0, 0] = -math.inf
    policy = TabularLM.from_logits([params[0] + block, *params[1:]], eos_id=0)
    ref = TabularLM.from_logits([torch.tensor(t) for t in ref_logits], eos_id=0)
    pair = enumerate_pair(policy, ref)
    return PolicyPair(
        name="tabular",
        description=f"TabularLM V={vocab_size} (EOS=0), T={max_len}: {pair.sequences.shape[0]} strings",
        policy=policy,
        reference=ref,
        pair=pair,
        params=params,
        rewards=lowest_level_rewards(pair, rng, reward_levels),
    )


def tiny_gpt2_policy_pair(
    vocab_size: int,
    max_new_tokens: int,
    seed: int,
    scale: float = 10.0,
    policy_noise: float = 0.5,
    prompt: tuple[int, ...] = (1, 2, 3),
):
    """A seeded tiny GPT-2 reference and a perturbed trainable copy, as CausalLMPolicy.

    Parameters
    ----------
    vocab_size, max_new_tokens : int
        EOS is the last token id; continuations have at most ``max_new_tokens`` tokens.
    seed : int
        Seeds the reference weights (``seed``) and the perturbation (``seed + 1``); torch's
        global generator is left as it was.
    scale : float
        Factor on the (tied) token embeddings: next-token distributions far from uniform.
    policy_noise : float
        Policy = reference + ``policy_noise`` · std(parameter) · N(0, 1) per parameter.
    prompt : tuple of int
        Token ids; ``len(prompt) + max_new_tokens`` must fit the 16 positions.

    Returns
    -------
    policy, ref : bonmath.hf.CausalLMPolicy
        float64 models built from ``GPT2Config`` with :data:`GPT2_SHAPE` (nothing
        downloaded); the policy is truncated to top_k = V - 1 and keeps autograd,
        the reference's weights are frozen.

    Examples
    --------
    Four tokens (EOS = 3) and continuations of up to 2 tokens: the reference has all
    1 + 3 + 3² = 13 of them, the top-3 policy fewer, with a law that sums to 1 and a graph:

    >>> policy, ref = tiny_gpt2_policy_pair(vocab_size=4, max_new_tokens=2, seed=0)
    >>> policy.top_k, ref.top_k, ref.eos_token_ids
    (3, None, (3,))
    >>> strings, log_probs = policy.enumerate()
    >>> len(ref.enumerate().sequences), len(strings)
    (13, 7)
    >>> round(float(log_probs.detach().exp().sum()), 12), log_probs.requires_grad
    (1.0, True)
    >>> any(p.requires_grad for p in ref.model.parameters())  # the reference is frozen
    False
    """
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from bonmath.hf import CausalLMPolicy

    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    max_new_tokens = check_count(max_new_tokens, "max_new_tokens")
    seed = check_count(seed, "seed", minimum=0)
    scale = check_positive(scale, "scale")
    policy_noise = check_positive(policy_noise, "policy_noise", inclusive=True)
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt:
        raise InputTypeError(f"prompt must be a non-empty tuple of token ids; got {prompt!r}")
    prompt = tuple(check_count(t, "prompt", minimum=0) for t in prompt)
    if len(prompt) + max_new_tokens > GPT2_SHAPE["n_positions"]:
        raise ValueError(
            f"the prompt ({len(prompt)} tokens) plus max_new_tokens={max_new_tokens} exceed the tiny "
            f"GPT-2's {GPT2_SHAPE['n_positions']} positions"
        )
    config = GPT2Config(vocab_size=vocab_size, bos_token_id=0, eos_token_id=vocab_size - 1, **GPT2_SHAPE)
    with torch.random.fork_rng():  # GPT-2's initialisation draws from the global generator: leave it alone
        torch.manual_seed(seed)
        ref_model = GPT2LMHeadModel(config)
    with torch.no_grad():
        ref_model.transformer.wte.weight.mul_(scale)  # tied to lm_head: far from uniform
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to): mypy then types the bound
    # method as still taking self, so the dtype is reported as the wrong first argument
    ref_model = ref_model.to(torch.float64).eval()  # type: ignore[arg-type]
    policy_model = copy.deepcopy(ref_model)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy_model.parameters():
            p.add_(policy_noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    for p in ref_model.parameters():
        p.requires_grad_(False)
    policy = CausalLMPolicy(policy_model, prompt, max_new_tokens, top_k=vocab_size - 1)
    return policy, CausalLMPolicy(ref_model, prompt, max_new_tokens)


def tiny_task(seed: int = 0):
    """The tiny enumerable task of the docstring examples: a random 1-layer GPT-2 over 5
    tokens (EOS = 4), the prompt (1, 2), continuations of up to 2 tokens (21 strings),
    each rewarded by its count of token 1 (ties).

    Parameters
    ----------
    seed : int
        Seeds the weights (torch's global generator is left as it was).

    Returns
    -------
    bonmath.task.Task
        float64 model, built from ``GPT2Config`` (nothing downloaded).

    Examples
    --------
    >>> task = tiny_task()
    >>> task.ref_log_probs.shape, task.rewards[0, 5:7].tolist()
    ((1, 21), [1.0, 2.0])
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from bonmath.task import Task

    seed = check_count(seed, "seed", minimum=0)
    config = GPT2Config(vocab_size=5, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=4)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to) (see tiny_gpt2_policy_pair)
    model = model.to(torch.float64).eval()  # type: ignore[arg-type]
    return Task(model, [("prompt", [1, 2])], 2, lambda text, ids, seqs: np.array([s.count(1) for s in seqs], dtype=np.float64))


def gpt2_pair(
    vocab_size: int,
    max_new_tokens: int,
    seed: int,
    *,
    scale: float = 10.0,
    policy_noise: float = 0.5,
    reward_levels: int = 3,
) -> PolicyPair:
    """The tiny GPT-2 pair of :func:`tiny_gpt2_policy_pair`, enumerated, with rewards.

    Parameters
    ----------
    vocab_size, max_new_tokens : int
        V tokens (EOS = V - 1) and at most L new tokens after the 3-token prompt.
    seed : int
        Seeds the models (:func:`tiny_gpt2_policy_pair`) and, separately, the rewards.
    scale, policy_noise : float
        As in :func:`tiny_gpt2_policy_pair`.
    reward_levels : int
        See :func:`lowest_level_rewards`.

    Returns
    -------
    PolicyPair
        Σ_{t<L} (V-1)^t + (V-1)^L continuations; the policy (top_k = V - 1) has mass
        on fewer.

    Examples
    --------
    The smallest pair the tests use: V = 4, L = 2 (13 strings), with the exact BoN law
    and the exact gradient of KL(π_θ || π_ref) over all the GPT-2's parameters:

    >>> case = gpt2_pair(4, 2, seed=0)
    >>> case.description
    'GPT-2 (2 layers, d=16) V=4 (EOS=3), L=2, policy top_k=3: 13 strings'
    >>> case.num_params == pair_sizes("gpt2", 4, 2)[1], case.support.numel(), tuple(case.gradient("kl").shape)
    (True, 7, (6912,))
    >>> round(float((case.ref_log_probs + case.log_ratio(4)).exp().sum()), 12)  # π_4 = π_ref e^(R_4) sums to 1
    1.0
    """
    scale = check_positive(scale, "scale")
    policy_noise = check_positive(policy_noise, "policy_noise", inclusive=True)
    reward_levels = check_count(reward_levels, "reward_levels")
    policy, ref = tiny_gpt2_policy_pair(vocab_size, max_new_tokens, seed, scale, policy_noise)
    pair = enumerate_pair(policy, ref)
    return PolicyPair(
        name="gpt2",
        description=(f"GPT-2 ({GPT2_SHAPE['n_layer']} layers, d={GPT2_SHAPE['n_embd']}) V={vocab_size} "
                     f"(EOS={vocab_size - 1}), L={max_new_tokens}, policy top_k={vocab_size - 1}: "
                     f"{pair.sequences.shape[0]} strings"),
        policy=policy,
        reference=ref,
        pair=pair,
        params=list(policy.model.parameters()),
        rewards=lowest_level_rewards(pair, np.random.default_rng(seed), reward_levels),
    )


def pair_sizes(kind: str, vocab_size: int, length: int) -> tuple[int, int]:
    """(S, P) of :func:`tabular_pair` or :func:`gpt2_pair` without building it.

    Parameters
    ----------
    kind : {"tabular", "gpt2"}
    vocab_size, length : int
        V (EOS included) and T (tabular) or L = max_new_tokens (GPT-2).

    Returns
    -------
    num_strings, num_params : int
        S = Σ_{t<T} (V-1)^t + (V-1)^T strings on the union support (one EOS), and
        the policy's parameter count: Σ_{t<T} (V-1)^t V logits (tabular); for GPT-2
        with width d, C positions and l layers (tied embeddings)
        V d + C d + l (12 d² + 13 d) + 2 d.

    Examples
    --------
    >>> pair_sizes("tabular", 4, 4), pair_sizes("gpt2", 6, 3)
    ((121, 160), (156, 6944))
    """
    check_choice(kind, "kind", ("tabular", "gpt2"))
    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    length = check_count(length, "length")
    strings = num_sequences(vocab_size, length)
    if kind == "tabular":
        return strings, sum((vocab_size - 1) ** t for t in range(length)) * vocab_size
    d, layers, positions = GPT2_SHAPE["n_embd"], GPT2_SHAPE["n_layer"], GPT2_SHAPE["n_positions"]
    return strings, vocab_size * d + positions * d + layers * (12 * d * d + 13 * d) + 2 * d
