"""The API reference of the documentation site, generated from the ``__all__`` lists.

Which names are public (stated on the reference's index page as well):

* every name in ``bonmath.__all__``, documented as ``bonmath.<name>``;
* every name in the ``__all__`` of a *public submodule*: a module of the ``bonmath``
  package (at any depth) whose dotted name has no part starting with ``_`` and which
  defines ``__all__`` (the rule ``tests/test_bad_input.py`` walks by). A name that is
  also exported at the top level, or by another public module as the same object, has
  one page only, under its first home: ``bonmath``, then the module that defines it,
  then the first public module (in name order) that lists it.

The reference is grouped by concept. :data:`GROUPS` is the one place that says which
module belongs to which group; a page's section is the module that defines the object
(so ``bonmath.bon_log_probs`` sits in the section of ``bonmath.bon``). A module that
holds a public name but matches no group stops the build with a message naming this
table.

This file imports nothing from Sphinx: ``docs/conf.py`` calls :func:`write_pages` before
the build reads its sources, and ``tests/test_docs.py`` checks :func:`reference` against
the ``__all__`` lists without Sphinx installed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "bonmath"


@dataclass(frozen=True)
class Group:
    """One page of the reference: a concept and the modules that implement it."""

    slug: str
    title: str
    intro: str
    modules: tuple[str, ...]


GROUPS: tuple[Group, ...] = (
    Group(
        "laws",
        "Laws: the reward CDF, Best-of-N and optimal policies",
        "The exact laws on an enumerated support: reward levels and the CDF, the tie-aware "
        "Best-of-N law and its log ratio, the KL-RL tilt and the optimum of the vBoN bound. "
        "The mathematics: :ref:`math-levels`, :ref:`math-bon-law`.",
        ("bonmath.levels", "bonmath.bon", "bonmath.optimal"),
    ),
    Group(
        "divergences",
        "Divergences and objectives",
        "KL, entropy and win rate; the vBoN objective J, its lower bound L and the finite "
        "bound L̃; the KL-RL objective; inference-aware objectives (max@k, pass@k, the true "
        "reward of BoN under a proxy). The mathematics: :ref:`math-divergences`, "
        ":ref:`math-vbon`, :ref:`math-inference-aware`.",
        ("bonmath.divergences", "bonmath.objectives", "bonmath.inference_aware"),
    ),
    Group(
        "estimation",
        "Estimation from samples",
        "The reward CDF estimated from M reference samples, with the exact moments and "
        "bias of its log, and the Monte Carlo BoN sampler. The mathematics: "
        ":ref:`math-cdf-estimation`.",
        ("bonmath.cdf_estimation",),
    ),
    Group(
        "models",
        "Enumerable models",
        "Supports that travel with their strings (:class:`bonmath.Enumeration`), tabular "
        "language models, Hugging Face causal LMs as enumerable policies, and the "
        "enumerable task of the sentiment experiment.",
        ("bonmath.enumeration", "bonmath.tabular", "bonmath.hf", "bonmath.task"),
    ),
    Group(
        "estimators",
        "Gradient estimators",
        "Surrogate losses whose gradients estimate the vBoN, bound and KL-RL gradients; "
        "their exact moments; measuring your own estimator against the exact gradient; the "
        "max@k and pass@k estimators and their exact variance. The mathematics: "
        ":ref:`math-gradients`.",
        (
            "bonmath.estimators",
            "bonmath.estimator_moments",
            "bonmath.estimator_evaluation",
            "bonmath.estimators_at_k",
            "bonmath.inference_aware_variance",
            "bonmath.estimator_benchmark",
        ),
    ),
    Group(
        "theory",
        "The wider Best-of-N theory",
        "BOND, BoNBoN, soft BoN, Best-of-Poisson, regularised BoN, χ² and Rényi bounds, "
        "Beirami et al.'s KL estimate, J-BOND, InfAlign, InferenceTimePessimism and the vBoN "
        "paper's injective formula. The claims and their tests: "
        ":doc:`/results/theory_claims`; the mathematics: :ref:`math-related`.",
        ("bonmath.theory",),
    ),
    Group(
        "integrations",
        "Integrations: TRL and the sentiment task",
        "vBoN as a TRL reward with exact evaluation while training, the audit of TRL's own "
        "gradients, TRL's trainer matched to bonmath's on an enumerable task, and the VADER rewards "
        "and review LM of the sentiment experiment.",
        ("bonmath.trl", "bonmath.trl_audit", "bonmath.trl_sentiment", "bonmath.trl_task", "bonmath.sentiment"),
    ),
    Group(
        "experiments",
        "Training, experiments and evaluation",
        "Training on an enumerable task (vBoN, its bound, KL-RL, BoN-SFT), the sentiment "
        "experiment end to end, the same experiment over seeds, exact evaluation against the frontier, "
        "on-disk caches.",
        ("bonmath.train", "bonmath.experiment", "bonmath.seed_study", "bonmath.evaluation", "bonmath.cache"),
    ),
    Group(
        "testing",
        "Testing, the zoo and command lines",
        "Brute-force oracles, goodness-of-fit tests and hypothesis strategies for your own "
        "BoN code; the shared zoo of enumerable pairs; dataclass command lines.",
        ("bonmath.testing", "bonmath.zoo", "bonmath.cli"),
    ),
)
"""The grouping table: every module that holds a public name belongs to exactly one group
(a module listed here covers its submodules too, unless they are listed themselves)."""


@dataclass
class Section:
    """One module's part of a group page: the pages it holds and the names it re-exports."""

    module: str
    public: bool
    pages: list[str] = field(default_factory=list)
    reexports: list[str] = field(default_factory=list)


def _module_names(root: Path) -> list[str]:
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def _defines_all(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    targets = [
        target
        for node in tree.body
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else [])
    ]
    return any(isinstance(target, ast.Name) and target.id == "__all__" for target in targets)


def public_modules() -> list[str]:
    """The public modules: ``bonmath`` and every module without a ``_`` part that defines ``__all__``."""
    package = importlib.import_module(PACKAGE)
    root = Path(package.__file__).parent
    found = []
    for name in _module_names(root):
        relative = name.split(".")[1:]
        path = root.joinpath(*relative)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if _defines_all(path):
            found.append(name)
    return found


def _table_entry(module: str) -> tuple[int, Group]:
    """The position in :data:`GROUPS` of the longest listed module that is ``module`` or contains it."""
    matches = [
        (len(listed), position, group)
        for position, (group, listed) in enumerate((g, m) for g in GROUPS for m in g.modules)
        if module == listed or module.startswith(listed + ".")
    ]
    if not matches:
        raise LookupError(
            f"module {module} holds public names but is in no group: add it to GROUPS in "
            f"docs/_ext/bonmath_api.py"
        )
    _, position, group = max(matches, key=lambda match: match[0])
    return position, group


def group_of(module: str) -> Group:
    """The group of a module (:data:`GROUPS`; a listed module covers its submodules)."""
    return _table_entry(module)[1]


def _is_documentable(obj: object) -> bool:
    return inspect.isfunction(obj) or inspect.isclass(obj)


def _key(name: str, obj: object) -> tuple[str, int]:
    # Functions and classes are the same object wherever they are exported; a constant is
    # identified by its name as well (small ints and strings are shared by Python).
    return ("", id(obj)) if _is_documentable(obj) else (name, id(obj))


def reference() -> tuple[dict[str, list[Section]], dict[tuple[str, str], str]]:
    """The generated reference.

    Returns
    -------
    groups : dict
        Group slug → its sections, in the order of :data:`GROUPS` and then module name.
    pages : dict
        ``(module, name)`` for every public module and every name of its ``__all__`` →
        the full name of the one page that documents that object.
    """
    modules = {name: importlib.import_module(name) for name in public_modules()}
    canonical: dict[tuple[str, int], str] = {}
    home: dict[str, str] = {}  # page -> section module

    def defining_module(name: str, obj: object, listed_in: str) -> str:
        owner = getattr(obj, "__module__", None) if _is_documentable(obj) else None
        if isinstance(owner, str) and owner.startswith(PACKAGE + "."):
            return owner
        if listed_in != PACKAGE:
            return listed_in
        for module_name, module in modules.items():  # a top-level constant: its listing module
            if module_name != PACKAGE and name in module.__all__ and getattr(module, name) is obj:
                return module_name
        return PACKAGE

    order = [PACKAGE] + sorted(set(modules) - {PACKAGE})
    for module_name in order:
        module = modules[module_name]
        for name in module.__all__:
            obj = getattr(module, name)
            key = _key(name, obj)
            if key in canonical:
                continue
            owner = getattr(obj, "__module__", None) if _is_documentable(obj) else None
            if module_name != PACKAGE and owner in modules and owner != module_name and name in modules[owner].__all__:
                continue  # documented under the public module that defines it
            page = f"{module_name}.{name}"
            canonical[key] = page
            home[page] = defining_module(name, obj, module_name)

    pages: dict[tuple[str, str], str] = {}
    for module_name in order:
        module = modules[module_name]
        for name in module.__all__:
            pages[(module_name, name)] = canonical[_key(name, getattr(module, name))]

    sections: dict[str, Section] = {}
    for page, module_name in home.items():
        section = sections.setdefault(module_name, Section(module_name, module_name in modules))
        section.pages.append(page)
    for module_name in order:
        if module_name == PACKAGE:
            continue
        section = sections.setdefault(module_name, Section(module_name, True))
        for name in modules[module_name].__all__:
            page = pages[(module_name, name)]
            if page not in section.pages:
                section.reexports.append(page)

    groups: dict[str, list[Section]] = {group.slug: [] for group in GROUPS}
    for module_name in sorted(sections, key=lambda module: (_table_entry(module)[0], module)):
        groups[group_of(module_name).slug].append(sections[module_name])
    return groups, pages


def _rst_group(group: Group, sections: list[Section]) -> str:
    lines = [
        ".. This file is generated by docs/_ext/bonmath_api.py from the __all__ lists: do not edit.",
        "",
        group.title,
        "=" * len(group.title),
        "",
        group.intro,
        "",
    ]
    for section in sections:
        lines += [section.module, "-" * len(section.module), ""]
        lines += [f".. automodule:: {section.module}", "   :no-members:", ""]
        if not section.public:
            lines += [
                f"*{section.module} has no* ``__all__``: *its public names are exported by* "
                f":mod:`{PACKAGE}` *and documented under that name.*",
                "",
            ]
        by_prefix: dict[str, list[str]] = {}
        for page in section.pages:
            prefix, _, name = page.rpartition(".")
            by_prefix.setdefault(prefix, []).append(name)
        for prefix, names in by_prefix.items():
            lines += [f".. currentmodule:: {prefix}", "", ".. autosummary::", "   :toctree: ../generated", ""]
            lines += [f"   {name}" for name in names]
            lines += [""]
        if section.reexports:
            links = ", ".join(f":obj:`~{page}`" for page in section.reexports)
            lines += [f"Also exported by ``{section.module}``, documented under the name linked: {links}.", ""]
    return "\n".join(lines)


def write_pages(docs: Path) -> list[Path]:
    """Write ``api/groups/NN-<slug>.rst`` under ``docs`` (files that did not change are not touched)."""
    groups, _ = reference()
    folder = docs / "api" / "groups"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, group in enumerate(GROUPS, start=1):
        path = folder / f"{number:02d}-{group.slug}.rst"
        text = _rst_group(group, groups[group.slug])
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for stale in set(folder.glob("*.rst")) - set(written):
        stale.unlink()
    return written


