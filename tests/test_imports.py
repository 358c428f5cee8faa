"""The package has no import cycles, function-local imports included.

Every ``import fairesi...`` / ``from fairesi... import ...`` / relative import anywhere in a
module (top level or inside a function) is an edge to the module it names (``from P
import name`` names ``P.name`` when that is a module, else ``P``). Two checks:

- module level: no cycle among the modules;
- layer level: collapsing every module to its top-level unit (``fairesi.train.loop`` ->
  ``train``, ``fairesi.experiment`` -> ``experiment``), the units form a DAG, so data flows
  one way (head model -> simulation -> samples -> model -> metrics/reports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fairesi

ROOT = Path(fairesi.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    candidate = f"{base}.{alias.name}" if base else alias.name
                    targets.append(candidate if candidate in modules else base)
            for target in targets:
                # `import fairesi.a.b` names the deepest module that exists.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("fairesi") and target != name:
                    edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fairesi"


def test_no_module_import_cycle() -> None:
    assert _cycles(_edges(_modules())) == []


def test_layers_form_a_dag() -> None:
    units: dict[str, set[str]] = {}
    for source, targets in _edges(_modules()).items():
        for target in targets:
            a, b = _unit(source), _unit(target)
            if a != b and "fairesi" not in (a, b):
                units.setdefault(a, set()).add(b)
    assert _cycles(units) == []


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
