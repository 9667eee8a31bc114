"""Render the claims registry of the test suite (``tests/claims.py``) as Markdown tables.

``docs/conf.py`` calls :func:`write_tables` before the build reads its sources; the page
``results/theory_claims.md`` includes the file it writes. Nothing here imports Sphinx.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REGISTRY = Path(__file__).resolve().parents[2] / "tests" / "claims.py"
OUTPUT = Path("results") / "_generated" / "theory_claims_tables.md"


def load_registry(path: Path = REGISTRY) -> ModuleType:
    """Import ``tests/claims.py`` by path (``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("bonmath_test_claims", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(registry: ModuleType) -> str:
    """The tables of the registry, each with its title (level 2) and introduction."""
    parts = ["<!-- Generated from tests/claims.py by docs/_ext/claims_table.py: do not edit. -->", ""]
    for table in registry.TABLES:
        parts += [f"# {table.title}", "", table.intro.strip(), ""]
        parts += ["| claim | source | where bonmath checks it (test name) | verdict |", "|---|---|---|---|"]
        parts += [
            "| " + " | ".join(_cell(getattr(claim, field)) for field in claim._fields) + " |"
            for claim in table.claims
        ]
        parts += [""]
    return "\n".join(parts)


def write_tables(docs: Path) -> Path:
    """Write the tables under ``docs`` (untouched when unchanged) and return the path."""
    path = docs / OUTPUT
    path.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(load_registry())
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
