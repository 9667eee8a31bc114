"""The documentation site: what it must cover, checked without building it.

Claims (issue 14): the API reference has a page for every public name, each in exactly
one group; every public function and class has a numpydoc Examples section (they run as
doctests); the tutorials exist and are in the toctree; every Markdown fragment of
``docs/`` is included by a page; the theory claims table is generated from a registry that
names only tests that exist and covers every test of the theory test files. None of this
needs Sphinx. Whether the site builds warning-free and the tutorials execute is checked by
``.ci/run`` (``python -m sphinx -W --keep-going -n``); a pytest test that builds the site
would take minutes of the suite's budget.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

import bonmath

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api():
    """docs/_ext/bonmath_api.py, the generator of the reference (it imports no Sphinx)."""
    return _load("bonmath_api_for_tests", DOCS / "_ext" / "bonmath_api.py")


def _public_modules() -> list[str]:
    """Independently of the generator: ``bonmath`` and every module without a ``_`` part that assigns ``__all__``."""
    root = Path(bonmath.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if any(part.startswith("_") for part in parts):
            continue
        tree = ast.parse(path.read_text())
        assigned = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]
        if "__all__" in assigned:
            found.append(".".join(parts))
    return found


def _object_of_page(page: str):
    module, _, name = page.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _public_objects() -> dict[str, object]:
    """'module.name' → object, for every public module and every name of its ``__all__``."""
    found = {}
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in module.__all__:
            found[f"{module_name}.{name}"] = getattr(module, name)
    return found


def test_the_reference_has_a_page_for_every_public_name(api):
    """Every name in ``bonmath.__all__`` and in each public submodule's ``__all__`` is documented
    by a generated page that holds that very object; top-level names under ``bonmath.<name>``."""
    groups, pages = api.reference()
    for qualified, obj in _public_objects().items():
        module, _, name = qualified.rpartition(".")
        page = pages.get((module, name))
        assert page is not None, f"{qualified} has no page"
        assert _object_of_page(page) is obj, f"{qualified} is documented as {page}, a different object"
    for name in bonmath.__all__:
        assert pages[("bonmath", name)] == f"bonmath.{name}"
    assert set(api.public_modules()) == set(_public_modules())


def test_every_page_is_in_exactly_one_group(api):
    """Each generated page is listed by exactly one section of exactly one group, and no page
    is listed that documents no public name."""
    groups, pages = api.reference()
    listed = [page for sections in groups.values() for section in sections for page in section.pages]
    duplicated = sorted({page for page in listed if listed.count(page) > 1})
    assert not duplicated, f"pages in more than one group: {duplicated}"
    assert set(listed) == set(pages.values())
    assert all(groups[group.slug] for group in api.GROUPS), "a group of the table is empty"


def test_the_grouping_table_names_only_existing_modules(api):
    """Every module in docs/_ext/bonmath_api.py's GROUPS exists and is listed once."""
    listed = [module for group in api.GROUPS for module in group.modules]
    assert len(listed) == len(set(listed))
    for module in listed:
        importlib.import_module(module)


def test_a_module_outside_the_grouping_table_is_refused(api):
    """A module that holds public names but is in no group stops the generator with a message
    naming the table."""
    with pytest.raises(LookupError, match="GROUPS in docs/_ext/bonmath_api.py"):
        api.group_of("bonmath.not_in_any_group")
    assert api.group_of("bonmath.theory.bond").slug == "theory"


_EXAMPLES = re.compile(r"^Examples\n-{8,}\s*$", re.MULTILINE)


def _documented_objects() -> dict[str, object]:
    found, seen = {}, set()
    for qualified, obj in _public_objects().items():
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
            seen.add(id(obj))
            found[qualified] = obj
    return found


def test_every_public_function_and_class_has_a_runnable_examples_section():
    """numpydoc docstrings with an Examples section holding doctest lines (run by
    ``--doctest-modules``), none of them skipped, on every public function and class."""
    lacking, skipped = [], []
    for qualified, obj in _documented_objects().items():
        doc = inspect.getdoc(obj) or ""
        heading = _EXAMPLES.search(doc)
        if heading is None or ">>> " not in doc[heading.end():]:
            lacking.append(qualified)
        elif "+SKIP" in doc[heading.end():]:
            skipped.append(qualified)
    assert not sorted(lacking), f"add an Examples section with doctests to: {sorted(lacking)}"
    assert not sorted(skipped), f"examples skipped (doctest: +SKIP) in: {sorted(skipped)}"


def _toctree_entries(page: Path) -> list[str]:
    blocks = re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith(":")]


TUTORIALS = ("sampler_test", "hf_exact", "estimator_bias", "trl_vbon", "paper_figures")
"""The tutorials issue 14 asks for: a BoN sampler against the exact law; exact BoN, KL and
win rate of a Hugging Face model; is my gradient estimator biased; vBoN with TRL; the paper
figures."""


def test_the_tutorials_exist_are_executable_notebooks_and_are_in_the_toctree():
    """Every tutorial is a MyST notebook with code cells (executed by the docs build), listed
    in docs/tutorials/index.md, which the front page's toctree lists."""
    folder = DOCS / "tutorials"
    pages = sorted(path.stem for path in folder.glob("*.md") if path.stem != "index")
    assert set(TUTORIALS) <= set(pages), f"missing tutorials: {sorted(set(TUTORIALS) - set(pages))}"
    assert sorted(_toctree_entries(folder / "index.md")) == pages
    assert "tutorials/index" in _toctree_entries(DOCS / "index.md")
    for name in pages:
        text = (folder / f"{name}.md").read_text()
        assert text.startswith("---\nfile_format: mystnb\n"), f"{name}.md is not a MyST notebook"
        assert "```{code-cell}" in text, f"{name}.md has no code cell"


def test_every_docs_fragment_is_included_by_a_page():
    """The Markdown files at the top of docs/ (generated by benchmarks or edited with the code)
    are excluded as pages by docs/conf.py, so each must be included by some page of the site."""
    pages = [path for path in DOCS.rglob("*.md") if path.parent != DOCS and "_build" not in path.parts]
    included = {
        (page.parent / target).resolve()
        for page in pages
        for target in re.findall(r"```\{include\}\s+(\S+)", page.read_text())
    }
    fragments = [path for path in DOCS.glob("*.md") if path.stem not in {"index", "math", "about"}]
    assert fragments
    for fragment in fragments:
        assert fragment.resolve() in included, f"docs/{fragment.name} is included by no page"


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


NOT_CLAIMS = {
    "test_bad_arguments_raise_value_error_naming_them": "input handling, not a claim of a paper",
    "test_theory_numpy_and_torch_agree_and_torch_gradients_are_finite": "backend agreement",
    "test_inference_aware_functions_refuse_bad_input": "input handling, not a claim of a paper",
}
"""Tests of the theory files that are not rows of the claims table, and why."""


def test_the_claims_registry_names_existing_tests_and_covers_the_theory_tests():
    """tests/claims.py (rendered as the site's theory claims table) names only tests that exist,
    and every test of tests/test_theory.py and tests/test_theory_inference_aware.py is named by
    one of its rows or excused in NOT_CLAIMS."""
    registry = _load("claims_for_tests", ROOT / "tests" / "claims.py")
    named = {
        name
        for table in registry.TABLES
        for claim in table.claims
        for name in re.findall(r"`(test_\w+)`", claim.tests)
    }
    existing = set().union(*(_test_names(path) for path in (ROOT / "tests").glob("test_*.py")))
    assert not sorted(named - existing), f"the registry names tests that do not exist: {sorted(named - existing)}"
    theory = _test_names(ROOT / "tests" / "test_theory.py") | _test_names(ROOT / "tests" / "test_theory_inference_aware.py")
    uncovered = theory - named - set(NOT_CLAIMS)
    assert not sorted(uncovered), f"add rows to tests/claims.py for: {sorted(uncovered)}"
    assert all(claim.claim and claim.source and claim.verdict for table in registry.TABLES for claim in table.claims)


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_front_page_example_runs(page):
    """The short example of README and of the site's front page runs as written and returns a
    KL below Beirami et al.'s bound."""
    blocks = _python_blocks(ROOT / page)
    assert blocks, f"{page} has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], page, "exec"), namespace)
    bon, support = namespace["bon"], namespace["support"]
    assert bonmath.kl_divergence(bon, support) <= bonmath.bon_kl_upper_bound(16)
