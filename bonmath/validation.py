"""Input validation: every public function checks its arguments here.

Bad input raises ``ValueError`` naming the argument and the problem. Nothing is
clipped or renormalised silently; renormalisation is the explicit ``normalize=True``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from bonmath.backend import (
    NEG_INF,
    Array,
    float_array,
    is_torch,
    logsumexp,
    namespace,
    to_float,
    value_array,
)
from bonmath.enumeration import unwrap


def normalization_tolerance(dtype) -> float:
    """Largest |log Σ p| accepted as normalised: sqrt(machine epsilon) of ``dtype``.

    1.5e-8 for float64 and 3.5e-4 for float32: loose enough for sums over 10^7
    strings, tight enough to catch a missing normalisation.
    """
    return math.sqrt(float(np.finfo(str(dtype).replace("torch.", "")).eps))


def _any(mask: Array) -> bool:
    return bool(mask.any())


def check_log_probs(x: Array, name: str, xp, *, normalize: bool = False) -> Array:
    """Validate log-probabilities over the last axis and return them (renormalised on request).

    Raises ``ValueError`` for: a 0-d or empty support, NaN, +inf, a row with no
    mass, or (unless ``normalize``) a row whose probabilities do not sum to 1
    within :func:`normalization_tolerance`.
    """
    check_values(x, name, xp)
    if _any(x == math.inf):
        raise ValueError(f"{name} contains +inf; log-probabilities must be <= 0")
    log_total = logsumexp(x, xp, keepdims=True)
    if _any(log_total == NEG_INF):
        raise ValueError(f"{name} has a row with no mass (every entry is -inf)")
    if normalize:
        return x - log_total
    tolerance = normalization_tolerance(x.dtype)
    worst = to_float(xp.max(xp.abs(log_total)))
    if worst > tolerance:
        total = math.exp(to_float(log_total.reshape(-1)[int(to_float(xp.argmax(xp.abs(log_total))))]))
        raise ValueError(
            f"{name} does not normalise: its probabilities sum to {total:.10g} on this support "
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


def broadcast_support(arrays: dict[str, Array], xp) -> list[Array]:
    """Broadcast arrays over their leading (batch) axes; their supports must match."""
    names = list(arrays)
    sizes = {name: a.shape[-1] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{n} has {s}" for n, s in sizes.items())
        raise ValueError(f"support sizes (last axis) differ: {described}")
    try:
        return list(xp.broadcast_arrays(*arrays.values()))
    except (ValueError, RuntimeError) as err:
        shapes = ", ".join(f"{n}{tuple(arrays[n].shape)}" for n in names)
        raise ValueError(f"batch shapes do not broadcast: {shapes}") from err


def check_positive(value: Any, name: str, *, minimum: float = 0.0, inclusive: bool = False) -> float:
    """A real scalar that is finite and > ``minimum`` (>= with ``inclusive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if value < minimum or (value == minimum and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {relation} {minimum:g}; got {value:g}")
    return value


def check_n(n: Any, name: str = "n") -> float:
    """The number of BoN samples: any finite real n > 0."""
    return check_positive(n, name)


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
    return value


def prepare(
    log_probs: dict[str, Any],
    rewards: dict[str, Any] | None = None,
    *,
    normalize: bool = False,
    finite_rewards: bool = False,
):
    """Convert, validate and broadcast the log-probabilities and rewards of one call.

    Log-probabilities may be :class:`bonmath.Enumeration` s; their strings must
    agree (:func:`bonmath.enumeration.check_aligned`). Returns ``(xp, arrays)`` with
    the arrays in the order given (log-probs first).
    """
    rewards = rewards or {}
    log_probs = unwrap(log_probs)
    xp = namespace(*log_probs.values(), *rewards.values())
    like = next((a for a in log_probs.values() if _is_float_tensor(a)), None)
    checked = {}
    for name, value in log_probs.items():
        checked[name] = check_log_probs(float_array(value, xp, like), name, xp, normalize=normalize)
    for name, value in rewards.items():
        checked[name] = check_values(value_array(value, xp, like), name, xp, finite=finite_rewards)
    return xp, broadcast_support(checked, xp)


def _is_float_tensor(a: Any) -> bool:
    """True for a floating torch tensor: the dtype and device other inputs follow."""
    return is_torch(a) and a.is_floating_point()
