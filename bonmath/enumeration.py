"""Enumerated supports: the strings travel with their log-probabilities.

An enumerated support is meaningful only together with the strings it is over:
position i of a log-probability array is *the probability of string i*. The types
here keep the two together, so two distributions are combined only after checking
that they describe the same strings in the same order (as ``torch.distributions``
checks compatibility before ``kl_divergence``).

- :class:`Enumeration`: what ``TabularLM.enumerate()`` and
  ``CausalLMPolicy.enumerate()`` return. It unpacks as
  ``sequences, log_probs = lm.enumerate()``.
- :class:`EnumeratedPair`: a policy and a reference on one support (the union of
  theirs), per string and per token, from :func:`enumerate_pair`.

Every core function that takes log-probabilities (``bon_log_probs``,
``kl_divergence``, ``vbon_objective``, ...) accepts an :class:`Enumeration` in place
of the array. Given two or more, it raises ``ValueError`` naming both arguments
unless they hold the same strings in the same order. Given bare arrays it trusts
the caller's alignment: the bare-array form is for users who manage alignment
themselves.

Strings are integer arrays of shape ``(..., S, T)``, padded with ``PAD = -1`` after
the end; a row of ``PAD`` only is a padding slot (a batch whose prompts have
supports of different sizes), whose log-probability is ``-inf`` in every model.

(Over 400 lines on purpose: Enumeration, EnumeratedPair and the alignment checks share
one representation of a support (padded strings, keys, positions).)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bonmath.backend import (
    NEG_INF,
    Array,
    InputTypeError,
    expectation,
    float_array,
    is_torch,
    namespace,
    real_input,
    to_numpy,
)

__all__ = ["PAD", "EnumeratedPair", "Enumeration", "check_aligned", "enumerate_pair", "string_keys"]

PAD = -1
"""Token id that pads a string after its end (after EOS)."""


def _token_ids(x: Any, name: str) -> np.ndarray:
    """``x`` (an array, or sequences of ints) checked to hold token ids: integers >= 0, or ``PAD``."""
    if is_torch(x) or isinstance(x, np.ndarray):
        array = to_numpy(x)
        if array.dtype.kind not in "iu":
            raise InputTypeError(f"{name} must hold integer token ids; got dtype {array.dtype}")
        values = array
    else:
        if x is None or isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
            raise InputTypeError(f"{name} must be an int array or a sequence of sequences of token ids; got {x!r}")
        values = np.asarray([t for s in x for t in _row(s, name)], dtype=object)
        if any(isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) for t in values):
            raise InputTypeError(f"{name} must hold integer token ids")
    if values.size and int(values.min()) < PAD:
        raise ValueError(f"{name} holds a token id below PAD = {PAD}: {int(values.min())}")
    return values


def _row(s: Any, name: str) -> list:
    if s is None or isinstance(s, (str, bytes)) or not isinstance(s, Iterable) and not hasattr(s, "tolist"):
        raise InputTypeError(f"{name} must hold sequences of token ids; got an element {s!r}")
    return s.tolist() if hasattr(s, "tolist") else list(s)


def string_keys(sequences: Array) -> list[tuple[int, ...]]:
    """Each string as a tuple of its real tokens (trailing ``PAD`` dropped).

    Parameters
    ----------
    sequences : int array of shape (S, T) padded with ``PAD``, or S sequences of int

    Raises
    ------
    ValueError
        If a padded row has a token after ``PAD``.

    Examples
    --------
    >>> string_keys(np.array([[3, 0, -1], [1, 2, 0]]))
    [(3, 0), (1, 2, 0)]
    """
    return _string_keys(sequences, "sequences")


def _string_keys(sequences: Array, name: str) -> list[tuple[int, ...]]:
    _token_ids(sequences, name)
    if is_torch(sequences) or isinstance(sequences, np.ndarray):
        array = to_numpy(sequences)
        if array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array of token ids; got shape {array.shape}")
        padded = array == PAD
        bad = np.flatnonzero((padded[:, :-1] & ~padded[:, 1:]).any(1))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]].tolist()} has a token after PAD={PAD}")
        return [tuple(row[: len(row) - n_pad]) for row, n_pad in zip(array.tolist(), padded.sum(1).tolist())]
    keys = []
    for s in sequences:
        tokens = [int(t) for t in (s.tolist() if hasattr(s, "tolist") else s)]
        while tokens and tokens[-1] == PAD:
            tokens.pop()
        keys.append(tuple(tokens))
    return keys


def string_positions(sequences: Array, name: str = "sequences") -> dict[tuple[int, ...], int]:
    """{string: position} for a support (see :func:`string_keys` for the formats).

    Raises ``ValueError`` (naming ``name``) if the support is empty or holds a string twice.
    """
    positions: dict[tuple[int, ...], int] = {}
    for i, key in enumerate(_string_keys(sequences, name)):
        if key in positions:
            raise ValueError(f"{name} holds the string {list(key)} twice (positions {positions[key]} and {i})")
        positions[key] = i
    if not positions:
        raise ValueError(f"{name} holds no strings: an enumerated support is never empty")
    return positions


def positions_of(positions: dict[tuple[int, ...], int], strings: Array, name: str = "strings") -> np.ndarray:
    """Positions of ``strings`` under :func:`string_positions`, int64 of shape (k,).

    Raises ``ValueError`` naming ``name`` and the first string that is not in the support.
    """
    keys = _string_keys(strings, name)
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        if key not in positions:
            raise ValueError(f"{name}[{i}] = {list(key)} is not in the support")
        out[i] = positions[key]
    return out


def _same_strings(a: Array, b: Array) -> bool:
    if a is b:
        return True
    if tuple(a.shape) != tuple(b.shape):
        return False
    return bool(np.array_equal(to_numpy(a), to_numpy(b)))


def check_aligned(named: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless every :class:`Enumeration` in ``named`` has the same strings.

    Values that are not enumerations (bare arrays) are skipped: their alignment is
    the caller's responsibility.

    Examples
    --------
    >>> import bonmath
    >>> support = bonmath.TabularLM.random(3, 2, rng=0).enumerate()
    >>> check_aligned({"policy": support, "reference": support})  # the same strings: no error
    >>> other = bonmath.TabularLM.random(4, 2, rng=0).enumerate()
    >>> check_aligned({"policy": support, "reference": other})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: policy and reference are enumerations of different strings ...
    """
    if not isinstance(named, dict):
        raise InputTypeError(f"named must be a dict of name -> Enumeration or array; got {named!r}")
    enumerations = [(name, e) for name, e in named.items() if isinstance(e, Enumeration)]
    for (first, a), (other, b) in zip(enumerations, enumerations[1:]):
        if not _same_strings(a.sequences, b.sequences):
            raise ValueError(
                f"{first} and {other} are enumerations of different strings (or of the same "
                f"strings in another order: shapes {tuple(a.sequences.shape)} and "
                f"{tuple(b.sequences.shape)}); enumerate both on one support with "
                "bonmath.enumerate_pair"
            )


def unwrap(named: dict[str, Any]) -> dict[str, Any]:
    """``named`` with each :class:`Enumeration` replaced by its log-probabilities, after
    :func:`check_aligned`."""
    check_aligned(named)
    return {name: e.log_probs if isinstance(e, Enumeration) else e for name, e in named.items()}


@dataclass(frozen=True, eq=False)
class Enumeration:
    """Strings and their log-probabilities under one model.

    Attributes
    ----------
    sequences : int array of shape (..., S, T)
        The strings, padded with ``PAD`` after the end (numpy, or a torch tensor for
        models with torch parameters). Leading axes are a batch (e.g. prompts).
    log_probs : float array of shape (..., S)
        Their log-probabilities (a torch tensor keeps autograd); ``-inf`` for a
        string without mass and for a padding slot.

    Notes
    -----
    Unpacks as ``sequences, log_probs = enumeration``.

    Examples
    --------
    >>> import bonmath
    >>> support = bonmath.TabularLM.random(vocab_size=3, max_len=2, rng=0).enumerate()
    >>> sequences, log_probs = support
    >>> support.lengths.tolist()
    [1, 2, 2, 2, 2, 2, 2]
    >>> support.index([[1, 2], [0]]).tolist()
    [4, 0]
    """

    sequences: Array
    log_probs: Array

    def __post_init__(self) -> None:
        _token_ids(self.sequences, "sequences")
        if not (is_torch(self.sequences) or isinstance(self.sequences, np.ndarray)):
            raise InputTypeError(f"sequences must be an int array of shape (..., S, T); got {type(self.sequences).__name__}")
        log_probs = float_array(self.log_probs, namespace(real_input(self.log_probs, "log_probs")), name="log_probs")
        if bool((log_probs != log_probs).any()) or bool((log_probs > 0).any()):
            raise ValueError("log_probs must hold log-probabilities (<= 0, not NaN)")
        object.__setattr__(self, "log_probs", log_probs)
        seq_shape, lp_shape = tuple(self.sequences.shape), tuple(self.log_probs.shape)
        if len(seq_shape) < 2 or seq_shape[:-1] != lp_shape:
            raise ValueError(
                f"sequences of shape {seq_shape} and log_probs of shape {lp_shape} do not match: "
                "sequences must have shape (..., S, T) and log_probs (..., S)"
            )

    def __iter__(self) -> Iterator[Array]:
        yield self.sequences
        yield self.log_probs

    @property
    def support_size(self) -> int:
        """S, the number of strings (padding slots included)."""
        return int(self.sequences.shape[-2])

    @property
    def lengths(self) -> Array:
        """Tokens in each string (``PAD`` excluded), int array of shape (..., S); 0 for padding."""
        return (self.sequences != PAD).sum(-1)

    def keys(self) -> list[tuple[int, ...]]:
        """Each string as a tuple of its tokens, in support order (unbatched only)."""
        self._require_unbatched("keys")
        return list(self._positions)

    def index(self, strings: Array | Iterable[Iterable[int]]) -> np.ndarray:
        """Positions of ``strings`` in the support (unbatched only).

        Parameters
        ----------
        strings : int array of shape (k, T') padded with ``PAD``, or k sequences of int

        Returns
        -------
        int64 numpy array of shape (k,)

        Raises
        ------
        ValueError
            Naming the first string that is not in the support.
        """
        self._require_unbatched("index")
        return positions_of(self._positions, strings)

    @functools.cached_property
    def _positions(self) -> dict[tuple[int, ...], int]:
        return string_positions(self.sequences)

    def _require_unbatched(self, what: str) -> None:
        if self.sequences.ndim != 2:
            raise ValueError(
                f"{what}() needs an unbatched enumeration (sequences of shape (S, T)); index the "
                f"batch first, e.g. enumeration[0]; got {tuple(self.sequences.shape)}"
            )

    def row(self, batch_index: int) -> Enumeration:
        """The enumeration of one batch row (padding slots dropped)."""
        if isinstance(batch_index, (bool, np.bool_)) or not isinstance(batch_index, (int, np.integer)):
            raise InputTypeError(f"batch_index must be an integer; got {batch_index!r}")
        if self.sequences.ndim != 3:
            raise ValueError(
                f"row() needs a batch of enumerations (sequences of shape (B, S, T)); got "
                f"{tuple(self.sequences.shape)}"
            )
        if not 0 <= batch_index < self.sequences.shape[0]:
            raise ValueError(f"batch_index must be in [0, {self.sequences.shape[0]}); got {batch_index}")
        sequences, log_probs = self.sequences[batch_index], self.log_probs[batch_index]
        real = to_numpy((sequences != PAD).any(-1))
        if not real.all():
            keep: Any = np.flatnonzero(real)
            if is_torch(sequences):
                import torch

                keep = torch.as_tensor(keep, device=sequences.device)
            sequences, log_probs = sequences[keep], log_probs[keep]
        return Enumeration(sequences, log_probs)

    @classmethod
    def stack(cls, enumerations: Sequence[Enumeration]) -> Enumeration:
        """A batch (leading axis) of unbatched enumerations with supports of any sizes.

        Smaller supports are padded with ``PAD`` strings of log-probability ``-inf``.
        """
        if isinstance(enumerations, (str, bytes)) or not isinstance(enumerations, Sequence) or not enumerations or not all(
            isinstance(e, Enumeration) for e in enumerations
        ):
            raise InputTypeError(f"enumerations must be a non-empty sequence of Enumerations; got {enumerations!r}")
        sequences = pad_and_stack([e.sequences for e in enumerations], PAD)
        log_probs = pad_and_stack([e.log_probs for e in enumerations], NEG_INF)
        return cls(sequences, log_probs)


def pad_and_stack(arrays: Sequence[Array], fill: float) -> Array:
    """Stack arrays of shape (S_i, ...) along a new axis 0, padding axis 0 to max S_i with ``fill``.

    numpy or torch (autograd kept); every array must have the same trailing shape.
    """
    if not arrays:
        raise ValueError("nothing to stack: the batch is empty")
    size = max(a.shape[0] for a in arrays)
    if all(is_torch(a) for a in arrays):
        import torch

        padded = [
            torch.cat([a, torch.full((size - a.shape[0], *a.shape[1:]), fill, dtype=a.dtype, device=a.device)])
            for a in arrays
        ]
        return torch.stack(padded)
    arrays = [to_numpy(a) for a in arrays]
    return np.stack([
        np.concatenate([a, np.full((size - a.shape[0], *a.shape[1:]), fill, dtype=a.dtype)]) for a in arrays
    ])


@dataclass(frozen=True, eq=False)
class EnumeratedPair:
    """A policy and a reference on one enumerated support, per string and per token.

    Built by :func:`enumerate_pair`: the support is the union of the two models'
    supports, so each model's log-probabilities sum to 1 over it and are ``-inf``
    where the model has no mass. Leading axes of every array are the batch
    (prompts); padding slots hold ``PAD`` strings with ``-inf`` log-probabilities.

    Attributes
    ----------
    sequences : int array of shape (..., S, T)
    token_log_probs : float tensor of shape (..., S, T)
        log π_θ(y_t | y_<t), with autograd graph; 0 at padded positions, ``-inf``
        at a token outside the policy's support.
    ref_token_log_probs : float tensor of shape (..., S, T)
        The same for π_ref (without graph).
    policy_log_probs, ref_log_probs : float tensors of shape (..., S)
        log π_θ(y) (with graph) and log π_ref(y).
    policy_model, reference_model : the models (or, for a batch, lists of them, one per row)
        Used for the token distributions, computed on first access.

    Examples
    --------
    >>> import bonmath, torch
    >>> ref = bonmath.TabularLM.random(3, 2, rng=0)
    >>> policy = bonmath.TabularLM.random(3, 2, rng=1, zero_prob=0.5)
    >>> pair = bonmath.enumerate_pair(policy, ref)
    >>> rewards = pair.lengths.astype(float)
    >>> float(bonmath.vbon_objective(pair.policy, pair.reference, rewards, n=2)) < 0
    True
    """

    sequences: Array
    token_log_probs: Array
    ref_token_log_probs: Array
    policy_log_probs: Array
    ref_log_probs: Array
    policy_model: Any = None
    reference_model: Any = None

    @property
    def mask(self) -> Array:
        """True at real tokens (EOS included), bool array of shape (..., S, T)."""
        return self.sequences != PAD

    @property
    def lengths(self) -> Array:
        """Tokens in each string, shape (..., S); 0 for padding slots."""
        return self.mask.sum(-1)

    @property
    def policy(self) -> Enumeration:
        """The policy's log-probabilities as an :class:`Enumeration` of the pair's strings."""
        return Enumeration(self.sequences, self.policy_log_probs)

    @property
    def reference(self) -> Enumeration:
        """The reference's log-probabilities as an :class:`Enumeration` of the pair's strings."""
        return Enumeration(self.sequences, self.ref_log_probs)

    def index(self, strings: Array | Iterable[Iterable[int]]) -> np.ndarray:
        """Positions of ``strings`` in the support (unbatched only); see :meth:`Enumeration.index`."""
        return self.policy.index(strings)

    def keys(self) -> list[tuple[int, ...]]:
        """Each string as a tuple of its tokens, in support order (unbatched only)."""
        return self.policy.keys()

    @property
    def token_kl(self) -> Array:
        """Analytic next-token KL(π_θ(·|y_<t) ‖ π_ref(·|y_<t)) at every position, shape (..., S, T).

        Σ_v π_θ(v) (log π_θ(v) − log π_ref(v)) with 0 log 0 = 0, with the policy's
        graph; 0 at padded positions.
        """
        dists, ref_dists = self.token_distributions, self.ref_token_distributions
        xp = namespace(dists)
        kl = expectation(dists, dists - ref_dists, xp)
        return xp.where(self.mask, kl, xp.zeros_like(kl))

    @functools.cached_property
    def token_distributions(self) -> Array:
        """log π_θ(· | y_<t) at every position, shape (..., S, T, V), with graph; 0 at padding."""
        return self._token_distributions(self.policy_model)

    @functools.cached_property
    def ref_token_distributions(self) -> Array:
        """log π_ref(· | y_<t) at every position, shape (..., S, T, V); 0 at padding."""
        return _detach(self._token_distributions(self.reference_model))

    def _token_distributions(self, model: Any) -> Array:
        if model is None:
            raise ValueError("this pair was built without its models; token distributions are unavailable")
        if self.sequences.ndim == 2:
            return model.token_distributions(self.sequences)
        rows = []
        for b, row_model in enumerate(model):
            sequences = self.sequences[b]
            real = to_numpy((sequences != PAD).any(-1))
            rows.append(row_model.token_distributions(sequences[: int(real.sum())]))
        return pad_and_stack(rows, 0.0)


def _detach(x: Array) -> Array:
    return x.detach() if is_torch(x) else x


def enumerate_pair(policy: Any, reference: Any, **kwargs: Any) -> EnumeratedPair:
    """A policy and a reference enumerated on the union of their supports.

    Parameters
    ----------
    policy, reference : TabularLM, bonmath.hf.CausalLMPolicy, or equal-length sequences of them
        Two models of the same kind that generate the same strings (the same
        vocabulary and EOS; the same prompt and ``max_new_tokens`` for causal LMs;
        top-k sets and temperatures may differ). Sequences of models (one per
        prompt) give a batch with a leading prompt axis.
    **kwargs
        Passed to the models' pair enumeration (``batch_size`` for causal LMs).

    Returns
    -------
    EnumeratedPair
        Both log-probabilities normalised over the union; ``-inf`` where a model has
        no mass, so ``vbon_objective(pair.policy, pair.reference, ...)`` is ``-inf``
        exactly when the policy has mass outside the reference's support.

    Examples
    --------
    A tabular policy with a zero-probability token and its reference, on the union of
    their supports (the policy's log-probability is -inf where it has no mass):

    >>> import numpy as np, bonmath
    >>> reference = bonmath.TabularLM.random(3, 2, rng=0)
    >>> policy = bonmath.TabularLM.random(3, 2, rng=1, zero_prob=0.3)
    >>> pair = bonmath.enumerate_pair(policy, reference)
    >>> pair.sequences.shape == (reference.num_sequences, 2)
    True
    >>> bool(np.isclose(np.exp(pair.policy.log_probs).sum(), 1.0)), bool(np.isfinite(bonmath.kl_divergence(pair.policy, pair.reference)))
    (True, True)
    """
    if isinstance(policy, (list, tuple)) or isinstance(reference, (list, tuple)):
        if not isinstance(policy, (list, tuple)) or not isinstance(reference, (list, tuple)):
            raise ValueError("policy and reference must both be models or both be sequences of models")
        if len(policy) != len(reference) or not policy:
            raise ValueError(
                f"policy and reference must list one model per prompt, the same number (at least one); "
                f"got {len(policy)} and {len(reference)}"
            )
        pairs = [enumerate_pair(p, r, **kwargs) for p, r in zip(policy, reference)]
        return EnumeratedPair(
            sequences=pad_and_stack([p.sequences for p in pairs], PAD),
            token_log_probs=pad_and_stack([p.token_log_probs for p in pairs], 0.0),
            ref_token_log_probs=pad_and_stack([p.ref_token_log_probs for p in pairs], 0.0),
            policy_log_probs=pad_and_stack([p.policy_log_probs for p in pairs], NEG_INF),
            ref_log_probs=pad_and_stack([p.ref_log_probs for p in pairs], NEG_INF),
            policy_model=list(policy),
            reference_model=list(reference),
        )
    method = getattr(policy, "_enumerate_pair", None)
    if method is None or type(policy) is not type(reference):
        raise TypeError(
            "policy and reference must both be TabularLM or both bonmath.hf.CausalLMPolicy; got "
            f"{type(policy).__name__} and {type(reference).__name__}"
        )
    return method(reference, **kwargs)
