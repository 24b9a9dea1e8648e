"""Architecture rules checked on the source: no import cycles inside ``harness``.

Every import statement counts, including ones inside functions (lazy imports are how heavy
optional libraries are kept out of light commands, but a lazy import back up the layers is
still a cycle), the package ``__init__`` files an import initialises on its way, and ones
under ``if TYPE_CHECKING:`` (a type that lives downstream of its
user is a layering error too, e.g. report types defined by the job that renders them).
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """harness modules imported by ``path`` (``from a import b`` -> ``a.b`` if that is a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in out if m in modules and m != me}


def with_parent_packages(module: str, deps: set[str], modules: set[str]) -> set[str]:
    """``deps`` plus the packages Python initialises to import them: ``import a.b.c`` runs
    ``a/__init__.py`` and ``a/b/__init__.py`` first, so a package ``__init__`` that imports
    its children is on the path of every import of a sibling. The importer's own ancestors
    are already initialised when it runs and are left out."""
    parts = module.split(".")
    mine = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    out = set(deps)
    for d in deps:
        dp = d.split(".")
        out |= {".".join(dp[:i]) for i in range(1, len(dp))} & modules - mine
    return out


def import_graph() -> dict[str, set[str]]:
    files = sorted(HARNESS.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {
        module_name(p): with_parent_packages(module_name(p), imports_of(p, modules), modules)
        for p in files
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_walker_sees_lazy_imports_and_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    graph = import_graph()
    # a function-level import is an edge (harness.backends.torch imports its encoder lazily)
    assert "harness.backends.torch.encoder" in graph["harness.backends.torch"]
    # importing a module initialises its packages first: an edge to each (not to one's own)
    mods = {"h", "h.a", "h.a.x", "h.b", "h.b.y"}
    assert with_parent_packages("h.b.y", {"h.a.x"}, mods) == {"h.a.x", "h.a"}
    assert "harness.encoders" in graph["harness.vlm.modules"]  # via harness.encoders.tokens


def test_no_import_cycles_in_harness():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
