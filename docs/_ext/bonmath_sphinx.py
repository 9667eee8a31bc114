"""Sphinx glue for bonmath's docstrings: plain-text bars, and references to re-exported names.

* bonmath's docstrings write norms and conditionals with bars (‖x‖, |y|, P(a | b)) and use
  no reStructuredText substitutions, so a bar outside inline literals, roles and tables
  is escaped before the docstring is parsed (docutils would read ``|y|`` as a
  substitution).
* A name is documented once, under its canonical page (``docs/_ext/bonmath_api.py``), but
  docstrings refer to it from where they stand (``:func:`enumerate_pair``` inside
  ``bonmath.enumeration``, ``:meth:`TabularLM.enumerate```). A reference the Python
  domain cannot resolve is imported from the referring module (or ``bonmath``) and sent
  to the page of the object it names; anything else stays unresolved, and nitpicky mode
  reports it.
"""

from __future__ import annotations

import importlib
import re
from functools import cache

import bonmath_api

_PROTECTED = re.compile(r"``.*?``|:[a-z:]+:`[^`]*`|`[^`]*`_?")


def _escape_bars(line: str) -> str:
    if line.lstrip().startswith(("|", "+")):  # a table row or a line block
        return line
    pieces, last = [], 0
    for match in _PROTECTED.finditer(line):
        pieces.append(line[last : match.start()].replace("|", "\\|"))
        pieces.append(match.group())
        last = match.end()
    pieces.append(line[last:].replace("|", "\\|"))
    return "".join(pieces)


def escape_bars(app, what, name, obj, options, lines):
    lines[:] = [_escape_bars(line) for line in lines]


@cache
def _canonical_pages() -> dict[int, str]:
    _, pages = bonmath_api.reference()
    found = {}
    for (module, name), page in pages.items():
        obj = getattr(importlib.import_module(module), name)
        if bonmath_api._is_documentable(obj):
            found[id(obj)] = page
    return found


def _lookup(path: str):
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return None
        return obj, parts[split:]
    return None


def resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    pages = _canonical_pages()
    scopes = [node.get("py:module"), bonmath_api.PACKAGE, None]
    for scope in scopes:
        path = f"{scope}.{target}" if scope else target
        if not path.startswith(bonmath_api.PACKAGE + "."):
            continue
        parts = path.split(".")
        for split in range(len(parts), 1, -1):  # the longest prefix that is a documented object
            found = _lookup(".".join(parts[:split]))
            if found is None or id(found[0]) not in pages:
                continue
            new_target = ".".join([pages[id(found[0])], *parts[split:]])
            if new_target == target:
                return None
            domain = env.get_domain("py")
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], new_target, node, contnode
            )
    return None


def setup(app):
    app.connect("autodoc-process-docstring", escape_bars, priority=400)
    app.connect("missing-reference", resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
