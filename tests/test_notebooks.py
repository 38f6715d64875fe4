"""Every notebook runs end to end under the smoke profile through the runner (papermill)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import ROOT, real_cifar10_root
from ltbench.runner import exit_code, run_notebooks

NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_smoke(stem, tmp_path):
    overrides = {} if real_cifar10_root() else {"datasets": ["synthetic"]}
    statuses = run_notebooks(profile="smoke", only=[stem], results_dir=str(tmp_path), notebooks_dir=str(ROOT / "notebooks"),
                             overrides=overrides, progress=False)
    assert exit_code(statuses) == 0, [(s.status, s.error) for s in statuses]
    out = tmp_path / "smoke" / stem
    metrics = list(out.rglob("metrics.json"))
    assert metrics, "no run wrote metrics.json"
    for f in metrics:
        m = json.loads(f.read_text())
        for key in ("method", "dataset", "imbalance_ratio", "seed", "profile", "config", "notebook"):
            assert key in m, (f, key)
        assert m["profile"] == "smoke" and m["notebook"] == stem
        assert math.isfinite(m["top1_last"]) and 0 <= m["top1_last"] <= 100
    pngs = list(out.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert (out / f"{stem}.ipynb").exists()
