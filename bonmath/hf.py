"""Hugging Face causal language models as exact, enumerable policies.

A :class:`CausalLMPolicy` is the distribution of the continuations that
``model.generate(prompt, do_sample=True, max_new_tokens=L, temperature=t,
top_k=k)`` returns for one prompt: tokens are drawn one at a time from
``softmax(logits / t)`` restricted to the top-k logits, and a continuation
stops at an EOS token or after ``L`` tokens. On a small model with a short
horizon this distribution can be written down exactly, string by string
(:meth:`CausalLMPolicy.enumerate`), which is what the rest of bonmath needs.
:func:`enumerate_pair` enumerates a policy and a reference on the union of their
supports (aligned, so KL and the vBoN objective are exact, ``-inf`` included).

This module imports torch and transformers; ``import bonmath`` does not.

(Over 400 lines on purpose: CausalLMPolicy and the prefix-tree walk share the model-
evaluation helpers (KV cache, EOS ids, temperature and top-k, dropout handling); over a
third is docstrings.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from transformers import DynamicCache

from bonmath.backend import InputTypeError
from bonmath.enumeration import PAD, EnumeratedPair, Enumeration, enumerate_pair, string_keys
from bonmath.validation import check_count, check_positive

__all__ = ["CausalLMPolicy", "enumerate_pair"]

F = TypeVar("F", bound=Callable[..., Any])

Continuation = tuple[int, ...]
KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), [B, H, S, D]


# --------------------------------------------------------------------------
# transformers compatibility: the cache argument was renamed in 5.x
# (``past_key_values`` -> ``cache``), and caches are built from tensors.
# --------------------------------------------------------------------------


def _cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the forward argument that takes the KV cache."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(config: Any, key_values: KeyValues | None = None) -> DynamicCache:
    """A ``DynamicCache`` for ``config``, optionally filled with ``key_values``."""
    try:
        return DynamicCache(key_values, config=config)
    except TypeError:  # transformers < 4.56: no config argument
        if key_values is None:
            return DynamicCache()
        return getattr(DynamicCache, "from_legacy_cache")(tuple(key_values))  # noqa: B009  (4.x only: not in 5.x's types)


def _cache_tensors(cache: DynamicCache) -> KeyValues:
    """The cached ``(keys, values)`` of every layer, each of shape [B, H, S, D]."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[misc, union-attr]  # filled attention layers
    return list(zip(getattr(cache, "key_cache"), getattr(cache, "value_cache"), strict=True))  # noqa: B009  (4.x only)


# --------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _dropout_off(model: torch.nn.Module) -> Iterator[None]:
    """Evaluate ``model`` in eval mode (no dropout), then restore every submodule's mode."""
    modes = [(module, module.training) for module in model.modules()]
    if any(training for _, training in modes):
        model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _deterministic(method: F) -> F:
    """Run a :class:`CausalLMPolicy` method with the model's dropout off (mode restored after)."""

    @functools.wraps(method)
    def wrapper(self: CausalLMPolicy, *args: Any, **kwargs: Any) -> Any:
        with _dropout_off(self.model):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CausalLMPolicy:
    """The continuation distribution of a causal LM for one prompt.

    Parameters
    ----------
    model : transformers causal LM
        Any ``*ForCausalLM`` / ``*LMHeadModel`` (tested with ``GPT2LMHeadModel``).
        Every method evaluates it with dropout off (a model in training mode is
        switched to eval mode for the call and restored after), so the
        distribution is deterministic. Any float dtype; all probabilities are
        computed in float64 from the model's logits.
    prompt_ids : sequence of int or integer tensor of shape (P,)
        The prompt, ``P >= 1`` token ids.
    max_new_tokens : int
        ``L >= 1``, the most tokens a continuation has.
    eos_token_id : int, sequence of int, None or "config", default "config"
        The token(s) that end a continuation. ``"config"`` reads what ``generate``
        reads: ``model.generation_config.eos_token_id`` (an int or a list, as many
        Hugging Face models ship), else ``model.config.eos_token_id``. ``None``
        means there is no EOS and every continuation has exactly ``L`` tokens.
    top_k : int or None, default None
        Keep only the tokens whose logit is at least the k-th largest
        (transformers' ``TopKLogitsWarper``), renormalised. ``None`` keeps all.
    temperature : float, default 1.0
        Logits are divided by it before the softmax (and before top-k).
    max_support : int, default 1_000_000
        :meth:`enumerate` refuses to build more continuations than this.

    Notes
    -----
    At continuation position ``t`` (0-based) with prefix ``y_<t`` the next
    token has log-probability

    .. math:: \\log \\pi(y_t \\mid x, y_{<t}) = z_{y_t} - \\log \\sum_{v \\in K} e^{z_v},
        \\quad z = \\mathrm{logits}(x, y_{<t}) / T,

    for ``y_t`` in the kept set ``K = {v : z_v >= k-th largest z}`` and
    ``-inf`` outside it. Ties at the k-th value are all kept, so ``K`` can hold
    more than ``k`` tokens; this is ``torch.topk``'s k-th *value* used as a
    threshold, exactly what ``generate`` does, and it does not depend on how
    ``torch.topk`` orders tied indices. The same function is used by
    :meth:`sample`, :meth:`log_prob`, :meth:`token_distributions` and
    :meth:`enumerate`, so temperature and top-k change all of them alike.

    A continuation is complete when it ends with an EOS token (at any length
    ``<= L``) or has ``L`` tokens; nothing follows EOS. To reproduce
    ``generate`` pass ``top_k`` explicitly: transformers' default generation
    config uses ``top_k=50``, which only matters for vocabularies above 50 tokens.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> config = GPT2Config(vocab_size=8, n_positions=8, n_embd=16, n_layer=1, n_head=2,
    ...                     bos_token_id=0, eos_token_id=7)
    >>> model = GPT2LMHeadModel(config).double().eval()
    >>> policy = CausalLMPolicy(model, prompt_ids=[1, 2], max_new_tokens=3)
    >>> sequences, log_probs = policy.enumerate()
    >>> sequences.shape  # 1 + 7 + 7**2 end with EOS, 7**3 reach 3 tokens without it
    torch.Size([400, 3])
    >>> sequences[:2].tolist()
    [[0, 0, 0], [0, 0, 1]]
    >>> bool(abs(log_probs.logsumexp(0)) < 1e-12)
    True
    >>> bool(torch.allclose(policy.log_prob(sequences[:3]), log_probs[:3]))
    True
    >>> samples = policy.sample(4, generator=torch.Generator().manual_seed(0))
    >>> len(samples), all(s[-1] == 7 or len(s) == 3 for s in samples)
    (4, True)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompt_ids: Sequence[int] | torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | Sequence[int] | None | Literal["config"] = "config",
        top_k: int | None = None,
        temperature: float = 1.0,
        max_support: int = 1_000_000,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module (a causal LM); got {model!r}")
        self.model = model
        self.vocab_size = _vocab_size(model)
        self.device = next(model.parameters()).device
        self.prompt_ids = _check_token_ids(prompt_ids, "prompt_ids", self.vocab_size).to(self.device)
        self.max_new_tokens = check_count(max_new_tokens, "max_new_tokens", minimum=1)
        n_positions = getattr(model.config, "max_position_embeddings", None)
        needed = len(self.prompt_ids) + self.max_new_tokens - 1
        if isinstance(n_positions, int) and needed > n_positions:
            raise ValueError(
                f"prompt_ids ({len(self.prompt_ids)} tokens) plus max_new_tokens={max_new_tokens} "
                f"needs {needed} positions, the model has {n_positions}"
            )
        self.eos_token_ids = _eos_token_ids(eos_token_id, model, self.vocab_size)
        self.top_k = None if top_k is None else check_count(top_k, "top_k", minimum=1)
        self.temperature = check_positive(temperature, "temperature")
        self.max_support = check_count(max_support, "max_support", minimum=1)
        self._cache_kwarg = _cache_kwarg(model)
        self._eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=self.device)

    def __repr__(self) -> str:
        return (
            f"CausalLMPolicy({type(self.model).__name__}, prompt_ids={self.prompt_ids.tolist()}, "
            f"max_new_tokens={self.max_new_tokens}, eos_token_id={list(self.eos_token_ids)}, "
            f"top_k={self.top_k}, temperature={self.temperature})"
        )

    # ---------------------------------------------------------------- core

    def _next_token(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token log-distribution and kept set from raw logits.

        Parameters
        ----------
        logits : tensor of shape (..., V)

        Returns
        -------
        log_probs : float64 tensor of shape (..., V)
            ``-inf`` outside the kept set.
        kept : bool tensor of shape (..., V)
            The top-k set (all True without top_k).
        """
        z = logits.to(torch.float64) / self.temperature
        if self.top_k is None or self.top_k >= z.shape[-1]:
            kept = torch.ones_like(z, dtype=torch.bool)
        else:
            kth = torch.topk(z, self.top_k, dim=-1).values[..., -1:]
            kept = z >= kth
            z = z.masked_fill(~kept, float("-inf"))
        return torch.log_softmax(z, dim=-1), kept

    def _is_eos(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.isin(tokens, self._eos)

    @property
    def _truncated(self) -> bool:
        return self.top_k is not None and self.top_k < self.vocab_size

    def _forward(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of shape [B, S, V] for input_ids [B, S]; ``cache`` is extended in place."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        return self.model(**kwargs).logits

    def _check(self, sequences: Iterable[Iterable[int]] | torch.Tensor | np.ndarray) -> list[Continuation]:
        """Validate continuations (tuples, or integer rows padded with ``PAD``); return them as tuples."""
        if isinstance(sequences, (torch.Tensor, np.ndarray)):
            if sequences.dtype in (torch.bool, np.bool_) or not (
                isinstance(sequences, np.ndarray) and sequences.dtype.kind in "iu"
                or isinstance(sequences, torch.Tensor) and not sequences.is_floating_point() and not sequences.is_complex()
            ):
                raise InputTypeError(f"sequences must hold integer token ids; got dtype {sequences.dtype}")
            seqs = string_keys(sequences)
        else:
            seqs = _continuations(sequences)
        if not seqs:
            raise ValueError("sequences must hold at least one continuation")
        L, V = self.max_new_tokens, self.vocab_size
        eos = set(self.eos_token_ids)
        for i, s in enumerate(seqs):
            if any(not 0 <= t < V for t in s):
                raise ValueError(f"sequences[{i}] = {s} has token ids outside [0, {V})")
            if len(s) > L:
                raise ValueError(f"sequences[{i}] has {len(s)} tokens, more than max_new_tokens={L}")
            if eos.intersection(s[:-1]):
                raise ValueError(f"sequences[{i}] = {s} continues after an EOS token {sorted(eos)}")
            if len(s) < L and (not s or s[-1] not in eos):
                raise ValueError(
                    f"sequences[{i}] = {s} has {len(s)} < max_new_tokens={L} tokens and does not "
                    f"end with an EOS token {sorted(eos)}: it is not a complete continuation"
                )
        return seqs

    def _padded_logits(
        self, seqs: list[Continuation]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One right-padded forward over prompt + continuation.

        Returns tokens [k, T] (padded with 0), mask [k, T] and the logits that
        predict each continuation token, [k, T, V].
        """
        k, T, P = len(seqs), max(len(s) for s in seqs), len(self.prompt_ids)
        tokens = torch.zeros(k, T, dtype=torch.long, device=self.device)
        mask = torch.zeros(k, T, dtype=torch.bool, device=self.device)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = True
        # The last token predicts nothing, so it is not fed; right padding
        # never reaches a real token under the causal mask.
        input_ids = torch.cat([self.prompt_ids.expand(k, P), tokens[:, :-1]], dim=1)
        attention = torch.cat(
            [torch.ones(k, P, dtype=torch.long, device=self.device), mask[:, :-1].long()], dim=1
        )
        logits = self._forward(input_ids, attention_mask=attention)[:, P - 1 :]
        return tokens, mask, logits

    # ---------------------------------------------------------- public API

    @_deterministic
    def token_log_probs(
        self, sequences: Iterable[Iterable[int]] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of complete continuations.

        Parameters
        ----------
        sequences : k sequences of int, or an int tensor of shape (k, T') padded with ``PAD``
            Complete continuations (see the class Notes), of mixed lengths.

        Returns
        -------
        token_log_probs : float64 tensor of shape (k, T)
            ``log pi(y_t | x, y_<t)``; ``T`` is the longest length; padded
            positions hold 0. A token outside the top-k set gives ``-inf``
            (the continuation has probability 0; this is not an error).
            Differentiable w.r.t. the model parameters.
        mask : bool tensor of shape (k, T)
            True at real (unpadded) positions.

        Raises
        ------
        ValueError
            If a sequence has token ids outside the vocabulary, is longer than
            ``max_new_tokens``, continues after EOS, or is shorter than
            ``max_new_tokens`` without ending in EOS.
        """
        tokens, mask, logits = self._padded_logits(self._check(sequences))
        log_dist, _ = self._next_token(logits)
        have = log_dist.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, have, torch.zeros((), dtype=have.dtype, device=have.device)), mask

    def log_prob(self, sequences: Iterable[Iterable[int]] | torch.Tensor) -> torch.Tensor:
        """Log-probability of each complete continuation.

        Parameters
        ----------
        sequences : k sequences of int, or an int tensor of shape (k, T') padded with ``PAD``
            Complete continuations, of mixed lengths; one padded batched forward.

        Returns
        -------
        float64 tensor of shape (k,)
            ``log pi(y | x)``, the masked sum of :meth:`token_log_probs`;
            ``-inf`` where a token lies outside the top-k set. Differentiable
            w.r.t. the model parameters.

        Raises
        ------
        ValueError
            As :meth:`token_log_probs`.
        """
        token_log_probs, _ = self.token_log_probs(sequences)
        return token_log_probs.sum(-1)  # padded positions hold 0

    @_deterministic
    def token_distributions(self, sequences: Iterable[Iterable[int]] | torch.Tensor) -> torch.Tensor:
        """Full next-token log-distributions at every continuation position.

        Parameters
        ----------
        sequences : k sequences of int, or an int tensor of shape (k, T') padded with ``PAD``
            Complete continuations, as for :meth:`token_log_probs`.

        Returns
        -------
        float64 tensor of shape (k, T, V)
            Row ``[i, t]`` is ``log pi(. | x, y_i[:t])`` (``-inf`` outside the
            top-k set); rows at padded positions (``mask`` of
            :meth:`token_log_probs` False) hold 0. Differentiable.
        """
        _, mask, logits = self._padded_logits(self._check(sequences))
        log_dist, _ = self._next_token(logits)
        return torch.where(
            mask.unsqueeze(-1),
            log_dist,
            torch.zeros((), dtype=log_dist.dtype, device=log_dist.device),
        )

    @torch.no_grad()
    @_deterministic
    def sample(self, size: int, generator: torch.Generator | None = None) -> list[Continuation]:
        """Draw ``size`` continuations independently.

        Parameters
        ----------
        size : int
            Number of continuations (>= 0).
        generator : torch.Generator, optional
            Source of randomness, on the model's device; seeded, it makes the
            draws reproducible. ``None`` uses torch's global generator.

        Returns
        -------
        list of ``size`` tuples of int
            Each ends with an EOS token or has ``max_new_tokens`` tokens.

        Notes
        -----
        Batched with the KV cache: the prompt is run once, its cache is
        repeated ``size`` times, and finished rows are dropped from the batch.
        Token draws use ``torch.multinomial`` on the same float64
        distribution as :meth:`log_prob`.
        """
        size = check_count(size, "size", minimum=0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputTypeError(f"generator must be None or a torch.Generator; got {generator!r}")
        if size == 0:
            return []
        cache = _new_cache(self.model.config)
        logits = self._forward(self.prompt_ids.unsqueeze(0), cache)[:, -1].expand(size, -1)
        cache.batch_repeat_interleave(size)
        out: list[list[int]] = [[] for _ in range(size)]
        rows = torch.arange(size)  # which output row each batch row fills
        for step in range(self.max_new_tokens):
            log_dist, _ = self._next_token(logits)
            tok = torch.multinomial(log_dist.exp(), 1, generator=generator).squeeze(1)
            for r, t in zip(rows.tolist(), tok.tolist(), strict=True):
                out[r].append(t)
            if step == self.max_new_tokens - 1:
                break
            go_on = ~self._is_eos(tok)
            if not bool(go_on.any()):
                break
            if not bool(go_on.all()):
                keep = go_on.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, tok = rows[keep.cpu()], tok[keep]
            logits = self._forward(tok.unsqueeze(1), cache)[:, -1]
        return [tuple(s) for s in out]

    def enumerate(self, batch_size: int = 1024) -> Enumeration:
        """Every continuation with its exact log-probability.

        Parameters
        ----------
        batch_size : int, default 1024
            Most prefixes run through the model in one forward call.

        Returns
        -------
        Enumeration
            ``sequences``: long tensor of shape (S, L), every complete
            continuation whose tokens lie in the top-k sets (all continuations
            without top_k), sorted lexicographically, padded with ``PAD`` after
            EOS; ``log_probs``: float64 tensor of shape (S,), their
            log-probabilities (``logsumexp`` is 0 up to rounding), differentiable
            w.r.t. the model parameters. Unpacks as ``sequences, log_probs``.

        Raises
        ------
        ValueError
            If the support would hold more than ``max_support`` continuations.

        Notes
        -----
        The prefix tree is walked depth by depth: each unfinished prefix is
        run through the model exactly once, as one new token on top of its
        parent's KV cache (rows of the parent cache are gathered for the
        children, ``batch_size`` at a time). Children that are EOS or reach
        ``max_new_tokens`` are finished and need no forward pass, so the model
        computes ``P + (number of unfinished prefixes)`` token positions
        instead of about ``S * (P + L)`` for running every string.

        What is enumerated: without ``top_k``, every token at every position,
        even one whose probability underflows to 0 in float64 (its log-prob
        is then ``-inf``); with ``top_k``, only the kept set at each prefix
        (ties at the k-th logit included), since every other continuation
        has probability exactly 0 and is omitted.

        Support size: without ``top_k`` (or ``top_k >= V``) it is known in
        advance, ``V**L`` without EOS and ``sum_{t<L} E (V-E)**t + (V-E)**L``
        with ``E`` EOS tokens, and checked before any forward pass. With
        ``top_k`` it depends on where EOS is kept; before each depth is run,
        the continuations found so far plus the fewest that the open prefixes
        can still produce (each keeps at least ``k`` tokens) are a lower bound
        on the support, and the walk stops as soon as that exceeds
        ``max_support``. The bound is exact at the last depth, so the output
        is never built beyond ``max_support``.
        """
        batch_size = check_count(batch_size, "batch_size")
        sequences, log_probs, _ = _walk_prefix_tree([self], batch_size, self.max_support, token_log_probs=False)
        return Enumeration(sequences, log_probs[0])

    def _enumerate_pair(
        self, reference: CausalLMPolicy, batch_size: int = 1024, max_support: int | None = None
    ) -> EnumeratedPair:
        """:func:`enumerate_pair` for two causal-LM policies: one walk of the union's prefix tree."""
        if not torch.equal(self.prompt_ids.cpu(), reference.prompt_ids.cpu()):
            raise ValueError(
                f"policy and reference have different prompts: {self.prompt_ids.tolist()} and "
                f"{reference.prompt_ids.tolist()}"
            )
        for what in ("max_new_tokens", "eos_token_ids", "vocab_size"):
            if getattr(self, what) != getattr(reference, what):
                raise ValueError(
                    f"policy and reference generate different strings: {what} is "
                    f"{getattr(self, what)} and {getattr(reference, what)}"
                )
        batch_size = check_count(batch_size, "batch_size")
        limit = max(self.max_support, reference.max_support) if max_support is None else check_count(
            max_support, "max_support"
        )
        sequences, log_probs, token_log_probs = _walk_prefix_tree(
            [self, reference], batch_size, limit, token_log_probs=True
        )
        return EnumeratedPair(
            sequences=sequences,
            token_log_probs=token_log_probs[0],
            ref_token_log_probs=token_log_probs[1].detach(),
            policy_log_probs=log_probs[0],
            ref_log_probs=log_probs[1].detach(),
            policy_model=self,
            reference_model=reference,
        )

    # ------------------------------------------------------------ helpers

    def _extend(
        self, key_values: KeyValues, parent: torch.Tensor, token: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, KeyValues]:
        """Run one new token on top of each parent's cache, in chunks.

        Parameters
        ----------
        key_values : per layer (keys, values) of shape [F, H, S, D]
        parent : long tensor of shape (F',), rows of key_values
        token : long tensor of shape (F',)

        Returns
        -------
        logits : tensor of shape (F', V), next-token logits of the children
        key_values : per layer (keys, values) of shape [F', H, S + 1, D]
        """
        logits, chunks = [], []
        for lo in range(0, len(token), batch_size):
            rows = parent[lo : lo + batch_size]
            cache = _new_cache(self.model.config, [(k[rows], v[rows]) for k, v in key_values])
            logits.append(self._forward(token[lo : lo + batch_size].unsqueeze(1), cache)[:, -1])
            chunks.append(_cache_tensors(cache))
        if len(chunks) == 1:
            return logits[0], chunks[0]
        merged = [
            (torch.cat([c[i][0] for c in chunks]), torch.cat([c[i][1] for c in chunks]))
            for i in range(len(chunks[0]))
        ]
        return torch.cat(logits), merged


def _walk_prefix_tree(
    policies: list[CausalLMPolicy], batch_size: int, max_support: int, *, token_log_probs: bool
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Enumerate the union of the policies' supports in one walk of the prefix tree.

    The policies share the prompt, ``max_new_tokens``, EOS and vocabulary; a child
    prefix is kept when it is in some policy's support: that policy's top-k sets
    keep every token of it. Each distinct model runs each
    open prefix once (policies sharing a model share its forward passes); only the
    first policy's model runs with autograd (the others' values are references).

    Returns
    -------
    sequences : long tensor of shape (S, L), sorted lexicographically, ``PAD`` after EOS
    log_probs : one float64 tensor of shape (S,) per policy; ``-inf`` outside its support
    token_log_probs : one float64 tensor of shape (S, L) per policy (0 at padding), or
        an empty list when ``token_log_probs`` is False
    """
    lead = policies[0]
    L, V, device = lead.max_new_tokens, lead.vocab_size, lead.device
    num_eos = len(lead.eos_token_ids)
    if not all(p._truncated for p in policies):
        _refuse_if_too_big(_full_support_size(V, L, num_eos), max_support, exact=True)
    else:
        k = max(p.top_k for p in policies if p.top_k is not None)
        _refuse_if_too_big(_min_leaves(0, L, k, num_eos), max_support, exact=False)

    models = {id(p.model): p for p in policies}  # one representative policy per model
    grad = {model_id: torch.is_grad_enabled() and model_id == id(lead.model) for model_id in models}
    with contextlib.ExitStack() as stack:
        for p in models.values():
            stack.enter_context(_dropout_off(p.model))
        logits, key_values = {}, {}
        for model_id, p in models.items():
            with torch.set_grad_enabled(grad[model_id]):
                cache = _new_cache(p.model.config)
                logits[model_id] = p._forward(p.prompt_ids.unsqueeze(0), cache)[:, -1]  # [1, V]
            key_values[model_id] = _cache_tensors(cache)
        prefixes = torch.zeros(1, 0, dtype=torch.long, device=device)  # [F, d]
        reachable = [torch.ones(1, dtype=torch.bool, device=device) for _ in policies]  # in p's support
        prefix_log_probs = [torch.zeros(1, dtype=torch.float64, device=device) for _ in policies]
        prefix_tokens = [torch.zeros(1, 0, dtype=torch.float64, device=device) for _ in policies]
        done_sequences: list[torch.Tensor] = []  # per depth: (n_finished, L), PAD after the end
        done_log_probs: list[list[torch.Tensor]] = [[] for _ in policies]
        done_token_log_probs: list[list[torch.Tensor]] = [[] for _ in policies]
        n_done = 0

        for depth in range(L):
            dists = [p._next_token(logits[id(p.model)]) for p in policies]  # [F, V] each
            kept_by = [kept & on[:, None] for (_, kept), on in zip(dists, reachable)]
            parent, token = functools.reduce(torch.logical_or, kept_by).nonzero(as_tuple=True)
            reachable = [kept[parent, token] for kept in kept_by]  # row-major: lexicographic
            child_token = [log_dist[parent, token] for log_dist, _ in dists]
            child_log_probs = [lp[parent] + t for lp, t in zip(prefix_log_probs, child_token)]
            last = depth + 1 == L
            finished = torch.ones_like(token, dtype=torch.bool) if last else lead._is_eos(token)
            n_finished = int(finished.sum())
            n_open = len(token) - n_finished
            if all(p._truncated for p in policies):
                bound = n_done + n_finished + n_open * _min_leaves(depth + 1, L, k, num_eos)
                _refuse_if_too_big(bound, max_support, exact=last)

            children = torch.cat([prefixes[parent], token.unsqueeze(1)], dim=1)
            done_sequences.append(torch.nn.functional.pad(children[finished], (0, L - depth - 1), value=PAD))
            for i in range(len(policies)):
                done_log_probs[i].append(child_log_probs[i][finished])
                if token_log_probs:
                    tokens_so_far = torch.cat([prefix_tokens[i][parent], child_token[i].unsqueeze(1)], dim=1)
                    done_token_log_probs[i].append(
                        torch.nn.functional.pad(tokens_so_far[finished], (0, L - depth - 1))
                    )
                    prefix_tokens[i] = tokens_so_far
            n_done += n_finished
            if last or n_open == 0:
                break

            open_ = (~finished).nonzero().squeeze(1)
            prefixes = children[open_]
            reachable = [on[open_] for on in reachable]
            prefix_log_probs = [lp[open_] for lp in child_log_probs]
            if token_log_probs:
                prefix_tokens = [t[open_] for t in prefix_tokens]
            for model_id, p in models.items():
                with torch.set_grad_enabled(grad[model_id]):
                    logits[model_id], key_values[model_id] = p._extend(
                        key_values[model_id], parent[open_], token[open_], batch_size
                    )

    # Lexicographic order of the tuples: PAD = -1 sorts below every token, so a prefix comes first.
    unsorted = torch.cat(done_sequences)
    order_index = torch.as_tensor(np.lexsort(unsorted.cpu().numpy().T[::-1]), device=device)
    sequences = unsorted[order_index]
    log_probs = [torch.cat(parts)[order_index] for parts in done_log_probs]
    per_token = [torch.cat(parts)[order_index] for parts in done_token_log_probs] if token_log_probs else []
    return sequences, log_probs, per_token


def _check_token_ids(ids: Any, name: str, vocab_size: int) -> torch.Tensor:
    """A non-empty 1-D sequence of integer token ids in [0, V) as a long tensor."""
    if isinstance(ids, torch.Tensor):
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise ValueError(f"{name} must hold integer token ids; got a tensor of dtype {ids.dtype}")
        tensor = ids.detach().to(torch.long)
    else:
        array = np.asarray(ids)
        if array.dtype.kind not in "iu" and not (
            array.dtype == object and all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in array.flat)
        ):
            raise ValueError(f"{name} must hold integer token ids; got {ids!r} (dtype {array.dtype})")
        tensor = torch.as_tensor(array.astype(np.int64))
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must be one non-empty 1-D sequence of token ids, got shape {tuple(tensor.shape)}")
    if bool(((tensor < 0) | (tensor >= vocab_size)).any()):
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}), got {tensor.tolist()}")
    return tensor


def _eos_token_ids(eos_token_id: Any, model: torch.nn.Module, vocab_size: int) -> tuple[int, ...]:
    """The EOS ids as a sorted tuple (empty for ``None``); ``"config"`` reads what ``generate`` reads."""
    if isinstance(eos_token_id, str):
        if eos_token_id != "config":
            raise ValueError(
                f"eos_token_id must be an int, a sequence of ints, None or 'config', got {eos_token_id!r}"
            )
        generation_config = getattr(model, "generation_config", None)
        eos_token_id = getattr(generation_config, "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = getattr(model.config, "eos_token_id", None)
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, numbers.Integral) and not isinstance(eos_token_id, bool):
        ids = [eos_token_id]
    elif isinstance(eos_token_id, (list, tuple)):
        ids = list(eos_token_id)
    else:
        raise InputTypeError(
            f"eos_token_id must be an int, a list of ints, None or 'config'; got {eos_token_id!r}"
        )
    if not ids:
        return ()
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= int(t) < vocab_size:
            raise ValueError(f"eos_token_id must be None or token ids in [0, {vocab_size}), got {eos_token_id!r}")
    return tuple(sorted({int(t) for t in ids}))


def _refuse_if_too_big(count: int, max_support: int, exact: bool) -> None:
    if count > max_support:
        what = f"{count}" if exact else f"at least {count}"
        raise ValueError(
            f"enumerate() would return {what} continuations, more than max_support="
            f"{max_support}; raise max_support, lower max_new_tokens or set top_k"
        )


def _continuations(sequences: Any) -> list[Continuation]:
    """Sequences of integer token ids as tuples of ints."""
    if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Iterable):
        raise InputTypeError(
            f"sequences must be a list of continuations (sequences of token ids); got {sequences!r}"
        )
    out = []
    for i, s in enumerate(sequences):
        if isinstance(s, (str, bytes)) or not isinstance(s, Iterable):
            raise InputTypeError(f"sequences[{i}] must be a sequence of integer token ids; got {s!r}")
        s = list(s.tolist() if hasattr(s, "tolist") else s)
        if not all(isinstance(t, numbers.Integral) and not isinstance(t, (bool, np.bool_)) for t in s):
            raise InputTypeError(f"sequences[{i}] must be a sequence of integer token ids; got {s!r}")
        out.append(tuple(int(t) for t in s))
    return out


def _vocab_size(model: Any) -> int:
    """Number of logits the model returns per position."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _full_support_size(V: int, L: int, num_eos: int) -> int:
    """Number of complete continuations with every token allowed (exact, Python int).

    With ``E`` EOS tokens: ``E (V-E)**t`` end at length ``t + 1 <= L`` and
    ``(V-E)**L`` reach ``L`` tokens without EOS; ``V**L`` without EOS.
    """
    if num_eos == 0:
        return V**L
    return sum(num_eos * (V - num_eos) ** t for t in range(L)) + (V - num_eos) ** L


def _min_leaves(depth: int, L: int, k: int, num_eos: int) -> int:
    """Fewest complete continuations below an open prefix of ``depth`` tokens.

    Each prefix keeps at least ``k`` tokens; the count is smallest when as many of
    them as possible, ``e = min(E, k)``, are EOS: ``m(L-1) = k``,
    ``m(d) = e + (k - e) m(d+1)``.
    """
    ended = min(num_eos, k)
    m = k
    for _ in range(L - 1 - depth):
        m = ended + (k - ended) * m
    return m
