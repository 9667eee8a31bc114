"""Input validation: every public function checks its arguments here.

Bad input raises ``ValueError`` naming the argument and the problem; a wrong type
raises :class:`~bonmath.backend.InputTypeError`, which is both a ``TypeError`` and a
``ValueError``. Nothing is clipped, cast lossily or renormalised silently;
renormalisation is the explicit ``normalize=True``. The rules, once for every function:

* **Arrays.** Log-probabilities and other real arrays: floating or integer dtypes
  (integers are exact up to 2^53; beyond, ``ValueError``). numpy input computes in
  float64; a floating torch tensor keeps its dtype (float16, bfloat16, float32,
  float64) and autograd. None, strings (numeric strings too), booleans, complex
  numbers and object arrays of anything but real numbers are refused.
* **Rewards** may also be boolean (False < True, as 0 and 1). Where only their order
  matters (the BoN law, the CDF, win rates, ...) integers are ordered exactly at any
  size: int64, uint64, or Python ints beyond int64, which are replaced by their dense
  rank before the float path. Where rewards are used as numbers (E[r], the tilt,
  soft BoN's weights) integers beyond 2^53 raise ``ValueError``.
* **Infinite rewards.** Where only the order matters, ±inf are ordered like numbers
  and equal infinities tie. Where rewards are used as numbers, a reward on a string
  of zero mass is never used (0 · r = 0, as in :func:`~bonmath.backend.expectation`);
  on a string with mass, each function documents which infinities it accepts
  (:func:`check_reward_numbers`).
* **Empty batch, empty support.** A leading (batch) axis of length 0 is legal: the
  result is the empty result of the right shape and dtype (functions without batch
  axes refuse it). An empty support (last axis of length 0) raises ``ValueError``
  naming the argument.
* **Scalars** (n, β, λ, ...): real numbers (Python or numpy), never booleans or
  strings; NaN and ±inf are refused unless a function documents them (e.g. α = inf).
  Options are checked against their allowed values; flags must be booleans; ``rng``
  is None, a non-negative int seed or a numpy Generator (:func:`check_rng`).
* **Tensors.** The torch-only modules (estimators) convert nothing: they check
  dtypes, values and named axes with :func:`check_tensor` and :func:`check_dims`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from bonmath.backend import (
    NEG_INF,
    Array,
    InputTypeError,
    float_array,
    has_inexact_integers,
    is_torch,
    log_normaliser,
    logsumexp,
    namespace,
    real_input,
    to_float,
    to_numpy,
    value_array,
)
from bonmath.enumeration import unwrap


def normalization_tolerance(dtype) -> float:
    """Largest |log Σ p| accepted as normalised: sqrt(machine epsilon) of ``dtype``.

    1.5e-8 for float64, 3.5e-4 for float32 and 0.088 for bfloat16: loose enough for
    sums over 10^7 strings, tight enough to catch a missing normalisation.
    """
    if "torch" in str(dtype):
        import torch

        return math.sqrt(torch.finfo(dtype).eps)
    return math.sqrt(float(np.finfo(dtype).eps))


def _any(mask: Array) -> bool:
    return bool(mask.any())


def _is_empty(x: Array) -> bool:
    return math.prod(x.shape) == 0


def check_log_probs(x: Array, name: str, xp, *, normalize: bool = False) -> Array:
    """Validate log-probabilities over the last axis and return them (renormalised on request).

    Raises ``ValueError`` for: a 0-d or empty support, NaN, +inf, a row with no
    mass, or (unless ``normalize``) a row whose probabilities do not sum to 1
    within :func:`normalization_tolerance`. An empty batch passes.
    """
    check_values(x, name, xp)
    if _any(x == math.inf):
        raise ValueError(f"{name} contains +inf; log-probabilities must be <= 0")
    if _is_empty(x):
        return x
    log_total = logsumexp(x, xp, keepdims=True)
    if _any(log_total == NEG_INF):
        raise ValueError(f"{name} has a row with no mass (every entry is -inf)")
    if normalize:
        return x - log_normaliser(x, xp)
    tolerance = normalization_tolerance(x.dtype)
    worst = to_float(xp.max(xp.abs(log_total)))
    if worst > tolerance:
        log_sum = to_float(log_total.reshape(-1)[int(to_float(xp.argmax(xp.abs(log_total))))])
        total = f"{math.exp(log_sum):.10g}" if log_sum < 709 else f"e^{log_sum:.6g}"  # exp overflows beyond
        raise ValueError(
            f"{name} does not normalise: its probabilities sum to {total} on this support "
            f"(|log sum| = {worst:.3g} > tolerance {tolerance:.2g}). If the model has mass outside "
            "this support (e.g. a policy evaluated on the reference's strings), KL to it and the "
            "vBoN objective J are infinite: enumerate both models on the union of their supports "
            "with bonmath.enumerate_pair. normalize=True renormalises over this support, which "
            "is a different distribution."
        )
    return x


def check_log_values(x: Array, name: str, xp) -> Array:
    """Log-probabilities that need not sum to 1 (a CDF, a level mass): no NaN, none above 0."""
    if _any(xp.isnan(x)) or _any(x > 0):
        raise ValueError(f"{name} must hold log-probabilities (<= 0, not NaN)")
    return x


def check_values(x: Array, name: str, xp, *, finite: bool = False) -> Array:
    """Validate rewards (or other values on the support): no NaN; no ±inf if ``finite``."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have a support axis (the last axis); got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty support (last axis of length 0)")
    if _any(xp.isnan(x)):
        raise ValueError(f"{name} contains NaN")
    if finite and _any(xp.isinf(x)):
        raise ValueError(f"{name} must be finite here; it contains ±inf")
    return x


def check_reward_numbers(
    rewards: Array, log_probs: Array, name: str, xp, *, allow: tuple[float, ...] = (NEG_INF,), why: str = ""
) -> Array:
    """Rewards used as numbers under the weights e^log_probs (validated and broadcast).

    An infinite reward not in ``allow`` on a string of positive mass raises
    ``ValueError`` (``why`` says what it would break). Rewards on zero-mass strings
    are never used (0 · r = 0): they come back as 0, so no -inf + inf can arise.
    """
    zero_mass = log_probs == NEG_INF
    if _any(xp.isinf(rewards)):
        for infinity, written in ((math.inf, "+inf"), (NEG_INF, "-inf")):
            if infinity not in allow and _any((rewards == infinity) & ~zero_mass):
                raise ValueError(f"{name} is {written} at a string with mass{why}")
    return xp.where(zero_mass, 0.0, rewards) if _any(zero_mass) else rewards


def broadcast_support(arrays: dict[str, Array], xp) -> list[Array]:
    """Broadcast arrays over their leading (batch) axes; their supports must match."""
    sizes = {name: a.shape[-1] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{n} has {s}" for n, s in sizes.items())
        raise ValueError(f"support sizes (last axis) differ: {described}")
    return broadcast_batch(arrays, xp)


def broadcast_batch(arrays: dict[str, Array], xp) -> list[Array]:
    """Broadcast arrays against each other, naming them when their shapes do not broadcast."""
    try:
        return list(xp.broadcast_arrays(*arrays.values()))
    except (ValueError, RuntimeError) as err:
        shapes = ", ".join(f"{n}{tuple(a.shape)}" for n, a in arrays.items())
        raise ValueError(f"batch shapes do not broadcast: {shapes}") from err


def check_real(value: Any, name: str) -> float:
    """A finite real scalar (a Python or numpy number; not a bool, a string or an array)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a real number; got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{name} must be finite; got an integer of {value.bit_length()} bits") from None
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def check_positive(value: Any, name: str, *, minimum: float = 0.0, inclusive: bool = False) -> float:
    """A real scalar that is finite and > ``minimum`` (>= with ``inclusive``)."""
    value = check_real(value, name)
    if value < minimum or (value == minimum and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {relation} {minimum:g}; got {value:g}")
    return value


def check_n(n: Any, name: str = "n") -> float:
    """The number of BoN samples: any finite real n > 0."""
    return check_positive(n, name)


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (a Python or numpy int; not a bool or a float)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_choice(value: Any, name: str, allowed: tuple[Any, ...]) -> Any:
    """One of ``allowed`` (strings, and None where allowed lists it)."""
    if not any(value is a or (isinstance(value, str) and value == a) for a in allowed):
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
    return value


def check_flag(value: Any, name: str) -> bool:
    """A boolean (Python or numpy); a string, a number or None is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_rng(rng: Any, name: str = "rng") -> np.random.Generator:
    """A numpy Generator from ``rng``: None (fresh entropy), a non-negative int seed, or a
    ``numpy.random.Generator`` (used as is: its state advances)."""
    if rng is None or isinstance(rng, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise InputTypeError(f"{name} must be None, an int seed >= 0 or a numpy.random.Generator; got {rng!r}")
    if rng < 0:
        raise ValueError(f"{name} must be a seed >= 0; got {rng}")
    return np.random.default_rng(int(rng))


def check_tensor(
    x: Any, name: str, kind: str = "float", *, finite: bool = False, log_probs: bool = False
) -> Any:
    """A torch tensor of ``kind`` "float" (real floating; never NaN, no ±inf with
    ``finite``, nothing above 0 with ``log_probs``), "int" or "bool": for the
    torch-only modules (estimators), which take tensors and convert nothing."""
    if not is_torch(x):
        raise InputTypeError(f"{name} must be a torch tensor; got {type(x).__name__}")
    import torch

    have = "bool" if x.dtype == torch.bool else "float" if x.is_floating_point() else (
        "complex" if x.is_complex() else "int")
    if have != kind:
        wanted = {"float": "floating", "int": "integer", "bool": "boolean"}[kind]
        raise InputTypeError(f"{name} must be a {wanted} torch tensor; got dtype {x.dtype}")
    if kind == "float":
        if _any(torch.isnan(x)):
            raise ValueError(f"{name} contains NaN")
        if finite and _any(torch.isinf(x)):
            raise ValueError(f"{name} must be finite; it contains ±inf")
        if log_probs and _any(x > 0):
            raise ValueError(f"{name} must hold log-probabilities (<= 0); an entry is above 0")
    return x


def check_parameters(params: Any, name: str = "params") -> list:
    """A non-empty list (or tuple) of torch tensors that require gradients."""
    if not isinstance(params, (list, tuple)) or not params or not all(is_torch(p) and p.requires_grad for p in params):
        raise InputTypeError(f"{name} must be a non-empty list of tensors with requires_grad; got {params!r}")
    return list(params)


def check_one_dtype(arrays: dict[str, Any]) -> None:
    """Tensors that are combined must share one dtype (torch does not promote in matmul)."""
    if len({a.dtype for a in arrays.values()}) > 1:
        dtypes = ", ".join(f"{name} {a.dtype}" for name, a in arrays.items())
        raise ValueError(f"{', '.join(arrays)} must share one dtype; got {dtypes}")


def check_dims(arrays: dict[str, tuple[Any, str]]) -> dict[str, int]:
    """Check arrays against named axes, ``{"probs": (probs, "S"), "s": (s, "S P")}``.

    Each array must have one axis per symbol; a symbol takes its size from the first
    array that has it, and every later one must agree. Returns the sizes.
    """
    sizes: dict[str, tuple[int, str]] = {}
    for name, (a, axes) in arrays.items():
        symbols = axes.split()
        if a.ndim != len(symbols):
            raise ValueError(f"{name} must have shape ({', '.join(symbols)}); got {tuple(a.shape)}")
        for symbol, size in zip(symbols, a.shape):
            known, source = sizes.setdefault(symbol, (size, name))
            if known != size:
                raise ValueError(
                    f"{name} has shape {tuple(a.shape)}: its {symbol} = {size} differs from "
                    f"{source}'s {symbol} = {known}"
                )
    return {symbol: size for symbol, (size, _) in sizes.items()}


def reward_arrays(values: dict[str, Any], xp, like: Any = None, *, as_numbers: bool = False) -> list[Array]:
    """Convert the reward arrays of one call (see the module docstring, "Rewards").

    With ``as_numbers`` False only their order is used: integers beyond 2^53 are
    replaced by their dense rank over all the arrays together (so comparisons between
    the arrays stay exact). With ``as_numbers`` they raise ``ValueError``.
    """
    arrays = {name: real_input(value, name, allow_bool=True) for name, value in values.items()}
    if not as_numbers and any(has_inexact_integers(a) for a in arrays.values()):
        arrays = dict(zip(arrays, _dense_ranks(arrays)))
    return [value_array(a, xp, like, name=name) for name, a in arrays.items()]


def _dense_ranks(arrays: dict[str, Array]) -> list[Array]:
    """The dense rank of every entry over all ``arrays`` together, as float64 (exact below
    2^53 distinct values), each shaped (and, for a tensor, placed) like its array."""
    host = {name: to_numpy(a) for name, a in arrays.items()}
    if len({a.dtype for a in host.values()}) > 1:  # e.g. int64 with uint64: compare as Python numbers
        host = {name: a.astype(object) for name, a in host.items()}
    for name, a in host.items():
        if a.dtype.kind in "fO" and any(v != v for v in a.flat):
            raise ValueError(f"{name} contains NaN")
    _, rank = np.unique(np.concatenate([a.reshape(-1) for a in host.values()]), return_inverse=True)
    out: list[Array] = []
    start = 0
    for original, a in zip(arrays.values(), host.values()):
        ranks: Array = rank[start : start + a.size].reshape(a.shape).astype(np.float64)
        start += a.size
        if is_torch(original):
            import torch

            ranks = torch.as_tensor(ranks, device=original.device)
        out.append(ranks)
    return out


def prepare(
    log_probs: dict[str, Any],
    rewards: dict[str, Any] | None = None,
    *,
    normalize: bool = False,
    finite_rewards: bool = False,
    rewards_as_numbers: bool = False,
):
    """Convert, validate and broadcast the log-probabilities and rewards of one call.

    Log-probabilities may be :class:`bonmath.Enumeration` s; their strings must
    agree (:func:`bonmath.enumeration.check_aligned`). ``rewards_as_numbers``: the
    function uses the rewards' values, not only their order (integers beyond 2^53 are
    refused, not ranked); ``finite_rewards`` implies it and refuses ±inf. Returns
    ``(xp, arrays)`` with the arrays in the order given (log-probs first).
    """
    normalize = check_flag(normalize, "normalize")
    rewards = rewards or {}
    log_probs = unwrap(log_probs)
    xp = namespace(*log_probs.values(), *rewards.values())
    like = next((a for a in log_probs.values() if _is_float_tensor(a)), None)
    checked = {}
    for name, value in log_probs.items():
        checked[name] = check_log_probs(float_array(value, xp, like, name=name), name, xp, normalize=normalize)
    converted = reward_arrays(rewards, xp, like, as_numbers=rewards_as_numbers or finite_rewards)
    for name, value in zip(rewards, converted):
        checked[name] = check_values(value, name, xp, finite=finite_rewards)
    return xp, broadcast_support(checked, xp)


def _is_float_tensor(a: Any) -> bool:
    """True for a floating torch tensor: the dtype and device other inputs follow."""
    return is_torch(a) and a.is_floating_point()
