"""The import graph of cnnlab, built with `ast`: no cycles, and imports flow one way through the
layers that docs/architecture.md draws (top to bottom). Every `import` counts, also the ones
inside functions: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1] / "cnnlab"

# Top to bottom; a module may import its own layer (without a cycle) and any layer below it.
LAYERS = [
    ("cli", "__main__"),
    ("lab",),
    ("bench",),
    ("training",),
    ("evaluation",),
    ("transfer",),
    ("config",),  # above models and data: its checks ask their registries (model options, ops)
    ("models", "data"),
    ("run", "results", "checkpoint", "export", "errors", "tables", "machine", "threads", "registry", "locks",
     "__init__"),
]
MAX_UPWARD = 0


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ("cnnlab",) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _targets(name: str, path: Path, node: ast.AST, mods: dict) -> list[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # `from pkg import sub` depends on the submodule and on the package it names (its
        # __init__ runs first); `import pkg.sub as sub` names only the submodule
        subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
        found = subs + [module]
    out = []
    for target in found:
        if not target.startswith("cnnlab"):
            continue
        while target not in mods and "." in target:
            target = target.rpartition(".")[0]
        if target in mods and target != name:
            out.append(target)
    return out


def _imports(tree: ast.AST):
    """Every import node, except those under `if TYPE_CHECKING:` (annotations only: they never
    run, so they cannot form a cycle)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {t for node in _imports(tree) for t in _targets(name, path, node, mods)}
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and docs/architecture.md")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if layer_of(b) < layer_of(a))


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_flow_down_the_layers():
    found = upward(import_graph())
    assert len(found) <= MAX_UPWARD, "imports that run up the layers:\n" + "\n".join(found)


def test_the_checker_sees_cycles_and_upward_imports():
    """The checks above would fail on a real violation (not a vacuous pass)."""
    graph = {"cnnlab.training.engine": {"cnnlab.lab.sweep"}, "cnnlab.lab.sweep": {"cnnlab.training.engine"}}
    assert cycles(graph) == [["cnnlab.lab.sweep", "cnnlab.training.engine"]]
    assert upward(graph) == ["cnnlab.training.engine -> cnnlab.lab.sweep"]


def test_the_graph_reads_relative_and_lazy_imports(tmp_path):
    mods = {"cnnlab.lab.sweep": ROOT / "lab" / "sweep.py", "cnnlab.lab": ROOT / "lab" / "__init__.py",
            "cnnlab.training.recipe": ROOT / "training" / "recipe.py"}
    tree = ast.parse("def f():\n    from cnnlab.training import recipe\n    from . import sweep\n")
    found = [t for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for t in _targets("cnnlab.lab.report", ROOT / "lab" / "report.py", node, mods)]
    # `from . import sweep` also names the package cnnlab.lab (cnnlab.training is not in `mods`)
    assert sorted(set(found)) == ["cnnlab.lab", "cnnlab.lab.sweep", "cnnlab.training.recipe"]


if __name__ == "__main__":  # python tests/test_layering.py: print what the tests check
    g = import_graph()
    print("cycles:", cycles(g))
    print("upward:", *upward(g), sep="\n  ")
