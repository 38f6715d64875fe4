"""Issue 18, packaging: one version, the licence, py.typed, CITATION.cff, the changelog, the core /
extras split (everything imported is declared, nothing declared is unused), a hash-pinned lock
consistent with pyproject.toml and environment.yml, and a core-only install that imports."""
from __future__ import annotations

import ast
import email
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Set

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = {"notebooks", "slurm", "dev", "all"}
#: Modules that only the extras provide: the core must import without any of them.
EXTRA_MODULES = ["papermill", "nbclient", "nbformat", "jupyter_client", "ipykernel", "yaml", "pandas",
                 "matplotlib", "ipython", "submitit", "pytest", "ruff"]
#: The core API (SPEC: losses, samplers, models, the engine, large-scale training).
CORE_MODULES = ["ltbench", "ltbench.config", "ltbench.io", "ltbench.registry", "ltbench.data", "ltbench.losses",
                "ltbench.samplers", "ltbench.schedules", "ltbench.models", "ltbench.metrics", "ltbench.engine",
                "ltbench.train", "ltbench.distributed", "ltbench.bbn", "ltbench.two_stage", "ltbench.fsa",
                "ltbench.ohem", "ltbench.profiles", "ltbench.published", "ltbench.__main__"]
#: The lock's platform: this project's machines and CI (Linux x86-64, CPython 3.11).
LOCK_ENV = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _version() -> str:
    src = (ROOT / "ltbench" / "_version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', src, re.M).group(1)


def _requirements(extra: str | None = None) -> List[Requirement]:
    raw = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


def _declared() -> Dict[str, Requirement]:
    out = {canonicalize_name(r.name): r for r in _requirements()}
    for extra in PROJECT["optional-dependencies"]:
        reqs = [r for r in _requirements(extra) if canonicalize_name(r.name) != "ltbench"]
        out.update({canonicalize_name(r.name): r for r in reqs})
    return out


def _lock_pins(path: Path = ROOT / "requirements.lock") -> Dict[str, str]:
    return {canonicalize_name(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", path.read_text(), re.M)}


# ----------------------------------------------------------------------------- version, licence, metadata


def test_one_version():
    """Before: the version was written in pyproject.toml only (no ltbench.__version__). After:
    ltbench/_version.py is the one place, pyproject.toml reads it, CITATION.cff and the changelog agree."""
    v = _version()
    Version(v)  # PEP 440
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ltbench._version.__version__"}
    from ltbench import _version as version_module

    assert version_module.__version__ == v
    assert re.search(rf"^version: \"?{re.escape(v)}\"?$", (ROOT / "CITATION.cff").read_text(), re.M)
    first = re.search(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert first == v


def test_licence_is_mit_everywhere():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # PEP 639: the expression only
    assert re.search(r"^license: MIT$", (ROOT / "CITATION.cff").read_text(), re.M)


def test_citation_cff_lists_the_reproduced_papers():
    text = (ROOT / "CITATION.cff").read_text()
    assert text.startswith("cff-version: 1.2.0") and "title: ltbench" in text
    for words in ["Focal Loss for Dense Object Detection", "Class-Balanced Loss Based on Effective Number of Samples",
                  "BBN: Bilateral-Branch Network", "Decoupling Representation and Classifier",
                  "Label-Distribution-Aware Margin Loss", "Feature Space Augmentation for Long-Tailed Data",
                  "Equalization Loss for Long-Tailed Object Recognition", "Equalization Loss v2",
                  "Equalized Focal Loss", "Online Hard Example Mining"]:
        assert words in text, words
    try:
        import yaml
    except ModuleNotFoundError:  # pyyaml comes with the [notebooks] extra
        return
    cff = yaml.safe_load(text)
    assert cff["version"] == _version() and len(cff["references"]) >= 10
    assert all(r["type"] in ("article", "conference-paper", "report") and r["authors"] and r["year"]
               for r in cff["references"])


def test_extras_and_core_dependencies():
    """Before: papermill, pandas, seaborn, submitit, ... were core dependencies and pyyaml,
    nbclient, jupyter_client were imported without being declared. After: a lean core, extras."""
    assert set(PROJECT["optional-dependencies"]) == EXTRAS
    core = {canonicalize_name(r.name) for r in _requirements()}
    assert core == {"torch", "torchvision", "numpy", "timm", "tqdm", "tomli", "pillow"}
    tomli = next(r for r in _requirements() if r.name == "tomli")
    assert not tomli.marker.evaluate(LOCK_ENV) and tomli.marker.evaluate({**LOCK_ENV, "python_version": "3.10"})
    nb = {canonicalize_name(r.name) for r in _requirements("notebooks")}
    assert {"papermill", "nbclient", "jupyter-client", "ipykernel", "pyyaml", "pandas", "matplotlib", "ipython"} <= nb
    assert {canonicalize_name(r.name) for r in _requirements("slurm")} == {"submitit"}
    assert {"pytest", "pytest-xdist", "ruff"} <= {canonicalize_name(r.name) for r in _requirements("dev")}
    (everything,) = _requirements("all")
    assert everything.name == "ltbench" and everything.extras == {"notebooks", "slurm", "dev"}


def _imported_modules() -> Dict[str, Set[str]]:
    """Top-level modules imported anywhere in ltbench/ (module level or inside functions) and in
    the notebooks' code cells -> the files importing them."""
    found: Dict[str, Set[str]] = {}

    def scan(source: str, where: str) -> None:
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                found.setdefault(n.split(".")[0], set()).add(where)

    for f in sorted((ROOT / "ltbench").rglob("*.py")):
        scan(f.read_text(), str(f.relative_to(ROOT)))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
                scan(src, str(nb.relative_to(ROOT)))
    return found


def test_everything_imported_is_declared_and_nothing_declared_is_unused():
    declared = _declared()
    dists = metadata.packages_distributions()
    imported = _imported_modules()
    third_party = {m: w for m, w in imported.items() if m not in sys.stdlib_module_names and m != "ltbench"}
    to_dist = {m: {canonicalize_name(d) for d in dists.get(m, [m])} for m in third_party}
    undeclared = {m: sorted(w) for m, w in third_party.items() if not to_dist[m] & set(declared)}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*to_dist.values())
    # ipykernel: the notebooks' Jupyter kernel (run as a program); pytest, pytest-xdist (make test), ruff: dev tools.
    unused = set(declared) - used - {"ipykernel", "pytest", "pytest-xdist", "ruff"}
    assert not unused, f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"


# ----------------------------------------------------------------------------- the lock


def test_lock_pins_every_package_with_hashes():
    """Before: requirements.lock pinned 15 top-level packages, no transitive ones, no hashes.
    After: every package pinned with hashes, compiled by a standard tool from pyproject.toml."""
    text = (ROOT / "requirements.lock").read_text()
    assert "uv pip compile pyproject.toml --all-extras --constraint requirements.in --generate-hashes" in text
    entries = re.split(r"\n(?=[A-Za-z0-9])", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    entries = [e for e in entries if e.strip()]
    assert len(entries) >= 90
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ \\\n", entry), entry[:80]
        assert "--hash=sha256:" in entry, entry[:80]
    assert not re.search(r"^-e |^--index-url|^git\+", text, re.M)


def test_lock_satisfies_pyproject_and_keeps_the_tested_versions():
    pins = _lock_pins()
    for name, req in _declared().items():
        if req.marker is not None and not req.marker.evaluate(LOCK_ENV):
            assert name not in pins, name  # tomli: Python 3.10 only
            continue
        assert name in pins, f"{name} is declared but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))
    top = _lock_pins(ROOT / "requirements.in")
    assert {k: pins[k] for k in top} == top
    assert top["torch"] == "2.14.1" and top["torchvision"] == "0.29.1"


def test_environment_yml_installs_the_lock():
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+- python=3\.11$", env, re.M)
    pip_lines = re.findall(r"^\s+- (-r .*|--.*|[A-Za-z].*==.*)$", env, re.M)
    assert pip_lines == ["-r requirements.lock"], pip_lines  # the same pins, by construction
    deps = env.split("\ndependencies:\n", 1)[1]
    conda_pkgs = re.findall(r"^  - ([A-Za-z][\w.-]*)(?:[=<>].*)?$", deps, re.M)
    assert sorted(conda_pkgs) == ["pip", "python"], conda_pkgs  # nothing outside the lock


def test_make_install_and_ci_use_the_lock_and_lint():
    mk = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements.lock" in mk
    assert "pip install -q --no-deps --no-build-isolation -e ." in mk
    assert re.search(r"^lint: install\n\t\$\(PY\) -m ruff check \.$", mk, re.M)
    assert re.search(r"^make lint$", (ROOT / ".ci" / "run").read_text(), re.M)
    ruff = PYPROJECT["tool"]["ruff"]
    assert ruff["target-version"] == "py310" and ruff["lint"]["select"]


# ----------------------------------------------------------------------------- a real build and install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the source (what `pip install .` builds), built with the installed
    setuptools (no network), so the work tree gets no build/ folder."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ltbench", src / "ltbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, cwd=src, timeout=120)
    (whl,) = out.glob("ltbench-*.whl")
    return whl


def test_wheel_metadata_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(info))
    assert "ltbench/py.typed" in names and "ltbench/_version.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["Version"] == _version() and meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    assert set(meta.get_all("Provides-Extra")) == EXTRAS
    assert "Typing :: Typed" in meta.get_all("Classifier")
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert {canonicalize_name(Requirement(r).name) for r in core} == {"torch", "torchvision", "numpy", "timm", "tqdm",
                                                                     "tomli", "pillow"}


_BLOCK_EXTRAS = """
import importlib.abc, sys
class _NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not a core dependency)", name=name)
        return None
sys.meta_path.insert(0, _NoExtras())
"""


def test_core_imports_without_any_extra():
    """The core (losses, samplers, models, engine, ltbench.train, ...) imports with none of the
    extras' packages present, and builds and runs a loss."""
    code = _BLOCK_EXTRAS.format(blocked=EXTRA_MODULES) + f"""
import importlib
for m in {CORE_MODULES!r}:
    importlib.import_module(m)
import torch
from ltbench.config import TrainConfig
from ltbench.losses import build_loss
TrainConfig(dataset="synthetic", n_max=60, imbalance_ratio=5.0, epochs=2, warmup_epochs=0).validate()
loss = build_loss("efl", [50, 20, 5])
z = torch.randn(4, 3, requires_grad=True)
loss(z, torch.tensor([0, 1, 2, 0])).backward()
print("core ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "core ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.slow
def test_core_only_install_gives_version(wheel, tmp_path):
    """`pip install --no-deps` of the wheel into a fresh target (torch and the other core
    dependencies from this environment, no extra), then, outside the clone:
    `import ltbench; ltbench.__version__`."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, timeout=120)
    assert (site / "ltbench" / "py.typed").is_file()
    code = _BLOCK_EXTRAS.format(blocked=EXTRA_MODULES) + f"""
import importlib.metadata, ltbench
assert ltbench.__file__.startswith({str(site)!r}), ltbench.__file__
print(ltbench.__version__, importlib.metadata.version("ltbench"))
"""
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [_version(), _version()]
