"""On-disk caches: content fingerprints, a writer that never overwrites, dataclass records as JSON.

Every cache of bonmath (VADER rewards, trained models, evaluated experiments) names
an entry by a sha256 :func:`fingerprint` of everything its content depends on, and
writes it with :func:`write_once`: into a temporary file or directory beside the
target, then moved into place atomically, so that a reader never sees half an
entry. An existing entry is never replaced: if another process wrote it first, the
two must agree, else ``RuntimeError``. :func:`to_json` and :func:`from_json` turn
result dataclasses into JSON-ready values and back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["fingerprint", "from_json", "package_version", "to_json", "write_once"]

T = TypeVar("T")


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"unknown"``.

    Examples
    --------
    >>> package_version("numpy") == np.__version__
    True
    >>> package_version("no-such-distribution")
    'unknown'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a distribution name (a string); got {name!r}")
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover - depends on the environment
        return "unknown"


def fingerprint(header: Any, arrays: Iterable[np.ndarray | bytes] = ()) -> str:
    """sha256 hex digest of a JSON-able ``header`` and then the bytes of each array.

    Parameters
    ----------
    header : JSON-serialisable value
        Serialised with sorted keys, so dict order does not matter.
    arrays : iterable of numpy arrays or bytes
        Hashed in order, each as its dtype, shape and C-contiguous bytes.

    Examples
    --------
    >>> fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    True
    >>> fingerprint({}, [np.zeros(2)]) == fingerprint({}, [np.zeros(3)])
    False
    """
    try:
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    except (TypeError, ValueError) as err:
        raise TypeError(f"header must be JSON-serialisable: {err}") from None
    if isinstance(arrays, (str, bytes, np.ndarray)) or not isinstance(arrays, Iterable):
        raise TypeError(f"arrays must be an iterable of numpy arrays or bytes; got {arrays!r}")
    for item in arrays:
        if not isinstance(item, (bytes, np.ndarray)):
            raise TypeError(f"arrays must hold numpy arrays or bytes; got {type(item).__name__}")
        if isinstance(item, bytes):
            digest.update(item)
            continue
        item = np.ascontiguousarray(item)
        digest.update(f"{item.dtype.str}{item.shape}".encode())
        digest.update(item.tobytes())
    return digest.hexdigest()


def write_once(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    agrees: Callable[[Path], bool],
    *,
    directory: bool = False,
) -> bool:
    """Create ``path`` with ``write``, atomically, never replacing an existing entry.

    Parameters
    ----------
    path : path-like
        The entry: a file, or with ``directory=True`` a directory.
    write : callable (Path) -> object
        Writes the entry's content to the temporary path it is given (its return value is ignored).
    agrees : callable (Path) -> bool
        Called with ``path`` when another writer got there first: whether the
        existing entry holds the same content.

    Returns
    -------
    bool
        True if this call created the entry, False if an agreeing one was there.

    Raises
    ------
    RuntimeError
        If an entry exists at ``path`` with different content.

    Notes
    -----
    A file is linked into place (``os.link`` fails on an existing target); a
    directory is renamed (``os.rename`` fails onto a non-empty directory).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.txt"
    >>> write_once(target, lambda p: p.write_text("1"), lambda p: p.read_text() == "1")
    True
    >>> write_once(target, lambda p: p.write_text("1"), lambda p: p.read_text() == "1")
    False
    """
    path = Path(path)
    if path.exists():
        if agrees(path):
            return False
        raise RuntimeError(f"cache entry {path} exists with different content; not overwriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        write(tmp)
        try:
            if directory:
                os.rename(tmp, path)  # fails onto a non-empty directory
            else:
                os.link(tmp, path)  # fails onto an existing file
        except OSError:
            if not path.exists():
                raise
            if not agrees(path):
                raise RuntimeError(
                    f"cache entry {path} appeared with different content while writing; not overwriting it"
                ) from None
            return False
        return True
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def to_json(value: Any) -> Any:
    """A dataclass (nested in lists, tuples, dicts) as JSON-ready builtins.

    Examples
    --------
    >>> @dataclasses.dataclass
    ... class Point:
    ...     x: float
    ...     tags: tuple[str, ...] = ()
    >>> to_json([Point(1.0, ("a",))])
    [{'x': 1.0, 'tags': ['a']}]
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_json(cls: type[T], data: Any) -> T:
    """Rebuild a value of type ``cls`` (dataclass, list, tuple, dict, optional, scalar) from JSON.

    Examples
    --------
    >>> @dataclasses.dataclass
    ... class Point:
    ...     x: float
    ...     tags: tuple[str, ...] = ()
    >>> from_json(list[Point], [{"x": 1.0, "tags": ["a"]}])
    [Point(x=1.0, tags=('a',))]
    """
    if not isinstance(cls, type) and typing.get_origin(cls) is None:
        raise TypeError(f"cls must be a type (a dataclass, list[...], ...); got {cls!r}")
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict of {cls.__name__}'s fields; got {data!r}")
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: from_json(hints[f.name], data[f.name])
                      for f in dataclasses.fields(cls) if f.init})
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin is typing.Union or isinstance(cls, types.UnionType):
        if data is None:
            return None  # type: ignore[return-value]
        (inner,) = [a for a in args if a is not type(None)]
        return from_json(inner, data)
    if origin is list:
        return [from_json(args[0], item) for item in data]  # type: ignore[return-value]
    if origin is tuple:
        return tuple(from_json(args[0], item) for item in data)  # type: ignore[return-value]
    if origin is dict:
        return {key: from_json(args[1], item) for key, item in data.items()}  # type: ignore[return-value]
    if cls is float and isinstance(data, int):
        return float(data)  # type: ignore[return-value]
    return data
