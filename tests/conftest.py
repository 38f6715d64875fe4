"""Shared fixtures: real CIFAR-10 through $LTBENCH_DATA when set, small synthetic data otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ExecOptions(compile="auto") compiles on CPU: the suite checks eager numbers (and would pay a compile
# per run), so "auto" is off here, in notebooks' kernels too; tests of "auto" itself unset it.
os.environ.setdefault("LTBENCH_COMPILE", "0")


def real_cifar10_root() -> str | None:
    root = os.environ.get("LTBENCH_DATA")
    if root and (Path(root) / "cifar10" / "train").is_dir():
        return root
    return None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Decoded-data cache shared by the whole session, never the user's ~/.cache.
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ltbench-cache"))


def copy_fixture_notebook(src: Path, dst: Path) -> Path:
    """Copy a runner fixture notebook of tests/fixtures, adding the ``store_dir`` parameter that
    the runner sets for every notebook (the profile's run store) to its parameters cell."""
    import json

    nb = json.loads(Path(src).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src_lines = cell["source"] if isinstance(cell["source"], list) else cell["source"].splitlines(True)
            if not any(line.startswith("store_dir") for line in src_lines):
                src_lines = list(src_lines)
                if src_lines and not src_lines[-1].endswith("\n"):
                    src_lines[-1] += "\n"
                src_lines.append('store_dir = "store"')
            cell["source"] = src_lines
    dst = Path(dst)
    if dst.is_dir():
        dst = dst / Path(src).name
    dst.write_text(json.dumps(nb, indent=1))
    return dst
