"""The package's layering (../shared/DESIGN.md, README "Layout"): imports go only downward,
the graph has no cycle, ltbench modules are imported inside functions only where an optional
dependency or the CLI's start-up time asks for it, and nothing in the library imports the
GPU-lease corner. Measured by tools/codestats.py, which the tests below also check on
synthetic packages (so a cycle or an upward import would really be caught)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("codestats", ROOT / "tools" / "codestats.py")
codestats = importlib.util.module_from_spec(_spec)
sys.modules["codestats"] = codestats
_spec.loader.exec_module(codestats)

#: (importing module, imported module) pairs allowed inside a function, and why.
FUNCTION_LEVEL_ALLOWED = {
    ("ltbench.batch", "ltbench.submit"): "submitit is an optional dependency (ltbench[slurm])",
}
#: Modules whose function-level imports keep start-up fast (`python -m ltbench --help` imports no torch).
LAZY_MODULES = {"ltbench.__main__"}
#: The operations corner: nothing else in the library may import it.
OPS = ("ltbench.ops", "ltbench.session")
OPS_IMPORTERS = ("ltbench.ops", "ltbench.session", "ltbench.__main__")


@pytest.fixture(scope="module")
def edges():
    return codestats.edges(ROOT)


def test_every_module_has_a_layer():
    assert codestats.layer_of("ltbench.some_new_module") is None  # a new module must be placed explicitly
    assert codestats.layer_of("ltbench.losses.eql") == 2 and codestats.layer_of("ltbench") == 1
    missing = [m for m in codestats.module_files(ROOT) if codestats.layer_of(m) is None]
    assert not missing, f"add these modules to tools/codestats.py LAYERS: {missing}"


def test_import_graph_has_no_cycle(edges):
    assert codestats.cycles(edges) == []


def test_imports_only_go_down_the_layers(edges):
    bad = [f"{e.source} (layer {a}) imports {e.target} (layer {b}) at line {e.line}"
           for e, a, b in codestats.upward(edges)]
    assert not bad, "\n".join(bad)


def test_ltbench_is_imported_inside_functions_only_where_it_must_be(edges):
    bad = [f"{e.source}:{e.line} imports {e.target} inside a function" for e in edges
           if e.kind == "function" and e.source not in LAZY_MODULES
           and (e.source, e.target) not in FUNCTION_LEVEL_ALLOWED]
    assert not bad, "\n".join(bad)


def test_nothing_in_the_library_imports_the_gpu_lease_code(edges):
    bad = [f"{e.source}:{e.line} imports {e.target}" for e in edges
           if e.target.startswith(OPS) and not e.source.startswith(OPS_IMPORTERS)]
    assert not bad, "\n".join(bad)


def test_known_edges_are_seen(edges):
    """The walker sees relative, absolute, aliased and function-level imports."""
    kinds = {(e.source, e.target): e.kind for e in edges}
    assert kinds[("ltbench.runs", "ltbench.spec")] == "module"
    assert kinds[("ltbench.methods", "ltbench.bbn")] == "module"
    assert kinds[("ltbench.__main__", "ltbench.report")] == "function"
    assert ("ltbench.spec", "ltbench.runs") not in kinds


def _fake_package(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        path = root / "ltbench" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "notebooks").mkdir(exist_ok=True)
    return root


def test_a_cycle_hidden_in_a_function_and_an_upward_import_are_caught(tmp_path):
    root = _fake_package(tmp_path, {
        "__init__.py": "_EXPORTS = {'RunSpec': 'runs'}\n",
        "engine.py": "def f():\n    from .runs import METHODS\n",
        "runs.py": "from .engine import f\nfrom ltbench import RunSpec\n",
        "io.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ltbench.runs import X\n",
    })
    found = codestats.edges(root)
    assert codestats.cycles(found) == [["ltbench.engine", "ltbench.runs"]]
    up = [(e.source, e.target, e.kind) for e, _, _ in codestats.upward(found)]
    assert up == [("ltbench.engine", "ltbench.runs", "function")]  # typing-only imports do not count
    assert ("ltbench.io", "ltbench.runs", "typing") in {(e.source, e.target, e.kind) for e in found}


def test_codestats_command_reports_the_measures():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "codestats.py"), "--json"], capture_output=True,
                         text=True, check=True).stdout
    stats = json.loads(out)
    assert stats["cycles"] == [] and stats["upward_imports"] == 0
    assert stats["package_lines"] > 1000 and stats["notebook_code_lines_total"] > 0
    assert stats["longest_functions"][0]["lines"] >= stats["longest_functions"][-1]["lines"]
