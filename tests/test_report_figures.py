"""Figures and the honest report: the plotting module's PNG + PDF output, the notebooks' figure and
conclusion helpers, the report's per-paper figures (any number of methods and IRs, shared runs shown
once), the training-length columns and the opening "what is reproduced" lines. Fabricated runs, no
training."""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from ltbench.io import atomic_write_json
from ltbench.report import collect, paper_panels, schedule, summarize, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data.startswith(PNG)
    return struct.unpack(">II", data[16:24])


def test_plotting_save_writes_png_and_pdf(tmp_path: Path) -> None:
    from ltbench import plotting

    fig = plotting.new_figure(3, 2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="x")
    plotting.legend_outside(ax)
    png, pdf = plotting.save(fig, tmp_path / "figures" / "line.png")
    assert png.name == "line.png" and pdf.name == "line.pdf"
    assert png.read_bytes().startswith(PNG) and pdf.read_bytes().startswith(b"%PDF")
    width, _ = png_size(png)
    assert width >= 3 * plotting.DPI * 0.8  # saved at the style's dpi (tight box trims a little)
    # Unchanged figure, same PDF (no creation date inside).
    first = pdf.read_bytes()
    plotting.save(fig, tmp_path / "figures" / "line")
    assert pdf.read_bytes() == first


def test_save_figure_returns_nothing_and_writes_both(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltbench.notebook import figure_paths, save_figure

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    assert save_figure(fig, tmp_path, "curve", show=False) is None  # nothing for Jupyter to echo
    for p in figure_paths(tmp_path, "curve"):
        assert p.is_file() and p.stat().st_size > 1000


def test_heatmap_annotations_fit_their_cells() -> None:
    import numpy as np

    from ltbench import plotting

    fig = plotting.new_figure(6, 5)
    ax = fig.add_subplot()
    plotting.heatmap(ax, np.random.default_rng(0).random((10, 10)), annotate=True)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == 100
    # No two annotations overlap (the 01 confusion matrix's numbers did).
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)


def test_conclusion_and_verdict(tmp_path: Path) -> None:
    from ltbench.notebook import conclusion, verdict

    assert (verdict(True), verdict(False), verdict(None), verdict(True, partial=True)) == \
        ("holds", "does not hold", "cannot be checked", "holds in part")
    md = conclusion("A claim ([methods §4.8](../docs/methods.md#48-sigmoid-eql)).", ["x 1.00 vs y 2.00 → does not hold."],
                    "smoke", tmp_path / "out")
    text = md.data if hasattr(md, "data") else md
    assert text.startswith("## Conclusion") and "A claim" in text and "profile `smoke`" in text
    assert "Profile `smoke` trains briefly" in text and "](../docs/methods.md#48-sigmoid-eql)" in text
    # The saved copy's links are relative to where it is saved, not to the notebook's folder.
    saved = (tmp_path / "out" / "conclusion.md").read_text()
    link = os.path.relpath(Path.cwd().parent / "docs" / "methods.md", tmp_path / "out")
    assert f"]({Path(link).as_posix()}#48-sigmoid-eql)" in saved
    assert saved.replace(f"]({Path(link).as_posix()}#", "](../docs/methods.md#") == text
    assert "`paper` profile" not in conclusion("c", [], "paper").data


# --------------------------------------------------------------------------------------------
# Report


def run(root: Path, profile: str, nb: str, label: str, ir: float, seed: int, top1: float, *, paper: str,
        table: str = "T", published_method: str | None = None, key: str | None = None, method: str = "joint",
        epochs: int = 8, deps: dict | None = None, config: dict | None = None) -> str:
    """A fabricated finished run in ``<profile>/runs/<key>/`` and its row in ``<profile>/<nb>/runs.json``;
    the same ``key`` in several notebooks is one shared run."""
    key = key or hashlib.sha256(repr((nb, label, ir, seed)).encode()).hexdigest()[:20]
    folder = root / profile / "runs" / key
    if not (folder / "metrics.json").exists():
        atomic_write_json(folder / "metrics.json", {
            "schema": 1, "key": key, "spec": {"key": key, "method": method, "config": {}, "params": {},
                                              "deps": deps or {}},
            "dataset": "cifar10", "imbalance_ratio": ir, "seed": seed, "top1_last": top1, "top1_best": top1 + 1,
            "best_epoch": 1, "epochs": epochs, "many": top1 + 10, "medium": top1, "few": top1 - 10, "ece": 5.0,
            "train_seconds": 1.0, "config": {"epochs": epochs, **(config or {})}})
    path = root / profile / nb / "runs.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"schema": 1, "runs": []}
    manifest["runs"].append({"label": label, "key": key, "method": method, "tier": 2, "notebook": nb, "paper": paper,
                             "table": table, "published_method": published_method, "tags": {},
                             "run_dir": f"../runs/{key}"})
    atomic_write_json(path, manifest)
    return key


def test_schedule_columns() -> None:
    stage1 = {"method": "joint", "config": {"epochs": 200}}
    assert schedule({"epochs": 200, "config": {"epochs": 200}, "spec": {"method": "joint", "deps": {}}}) == (200, None, None)
    assert schedule({"epochs": 30, "config": {"epochs": 30}, "spec": {"method": "crt", "deps": {"stage1": stage1}}}) \
        == (200, 30, None)
    assert schedule({"epochs": 1, "config": {"epochs": 1}, "spec": {"method": "tau_norm", "deps": {"stage1": stage1}}}) \
        == (200, 0, None)
    fsa = {"epochs": 10, "config": {"epochs": 10, "batch_size": 128, "sampler_params": {"num_samples": 640 * 128}},
           "spec": {"method": "fsa", "deps": {"phase1": stage1}}}
    assert schedule(fsa) == (200, None, 6400)
    assert schedule({"epochs": 4, "config": {}, "spec": {"method": "joint", "deps": {}}}) == (4, None, None)


@pytest.fixture
def many_methods(tmp_path: Path) -> Path:
    """46 labels over three papers at one IR; the CE run shared by two notebooks of one paper."""
    root = tmp_path / "results"
    ce = run(root, "quick", "01_a", "CE", 100, 0, 20.0, paper="Paper A", published_method="CE (softmax)")
    run(root, "quick", "03_a", "softmax", 100, 0, 20.0, paper="Paper A", key=ce, published_method="CE (softmax)")
    for i in range(25):
        run(root, "quick", "03_a", f"A method {i}", 100, 0, 20.0 + i, paper="Paper A")
    run(root, "quick", "04_b", "CE", 100, 0, 20.0, paper="Paper B", key=ce, published_method="CE (softmax)")
    for i in range(15):
        run(root, "quick", "04_b", f"B method {i}", 100, 0, 15.0 + i, paper="Paper B")
    stage1 = {"method": "joint", "config": {"epochs": 8}}
    run(root, "quick", "04_b", "cRT", 100, 0, 25.0, paper="Paper B", method="crt", epochs=4, deps={"stage1": stage1},
        published_method="cRT (re-implementation)")
    run(root, "quick", "06_c", "FSA", 100, 0, 26.0, paper="Paper C", method="fsa", epochs=4, deps={"phase1": stage1},
        config={"batch_size": 64, "sampler_params": {"num_samples": 64 * 25}})
    for i in range(3):
        run(root, "quick", "06_c", f"C method {i}", 100, 0, 10.0 + i, paper="Paper C")
    return root


def test_paper_panels_deduplicate_shared_runs(many_methods: Path) -> None:
    df, problems = collect(many_methods)
    assert not problems
    summary, _ = summarize(df)
    panels = dict(paper_panels(summary))
    assert list(panels) == ["Paper A", "Paper B", "Paper C"]
    labels_a = [label for _, label, _ in panels["Paper A"]]
    # "CE" (notebook 01) and "softmax" (notebook 03) are one run: one entry, the baseline first.
    assert labels_a[0] == "CE = softmax" and len(labels_a) == 26
    assert [label for _, label, _ in panels["Paper B"]][0] == "CE"


def test_report_figures_fit_any_number_of_methods(many_methods: Path) -> None:
    out = write_report(many_methods)
    figs = {p.name: p for p in out["figures"]["quick"]}
    assert set(figs) == {"quick_cifar10_acc_vs_ir.png", "quick_cifar10_ir100_shots.png"}
    for p in figs.values():
        width, height = png_size(p)
        assert width <= 2000, (p.name, width)  # one column of panels, not 46 groups side by side
        assert height > width  # 49 methods in three panels: the figure grows downwards
        pdf = p.with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000


def test_readme_opens_with_what_is_reproduced(many_methods: Path) -> None:
    write_report(many_methods)
    readme = (many_methods / "README.md").read_text()
    lines = readme.splitlines()
    assert lines[0] == "# ltbench results" and lines[2] == "## What is reproduced"
    assert "0 of 3 papers" in readme
    for paper in ("Paper A", "Paper B", "Paper C"):
        line = next(line for line in lines if line.startswith(f"- **{paper}**"))
        assert "not reproduced at paper scale" in line
    assert "commit `" in readme or "not a git checkout" in readme
    assert "`python -m ltbench run --profile quick`" in readme
    header = next(line for line in lines if line.startswith("| method "))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[4] == "epochs" and {"stage-2 epochs", "FSA iterations", "runs"} <= set(cols)
    crt = next([c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| cRT "))
    fsa = next([c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| FSA "))
    assert (crt[4], crt[cols.index("stage-2 epochs")], crt[cols.index("FSA iterations")]) == ("8", "4", "-")
    assert (fsa[4], fsa[cols.index("stage-2 epochs")], fsa[cols.index("FSA iterations")]) == ("8", "-", "100")
    key = json.loads((many_methods / "quick" / "04_b" / "runs.json").read_text())["runs"][-1]["key"]
    assert f"(quick/runs/{key}/)" in readme


def test_readme_with_paper_scale_runs(tmp_path: Path) -> None:
    root = tmp_path / "results"
    run(root, "paper", "01_a", "CE", 100, 0, 69.36, paper="Paper A", published_method="CE (softmax)")
    run(root, "quick", "01_a", "CE", 100, 0, 20.0, paper="Paper A", published_method="CE (softmax)")
    write_report(root)
    readme = (root / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("- **Paper A**"))
    assert "**paper scale**" in line and "1 of 6 published cells have a run at this scale" in line
    assert "mean -1.00" in line and "5 published cells without one" in line
    assert "1 of 1 paper" in readme


def test_claims_table_checks_each_published_gain_once_as_the_notebooks_do(tmp_path: Path) -> None:
    import pandas as pd

    from ltbench.experiments import gain_findings
    from ltbench.report import claims, claims_section

    root = tmp_path / "results"
    ce = [run(root, "cpu", "02_f", "CE", 100, s, 64.0 + s, paper="F", published_method="CE (softmax)")
          for s in (0, 1)]
    for s in (0, 1):
        run(root, "cpu", "03_c", "softmax", 100, s, 64.0 + s, paper="C", key=ce[s], published_method="CE (softmax)")
    # One sigmoid focal gamma 2 run per seed, shown by both notebooks under two labels: one claim.
    f2 = [run(root, "cpu", "02_f", "sigmoid focal gamma 2", 100, s, 62.0 + 0.5 * s, paper="F",
              published_method="sigmoid focal gamma 2") for s in (0, 1)]
    for s in (0, 1):
        run(root, "cpu", "03_c", "focal gamma 2", 100, s, 62.0 + 0.5 * s, paper="C", key=f2[s],
            published_method="sigmoid focal gamma 2")
    run(root, "cpu", "03_c", "CB focal beta 0.9999 gamma 1", 100, 0, 66.0, paper="C",
        published_method="CB focal beta 0.9999 gamma 1")  # seed 0 only: paired with CE seed 0
    run(root, "cpu", "03_c", "mine", 100, 0, 90.0, paper="C")  # no published row: no claim
    run(root, "quick", "01_q", "CE", 100, 0, 20.0, paper="Q", published_method="CE (softmax)")
    run(root, "quick", "01_q", "CE-DRW", 100, 0, 30.0, paper="Q", published_method="CE-DRW")

    df, problems = collect(root)
    assert not problems
    t = claims(df)
    cpu = t[t["profile"] == "cpu"].set_index("published_method")
    assert sorted(cpu.index) == ["CB focal beta 0.9999 gamma 1", "sigmoid focal gamma 2"]
    f = cpu.loc["sigmoid focal gamma 2"]
    assert (f["method"], f["notebooks"], f["n"]) == ("sigmoid focal gamma 2", "02, 03", 2)
    assert f["published_gain"] == pytest.approx(69.59 - 70.36) and f["gain"] == pytest.approx(-2.25)
    assert f["gain_std"] == pytest.approx(0.3535534, abs=1e-6)
    assert f["verdict"] == "holds (below the baseline, as published)"
    cb = cpu.loc["CB focal beta 0.9999 gamma 1"]
    assert (cb["n"], cb["gain"], cb["verdict"]) == (1, pytest.approx(2.0), "holds in part (positive, under half "
                                                                             "the published gain)")
    # The notebooks' own conclusion lines give the same verdicts from the same rows.
    nb = df[(df["notebook"] == "03_c")].rename(columns={"imbalance_ratio": "IR"})
    nb["published"] = [None if not p else {"CE (softmax)": 70.36, "sigmoid focal gamma 2": 69.59,
                                           "CB focal beta 0.9999 gamma 1": 74.57}[p] for p in nb["published_method"]]
    lines = gain_findings(pd.DataFrame(nb), baseline="softmax")
    for line in lines:
        row = cpu.loc["sigmoid focal gamma 2" if line.startswith("focal") else "CB focal beta 0.9999 gamma 1"]
        assert f"→ {row['verdict']}." in line
        # Where it falls short the line says where ours moved, as the table's split column does.
        assert ("Per split, ours − baseline: many +2.00, medium +2.00, few +2.00." in line) == \
            row["verdict"].startswith("holds in part")
    text = "\n".join(claims_section(t))
    assert "### `cpu` (1 holds, 1 holds in part; 2 claims)" in text
    assert "| -0.77 " in text and "-2.25 ± 0.35" in text and "CE-DRW" not in text
    assert "| +2.0 / +2.0 / +2.0 " in text and "| -2.2 / -2.2 / -2.2 " in text  # mean of -2.0 and -2.5: -2.25
    assert "Left out: `quick`, which learns too little" in text
    assert claims_section(t[t["profile"] == "quick"]) == [] and claims_section(t.iloc[0:0]) == []
    readme = write_report(root)["readme"].read_text()
    assert readme.index("## What is reproduced") < readme.index("## Published gains over CE, checked") \
        < readme.index("## Caveats")
    # One figure per shown profile, linked under its table; none for quick.
    assert "![claims cpu](figures/claims_cpu.png)" in readme and "[PDF](figures/claims_cpu.pdf)" in readme
    png = root / "figures" / "claims_cpu.png"
    assert png.read_bytes().startswith(b"\x89PNG") and (root / "figures" / "claims_cpu.pdf").is_file()
    assert not (root / "figures" / "claims_quick.png").exists()
    _, height = png_size(png)
    assert height > 300  # two rows, a title, the axis
