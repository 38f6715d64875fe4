"""The accuracy-against-budget table and figure (ltbench/budget.py) from run stores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltbench.budget import budget_frame, budget_label, plot_budget
from ltbench.experiments import base_config
from ltbench.methods import bbn_spec, joint_spec, stage_two_spec


def _put(root: Path, profile: str, spec, top1: float) -> None:
    d = root / profile / "runs" / spec.key
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps(spec.to_dict()))
    (d / "metrics.json").write_text(json.dumps({"top1_last": top1}))


def test_budget_frame_groups_seeds_by_method_and_length_and_ignores_other_runs(tmp_path):
    ce30 = [joint_spec(base_config("cifar10", 100, seed=s, epochs=30)) for s in (0, 1)]
    for spec, top1 in zip(ce30, (60.0, 62.0)):
        _put(tmp_path, "cpu", spec, top1)
    _put(tmp_path, "paper", joint_spec(base_config("cifar10", 100, epochs=200)), 70.0)
    ldam = joint_spec(base_config("cifar10", 100, epochs=30, loss="ldam", classifier="cosine", drw_epoch=0.8))
    _put(tmp_path, "cpu", ldam, 66.5)
    _put(tmp_path, "cpu", bbn_spec(base_config("cifar10", 100, epochs=30)), 64.0)
    _put(tmp_path, "cpu", stage_two_spec(ce30[0], "crt", epochs=10), 65.0)
    # not on the full CIFAR-10-LT IR100: a subset, another IR, a focal run, an unfinished run
    _put(tmp_path, "quick", joint_spec(base_config("cifar10", 100, epochs=8, n_max=500, batch_size=64)), 20.0)
    _put(tmp_path, "cpu", joint_spec(base_config("cifar10", 50, epochs=30)), 70.0)
    _put(tmp_path, "cpu", joint_spec(base_config("cifar10", 100, epochs=30, loss="focal")), 61.0)
    unfinished = tmp_path / "cpu" / "runs" / "x"
    unfinished.mkdir()
    (unfinished / "spec.json").write_text(json.dumps(joint_spec(base_config("cifar10", 100, epochs=50)).to_dict()))

    f = budget_frame(tmp_path)
    got = {(m, e): (round(mu, 3), n) for m, e, mu, n in f[["method", "epochs", "mean", "n"]].itertuples(index=False)}
    assert got == {("CE", 30): (61.0, 2), ("CE", 200): (70.0, 1), ("LDAM-DRW", 30): (66.5, 1),
                   ("BBN", 30): (64.0, 1), ("cRT", 30): (65.0, 1)}
    ce = f[(f.method == "CE") & (f.epochs == 30)].iloc[0]
    assert ce["std"] == pytest.approx(2 ** 0.5) and ce["published"] == 70.36 and ce["profiles"] == "cpu"
    png = plot_budget(f, tmp_path / "fig" / "budget.png")
    assert png.stat().st_size > 1000 and png.with_suffix(".pdf").stat().st_size > 1000
    assert plot_budget(f.iloc[0:0], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_budget_label_of_bbn_variants_and_crt_on_other_stage1():
    base = base_config("cifar10", 100, epochs=30)
    assert budget_label(bbn_spec(base, bbn_adaptor="linear_decay").to_dict()) is None
    rw = joint_spec(base_config("cifar10", 100, epochs=30, loss="balanced_ce", loss_params={"power": 1.0}))
    assert budget_label(stage_two_spec(rw, "crt", epochs=10).to_dict()) is None
    assert budget_label(joint_spec(base_config("cifar10", 100, epochs=30, drw_epoch=0.8)).to_dict()) == "CE-DRW"
