"""The results-table builder (ltbench.tables), the notebooks' session (ltbench.notebook.setup) and
the notebooks' computations moved into the experiment modules, on small closed-form inputs."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from ltbench import notebook, tables
from ltbench.experiments import notebook_parameters, runs_for_notebook


def runs_frame() -> pd.DataFrame:
    """CE at seeds 0-2 (top-1 60 / 62 / 64, published 70.36) and A at seeds 0-1 (65 / 69, none
    published): CE's mean 62 ± 2, A's 67 ± 2.83, A - CE per seed 5 and 7 -> 6 ± 1.41."""
    rows = [("CE", 0, 60.0, 61.0, 70.36), ("CE", 1, 62.0, 63.0, 70.36), ("CE", 2, 64.0, 65.0, 70.36),
            ("A", 0, 65.0, 66.0, None), ("A", 1, 69.0, 70.0, None)]
    return pd.DataFrame([{"method": m, "dataset": "cifar10", "IR": 100, "seed": s, "top1_last": last, "top1_best": best,
                          "many": 80.0 + s, "medium": None, "few": 10.0, "ece": 5.0, "published": pub, "error": 12.5}
                         for m, s, last, best, pub in rows])


def test_mean_std_and_pm_in_closed_form():
    assert tables.mean_std([60, 62, 64]) == (62.0, 2.0, 3)
    mean, std, n = tables.mean_std([1.5, None, float("nan"), "x"])
    assert (mean, n) == (1.5, 1) and math.isnan(std)
    assert tables.pm([60, 62, 64]) == "62.00 ± 2.00"
    assert tables.pm(pd.Series([65.0, 69.0])) == "67.00 ± 2.83"
    assert tables.pm([1.5]) == "1.50" and tables.pm([]) == "-" and tables.pm([None]) == "-"


def test_method_table_mean_std_published_and_baseline():
    t = tables.method_table(runs_frame(), baseline="CE")
    assert list(t.columns) == ["method", "dataset", "IR", "seeds", "top1 last", "top1 best (test-picked)", "many",
                               "medium", "few", "ECE", "published", "last - published", "last - CE"]
    ce, a = (t[t.method == m].iloc[0] for m in ("CE", "A"))
    assert (ce["seeds"], ce["top1 last"], ce["top1 best (test-picked)"]) == (3, "62.00 ± 2.00", "63.00 ± 2.00")
    assert (ce["many"], ce["medium"], ce["few"], ce["ECE"]) == ("81.00 ± 1.00", "-", "10.00 ± 0.00", "5.00 ± 0.00")
    assert (ce["published"], ce["last - published"], ce["last - CE"]) == ("70.36", "-8.36", "-")
    assert (a["seeds"], a["top1 last"], a["published"], a["last - published"]) == (2, "67.00 ± 2.83", "-", "-")
    assert a["last - CE"] == "6.00 ± 1.41"  # paired by seed: 65 - 60, 69 - 62
    # Turned round, a published number from a function of the group's keys, and an extra column.
    t = tables.method_table(runs_frame(), published=lambda keys: 60.0 if keys["method"] == "A" else None,
                            baseline="CE", baseline_first=True, extra=["error"])
    a = t[t.method == "A"].iloc[0]
    assert (a["published"], a["last - published"], a["error"], a["CE - this"]) == ("60.00", "+7.00", "12.50", "-6.00 ± 1.41")
    t = tables.method_table(runs_frame().assign(source="CB Table 2"), extra=["source"])
    assert list(t["source"]) == ["CB Table 2", "CB Table 2"]
    # Without published numbers, with a group of its own and chosen metrics.
    t = tables.method_table(runs_frame(), ("dataset", "method"), published=None, metrics={"ours": "top1_last"})
    assert list(t.columns) == ["dataset", "method", "seeds", "ours"] and list(t["ours"]) == ["62.00 ± 2.00", "67.00 ± 2.83"]
    assert tables.method_table(runs_frame().iloc[0:0]).empty


def test_method_table_baseline_missing_in_a_group():
    df = runs_frame()
    df.loc[df.method == "A", "dataset"] = "cifar100"  # no CE run there
    t = tables.method_table(df, baseline="CE")
    assert t[t.method == "A"]["last - CE"].iloc[0] == "-"


def test_seed_stats_numbers():
    df = runs_frame()
    df["key"] = [f"k{i}" for i in range(len(df))]
    s = tables.seed_stats(df.iloc[::-1], ["method", "dataset", "IR"], ordered={"keys": "key"})
    ce = s[s.method == "CE"].iloc[0]
    assert (ce["n"], ce["seeds"], ce["last_mean"], ce["last_std"], ce["best_mean"]) == (3, "0 1 2", 62.0, 2.0, 63.0)
    assert ce["many"] == 81.0 and math.isnan(ce["medium"]) and ce["keys"] == ("k0", "k1", "k2")
    assert ce["published"] == 70.36 and ce["diff_last"] == pytest.approx(62.0 - 70.36)
    a = s[s.method == "A"].iloc[0]
    assert a["published"] is None or math.isnan(a["published"])
    s = tables.seed_stats(df, ["method"], published=lambda keys: {"A": 60.0}.get(keys["method"]))
    assert s[s.method == "A"]["diff_last"].iloc[0] == pytest.approx(7.0)


# --------------------------------------------------------------------------------------------
# The session a notebook opens


def notebook_namespace(stem: str, tmp_path: Path, **changes) -> dict:
    """What a notebook's globals() hold after its parameters cell, plus what IPython adds."""
    ns = notebook_parameters(ROOT / "notebooks" / f"{stem}.ipynb")
    ns.update(out_dir=str(tmp_path / "out" / stem), store_dir=str(tmp_path / "out"), **changes)
    ns.update({"In": ["x = 1"], "Out": {}, "_": "", "_i1": "x", "get_ipython": print, "pd": pd})
    return ns


def test_setup_applies_the_profile_checks_the_datasets_and_plans_like_the_planner(tmp_path, capsys):
    stem = "04_bbn_and_two_stage"
    ns = notebook_namespace(stem, tmp_path, profile="smoke", datasets=["synthetic", "cifar100"],
                            data_root=str(tmp_path / "no-data"))
    session = notebook.setup(stem, ns)
    printed = capsys.readouterr().out
    # The profile's values land in the namespace itself, so the notebook's own names see them.
    assert ns["epochs"] == 1 and session.params["epochs"] == 1 and session.changed["epochs"] == 1
    assert "profile 'smoke'" in printed and "SKIPPED cifar100: cifar100 not found" in printed
    assert "training on: ['synthetic']" in printed
    assert session.present == ["synthetic"] and list(session.skipped) == ["cifar100"]
    assert session.out == tmp_path / "out" / stem and session.store.root == tmp_path / "out"
    assert session.profile == "smoke"
    # Only the parameters: no IPython names, modules or functions.
    assert not {"In", "Out", "_", "_i1", "get_ipython", "pd"} & set(session.params)
    assert any(f[1] is not None and f[1].pattern == "IProgress not found" for f in warnings.filters)
    # The notebook's runs are the planner's, on the datasets present.
    expected = runs_for_notebook(stem, {**session.params, "datasets": ["synthetic"]})
    assert [r.spec.key for r in session.plan()] == [r.spec.key for r in expected] and expected
    setting = session.call(lambda epochs, datasets, grid_imbalance_ratio=0: (epochs, datasets, grid_imbalance_ratio))
    assert setting == (1, ["synthetic"], 50)


def test_setup_without_filling_from_the_profile(tmp_path, capsys):
    ns = notebook_namespace("01_long_tailed_cifar", tmp_path, profile="paper", fill_from_profile=False,
                            datasets=["synthetic"])
    session = notebook.setup("01_long_tailed_cifar", ns)
    assert session.changed == {} and ns["epochs"] == 8 and session.params["epochs"] == 8
    assert "profile 'paper'" not in capsys.readouterr().out


def test_caveats_and_parameters_of(capsys):
    notebook.caveats("quick", " (Phase II: 4 iterations)")
    out = capsys.readouterr().out
    assert out.startswith("Caveats:\n - ") and "profile 'quick' uses a shortened schedule / subset (Phase II: 4 iterations)" in out
    notebook.caveats("paper")
    assert "shortened" not in capsys.readouterr().out
    assert notebook.parameters_of({"a": [1, {"b": None}], "f": print, "_x": 1, "t": (1.5, "s"), "o": object()}) == \
        {"a": [1, {"b": None}], "t": (1.5, "s")}
    assert notebook.call_with(lambda a, b=2: (a, b), {"a": 1, "c": 3}, b=4) == (1, 4)


# --------------------------------------------------------------------------------------------
# Computations the notebooks call from their experiment modules


def test_bbn_grid_findings_and_table5():
    from ltbench.experiments import bbn_and_two_stage as bbn

    # CE features best for every classifier; an RW / RS classifier beats CE for CE and RW features only.
    top1 = {("CE", "CE"): 60, ("CE", "RW"): 62, ("CE", "RS"): 61, ("RW", "CE"): 50, ("RW", "RW"): 55, ("RW", "RS"): 52,
            ("RS", "CE"): 58, ("RS", "RW"): 57, ("RS", "RS"): 56}
    grid = pd.DataFrame([{"dataset": "cifar100", "IR": 50, "seed": s, "representation": r, "classifier": c,
                          "top1": v + s} for (r, c), v in top1.items() for s in (0, 2)])
    checks = bbn.grid_checks(grid)
    assert checks[checks.finding.str.startswith("1")]["holds"].all()
    assert list(checks[checks.finding.str.startswith("2")]["holds"]) == [True, True, False]
    t5 = bbn.table5(grid)
    assert list(t5["representation"]) == ["CE", "RW", "RS"] and t5.iloc[0]["ours, RW classifier"] == "63.00 ± 1.41"
    lines = bbn.findings(checks, bbn.ablation_summary(pd.DataFrame()), grid.iloc[0:0], 50, "cifar10")
    assert lines[0].startswith("cifar100-IR50, finding 1: CE features best for a fixed classifier: true in 3 of 3")
    assert lines[1].endswith("→ holds in part.") and "cannot be checked" in lines[2]
    # A part-way grid (RS features' RW classifier pending): the cases that need it cannot be
    # checked, the others are judged on the cells there are.
    part = grid[~((grid.representation == "RS") & (grid.classifier == "RW"))]
    pc = bbn.grid_checks(part)
    assert list(pc["holds"]) == [True, None, True, True, True, None]
    assert pc.iloc[1]["detail"] == "CE 63.00, RW 56.00, RS pending"
    plines = bbn.findings(pc, bbn.ablation_summary(pd.DataFrame()), grid.iloc[0:0], 50, "cifar10")
    assert plines[0].startswith("cifar100-IR50, finding 1: CE features best for a fixed classifier: true in 2 of 2 "
                                "cases (1 more wait for pending runs)") and plines[0].endswith("→ holds.")
    assert "true in 2 of 2 cases (1 more" in plines[1]
    only_ce = bbn.grid_checks(part[part.classifier == "CE"])  # every RW and RS classifier pending
    assert list(only_ce["holds"]) == [True, None, None, None, None, None]
    assert bbn.findings(only_ce, bbn.ablation_summary(pd.DataFrame()), grid.iloc[0:0], 50, None)[1] == (
        "cifar100-IR50, finding 2: RW/RS classifier beats CE for fixed features: every case needs a pending run "
        "(CE features: CE 61.00, RW pending, RS pending; RW features: CE 51.00, RW pending, RS pending; "
        "RS features: CE 59.00, RW pending, RS pending) → cannot be checked.")


def test_class_balanced_grid_positions_and_best_per_column():
    from ltbench.experiments import class_balanced_loss as cb

    assert cb.grid_position("CB focal beta 0.9999 gamma 1") == ("focal γ=1", "β=0.9999")
    assert cb.grid_position("sigmoid") == ("sigmoid", "plain") and cb.grid_position("CE") is None
    assert cb.paper_label({"loss": "cb_focal", "beta": 0.9999, "gamma": 1.0}) == "CB focal beta 0.9999 gamma 1"
    df = pd.DataFrame([{"method": m, "dataset": "cifar10", "IR": 100, "seed": 0, "top1_last": v}
                       for m, v in (("softmax", 70.0), ("CB focal beta 0.9999 gamma 1", 74.0), ("CB softmax beta 0.9999", 72.0))])
    best = cb.best_per_column(df).iloc[0]
    assert best["best CB configuration (ours)"] == "CB focal beta 0.9999 gamma 1" and bool(best["same as paper"])
    assert best["last - published"] == pytest.approx(74.0 - best["published best"])
    mean, rows, cols = cb.table2_grid(df)
    assert rows == ["softmax", "focal γ=1"] and cols == ["plain", "β=0.9999"]


def test_cb_softmax_diagnostic_plans_one_change_at_a_time_and_shares_ce_drw():
    from ltbench.experiments import class_balanced_loss as cb
    from ltbench.executor import collect

    by_nb = collect("cpu")
    mine = {r.label: r for r in by_nb["03_class_balanced_loss"]}
    theirs = {r.label: r for r in by_nb["04_bbn_and_two_stage"]}
    assert mine["CE-DRW"].spec.key == theirs["CE-DRW"].spec.key  # trained once, shown by both
    wm, drw, cbs = (mine[k].spec.config for k in ("CB weights, weighted mean", "CE-DRW", "CB softmax beta 0.9999"))
    assert (wm["loss"], wm["drw_epoch"], wm["drw_beta"]) == ("ce", 0, 0.9999) and drw["drw_epoch"] == 40
    assert {k for k in wm if wm[k] != drw[k]} == {"drw_epoch"}
    assert {k for k in wm if wm[k] != cbs[k]} == {"loss", "loss_params", "drw_epoch"}
    assert mine["CB weights, weighted mean"].tier == 1 and mine["CB weights, weighted mean"].published_method is None
    plain = dict(datasets=["cifar10"], imbalance_ratios=[100], epochs=10)
    assert not {"CE-DRW", "CB weights, weighted mean"} & {r.label for r in cb.runs(methods=["softmax"], **plain)}
    assert not {r.label for r in cb.runs(diagnostics=False, **plain)} & set(cb.DIAGNOSTICS)
    with pytest.raises(ValueError, match="diagnostics must be True or False, got 'yes'"):
        cb.runs(diagnostics="yes", **plain)


def test_cb_softmax_diagnostic_table_and_findings():
    from ltbench.data.counts import long_tailed_counts
    from ltbench.experiments import class_balanced_loss as cb

    rows = [{"method": m, "dataset": "cifar10", "IR": 100, "seed": 0, "top1_last": t, "many": a, "medium": b,
             "few": float("nan"), "published": p}
            for m, t, a, b, p in (("softmax", 64.0, 71.0, 35.0, 70.36), ("CB softmax beta 0.9999", 62.0, 63.0, 57.0, 72.37),
                                  ("CB weights, weighted mean", 66.5, 66.0, 67.0, None), ("CE-DRW", 70.75, 73.5, 59.0, None))]
    df = pd.DataFrame(rows)
    counts = {("cifar10", 100): long_tailed_counts(5000, 10, 100)}
    t = cb.normalisation_table(df, counts)
    assert list(t["run"]) == ["softmax", "CB softmax beta 0.9999", "CB weights, weighted mean", "CE-DRW"]
    assert t["loss scale"].tolist()[0] == 1 and t["loss scale"].tolist()[1] == pytest.approx(0.171, abs=5e-4)
    assert t["change"].tolist()[1:] == pytest.approx([-2.0, 4.5, 4.25])
    lines = cb.findings(df, epochs=50, counts=counts)
    diag = [x for x in lines if x.startswith("cifar10-IR100, what moves CB softmax")]
    assert len(diag) == 1 and "mean CB weight is 0.171" in diag[0] and "about 0.17× plain CE's" in diag[0]
    assert ": 66.50 (+4.50)" in diag[0] and "(CE-DRW): 70.75 (+4.25)" in diag[0] and "CE: 64.00. Of the" in diag[0]
    # The two changes as shares of the whole move (8.75 = 4.50 + 4.25), the larger one named.
    assert diag[0].endswith("Of the +8.75 points from CB softmax to CE-DRW, +4.50 come from the normalisation and +4.25 "
                            "from switching the weights on at 80 %: the larger part is the ÷N scale, not when the "
                            "weights are switched on. With PyTorch's weighted mean and the weights on from the start, "
                            "as the CB paper trains, ours is +2.50 against plain CE.")
    late = df.assign(top1_last=df.top1_last.where(df.method != "CE-DRW", 71.0 + 4.0))
    flipped = cb.normalisation_findings(cb.normalisation_table(late, counts))[0]
    assert "+4.50 come from the normalisation and +8.50 from" in flipped
    assert "the larger part is when the weights are switched on, not the ÷N scale." in flipped
    # The diagnostic runs are not cells of Table 2 and not claims.
    assert not any(x.startswith("CE-DRW vs") or "weighted mean vs" in x for x in lines)
    assert cb.table2_grid(df)[1] == ["softmax"] and cb.best_per_column(df).iloc[0]["best CB configuration (ours)"] == \
        "CB softmax beta 0.9999"
    # The claim that does not hold says where the accuracy moved.
    claim = [x for x in lines if x.startswith("CB softmax beta 0.9999 vs softmax")][0]
    assert claim.endswith("does not hold. Per split, ours − baseline: many -8.00, medium +22.00. The diagnostic "
                          "line below changes one thing at a time.")
    # Without the diagnostic's runs the claim points to nothing.
    alone = cb.findings(df[df.method.isin(["softmax", "CB softmax beta 0.9999"])], epochs=50)
    assert [x for x in alone if x.startswith("CB softmax beta")][0].endswith("medium +22.00.")
    # A pending diagnostic run is named, without counts there is no scale, and no CB softmax means no line.
    part = cb.normalisation_findings(cb.normalisation_table(df[df.method != "CB weights, weighted mean"]))
    assert len(part) == 1 and "PyTorch's `weight=`): pending" in part[0] and "mean CB weight" not in part[0]
    assert "(CE-DRW): 70.75;" in part[0] and "Of the" not in part[0]  # no shares while a step is pending
    assert cb.normalisation_table(df[df.method != "CB softmax beta 0.9999"]).empty


def test_a_main_table_claim_that_falls_short_carries_its_context():
    from ltbench.experiments import bbn_and_two_stage as bbn

    main = pd.DataFrame([{"method": m, "dataset": "cifar10", "IR": 100, "seed": 0, "top1_last": t, "many": a,
                          "medium": b, "few": None, "published": p}
                         for m, t, a, b, p in (("CE", 64.0, 71.0, 35.0, 70.36), ("Mixup", 56.6, 67.5, 13.0, 73.06),
                                               ("CE-DRW", 70.8, 73.8, 58.8, 76.34))])
    lines = bbn.findings(bbn.grid_checks(pd.DataFrame(columns=["dataset", "IR", "seed", "representation", "classifier",
                                                               "top1"])),
                         bbn.ablation_summary(pd.DataFrame()), main, 100, "cifar10", epochs=50)
    mixup = [x for x in lines if x.startswith("Mixup vs CE")][0]
    assert "does not hold. Per split, ours − baseline: many -3.50, medium -22.00. Read, not measured:" in mixup
    assert mixup.endswith("BagofTricks-LT issue #1). Whether the schedule explains ours shows at 200 epochs (the "
                          "paper profile, queued).")
    drw = [x for x in lines if x.startswith("CE-DRW vs CE")][0]
    assert drw.endswith("→ holds.")  # a claim that holds carries neither
