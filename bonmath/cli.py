"""Command lines from dataclasses: one configuration dataclass per script.

Every script and ``python -m`` entry point of bonmath describes its options as a
``@dataclass`` whose fields carry their help text (:func:`option`), as TRL's
scripts do with ``HfArgumentParser``. :func:`parse_config` turns it into an
``argparse`` parser with the defaults shown, parses the command line and builds
the dataclass; a value that argparse or the dataclass's ``__post_init__`` rejects
is an argparse error (a usage line and exit status 2), never a traceback.

Field types understood: ``bool`` (``--flag`` / ``--no-flag``), ``int``, ``float``,
``str``, ``pathlib.Path``, ``tuple[T, ...]`` (one or more values; zero or more with
``option(..., allow_empty=True)``), ``T | None``
(default ``None``), and ``typing.Literal[...]`` (the choices).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["option", "parse_config", "build_parser", "plain_text"]

C = TypeVar("C")

_SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


def option(
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    minimum: float | None = None,
    choices: Sequence[Any] | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    allow_empty: bool = False,
) -> Any:
    """A dataclass field with its command-line help.

    Parameters
    ----------
    help : str
        Plain-text help shown by ``--help``.
    default, default_factory
        As for :func:`dataclasses.field`; a tuple default needs no factory.
    minimum : float, optional
        Smallest accepted value (inclusive) of a numeric option, or of each value
        of a tuple option.
    choices : sequence, optional
        The accepted values.
    allow_empty : bool, default False
        A tuple option may be given with no values (``--trl-ns`` alone: the empty tuple).

    Examples
    --------
    >>> field = option("samples per prompt", 4, minimum=1)
    >>> field.default, dict(field.metadata)
    (4, {'help': 'samples per prompt', 'minimum': 1, 'choices': None, 'allow_empty': False})
    """
    _check_text(help, "help")
    if minimum is not None and (isinstance(minimum, bool) or not isinstance(minimum, (int, float))
                                or minimum != minimum):
        raise TypeError(f"minimum must be None or a real number; got {minimum!r}")
    if choices is not None and (isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices):
        raise TypeError(f"choices must be None or a non-empty sequence; got {choices!r}")
    if default_factory is not dataclasses.MISSING and not callable(default_factory):
        raise TypeError(f"default_factory must be a callable; got {default_factory!r}")
    if not isinstance(allow_empty, bool):
        raise TypeError(f"allow_empty must be a bool; got {allow_empty!r}")
    metadata = {"help": help, "minimum": minimum, "choices": choices, "allow_empty": allow_empty}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def plain_text(doc: str | None) -> str:
    """A docstring as plain text: reST roles and literals unwrapped, first paragraph only.

    Examples
    --------
    >>> plain_text("Run :func:`bonmath.bon_log_probs` on ``n`` samples.\\n\\nMore.")
    'Run bonmath.bon_log_probs on n samples.'
    """
    _check_text(doc, "doc", optional=True)
    if not doc:
        return ""
    first = doc.strip().split("\n\n")[0]
    first = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", first)
    first = re.sub(r"``([^`]+)``", r"\1", first)
    return " ".join(first.split())


def _check_text(value: Any, name: str, *, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        raise TypeError(f"{name} must be a string{' or None' if optional else ''}; got {value!r}")


def _checked(convert: Callable[[str], Any], minimum: float | None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {convert.__name__} value: {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite; got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}; got {text!r}")
        return value

    parse.__name__ = convert.__name__
    return parse


def _unwrap_optional(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def build_parser(config_cls: type, *, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--option`` per field of ``config_cls``.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     '''Toy job.'''
    ...     n: int = option("samples", 4, minimum=1)
    ...     mode: str = option("how to compute", "fast", choices=("fast", "exact"))
    >>> parser = build_parser(Config, prog="toy")
    >>> print(parser.format_usage().strip())
    usage: toy [-h] [--n N] [--mode {fast,exact}]
    >>> parser.parse_args(["--n", "8"])
    Namespace(n=8, mode='fast')
    """
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"config_cls must be a dataclass type; got {config_cls!r}")
    _check_text(prog, "prog", optional=True)
    _check_text(description, "description", optional=True)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=plain_text(description if description is not None else config_cls.__doc__),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
        default = field.default_factory() if callable(field.default_factory) else field.default
        kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": meta.get("help", " ")}
        annotation = _unwrap_optional(hints[field.name])
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(annotation) is tuple:
            kwargs["nargs"] = "*" if meta.get("allow_empty") else "+"
            annotation = typing.get_args(annotation)[0]
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = typing.get_args(annotation)
            annotation = type(kwargs["choices"][0])
        if meta.get("choices") is not None:
            kwargs["choices"] = tuple(meta["choices"])
        if annotation not in _SCALARS:
            raise TypeError(f"{config_cls.__name__}.{field.name}: unsupported option type {annotation!r}")
        kwargs["type"] = _checked(_SCALARS[annotation], meta.get("minimum"))
        parser.add_argument(flag, **kwargs)
    return parser


def parse_config(
    config_cls: type[C],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> C:
    """Parse ``argv`` (default ``sys.argv[1:]``) into an instance of the dataclass ``config_cls``.

    Invalid values, and a ``ValueError`` raised by the dataclass's ``__post_init__``,
    exit with status 2 and an argparse usage message.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     '''Toy job.'''
    ...     n: int = option("samples", 4, minimum=1)
    ...     ks: tuple[int, ...] = option("group sizes", (2, 4))
    ...     smoke: bool = option("tiny run", False)
    >>> parse_config(Config, ["--n", "8", "--ks", "3", "5", "--smoke"])
    Config(n=8, ks=(3, 5), smoke=True)
    """
    parser = build_parser(config_cls, prog=prog, description=description)
    if argv is not None and (isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence)
                             or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"argv must be None or a sequence of strings; got {argv!r}")
    namespace = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    values = {
        name: tuple(value) if isinstance(value, list) else value for name, value in vars(namespace).items()
    }
    try:
        return config_cls(**values)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
