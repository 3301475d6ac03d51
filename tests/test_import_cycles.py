"""No module of the five packages takes part in an import cycle, type-only imports included.

The graph is built statically with :mod:`ast` from every ``.py`` file under each distribution's
``src`` folder, so it covers whatever modules exist (a rewritten engine is guarded too, with no
list to update). An edge is any ``import`` or ``from ... import`` inside a module, at any depth:
``if TYPE_CHECKING:`` blocks and function-local imports count, because a cycle that is only
broken by deferring an import is still a tangle (and a type-only cycle breaks as soon as someone
moves the import). ``from package import name`` is an edge to ``package.name`` when that is a
module, else to the package itself. The implicit import of a module's parent package is not an
edge (Python runs a package's ``__init__`` before its submodules whatever the code says).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "qmtl-core" / "src",
    ROOT / "qmtl-engine-local" / "src",
    ROOT / "qmtl-engine-kafka" / "src",
    ROOT / "qmtl-state-redis" / "src",
    ROOT / "qmtl-deploy" / "src",
]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of the five packages it imports."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported(module, path, known):
            # `import a.b.c` binds through a.b.c; the nearest known module is the edge
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(f"{name}."):
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _path_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle inside ``component``, for a readable failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        following = sorted(graph[path[-1]] & members)
        closing = [m for m in following if m in seen]
        if closing:
            return [*path[path.index(closing[0]) :], closing[0]]
        path.append(following[0])
        seen.add(following[0])


def test_the_checker_finds_a_type_only_cycle(tmp_path: Path) -> None:
    """The detector itself can fail: two modules that import each other, one of them only under
    TYPE_CHECKING, are reported."""
    graph = {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n",
        encoding="utf-8",
    )
    assert set(_imported("pkg.m", source, {"pkg.b"})) == {"typing", "pkg.b"}


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    for package in ("qmtl", "qmtl_engine_local", "qmtl_engine_kafka", "qmtl_state_redis"):
        assert package in graph
    assert "qmtl_deploy" in graph
    assert "qmtl.pipeline" in graph["qmtl.analyzer"]  # edges are found


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (type-only imports count):\n" + "\n".join(
        " -> ".join(_path_through(graph, component)) for component in found
    )
