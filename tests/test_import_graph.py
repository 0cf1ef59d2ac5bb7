"""The import graph of ``src/defaceaudit``, read from the source with :mod:`ast` (nothing is
imported): no cycle, leaves that import no stage, and stages that reach the run planning only
through ``workflow.run_step``.

Every import statement counts, also one inside a function or under ``if TYPE_CHECKING:``.
``import a.b.c`` and ``from a.b.c import x`` import the module ``a.b.c`` and, first, the
``__init__`` of each package above it (``a``, ``a.b``); ``from a.b import c`` imports ``a.b.c``
when ``c`` is a module, else only ``a.b``. A module's own packages are not edges: Python has
started them before the module runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "defaceaudit"
#: the pipeline's stages, one package each
STAGES = ("cohort", "prepare", "deface", "reface", "metrics", "radiodensity", "report", "workflow")
#: modules and packages that import no stage
LEAVES = ("errors", "config", "paths", "tables", "devices", "allocator", "imaging", "stats")
#: the one module of the run planning that stages may import (the adapters' entry point)
RUN_STEP = f"{ROOT}.workflow.run_step"


def module_files(src: Path = SRC, root: str = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/root`` (a package's name for its
    ``__init__.py``)."""
    modules = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _with_parents(name: str) -> list[str]:
    return [*_parents(name), name]


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, *([target] if target else [])])


def imported_names(module: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Every module (and package ``__init__``) that ``module`` imports, anywhere in its file."""
    modules = set(modules)
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            names.update(_with_parents(base))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    names.add(f"{base}.{alias.name}")
    own = {*_parents(module), module}
    return {name for name in names if name in modules and name not in own}


def import_graph(src: Path = SRC, root: str = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of this package it imports."""
    files = module_files(src, root)
    return {name: imported_names(name, path, files) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (a depth-first search for a back edge)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_chain(graph: dict[str, set[str]], start: str, wanted, stop=()) -> list[str] | None:
    """The shortest chain of imports from ``start`` to a module for which ``wanted(name)`` holds,
    not continuing through the modules in ``stop``; None if there is none."""
    previous = {start: None}
    queue = [start]
    for node in queue:
        if node != start and wanted(node):
            chain = [node]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])
            return chain[::-1]
        if node in stop:
            continue
        for nxt in sorted(graph.get(node, ())):
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return None


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _stage_of(name: str) -> str | None:
    return next((s for s in STAGES if in_package(name, f"{ROOT}.{s}")), None)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import x\n")
    (pkg / "sub" / "b.py").write_text("x = 1\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "c.py").write_text("from pkg.sub import x\nfrom . import a\n")
    (pkg / "d.py").write_text("import pkg.sub.b\n")
    (pkg / "e.py").write_text("from .sub.b import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}  # inside a function; b is a module
    assert graph["pkg.c"] == {"pkg.sub", "pkg.a"}  # x is a name, not a module
    assert graph["pkg.d"] == graph["pkg.e"] == {"pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub"] == {"pkg.sub.b"}  # its own packages are no edges
    assert find_cycle(graph) is None
    (pkg / "sub" / "b.py").write_text("def g():\n    import pkg.a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"]


def test_there_is_no_import_cycle(graph):
    assert len(graph) > 50  # the tree was found
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_no_stage(graph, leaf):
    modules = [name for name in graph if in_package(name, f"{ROOT}.{leaf}")]
    assert modules, f"no module {ROOT}.{leaf}"
    for module in modules:
        chain = import_chain(graph, module, _stage_of)
        assert chain is None, "a leaf imports a stage: " + " -> ".join(chain)


def test_stages_reach_the_run_planning_only_through_run_step(graph):
    workflow = f"{ROOT}.workflow"
    for module in graph:
        stage = _stage_of(module)
        if stage is None or stage == "workflow":
            continue

        def planning(name: str) -> bool:
            return in_package(name, workflow) and name != RUN_STEP

        chain = import_chain(graph, module, planning, stop={RUN_STEP})
        assert chain is None, "a stage imports the run planning: " + " -> ".join(chain)
