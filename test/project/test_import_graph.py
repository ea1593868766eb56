"""No import cycle at any depth, in the runtime package and in ``training/``.

Why: a cycle makes a module's behaviour depend on which of its members was imported first (a
name missing from a half-initialised module), and it hides layering mistakes: the extractor base
class importing the backends that export extractors, a teacher and the stage that calls it
importing each other. The graph is read from the source (``ast``), so imports inside functions
count as much as module-level ones, and every module counts, package ``__init__`` files too.

Edges: ``import a.b`` -> ``a.b``; ``from a import b`` -> ``a.b`` when that is a module, else
``a``; relative imports are resolved. Only edges between modules of the scanned package are kept.
"""

from __future__ import annotations

from pathlib import Path

from test_core_contracts import _import_statements

REPO = Path(__file__).resolve().parents[2]
#: ``training/`` is installed under this name (``setup.py``); absolute imports of it are internal.
TRAINING_INSTALLED_AS = "local_features_ros_training"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first import}


def module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` below ``root`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path, aliases: dict[str, str] | None = None) -> Graph:
    """The import graph of every module under ``package_dir`` (``test_core_contracts``'s
    scanner); ``aliases``: other top-level names the package is imported under."""
    root = package_dir.parent
    modules = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}

    def canonical(name: str) -> str:
        top, dot, rest = name.partition(".")
        return (aliases or {}).get(top, top) + dot + rest

    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        for line, module, names in _import_statements(path, root):
            module = canonical(module)
            targets = [f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names]
            for target in targets or [module]:
                if target in modules and target != name:
                    graph[name].setdefault(target, line)
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_in(graph: Graph, component: list[str]) -> list[str]:
    """One concrete cycle through the first module of ``component`` (breadth-first inside it)."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")


def describe_cycles(graph: Graph, package_dir: Path) -> str:
    """Each cycle as ``a.py:LINE -> b`` steps (empty when the graph is acyclic)."""
    root = package_dir.parent
    lines = []
    for component in strongly_connected(graph):
        cycle = cycle_in(graph, component)
        lines.append(f"cycle among {len(component)} modules ({', '.join(component)}):")
        for a, b in zip(cycle, cycle[1:]):
            path = root.joinpath(*a.split("."))
            where = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            lines.append(f"  {where.relative_to(root)}:{graph[a][b]} imports {b}")
    return "\n".join(lines)


def test_runtime_package_has_no_import_cycle():
    package = REPO / "local_features_ros"
    graph = import_graph(package)
    assert len(graph) > 60
    # imports inside functions are edges too (the registry attaches backends lazily)
    assert "local_features_ros.backends" in graph["local_features_ros.registry"]
    report = describe_cycles(graph, package)
    assert not report, "import cycles in local_features_ros:\n" + report


def test_training_has_no_import_cycle():
    package = REPO / "training"
    graph = import_graph(package, aliases={TRAINING_INSTALLED_AS: "training"})
    assert len(graph) > 30
    assert "training.superpoint.teachers" in graph["training.superpoint.homographic_adaptation"]
    report = describe_cycles(graph, package)
    assert not report, "import cycles in training:\n" + report


def test_planted_cycles_are_found(tmp_path):
    """A function-level import, ``from pkg import module`` and a package ``__init__``
    re-export each close a cycle here; ``from pkg import name`` of a non-module does not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from pkg.a import f\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import C\n")
    (pkg / "sub" / "c.py").write_text("from .. import sub\nC = 1\n")
    (pkg / "d.py").write_text("from . import e\n")
    (pkg / "e.py").write_text("from pkg import __name__ as n\n")  # -> pkg, not pkg.d
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b": 2} and graph["pkg.b"] == {"pkg.a": 1}
    assert graph["pkg.e"] == {"pkg": 1}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.c"]]
    report = describe_cycles(graph, pkg)
    assert "pkg/a.py:2 imports pkg.b" in report and "pkg/b.py:1 imports pkg.a" in report
    assert "pkg/sub/__init__.py:1 imports pkg.sub.c" in report
