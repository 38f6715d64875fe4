#!/usr/bin/env python3
"""The shape of the ltbench package, measured from its source: the import graph and its cycles,
imports made inside functions, the longest functions, package lines and notebook code lines.

    python tools/codestats.py            # a summary
    python tools/codestats.py --json     # the same as JSON
    python tools/codestats.py --edges    # every ltbench -> ltbench import, with its kind

Only the standard library; it reads files and imports nothing of ltbench, so it runs on any
checkout. tests/test_layers.py uses it to hold the layering (LAYERS below).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ltbench"

#: Layer of each module (the first matching prefix wins), bottom (1) to top (9); see
#: ../shared/DESIGN.md and the README's "Layout". A module imports only modules of its own
#: layer or below, and the graph has no cycle.
LAYERS: Tuple[Tuple[str, int], ...] = (
    ("ltbench._version", 1), ("ltbench.io", 1), ("ltbench.registry", 1), ("ltbench.checks", 1), ("ltbench.provenance", 1),
    ("ltbench.text", 1), ("ltbench.plugins", 1),
    ("ltbench.data", 2), ("ltbench.models", 2), ("ltbench.losses", 2), ("ltbench.samplers", 2),
    ("ltbench.schedules", 2), ("ltbench.metrics", 2), ("ltbench.published", 2),
    ("ltbench.config", 3),
    ("ltbench.engine", 4), ("ltbench.checkpoint", 4), ("ltbench.steps", 4), ("ltbench.bbn", 4),
    ("ltbench.two_stage", 4), ("ltbench.fsa", 4), ("ltbench.ohem", 4), ("ltbench.mixup", 4),
    ("ltbench.fastpath", 4), ("ltbench.distributed", 4),
    ("ltbench.spec", 5), ("ltbench.runs", 5), ("ltbench.methods", 5),
    ("ltbench.experiments", 6), ("ltbench.profiles", 6), ("ltbench.parameters", 6),
    ("ltbench.executor", 7), ("ltbench.runner", 7), ("ltbench.submit", 7), ("ltbench.batch", 7),
    ("ltbench.harvest", 7), ("ltbench.train", 7), ("ltbench.comparison", 7),
    ("ltbench.plotting", 8), ("ltbench.notebook", 8), ("ltbench.report", 8), ("ltbench.budget", 8),
    ("ltbench.tables", 8), ("ltbench.compare", 8),
    ("ltbench.ops", 9), ("ltbench.session", 9), ("ltbench.__main__", 9),
    ("ltbench", 1),  # the package's __init__: re-exports, imported lazily
)


def layer_of(module: str) -> Optional[int]:
    for prefix, layer in LAYERS:
        if module == prefix or (prefix != PACKAGE and module.startswith(prefix + ".")):
            return layer
    return None


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # "module" (top level), "function" (inside a def) or "typing" (TYPE_CHECKING)
    line: int


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """Module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _exports(files: Dict[str, Path]) -> Dict[str, str]:
    """The package's lazy re-exports (name -> module), read from its __init__'s _EXPORTS."""
    tree = ast.parse(files[PACKAGE].read_text())
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
                return {k: f"{PACKAGE}.{v}" for k, v in ast.literal_eval(node.value).items()}
    return {}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.AST, files: Dict[str, Path],
             exports: Dict[str, str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                yield alias.name
        return
    assert isinstance(node, ast.ImportFrom)
    target = _resolve(module, is_package, node)
    if target.split(".")[0] != PACKAGE:
        return
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in files:  # from . import losses
            yield sub
        elif target == PACKAGE and alias.name in exports:  # from ltbench import RunSpec
            yield exports[alias.name]
        else:
            yield target


def _is_type_checking(test: ast.AST) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def edges(root: Path = ROOT) -> List[Edge]:
    """Every import of an ltbench module by an ltbench module."""
    files = module_files(root)
    exports = _exports(files)
    out: List[Edge] = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text())

        def walk(node: ast.AST, kind: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, is_package, child, files, exports):
                        if target != module:
                            out.append(Edge(module, target, kind, child.lineno))
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    walk(child, "function" if kind == "module" else kind)
                elif isinstance(child, ast.If) and _is_type_checking(child.test):
                    for sub in child.body:
                        walk(ast.Module(body=[sub], type_ignores=[]), "typing")
                    for sub in child.orelse:
                        walk(ast.Module(body=[sub], type_ignores=[]), kind)
                else:
                    walk(child, kind)

        walk(tree, "module")
    return sorted(set(out), key=lambda e: (e.source, e.line, e.target))


def cycles(graph_edges: Sequence[Edge]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), runtime imports only."""
    graph: Dict[str, Set[str]] = {}
    for e in graph_edges:
        if e.kind != "typing":
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found, key=lambda c: (-len(c), c))


def upward(graph_edges: Sequence[Edge]) -> List[Tuple[Edge, Optional[int], Optional[int]]]:
    """Runtime imports of a higher layer by a lower one (and modules missing from LAYERS)."""
    out = []
    for e in graph_edges:
        if e.kind == "typing":
            continue
        a, b = layer_of(e.source), layer_of(e.target)
        if a is None or b is None or b > a:
            out.append((e, a, b))
    return out


def functions(root: Path = ROOT) -> List[Tuple[int, str]]:
    """(lines, "module:qualname") of every function and method of the package, longest first."""
    out = []
    for module, path in module_files(root).items():
        tree = ast.parse(path.read_text())

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    out.append((child.end_lineno - child.lineno + 1, f"{module}:{name}"))
                    walk(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(tree, "")
    return sorted(out, reverse=True)


def notebook_code_lines(root: Path = ROOT) -> Dict[str, int]:
    """Non-blank, non-comment code lines of each committed notebook under notebooks/."""
    out = {}
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        n = 0
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            n += sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
        out[path.name] = n
    return out


def stats(root: Path = ROOT) -> dict:
    graph_edges = edges(root)
    found = cycles(graph_edges)
    funcs = functions(root)
    nb = notebook_code_lines(root)
    files = module_files(root)
    return {
        "package_lines": sum(len(p.read_text().splitlines()) for p in files.values()),
        "modules": len(files),
        "cycles": [len(c) for c in found],
        "cycle_members": found,
        "function_level_imports": len({(e.source, e.line) for e in graph_edges if e.kind == "function"}),
        "upward_imports": len(upward(graph_edges)),
        "longest_functions": [{"lines": n, "name": name} for n, name in funcs[:10]],
        "functions_over_80_lines": sum(1 for n, _ in funcs if n > 80),
        "notebook_code_lines": nb,
        "notebook_code_lines_total": sum(nb.values()),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument("--edges", action="store_true", help="print every ltbench import")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    if args.edges:
        for e in edges(args.root):
            print(f"{e.source} -> {e.target}  [{e.kind}, line {e.line}]")
        return 0
    s = stats(args.root)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"package: {s['package_lines']} lines in {s['modules']} modules")
    print(f"import cycles: {len(s['cycles'])} (sizes {s['cycles']})")
    for c in s["cycle_members"]:
        print("  " + ", ".join(m.removeprefix('ltbench.') for m in c))
    print(f"imports of ltbench inside functions: {s['function_level_imports']}")
    print(f"upward imports (tools/codestats.py LAYERS): {s['upward_imports']}")
    print(f"functions over 80 lines: {s['functions_over_80_lines']}; longest:")
    for f in s["longest_functions"][:6]:
        print(f"  {f['lines']:4d}  {f['name']}")
    print(f"notebook code lines: {s['notebook_code_lines_total']}  "
          + ", ".join(f"{k.split('_')[0]} {v}" for k, v in s["notebook_code_lines"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
