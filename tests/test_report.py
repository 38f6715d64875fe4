"""The report (summary.csv, README.md, figures) and the published numbers, on fabricated
metrics.json files."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from ltbench import published as pub
from ltbench.__main__ import main
from ltbench.io import atomic_write_json
from ltbench.report import collect, markdown_table, summarize, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def metrics(root: Path, profile: str, nb: str, method: str, dataset: str, ir: float, seed: int,
            last: float, best: float, published_method: str | None = "CE (softmax)",
            paper: str = "Class-Balanced Loss", table: str = "Table 2", **extra) -> str:
    """A fabricated finished run in the profile's store (``<profile>/runs/<key>/metrics.json``,
    no labels in it) and its row in the notebook's manifest (``<profile>/<nb>/runs.json``)."""
    key = hashlib.sha256(repr((nb, method, dataset, ir, seed)).encode()).hexdigest()[:20]
    m = {"schema": 1, "key": key, "spec": {"key": key, "method": "joint", "config": {}, "params": {}, "deps": {}},
         "execution": {"device": "cpu"}, "dataset": dataset, "imbalance_ratio": ir,
         "seed": seed, "top1_last": last, "top1_best": best,
         "best_epoch": 3, "epochs": 4, "many": 70.0 + seed, "medium": 50.0, "few": None,
         "ece": 10.0, "train_seconds": 1.0, "device": "cpu", "torch": "x",
         "created": "2026-01-01T00:00:00", "config": {}, "counts": [], "classes": [], "per_class": [],
         "confusion": []}
    m.update(extra)
    atomic_write_json(root / profile / "runs" / key / "metrics.json", m)
    add_to_manifest(root / profile / nb, {
        "label": method, "key": key, "method": "joint", "tier": 2, "notebook": nb, "paper": paper,
        "table": table, "published_method": published_method, "tags": {}, "run_dir": f"../runs/{key}"})
    return key


def add_to_manifest(nb_dir: Path, row: dict) -> None:
    path = nb_dir / "runs.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"schema": 1, "runs": []}
    manifest["runs"].append(row)
    atomic_write_json(path, manifest)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    nb = "03_class_balanced_loss"
    for seed, (last, best) in enumerate([(60.0, 61.0), (62.0, 63.0), (64.0, 65.0)]):
        metrics(root, "quick", nb, "ce", "cifar10", 100.0, seed, last, best)
    metrics(root, "quick", nb, "ce", "cifar10", 10.0, 0, 80.0, 81.5)
    metrics(root, "quick", nb, "crt", "cifar10", 10.0, 0, 70.0, 71.0,
            published_method="cRT (re-implementation)")  # row exists, IR10 not published
    metrics(root, "quick", nb, "mine", "cifar10", 100.0, 0, 55.0, 56.0, published_method=None)
    metrics(root, "quick", nb, "typo", "cifar10", 100.0, 0, 55.0, 56.0,
            published_method="CE (sofmax)")
    metrics(root, "quick", "04_bbn_and_two_stage", "ce_rw", "cifar100", 50.0, 0, 40.0, 41.0,
            published_method="BBN Table 5 RW", paper="BBN", table="Table 5")
    metrics(root, "smoke", nb, "ce", "cifar10", 10.0, 0, 20.0, 25.0)
    # Noise the collector must skip: a temp file of an atomic write, a checkpoint folder, and a
    # run of the store that no notebook lists.
    (root / "quick" / nb / ".runs.json.abc.tmp").write_text("{")
    (root / "quick" / ".ipynb_checkpoints").mkdir()
    (root / "quick" / ".ipynb_checkpoints" / "runs.json").write_text("{}")
    atomic_write_json(root / "quick" / "runs" / "0123456789abcdef0123" / "metrics.json",
                      {"key": "0123456789abcdef0123", "top1_last": 1.0, "seed": 0})
    return root


def test_published_numbers() -> None:
    assert pub.published("CE (softmax)", "cifar10", 100) == 70.36
    assert pub.published("CE (softmax)", "CIFAR-100-LT", 10.0) == 55.71
    assert pub.published("BBN", "cifar100", 50) == 47.02
    assert pub.published("cRT (re-implementation)", "cifar10", 10) is None  # "-" in SPEC
    assert pub.published("CE (softmax)", "cifar10", 200) is None
    # Error -> accuracy, original error kept beside it.
    assert pub.published("BBN Table 5 CE", "cifar100", 50) == 41.38
    assert pub.published("BBN sampler reversed", "cifar10", 50) == 82.18
    row = pub.published_row("BBN adaptor cosine decay")
    assert row.error[("cifar10", 50.0)] == 18.04 and row.values[("cifar10", 50.0)] == 81.96
    assert pub.CB_TABLE2_BEST_CONFIG[("cifar100", 100.0)] == {"loss": "cb_focal", "beta": 0.9,
                                                             "gamma": 1.0}
    assert len(pub.CIFAR_LT) == 18 and all(r.source for r in pub.ROWS.values())
    # the CB best of the C10-LT IR100 column as its own row (docs/methods.md §10.2), that column only
    cfg = pub.CB_TABLE2_BEST_CONFIG[("cifar10", 100.0)]
    assert (cfg["loss"], cfg["beta"], cfg["gamma"]) == ("cb_focal", 0.9999, 1.0)
    assert pub.published("CB focal beta 0.9999 gamma 1", "cifar10", 100) == pub.published("CB best per column", "cifar10", 100)
    assert pub.published("CB focal beta 0.9999 gamma 1", "cifar10", 50) is None
    assert any("single runs" in c for c in pub.CAVEATS)
    assert any("JPEG" in c for c in pub.CAVEATS)
    with pytest.raises(ValueError, match="valid rows: CE \\(softmax\\)"):
        pub.published("CE (sofmax)", "cifar10", 100)


def test_markdown_table() -> None:
    t = markdown_table(["a", "b"], [["x", 1.5], ["y|z", 10]], align=["l", "r"])
    lines = t.splitlines()
    assert lines[0].startswith("| a ") and lines[1].endswith(": |")
    assert "y\\|z" in t and len({len(line) for line in lines}) == 1


def test_collect_and_summarize(tree: Path) -> None:
    df, problems = collect(tree)
    assert len(df) == 9 and not problems
    assert set(df["profile"]) == {"quick", "smoke"}
    # Each row points at its run's folder in the profile's store, relative to the results folder.
    assert all(p == f"{prof}/runs/{k}" for p, prof, k in zip(df["path"], df["profile"], df["key"]))
    assert (df["run"] == "joint").all() and (df["tier"] == 2).all()
    ce = df[(df.method == "ce") & (df.profile == "quick") & (df.imbalance_ratio == 100)]
    assert sorted(ce["seed"]) == [0, 1, 2] and set(ce["notebook"]) == {"03_class_balanced_loss"}
    s, problems = summarize(df)
    assert any("CE (sofmax)" in p for p in problems)
    ce = s[(s.profile == "quick") & (s.method == "ce") & (s.imbalance_ratio == 100)].iloc[0]
    assert ce.n == 3 and ce.seeds == "0 1 2"
    assert ce.last_mean == pytest.approx(62.0) and ce.last_std == pytest.approx(2.0)
    assert ce.best_mean == pytest.approx(63.0) and ce.best_std == pytest.approx(2.0)
    assert ce.many == pytest.approx(71.0) and math.isnan(ce.few)
    assert ce.published == 70.36 and ce.diff_last == pytest.approx(62.0 - 70.36)
    rw = s[s.method == "ce_rw"].iloc[0]
    assert rw.published == pytest.approx(36.83) and rw.diff_last == pytest.approx(40 - 36.83)
    for method in ("crt", "mine", "typo"):
        row = s[s.method == method].iloc[0]
        assert row.published is None or math.isnan(row.published)


def test_collect_shared_runs_missing_runs_and_a_moved_tree(tree: Path, tmp_path: Path) -> None:
    # A run shared by two notebooks is one folder in the store and a row in each notebook.
    nb5 = tree / "quick" / "05_equalization_losses"
    first = json.loads((tree / "quick" / "03_class_balanced_loss" / "runs.json").read_text())["runs"][0]
    add_to_manifest(nb5, {**first, "notebook": "05_equalization_losses", "label": "CE baseline"})
    # A listed run whose metrics.json is missing is reported, not silently dropped.
    add_to_manifest(nb5, {**first, "key": "ffffffffffffffffffff", "run_dir": "../runs/ffffffffffffffffffff",
                          "notebook": "05_equalization_losses", "label": "lost"})
    df, problems = collect(tree)
    assert len(df) == 10
    shared = df[df.key == first["key"]]
    assert sorted(shared["notebook"]) == ["03_class_balanced_loss", "05_equalization_losses"]
    assert sorted(shared["method"]) == ["CE baseline", "ce"] and len(set(shared["path"])) == 1
    assert len(problems) == 1 and "lost" in problems[0] and "ffffffffffffffffffff" in problems[0]
    # The manifests name runs by relative paths: a moved results folder gives the same table.
    moved = shutil.copytree(tree, tmp_path / "elsewhere" / "results")
    shutil.rmtree(tree)
    df2, problems2 = collect(moved)
    assert df2.drop(columns="path").equals(df.drop(columns="path")) and list(df2["path"]) == list(df["path"])
    assert problems2 == problems


def test_write_report(tree: Path) -> None:
    out = write_report(tree)
    csv = (tree / "summary.csv").read_text().splitlines()
    assert len(csv) == 1 + 9 and csv[0].startswith("profile,paper,table,method")
    readme = (tree / "README.md").read_text()
    # mean ± std with 3 seeds, plain mean with one seed; published value and difference.
    cells = [[c.strip() for c in line.split("|")] for line in readme.splitlines()
             if line.startswith("| ce")]
    # columns: method, published row, dataset, IR, epochs, n, last, best, published, diff
    assert ["ce", "CE (softmax)", "cifar10", "100", "4", "3", "62.00 ± 2.00", "63.00 ± 2.00",
            "70.36", "-8.36"] in [c[1:11] for c in cells]
    assert ["ce", "CE (softmax)", "cifar10", "10", "4", "1", "80.00", "81.50", "86.39",
            "-6.39"] in [c[1:11] for c in cells]
    assert ["ce_rw", "BBN Table 5 RW", "cifar100", "50", "4", "1", "40.00", "41.00", "36.83",
            "+3.17"] in [c[1:11] for c in cells]
    crt = next(line for line in readme.splitlines() if line.startswith("| crt "))
    assert crt.split("|")[9].strip() == "-" and crt.split("|")[10].strip() == "-"
    mine = next(line for line in readme.splitlines() if line.startswith("| mine "))
    assert mine.split("|")[2].strip() == "-" and mine.split("|")[10].strip() == "-"
    assert "## Caveats" in readme and "single runs" in readme and "JPEG" in readme
    assert readme.index("## Profile `quick`") < readme.index("## Profile `smoke`")
    assert "### Class-Balanced Loss — Table 2" in readme and "### BBN — Table 5" in readme
    assert "unknown published_method names" in readme and "CE (sofmax)" in readme
    figs = [p for ps in out["figures"].values() for p in ps]
    names = {p.name for p in figs}
    assert {"quick_cifar10_acc_vs_ir.png", "quick_cifar10_ir100_shots.png",
            "quick_cifar100_acc_vs_ir.png", "smoke_cifar10_acc_vs_ir.png"} <= names
    for p in figs:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 2000
        assert f"](figures/{p.name})" in readme
    # A figure of a configuration that no longer exists is removed on the next report.
    (tree / "figures" / "stale.png").write_bytes(PNG)
    write_report(tree)
    assert not (tree / "figures" / "stale.png").exists()


def test_the_caveats_carry_the_measured_data_copy_check(tree: Path) -> None:
    import pandas as pd

    from ltbench.report import DATA_COPY_TABLE, data_copy_lines

    assert data_copy_lines(tree) == []  # no notebook 01 table: the caveat alone
    rows = [("as loaded", None, None, 0.0, 64.0, None), ("re-encoded at q50", 50, 28.7, 88.0, 61.8, -2.2)]
    table = pd.DataFrame([{"dataset": "cifar10", "IR": 100, "data": d, "quality": q, "PSNR vs loaded (dB)": db,
                           "added MSE": m, "seeds": 1, "top1 last": t, "change": c, "many": None, "medium": None}
                          for d, q, db, m, t, c in rows])
    (tree / "cpu" / DATA_COPY_TABLE).parent.mkdir(parents=True)
    table.to_csv(tree / "cpu" / DATA_COPY_TABLE, index=False)
    (line,) = data_copy_lines(tree)
    assert line.startswith("Measured, `cpu` ([notebook 01's table](cpu/01_long_tailed_cifar/tables/jpeg.csv)): "
                           "cifar10-IR100, CE on the data re-encoded once more: as loaded 64.00; "
                           "q50 (28.7 dB, MSE +88) 61.80, -2.20.")
    assert "-0.25 points per 10 levels²" in line and "would cost about 1.4 points" in line  # 0.025 x 57.9 = 1.45
    write_report(tree)
    caveats = (tree / "README.md").read_text().split("## Caveats")[1].split("Columns:")[0]
    assert f"- {line}" in caveats


def test_report_of_a_missing_folder_is_refused(tmp_path: Path, capsys) -> None:
    typo = tmp_path / "resluts"
    assert main(["report", "--results", str(typo)]) == 2
    assert not typo.exists()
    assert f"results folder not found: results_dir={str(typo)!r}" in capsys.readouterr().err


def test_report_of_empty_tree(tmp_path: Path, capsys) -> None:
    root = tmp_path / "results"
    root.mkdir()
    assert main(["report", "--results", str(root)]) == 0
    readme = (root / "README.md").read_text()
    assert "No results yet" in readme and "## Caveats" in readme
    assert (root / "summary.csv").read_text().startswith("profile,paper,table")
    assert not list(root.glob("figures/*.png"))
    assert "0 runs" in capsys.readouterr().out
