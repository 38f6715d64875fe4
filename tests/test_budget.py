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

    # the same CE in bf16 on the CPU (amp_cpu) is its own row, not a third seed of the float32 one
    _put(tmp_path, "cpu", joint_spec(base_config("cifar10", 100, seed=0, epochs=30, amp_cpu=True)), 60.5)

    f = budget_frame(tmp_path)
    got = {(m, e, p): (round(mu, 3), n)
           for m, e, p, mu, n in f[["method", "epochs", "precision", "mean", "n"]].itertuples(index=False)}
    assert got == {("CE", 30, "float32"): (61.0, 2), ("CE", 30, "bf16"): (60.5, 1), ("CE", 200, "float32"): (70.0, 1),
                   ("LDAM-DRW", 30, "float32"): (66.5, 1), ("BBN", 30, "float32"): (64.0, 1),
                   ("cRT", 30, "float32"): (65.0, 1)}
    ce = f[(f.method == "CE") & (f.epochs == 30) & (f.precision == "float32")].iloc[0]
    assert ce["std"] == pytest.approx(2 ** 0.5) and ce["published"] == 70.36 and ce["profiles"] == "cpu"
    png = plot_budget(f, tmp_path / "fig" / "budget.png")
    assert png.stat().st_size > 1000 and png.with_suffix(".pdf").stat().st_size > 1000
    assert plot_budget(f.iloc[0:0], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_precision_is_bf16_with_amp_on_a_gpu_and_on_a_cpu_only_with_amp_cpu():
    from ltbench.budget import precision

    assert precision({"amp": True}, "cpu (x86_64, 2 threads visible, torch 2)") == "float32"
    assert precision({"amp": True, "amp_cpu": True}, "cpu (x86_64)") == "bf16"
    assert precision({"amp": True}, "NVIDIA H100 80GB HBM3") == "bf16"
    assert precision({"amp": False, "amp_cpu": True}, "NVIDIA H100 80GB HBM3") == "float32"


def test_budget_label_of_bbn_variants_and_crt_on_other_stage1():
    base = base_config("cifar10", 100, epochs=30)
    assert budget_label(bbn_spec(base, bbn_adaptor="linear_decay").to_dict()) is None
    rw = joint_spec(base_config("cifar10", 100, epochs=30, loss="balanced_ce", loss_params={"power": 1.0}))
    assert budget_label(stage_two_spec(rw, "crt", epochs=10).to_dict()) is None
    assert budget_label(joint_spec(base_config("cifar10", 100, epochs=30, drw_epoch=0.8)).to_dict()) == "CE-DRW"


def test_budget_label_of_the_published_cb_configurations_and_mixup_alpha_1_only():
    from ltbench.methods import mixup_spec

    def joint(**kw):
        return joint_spec(base_config("cifar10", 100, epochs=50, **kw)).to_dict()

    assert budget_label(joint(loss="cb_focal", loss_params={"beta": 0.9999, "gamma": 1.0})) == "CB focal"
    assert budget_label(joint(loss="cb_softmax", loss_params={"beta": 0.9999})) == "CB softmax"
    # another beta / gamma of the sweep, CB under DRW, a CB run on a subset: not the published cell
    assert budget_label(joint(loss="cb_focal", loss_params={"beta": 0.9999, "gamma": 2.0})) is None
    assert budget_label(joint(loss="cb_softmax", loss_params={"beta": 0.999})) is None
    assert budget_label(joint(loss="cb_softmax", loss_params={"beta": 0.9999}, drw_epoch=0.8)) is None
    # DRW is the published switch at 80 %: notebook 03's CB weights from the first epoch, or another beta, are not it.
    assert budget_label(joint(loss="ce", drw_epoch=0.8)) == "CE-DRW"
    assert budget_label(joint(loss="ce", drw_epoch=0)) is None and budget_label(joint(loss="ce", drw_epoch=45)) is None
    assert budget_label(joint(loss="ce", drw_epoch=0.8, drw_beta=0.999)) is None
    assert budget_label(joint(loss="ldam", classifier="cosine", drw_epoch=0.5)) is None
    assert budget_label(joint_spec(base_config("cifar10", 100, epochs=8, n_max=500, loss="cb_softmax",
                                               loss_params={"beta": 0.9999})).to_dict()) is None
    base = base_config("cifar10", 100, epochs=50)
    assert budget_label(mixup_spec(base, alpha=1.0).to_dict()) == "Mixup"
    assert budget_label(mixup_spec(base, alpha=0.2).to_dict()) is None
    assert budget_label(mixup_spec(base_config("cifar10", 100, epochs=50, drw_epoch=0.8)).to_dict()) is None


def test_gain_findings_compare_each_gain_over_ce_with_the_published_gain():
    import pandas as pd

    from ltbench.experiments import gain_findings

    rows = []
    for seed, (ce, ldam, bbn) in enumerate([(60.0, 64.0, 61.0), (62.0, 65.0, 63.0)]):
        for m, t, pub in (("CE", ce, 70.36), ("LDAM-DRW", ldam, 77.03), ("BBN", bbn, 79.82), ("mine", ce + 5, None)):
            rows.append({"method": m, "dataset": "cifar10", "IR": 100, "seed": seed, "top1_last": t, "published": pub})
    lines = gain_findings(pd.DataFrame(rows), epochs=30)
    assert len(lines) == 2  # "mine" has no published number
    assert lines[0].startswith("LDAM-DRW vs CE, cifar10-IR100: published +6.67 points (77.03 vs 70.36); ours +3.50 ± 0.71 "
                               "over 2 seeds, beyond the seed spread at 30 epochs → holds.")
    assert "ours +1.00 ± 0.00 over 2 seeds, beyond the seed spread at 30 epochs → holds in part (positive, under half" in lines[1]
    one = pd.DataFrame([r for r in rows if r["seed"] == 0 and r["method"] in ("CE", "BBN")])
    one.loc[one.method == "BBN", "top1_last"] = 59.0
    assert gain_findings(one) == ["BBN vs CE, cifar10-IR100: published +9.46 points (79.82 vs 70.36); ours -1.00 → "
                                  "does not hold."]
    assert gain_findings(one[one.method == "BBN"]) == [] and gain_findings(one.iloc[0:0]) == []
    # With class-group accuracy, a claim that falls short says where ours moved; one that holds does not.
    split = pd.DataFrame(rows)
    split["many"], split["medium"], split["few"] = split["top1_last"] + 1, split["top1_last"] - 2, float("nan")
    split.loc[split.method == "BBN", "medium"] += 10
    out = gain_findings(split)
    assert "Per split" not in out[0] and out[1].endswith("Per split, ours − baseline: many +1.00, medium +11.00.")


def test_gain_verdict_reads_a_published_gain_as_a_gain_a_loss_or_no_difference():
    from ltbench.text import NO_DIFFERENCE_BAND, gain_verdict

    assert NO_DIFFERENCE_BAND == 0.5
    # A gain: at least half of it holds, under half in part, not positive does not.
    assert gain_verdict(3.0, 6.0) == "holds" and gain_verdict(10.0, 6.0) == "holds"
    assert gain_verdict(2.99, 6.0).startswith("holds in part") and gain_verdict(0.0, 6.0) == "does not hold"
    # A loss, mirrored: CB Table 2's sigmoid focal gamma 2 is 0.77 below CE; ours 2.21 below agrees.
    assert gain_verdict(-2.21, -0.77) == "holds (below the baseline, as published)"
    assert gain_verdict(-0.385, -0.77).startswith("holds (below")  # exactly half
    assert gain_verdict(-0.2, -0.77).startswith("holds in part (below the baseline")
    assert gain_verdict(0.0, -0.77).startswith("does not hold (published: below")
    # Inside the band the paper claims no difference (+0.02, -0.13): the sign of ours is noise.
    assert gain_verdict(-0.21, 0.02) == "holds (no difference: both within ±0.50 points)"
    assert gain_verdict(0.49, -0.13).startswith("holds (no difference")
    assert gain_verdict(-0.5, 0.02) == ("does not hold (published: no difference; ours 0.50 points below, "
                                        "outside ±0.50)")
    # A measured seed spread wider than the band widens it, a narrower one does not narrow it.
    assert gain_verdict(0.9, 0.6, spread=1.0).startswith("holds (no difference: both within ±1.00")
    assert gain_verdict(0.25, 0.6, spread=0.1) == "holds in part (positive, under half the published gain)"
    with pytest.raises(ValueError, match="published=None"):
        gain_verdict(1.0, None)


def test_verdict_word_strips_the_reason_of_every_verdict():
    from ltbench.text import gain_verdict, verdict, verdict_word

    cases = {(3.0, 6.0): "holds", (2.0, 6.0): "holds in part", (0.0, 6.0): "does not hold",
             (-0.21, 0.02): "holds", (-0.2, -0.77): "holds in part", (0.0, -0.77): "does not hold",
             (-0.5, 0.02): "does not hold"}
    for (ours, pub), word in cases.items():
        assert verdict_word(gain_verdict(ours, pub)) == word, (ours, pub)
    for args in ((True,), (False,), (None,), (True, True)):
        assert verdict_word(verdict(*args)) == verdict(*args)
    for bad in ("holdsx", "maybe (holds)", ""):
        with pytest.raises(ValueError, match="is not a verdict"):
            verdict_word(bad)


def test_gain_findings_use_the_same_rule_for_published_losses_and_no_differences():
    import pandas as pd

    from ltbench.experiments import gain_findings

    rows = [{"method": m, "dataset": "cifar10", "IR": 100, "seed": 0, "top1_last": t, "published": p}
            for m, t, p in (("CE", 64.04, 70.36), ("focal 2", 61.83, 69.59), ("focal 1", 63.83, 70.38))]
    lines = gain_findings(pd.DataFrame(rows), epochs=50)
    assert lines[0] == ("focal 2 vs CE, cifar10-IR100: published -0.77 points (69.59 vs 70.36); ours -2.21 at 50 "
                        "epochs → holds (below the baseline, as published).")
    assert lines[1].endswith("ours -0.21 at 50 epochs → holds (no difference: both within ±0.50 points).")
