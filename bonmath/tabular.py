"""Enumerable autoregressive language models given by a table of next-token distributions.

A :class:`TabularLM` over vocabulary {0..V-1} with an EOS token and maximum length T
has a next-token distribution for every prefix that has not ended. Its strings are
what ``generate(max_new_tokens=T)`` returns: ended by EOS (included), or T tokens
long. There are Σ_{t<T} (V-1)^t + (V-1)^T of them.

Prefixes of length t that have not ended are numbered in base V-1 (the non-EOS
tokens in increasing order, first token most significant), so the table for depth
t has shape ((V-1)^t, V) and children of prefix i are i·(V-1) + d.

Sequences are int arrays of shape (S, T) padded with ``PAD = -1`` after EOS;
:meth:`TabularLM.enumerate` returns them with their log-probabilities as a
:class:`bonmath.enumeration.Enumeration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bonmath.backend import (
    NEG_INF,
    Array,
    InputTypeError,
    detach,
    is_torch,
    is_torch_namespace,
    logsumexp,
    masked_ieee,
    namespace,
    real_input,
    to_numpy,
)
from bonmath.enumeration import PAD, EnumeratedPair, Enumeration
from bonmath.validation import check_count, check_log_probs, check_positive, check_real, check_rng


class TabularLM:
    """An enumerable autoregressive LM from next-token log-probability tables.

    Parameters
    ----------
    next_log_probs : sequence of T arrays, the t-th of shape ((V-1)**t, V)
        log p(token | prefix) for every unended prefix of length t; numpy arrays
        or torch tensors (which keep autograd: ``enumerate`` is then differentiable).
    eos_id : int
        The end-of-sequence token.

    Examples
    --------
    >>> lm = TabularLM.random(vocab_size=3, max_len=2, rng=0)
    >>> sequences, log_probs = lm.enumerate()
    >>> sequences.tolist()
    [[0, -1], [1, 0], [2, 0], [1, 1], [1, 2], [2, 1], [2, 2]]
    >>> round(float(np.exp(log_probs).sum()), 12)
    1.0
    """

    def __init__(self, next_log_probs: Sequence[Array], eos_id: int = 0):
        next_log_probs = _tables(next_log_probs, "next_log_probs")
        self.xp = namespace(*next_log_probs)
        vocab_size = next_log_probs[0].shape[-1]
        check_count(vocab_size, "vocab_size (last axis of next_log_probs)", minimum=2)
        self.eos_id = _check_eos_id(eos_id, vocab_size)
        tables = []
        for t, table in enumerate(next_log_probs):
            want = ((vocab_size - 1) ** t, vocab_size)
            if tuple(table.shape) != want:
                raise ValueError(f"next_log_probs[{t}] has shape {tuple(table.shape)}; expected {want}")
            if not is_torch(table):
                table = np.asarray(table, dtype=np.float64)
            tables.append(check_log_probs(table, f"next_log_probs[{t}]", self.xp))
        self.tables = tables
        self.vocab_size = vocab_size
        self.max_len = len(tables)
        self.continue_ids = np.array([v for v in range(vocab_size) if v != eos_id])

    @classmethod
    def from_logits(cls, logits: Sequence[Array], eos_id: int = 0) -> TabularLM:
        """The LM whose next-token distributions are softmax(logits) (torch logits keep autograd)."""
        logits = _tables(logits, "logits")
        xp = namespace(*logits)
        return cls([t - logsumexp(t, xp, keepdims=True) for t in logits], eos_id)

    @classmethod
    def random(
        cls,
        vocab_size: int,
        max_len: int,
        rng: np.random.Generator | int | None = None,
        *,
        eos_id: int = 0,
        temperature: float = 1.0,
        zero_prob: float = 0.0,
        eos_logit: float = 0.0,
        max_sequences: int = 10**7,
    ) -> TabularLM:
        """A random LM: logits ~ Normal(0, 1) / temperature, then softmax per prefix.

        Parameters
        ----------
        vocab_size, max_len : int
            V >= 2 tokens (including EOS) and maximum length T >= 1.
        rng : numpy.random.Generator, int or None, default None
            Source of the logits: a Generator, a seed >= 0, or None (fresh entropy).
        temperature : float
            Lower is peakier.
        zero_prob : float in [0, 1)
            Each (prefix, token) probability is set to exactly 0 with this chance
            (one token per prefix always keeps mass): zero-mass strings on purpose.
        eos_logit : float
            Added to the EOS logit (higher: shorter strings).
        max_sequences : int
            Refuse (``ValueError``) LMs with more strings than this.
        """
        vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
        max_len = check_count(max_len, "max_len", minimum=1)
        eos_id = _check_eos_id(eos_id, vocab_size)
        temperature = check_positive(temperature, "temperature")
        if not 0.0 <= check_real(zero_prob, "zero_prob") < 1.0:
            raise ValueError(f"zero_prob must lie in [0, 1); got {zero_prob}")
        eos_logit = check_real(eos_logit, "eos_logit")
        max_sequences = check_count(max_sequences, "max_sequences")
        count = num_sequences(vocab_size, max_len)
        if count > max_sequences:
            raise ValueError(f"the LM would have {count} strings, more than max_sequences={max_sequences}")
        rng = check_rng(rng)
        logits = []
        for t in range(max_len):
            table = rng.standard_normal(((vocab_size - 1) ** t, vocab_size)) / temperature
            table[:, eos_id] += eos_logit
            if zero_prob > 0:
                zero = rng.random(table.shape) < zero_prob
                zero[np.arange(table.shape[0]), rng.integers(vocab_size, size=table.shape[0])] = False
                table[zero] = NEG_INF
            logits.append(table)
        return cls.from_logits(logits, eos_id)

    @property
    def num_sequences(self) -> int:
        """The number of strings, Σ_{t<T} (V-1)^t + (V-1)^T."""
        return num_sequences(self.vocab_size, self.max_len)

    def _prefix_tokens(self, depth: int) -> np.ndarray:
        """Token ids of every unended prefix of length ``depth``, shape ((V-1)^depth, depth)."""
        base = self.vocab_size - 1
        index = np.arange(base**depth)
        powers = base ** np.arange(depth - 1, -1, -1)
        return self.continue_ids[(index[:, None] // powers) % base]

    @masked_ieee
    def enumerate(self) -> Enumeration:
        """Every string with its exact log-probability, depth by depth.

        Returns
        -------
        Enumeration
            ``sequences``, an int array of shape (S, T): strings ended by EOS (in
            order of length), then the T-token strings, padded with ``PAD`` after
            EOS; zero-probability strings are included, so every TabularLM with
            the same vocabulary, EOS and length enumerates the same strings in the
            same order. ``log_probs``, shape (S,): exact log-probabilities
            (differentiable for torch tables); they sum to 1. Unpacks as
            ``sequences, log_probs``.
        """
        xp = self.xp
        cont = self._index(self.continue_ids)
        sequences, log_probs = [], []
        prefix_log_probs = self._zeros(1)  # log 1 for the empty prefix
        for depth, table in enumerate(self.tables):
            log_probs.append(prefix_log_probs + table[:, self.eos_id])
            sequences.append(self._pad(np.column_stack([
                self._prefix_tokens(depth), np.full(table.shape[0], self.eos_id)
            ]).astype(np.int64)))
            prefix_log_probs = xp.reshape(prefix_log_probs[:, None] + table[:, cont], (-1,))
        log_probs.append(prefix_log_probs)
        sequences.append(self._prefix_tokens(self.max_len).astype(np.int64))
        return Enumeration(self._index(np.concatenate(sequences)), xp.concat(log_probs))

    def _enumerate_pair(self, reference: TabularLM) -> EnumeratedPair:
        """:func:`bonmath.enumerate_pair` for two TabularLMs: both enumerate every string."""
        for what in ("vocab_size", "max_len", "eos_id"):
            if getattr(self, what) != getattr(reference, what):
                raise ValueError(
                    f"policy and reference generate different strings: {what} is "
                    f"{getattr(self, what)} and {getattr(reference, what)}"
                )
        if is_torch_namespace(self.xp) != is_torch_namespace(reference.xp):
            raise ValueError(
                "policy and reference must both have numpy tables or both torch tables "
                "(e.g. TabularLM([torch.as_tensor(t) for t in lm.tables], lm.eos_id))"
            )
        sequences, policy_log_probs = self.enumerate()
        ref_log_probs = reference.enumerate().log_probs
        token_log_probs, _ = self.token_log_probs(sequences)
        ref_token_log_probs, _ = reference.token_log_probs(sequences)
        return EnumeratedPair(
            sequences=sequences,
            token_log_probs=token_log_probs,
            ref_token_log_probs=detach(ref_token_log_probs),
            policy_log_probs=policy_log_probs,
            ref_log_probs=detach(ref_log_probs),
            policy_model=self,
            reference_model=reference,
        )

    def _pad(self, tokens: np.ndarray) -> np.ndarray:
        return np.pad(tokens, ((0, 0), (0, self.max_len - tokens.shape[1])), constant_values=PAD)

    def _index(self, index: np.ndarray) -> Array:
        """A numpy int array as an index of the tables' kind (and device)."""
        if is_torch_namespace(self.xp):
            import torch

            return torch.as_tensor(index, device=self.tables[0].device)
        return index

    def _zeros(self, size: int) -> Array:
        """Zeros of the tables' kind, dtype and device."""
        table = self.tables[0]
        if is_torch_namespace(self.xp):
            return self.xp.zeros(size, dtype=table.dtype, device=table.device)
        return np.zeros(size)

    def _check_sequences(self, sequences: Array) -> np.ndarray:
        seq = np.asarray(sequences.detach().cpu() if is_torch(sequences) else sequences)
        if seq.ndim != 2 or seq.shape[1] > self.max_len or seq.shape[1] == 0:
            raise ValueError(
                f"sequences must have shape (S, L) with 1 <= L <= max_len={self.max_len}; got {seq.shape}"
            )
        if not np.issubdtype(seq.dtype, np.integer):
            raise ValueError(f"sequences must hold integer token ids; got dtype {seq.dtype}")
        seq = self._pad(seq)
        if ((seq < PAD) | (seq >= self.vocab_size)).any():
            raise ValueError(f"sequences hold token ids outside [0, {self.vocab_size}) other than PAD={PAD}")
        is_eos = seq == self.eos_id
        ended_before = np.cumsum(is_eos, axis=1) - is_eos > 0
        if (ended_before & (seq != PAD)).any():
            raise ValueError("sequences continue after EOS (only PAD may follow EOS)")
        if ((seq == PAD) & ~ended_before).any():
            raise ValueError(f"sequences hold PAD before EOS; a string without EOS must have max_len={self.max_len} tokens")
        return seq

    def _prefix_rows(self, seq: np.ndarray) -> np.ndarray:
        """Table row of every position's prefix, shape (S, T), for checked padded
        sequences; 0 at padded positions."""
        base = self.vocab_size - 1
        rows = np.zeros(seq.shape, dtype=np.int64)
        prefix = np.zeros(seq.shape[0], dtype=np.int64)
        for depth in range(self.max_len):
            token = seq[:, depth]
            active = token != PAD
            rows[:, depth] = np.where(active, prefix, 0)
            digit = np.searchsorted(self.continue_ids, np.where(active, token, 0))
            prefix = np.where(active & (token != self.eos_id), prefix * base + digit, 0)
        return rows

    @masked_ieee
    def log_prob(self, sequences: Array) -> Array:
        """Exact log-probability of each string.

        Parameters
        ----------
        sequences : int array of shape (S, L), L <= T
            Strings in the format of :meth:`enumerate` (PAD after EOS).

        Returns
        -------
        array of shape (S,)
        """
        seq = self._check_sequences(sequences)
        rows = self._prefix_rows(seq)
        total = self._zeros(seq.shape[0])
        for depth, table in enumerate(self.tables):
            active = np.flatnonzero(seq[:, depth] != PAD)
            step = table[self._index(rows[active, depth]), self._index(seq[active, depth])]
            total = total + self._scatter(step, active, seq.shape[0])
        return total

    def token_distributions(self, sequences: Array) -> Array:
        """Next-token log-distributions at every position of each string.

        The tabular counterpart of ``CausalLMPolicy.token_distributions``.

        Parameters
        ----------
        sequences : int array of shape (S, L), L <= T
            Strings in the format of :meth:`enumerate` (PAD after EOS).

        Returns
        -------
        array of shape (S, T, V)
            Row [i, t] is log π(· | y_i[:t]); rows at padded positions hold 0.
            Differentiable for torch tables.
        """
        seq = self._check_sequences(sequences)
        rows = self._prefix_rows(seq)
        dists = self.xp.stack([table[self._index(rows[:, t])] for t, table in enumerate(self.tables)], axis=1)
        return self.xp.where(self._index(seq != PAD)[..., None], dists, 0.0)

    def token_log_probs(self, sequences: Array) -> tuple[Array, Array]:
        """Per-token log-probabilities of each string, and the mask of real tokens.

        The tabular counterpart of ``CausalLMPolicy.token_log_probs``.

        Returns
        -------
        token_log_probs : array of shape (S, T)
            log π(y_t | y_<t); 0 at padded positions. Differentiable for torch tables.
        mask : bool array of shape (S, T)
            True at real tokens (EOS included).

        Examples
        --------
        >>> lm = TabularLM.random(3, 2, rng=0)
        >>> values, mask = lm.token_log_probs([[0, -1], [1, 2]])
        >>> bool(np.allclose(values.sum(-1), lm.log_prob([[0, -1], [1, 2]])))
        True
        """
        seq = self._check_sequences(sequences)
        dists = self.token_distributions(seq)
        mask = self._index(seq != PAD)
        tokens = self._index(np.where(seq == PAD, 0, seq))
        values = self.xp.take_along_axis(dists, tokens[..., None], axis=-1)[..., 0]
        return self.xp.where(mask, values, 0.0), mask

    def _scatter(self, values: Array, rows: np.ndarray, size: int) -> Array:
        """A length-``size`` vector with ``values`` at ``rows`` and zeros elsewhere."""
        if is_torch_namespace(self.xp):
            return self._zeros(size).index_put((self._index(rows),), values)
        out = self._zeros(size)
        out[rows] = values
        return out

    def sample(self, size: int, rng: np.random.Generator | int | None = None) -> Array:
        """``size`` i.i.d. strings, shape (size, T), PAD after EOS.

        Examples
        --------
        >>> TabularLM.random(3, 2, rng=0).sample(4, rng=1).shape
        (4, 2)
        """
        size = check_count(size, "size", minimum=0)
        rng = check_rng(rng)
        base = self.vocab_size - 1
        out = np.full((size, self.max_len), PAD, dtype=np.int64)
        prefix = np.zeros(size, dtype=np.int64)
        alive = np.ones(size, dtype=bool)
        for depth, table in enumerate(self.tables):
            rows = np.flatnonzero(alive)
            probs = np.exp(to_numpy(table)[prefix[rows]])
            cumulative = np.cumsum(probs, axis=1)
            u = rng.random(rows.size) * cumulative[:, -1]
            token = (cumulative <= u[:, None]).sum(axis=1)
            out[rows, depth] = token
            ended = token == self.eos_id
            alive[rows[ended]] = False
            prefix[rows] = prefix[rows] * base + np.searchsorted(self.continue_ids, token)
        return self._index(out)


def _tables(tables: Any, name: str) -> list[Array]:
    """A non-empty sequence of 2-D real arrays (tensors kept, anything else as numpy)."""
    if not isinstance(tables, Sequence) or isinstance(tables, str) or len(tables) == 0:
        raise InputTypeError(f"{name} must be a non-empty list of arrays (one per depth); got {tables!r}")
    out = [real_input(table, f"{name}[{t}]") for t, table in enumerate(tables)]
    for t, table in enumerate(out):
        if table.ndim != 2:
            raise ValueError(f"{name}[{t}] must be a 2-D table; got shape {tuple(table.shape)}")
    return out


def _check_eos_id(eos_id: Any, vocab_size: int) -> int:
    eos_id = check_count(eos_id, "eos_id", minimum=0)
    if eos_id >= vocab_size:
        raise ValueError(f"eos_id {eos_id} is outside the vocabulary of size {vocab_size}")
    return eos_id


def num_sequences(vocab_size: int, max_len: int) -> int:
    """Σ_{t<T} (V-1)^t + (V-1)^T: the strings of an LM with V tokens (EOS included) and length T."""
    base = vocab_size - 1
    return sum(base**t for t in range(max_len)) + base**max_len

