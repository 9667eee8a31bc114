"""Array backends (numpy or torch) and the log-space primitives every formula uses.

Every formula in bonmath is written once against an array namespace ``xp`` obtained
from :func:`namespace`. numpy inputs compute in float64; torch inputs keep their
device and dtype and stay differentiable. torch is never imported by this module:
a tensor is recognised through ``array_api_compat`` without importing torch.

The primitives below differ from their textbook versions in one way: they are
*gradient-safe at -inf*. A log-probability of -inf (a string with zero mass) is an
ordinary input in bonmath, and torch's own ``logsumexp``/``logcumsumexp``/``logaddexp``
return NaN gradients when every term is -inf. Each primitive here returns the same
values and finite gradients (zero for the -inf entries).

(Over 400 lines on purpose: the one array-namespace layer every module imports: each
log-space primitive is written once, here, so splitting it would only scatter them.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import array_api_compat
import numpy as np

Array = Any
"""A numpy array or a torch tensor."""

F = TypeVar("F", bound=Callable[..., Any])


def masked_ieee(func: F) -> F:
    """Silence numpy's floating-point warnings inside ``func``.

    bonmath evaluates both branches of ``where(mask, a, b)`` and then discards the
    masked one (the only way to keep torch gradients finite at -inf), so numpy
    would warn about log(0) or inf - inf in values that never reach the result.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

NEG_INF = -math.inf
LOG_HALF = -math.log(2.0)


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (without importing torch)."""
    return array_api_compat.is_torch_array(x)


def namespace(*arrays: Any):
    """The array namespace for ``arrays``: torch's if any of them is a tensor, else numpy's."""
    for a in arrays:
        if is_torch(a):
            return array_api_compat.array_namespace(a)
    return array_api_compat.array_namespace(np.empty(0))


MAX_EXACT_INTEGER = 2**53
"""Integers up to this magnitude are exact in float64 (2^53 + 1 is not)."""


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type or dtype (a string, None, a complex or object array).

    Both a ``TypeError`` and a ``ValueError`` (as numpy's ``AxisError`` is both a
    ``ValueError`` and an ``IndexError``), so ``except ValueError`` still catches every
    bad input bonmath refuses.
    """


def real_input(x: Any, name: str, *, allow_bool: bool = False) -> Array:
    """``x`` as a numpy array or torch tensor of real numbers, checked but not cast.

    Accepted: floating and integer dtypes (and bool with ``allow_bool``). Python ints
    beyond float64's exact range (2^53), which numpy would store as an object array or
    round to float64, come back as an object array of exact Python numbers. Raises
    :class:`InputTypeError` naming ``name`` for None, strings, complex numbers and any
    other object, ``ValueError`` for ragged nested lists.
    """
    if is_torch(x):
        import torch

        if x.is_complex() or (x.dtype == torch.bool and not allow_bool):
            raise InputTypeError(f"{name} must hold real numbers; got a tensor of dtype {x.dtype}")
        return x
    if x is None or isinstance(x, (str, bytes)):
        raise InputTypeError(f"{name} must be an array of real numbers; got {x!r}")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be a rectangular array of real numbers ({err})") from None
    if a.dtype.kind == "O" or (
        a.dtype.kind == "f" and not isinstance(x, (np.ndarray, np.generic)) and a.size
        and bool(np.any(np.abs(a) >= MAX_EXACT_INTEGER))
    ):
        a = _exact_numbers(x, a, name)
    if a.dtype.kind == "b" and not allow_bool:
        raise InputTypeError(f"{name} must hold real numbers, not booleans")
    if a.dtype.kind not in "biufO":
        raise InputTypeError(f"{name} must hold real numbers; got dtype {a.dtype}")
    return a


def _exact_numbers(x: Any, a: np.ndarray, name: str) -> np.ndarray:
    """``x`` as an object array when it holds Python ints beyond 2^53 (else ``a``).

    Every element must be a real int or float; anything else (a Fraction, a string,
    None, a complex number) raises :class:`InputTypeError` naming ``name``.
    """
    exact = np.asarray(x, dtype=object) if a.dtype.kind != "O" else a
    beyond = False
    for value in exact.flat:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputTypeError(f"{name} must hold real numbers; got an element {value!r} of type {type(value).__name__}")
        beyond = beyond or (isinstance(value, (int, np.integer)) and abs(int(value)) > MAX_EXACT_INTEGER)
    if not beyond:
        return a if a.dtype.kind != "O" else exact.astype(np.float64)
    return exact


def has_inexact_integers(a: Array) -> bool:
    """Whether ``a`` (from :func:`real_input`) holds integers beyond 2^53, which float64 rounds."""
    if is_torch(a):
        import torch

        if a.is_floating_point() or a.dtype == torch.bool:
            return False
        return bool(((a > MAX_EXACT_INTEGER) | (a < -MAX_EXACT_INTEGER)).any())
    if a.dtype.kind == "O":
        return True  # real_input keeps an object array only for such integers
    if a.dtype.kind not in "iu" or a.size == 0:
        return False
    return bool(a.max() > MAX_EXACT_INTEGER) or (a.dtype.kind == "i" and bool(a.min() < -MAX_EXACT_INTEGER))


def _refuse_inexact_integers(a: Array, name: str) -> None:
    if has_inexact_integers(a):
        raise ValueError(
            f"{name} holds integers beyond 2^53 = {MAX_EXACT_INTEGER}, which float64 cannot represent "
            "exactly; here they are used as numbers: pass floats or smaller integers"
        )


def float_array(x: Any, xp, like: Any = None, *, name: str = "input") -> Array:
    """``x`` as a floating array of namespace ``xp``, refusing what is not real numbers.

    numpy: float64 always. torch: a floating tensor keeps its dtype (and autograd);
    anything else becomes a tensor of ``like``'s dtype and device (float64 without ``like``).
    Integers convert exactly up to 2^53 (beyond: ``ValueError``); None, strings,
    booleans, complex and object arrays raise :class:`InputTypeError`, both naming ``name``.
    """
    x = real_input(x, name)
    return _to_float(x, xp, like, name, keep_float64=False)


def value_array(x: Any, xp, like: Any = None, *, name: str = "values") -> Array:
    """Rewards and other values used as numbers: like :func:`float_array`, but booleans
    are 0 and 1, and a float64 numpy array moved to torch stays float64 (casting
    rewards to float32 could create ties)."""
    x = real_input(x, name, allow_bool=True)
    return _to_float(x, xp, like, name, keep_float64=True)


def _to_float(x: Array, xp, like: Any, name: str, *, keep_float64: bool) -> Array:
    _refuse_inexact_integers(x, name)
    if not is_torch_namespace(xp):
        return np.asarray(x, dtype=np.float64)
    import torch

    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    if keep_float64 or like is None:
        device = like.device if like is not None else None
        return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=like.dtype, device=like.device)


def is_torch_namespace(xp) -> bool:
    return "torch" in xp.__name__


def detach(x: Array) -> Array:
    """``x`` without autograd history (identity for numpy)."""
    return x.detach() if is_torch(x) else x


def to_numpy(x: Array) -> np.ndarray:
    """A numpy copy (or view) of ``x``, detached from autograd."""
    if not is_torch(x):
        return np.asarray(x)
    import torch

    x = x.detach().cpu()
    return x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()  # numpy has no bfloat16


def to_float(x: Array) -> float:
    """A 0-d array as a Python float."""
    return float(x.item()) if is_torch(x) else float(x)


def finfo_min(x: Array, xp) -> float:
    return float(xp.finfo(x.dtype).min)


def safe_log(s: Array, xp) -> Array:
    """log(s) for s >= 0 whose gradient is 0, not NaN, where s = 0."""
    positive = s > 0
    return xp.where(positive, xp.log(xp.where(positive, s, xp.ones_like(s))), NEG_INF)


def logaddexp(a: Array, b: Array, xp) -> Array:
    """log(e^a + e^b), exact at -inf and with finite gradients there."""
    if not is_torch_namespace(xp):
        return np.logaddexp(a, b)
    both = (a == NEG_INF) & (b == NEG_INF)
    a_safe = xp.where(both, 0.0, a)
    b_safe = xp.where(both, 0.0, b)
    out = xp.maximum(a_safe, b_safe) + xp.log1p(xp.exp(-xp.abs(a_safe - b_safe)))
    return xp.where(both, NEG_INF, out)


def logsumexp(x: Array, xp, axis: int = -1, keepdims: bool = False) -> Array:
    """log Σ e^x along ``axis``; -inf for an all -inf slice, with zero gradient there."""
    shift = detach(xp.max(x, axis=axis, keepdims=True))
    shift = xp.where(xp.isfinite(shift), shift, 0.0)
    if is_torch_namespace(xp) or x.shape[axis] <= BLOCK:
        total = xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)
    else:  # a long numpy axis in blocks: no temporary as large as x
        blocks = np.split(x, range(BLOCK, x.shape[axis], BLOCK), axis=axis)
        total = sum(np.sum(np.exp(block - shift), axis=axis, keepdims=True) for block in blocks)
    out = safe_log(total, xp) + shift
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_normaliser(x: Array, xp) -> Array:
    """log Σ e^x over the last axis (kept, size 1), exact to rounding even when the sum is
    within 1e-16 of 1 (the normaliser of nearly normalised log-probabilities).

    :func:`logsumexp` rounds 1 + Σ_{j≠top} e^{x_j - x_top} to 1 there (an absolute error
    of up to 1e-16 in the log, which n·log q terms of R_N multiply by N). Here the top
    entry is kept out of the sum: x_top + log1p(Σ_{j≠top} e^{x_j - x_top}). The rows
    must have mass (a finite maximum); the gradient is the softmax, as for logsumexp.
    """
    top_index = xp.argmax(detach(x), axis=-1, keepdims=True)
    at_top = as_index(np.arange(x.shape[-1]), x, xp) == top_index
    top = xp.sum(xp.where(at_top, x, 0.0), axis=-1, keepdims=True)
    rest = logsumexp(xp.where(at_top, NEG_INF, x), xp, keepdims=True)  # -inf, zero gradient, for one entry
    return top + xp.log1p(xp.exp(rest - top))


def logcumsumexp(x: Array, xp, *, reverse: bool = False) -> Array:
    """Running log Σ e^x along the last axis, accurate for tiny leading terms.

    ``reverse`` sums from the end (suffix sums).
    """
    if reverse:
        x = xp.flip(x, axis=-1)
    if is_torch_namespace(xp):
        import torch

        # torch's kernel is an accurate logaddexp scan, but its gradient is NaN on a
        # leading run of -inf; a finite stand-in there is exact (e^min = 0) and
        # the -inf outputs are put back afterwards.
        empty = torch.cummax(x, dim=-1).values == NEG_INF
        out: Array = torch.logcumsumexp(xp.where(x == NEG_INF, finfo_min(x, xp), x), dim=-1)
        out = xp.where(empty, NEG_INF, out)
    else:
        out = np.logaddexp.accumulate(x, axis=-1)
    if reverse:
        out = xp.flip(out, axis=-1)
    return out


def log_boundary_sums(x: Array, xp) -> tuple[Array, Array]:
    """Log-sums of the terms before and from each boundary of the last axis.

    Parameters
    ----------
    x : array of shape (..., k)

    Returns
    -------
    below, above : arrays of shape (..., k + 1)
        ``below[..., j] = log Σ_{i<j} e^x_i`` and ``above[..., j] = log Σ_{i>=j} e^x_i``
        (-inf for an empty sum), accurate for tiny terms.
    """
    empty = xp.full_like(x[..., :1], NEG_INF)
    below = xp.concat([empty, logcumsumexp(x, xp)], axis=-1)
    above = xp.concat([logcumsumexp(x, xp, reverse=True), empty], axis=-1)
    return below, above


def _numpy_log1mexp(t: np.ndarray, near_zero: np.ndarray) -> np.ndarray:
    """log1mexp without gradients: the majority branch on the whole array, then the
    minority branch recomputed on its own elements (two transcendental passes, not four)."""
    with np.errstate(divide="ignore"):  # log 0 = -inf at t = 0 is the answer
        if 2 * np.count_nonzero(near_zero) >= near_zero.size:
            out, redo = np.asarray(np.log(-np.expm1(t))), ~near_zero
            out[redo] = np.log1p(-np.exp(t[redo]))
        else:
            out = np.asarray(np.log1p(-np.exp(t)))
            out[near_zero] = np.log(-np.expm1(t[near_zero]))
    return out


def log1mexp(t: Array, xp) -> Array:
    """log(1 - e^t) for t <= 0, accurate on the whole range (Mächler 2012).

    Uses log(-expm1(t)) for t > -log 2 and log1p(-e^t) otherwise; each branch only
    sees arguments where it is accurate, so neither produces NaN gradients.
    """
    near_zero = t > LOG_HALF
    if not is_torch_namespace(xp):
        return _numpy_log1mexp(np.asarray(t, dtype=np.float64), near_zero)
    t_near = xp.where(near_zero, t, -1.0)
    t_far = xp.where(near_zero, -1.0, t)
    return xp.where(near_zero, xp.log(-xp.expm1(t_near)), xp.log1p(-xp.exp(t_far)))


def log1mexp_where(condition: Array, t: Array, otherwise: Array, xp) -> Array:
    """``where(condition, log1mexp(t), otherwise)``.

    ``t`` must be <= 0 where ``condition`` holds; elsewhere it is never used (and
    gets zero gradient).
    """
    t_safe = xp.where(condition, xp.minimum(t, 0.0), LOG_HALF)
    return xp.where(condition, log1mexp(t_safe, xp), otherwise)


def softplus(t: Array, xp) -> Array:
    """log(1 + e^t), accurate for all t."""
    if not is_torch_namespace(xp):
        return np.logaddexp(t, 0.0)
    return logaddexp(t, xp.zeros_like(t), xp)


def expectation(log_probs: Array, values: Array, xp) -> Array:
    """Σ_y p(y) v(y) along the last axis with 0 · v = 0 (even for v = ±inf).

    Where p(y) = 0 the value is never looked at, so its gradient is 0, not NaN. A
    positive mass below float range (log p = -1000: e^log p is 0) still meets an
    infinite value: that term is ±inf, not 0 · inf = NaN.
    """
    zero = log_probs == NEG_INF
    values = xp.where(zero, 0.0, values)
    probs = xp.exp(log_probs)
    lost = (probs == 0.0) & ~zero & xp.isinf(values)
    total = xp.sum(probs * xp.where(lost, 0.0, values), axis=-1)
    if bool(xp.any(lost)):
        total = total + xp.sum(xp.where(lost, values, 0.0), axis=-1)
    return total


def linear_space_shift(rows: np.ndarray) -> np.ndarray | None:
    """The row maxima to subtract before summing e^rows in linear space, or None when
    a finite entry lies more than 700 below its row's maximum (its e^(x - max) would
    underflow: sum in log space instead).

    Parameters
    ----------
    rows : numpy array of shape (R, k)

    Returns
    -------
    array of shape (R, 1) (0 for a row without finite entries), or None (also for R = 0)
    """
    if rows.size == 0:  # an empty batch: the log-space path handles it
        return None
    shift = np.max(rows, axis=-1, keepdims=True)
    shift[~np.isfinite(shift)] = 0.0
    row_lowest = np.min(rows, axis=-1, keepdims=True, initial=np.inf, where=np.isfinite(rows))
    return None if np.min(row_lowest - shift) < -700.0 else shift


def segment_logsumexp(values: Array, segment: Array, num_segments: int, xp) -> Array:
    """Log-sum-exp of ``values`` over the entries of each segment, row by row.

    Parameters
    ----------
    values : array of shape (..., k)
    segment : integer array of shape (..., k)
        Flat segment index of each entry, in any order: the id within the row plus
        ``row * num_segments``, rows numbered in C order.
    num_segments : int
        Segments per row: at least the largest id within a row + 1.

    Returns
    -------
    array of shape (..., num_segments)
        Entry ``j`` of a row is the log-sum-exp of the row's values in segment ``j``;
        -inf for ids that no value carries.
    """
    shape = tuple(values.shape[:-1]) + (num_segments,)
    size = math.prod(shape)
    flat_values = values.reshape(-1)
    flat_segment = segment.reshape(-1)
    if is_torch_namespace(xp):
        import torch

        fill = torch.full((size,), NEG_INF, dtype=values.dtype, device=values.device)
        shift: Array = fill.scatter_reduce(0, flat_segment, flat_values.detach(), reduce="amax", include_self=True)
        shift = xp.where(xp.isfinite(shift), shift, 0.0)
        terms = xp.exp(flat_values - shift[flat_segment])
        total = torch.zeros(size, dtype=values.dtype, device=values.device).scatter_add(0, flat_segment, terms)
        return (safe_log(total, xp) + shift).reshape(shape)
    rows = values.reshape(-1, values.shape[-1])
    shift = linear_space_shift(rows)
    if shift is None:
        out = np.full(size, NEG_INF)
        np.logaddexp.at(out, flat_segment, flat_values)
        return out.reshape(shape)
    terms = np.subtract(rows, shift)
    np.exp(terms, out=terms)
    sums = np.bincount(flat_segment, weights=terms.reshape(-1), minlength=size)
    with np.errstate(divide="ignore"):
        np.log(sums, out=sums)
    return (sums + np.repeat(shift[:, 0], num_segments)).reshape(shape)


BLOCK = 1 << 16
"""Elements per block in :func:`blockwise` (512 KiB of float64: temporaries stay in cache)."""


def blockwise(func: Callable[..., Array], *arrays: Array, xp, out: np.ndarray | None = None) -> Array:
    """``func(*arrays)`` for an elementwise ``func``, on numpy evaluated block by block.

    A long chain of numpy operations on 10^7 elements allocates a fresh 80 MB array per
    step; on blocks of 2^16 elements the temporaries stay in cache, about twice as
    fast. torch tensors (and small arrays) go straight to ``func``.

    ``out`` (numpy only; ignored for torch, whose results are always new tensors) is a
    C-contiguous array of the result's shape to write into. It may be one of
    ``arrays``: each block is computed before it is written.
    """
    if is_torch_namespace(xp):
        return func(*arrays)
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    size = math.prod(shape)
    if size <= BLOCK:
        if out is None:
            return func(*arrays)
        out[...] = func(*arrays)
        return out
    flat = [np.broadcast_to(a, shape).reshape(-1) for a in arrays]
    first = np.asarray(func(*(a[:BLOCK] for a in flat)))
    if out is None:
        out = np.empty(shape, dtype=first.dtype)
    flat_out = out.reshape(-1)
    flat_out[:BLOCK] = first
    for start in range(BLOCK, size, BLOCK):
        flat_out[start : start + BLOCK] = func(*(a[start : start + BLOCK] for a in flat))
    return out


def running_count(flags: Array, xp) -> Array:
    """Number of True flags before each position, along the last axis.

    Parameters
    ----------
    flags : bool array of shape (..., m)

    Returns
    -------
    int64 array of shape (..., m + 1)
        Entry j counts the True entries among flags[..., :j] (entry 0 is 0).
    """
    if is_torch_namespace(xp):
        return xp.cumulative_sum(flags, axis=-1, dtype=xp.int64, include_initial=True)
    out = np.zeros(flags.shape[:-1] + (flags.shape[-1] + 1,), dtype=np.int64)
    out[..., 1:] = flags  # then summed in place: a cumsum of the bools would cast them to a full int64 copy
    np.cumsum(out, axis=-1, out=out)
    return out


def take_flat(values: Array, index: Array, xp) -> Array:
    """``values.ravel()[index]``: entries at flat positions, shaped like ``index``."""
    if is_torch_namespace(xp):
        return values.reshape(-1)[index]
    return np.take(values, index)


def take_last(values: Array, indices: Array, xp) -> Array:
    """``values[..., indices]`` row by row: ``take_along_axis`` on the last axis.

    A 1-D numpy gather goes through ``numpy.take``, about 15% faster on 10^7 elements.
    """
    if not is_torch_namespace(xp) and values.ndim == 1:
        return np.take(values, indices)
    return xp.take_along_axis(values, indices, axis=-1)


def unsort(sorted_values: Array, order: Array, xp) -> Array:
    """Undo ``take_along_axis(x, order)`` on the last axis: a scatter, not a second sort."""
    if is_torch_namespace(xp):
        return xp.zeros_like(sorted_values).scatter(-1, order, sorted_values)
    out = np.empty_like(sorted_values)
    np.put_along_axis(out, order, sorted_values, axis=-1)
    return out


def needs_float64(scalar: float, x: Array, xp) -> bool:
    """Whether ``x`` is a torch tensor narrower than float64 whose dtype cannot hold ``scalar``
    as a normal number: products and quotients with it would be 0, inf or NaN in that dtype
    (n = 1e40 or 1e-50 BoN samples, a temperature of 1e-300 in float32)."""
    if not is_torch_namespace(xp) or x.dtype == xp.float64:
        return False
    info = xp.finfo(x.dtype)
    return not float(info.smallest_normal) <= abs(scalar) <= float(info.max)


def difference_over(minuend: Array, subtrahend: Array, divisor: float, xp) -> Array:
    """(minuend - subtrahend)/divisor, also where the difference alone overflows.

    Rewards of ±1e308 have a difference of ±inf in float64 although, divided by a
    large enough divisor, it is finite: there it is minuend/divisor - subtrahend/divisor.
    The result is ±inf only where the true quotient is beyond float range.

    A torch tensor narrower than float64 divides by the divisor *in its own dtype*,
    where a temperature of 1e-300 is 0 (and 0/0 is NaN) and 1e40 is inf; for a divisor
    outside that dtype's normal range the quotient is computed in float64 (the
    result is then float64: callers cast it back).
    """
    if not math.isnan(divisor) and needs_float64(divisor, minuend, xp):
        minuend, subtrahend = xp.astype(minuend, xp.float64), xp.astype(subtrahend, xp.float64)
    difference = minuend - subtrahend
    overflow = xp.isinf(difference) & xp.isfinite(minuend) & xp.isfinite(subtrahend)
    if not bool(xp.any(overflow)):
        return difference / divisor
    return xp.where(overflow, minuend / divisor - subtrahend / divisor, difference / divisor)


def scaled_group_std(values: Array, xp) -> tuple[Array, Array]:
    """(s, σ/s): the Bessel-corrected std σ over the last axis (kept) in units of a power of two s.

    s is a power of two per row with max|values|/s in [1, 4], so values/s is exact and
    its squared deviations neither overflow (rewards of 1e200: ``std`` is inf) nor
    underflow (1e-300: ``std`` is 0); the deviations are taken from the row's largest
    value (exact for near-equal values, whose rounded mean swamps their spread: 1 and
    1 + 2^-52). x/(σ + eps) = (x/s)/(σ/s + eps/s) then keeps its precision.
    """
    largest = xp.max(xp.abs(values), axis=-1, keepdims=True)
    tiny = float(xp.finfo(values.dtype).smallest_normal)
    scale = 2.0 ** (xp.floor(xp.log2(xp.where(largest > tiny, largest, tiny))) - 1.0)
    scaled = values / scale
    return scale, xp.std(scaled - xp.max(scaled, axis=-1, keepdims=True), axis=-1, correction=1, keepdims=True)


_EXPM1MX_SERIES = tuple(1.0 / math.factorial(k) for k in range(12, 1, -1))
"""1/k! for k = 12..2: the Taylor coefficients of e^t - 1 - t, highest first (Horner)."""


def expm1mx(t: Array, xp) -> Array:
    """φ(t) = e^t - 1 - t >= 0, to a few ulps for every t (+inf above t ≈ 709.8).

    expm1(t) - t loses the relative precision of φ(t) ≈ t²/2 for small |t| (error
    2·eps/|t|); there (|t| < 0.1) the Taylor series to t^12 is used (truncation below
    1e-20 relative). φ is the integrand of the KL divergence in the form whose every
    term is >= 0: p·φ(log q - log p) = p log(p/q) - p + q.
    """
    small = xp.abs(t) < 0.1
    t_small = xp.where(small, t, 0.0)
    series = xp.zeros_like(t_small) + _EXPM1MX_SERIES[0]
    for coefficient in _EXPM1MX_SERIES[1:]:
        series = series * t_small + coefficient
    t_big = xp.where(small, 1.0, t)
    return xp.where(small, series * t_small * t_small, xp.expm1(t_big) - t_big)


def log1pmx(t: float) -> float:
    """log(1 + t) - t for a Python float t > -1, to a few ulps also where it is ~ -t²/2.

    For |t| < 1/2, with u = t/(2 + t) (so log1p(t) = 2 atanh(u)):
    log1p(t) - t = -t²/(2 + t) + 2 Σ_{j>=1} u^(2j+1)/(2j+1), a sum whose terms shrink
    by u² <= 1/9. Elsewhere log1p(t) - t cancels by at most a factor 5.
    """
    if not abs(t) < 0.5:
        return math.log1p(t) - t
    u = t / (2.0 + t)
    u2, power, series = u * u, u, 0.0
    for j in range(1, 40):
        power *= u2
        term = power / (2 * j + 1)
        series += term
        if abs(term) <= 1e-17 * abs(series):
            break
    return -t * t / (2.0 + t) + 2.0 * series


def as_constant(values: Any, like: Array, xp) -> Array:
    """A numpy constant as a float array of ``like``'s kind, dtype and device (float64 for numpy)."""
    if is_torch_namespace(xp):
        return xp.asarray(np.array(values), dtype=like.dtype, device=like.device)  # a copy: values may be read-only
    return np.asarray(values, dtype=np.float64)


def as_index(index: np.ndarray, like: Array, xp) -> Array:
    """An integer numpy index usable on ``like`` (a torch index lives on ``like``'s device)."""
    if is_torch_namespace(xp):
        return xp.asarray(index, device=like.device)
    return index


def put(target: Array, index: np.ndarray, values: Array, xp) -> Array:
    """``target`` with ``values`` written at ``index``, out of place (differentiable in ``values``)."""
    if is_torch_namespace(xp):
        return target.index_put((as_index(index, target, xp),), values)
    out = target.copy()
    out[index] = values
    return out


CACHED_COUNT_VECTORS = 5_000_000
"""Largest :func:`count_vectors` table (rows) kept in its cache; larger ones are rebuilt per call."""


def count_vectors(total: int, parts: int) -> np.ndarray:
    """Every vector of ``parts`` non-negative integers summing to ``total``, in lexicographic order.

    The C(total + parts - 1, parts - 1) ways of putting ``total`` draws into ``parts``
    ordered boxes (stars and bars): shape (C, parts), int64, read-only (tables of at
    most :data:`CACHED_COUNT_VECTORS` rows are cached and shared).

    >>> count_vectors(2, 2).tolist()
    [[0, 2], [1, 1], [2, 0]]
    """
    if math.comb(total + parts - 1, parts - 1) <= CACHED_COUNT_VECTORS:
        return _cached_count_vectors(total, parts)
    return _build_count_vectors(total, parts)


def _build_count_vectors(total: int, parts: int) -> np.ndarray:
    if parts == 1:
        out = np.array([[total]], dtype=np.int64)
    else:
        blocks = []
        for first in range(total + 1):
            rest = count_vectors(total - first, parts - 1)
            blocks.append(np.column_stack([np.full(len(rest), first, dtype=np.int64), rest]))
        out = np.concatenate(blocks)
    out.flags.writeable = False
    return out


_cached_count_vectors = functools.lru_cache(maxsize=64)(_build_count_vectors)
