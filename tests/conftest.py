"""Shared fixtures: real CIFAR-10 through $LTBENCH_DATA when set, small synthetic data otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def real_cifar10_root() -> str | None:
    root = os.environ.get("LTBENCH_DATA")
    if root and (Path(root) / "cifar10" / "train").is_dir():
        return root
    return None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Decoded-data cache shared by the whole session, never the user's ~/.cache.
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ltbench-cache"))
