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
def test_notebook_smoke(stem, smoke_results):
    """Each notebook, executed once for all the tests of this file (``smoke_results``: execute, then run)."""
    out = smoke_results / stem
    # The notebook's runs: labelled in its manifest, stored once each in the profile's run store
    # (results/<profile>/runs/<key>/), never inside the notebook's own folder.
    manifest = json.loads((out / "runs.json").read_text())
    rows = manifest["runs"]
    assert rows, "the notebook listed no run in runs.json"
    assert not list(out.rglob("metrics.json"))
    store = (smoke_results / "runs").resolve()
    for row in rows:
        for key in ("label", "key", "method", "tier", "notebook", "paper", "table", "run_dir"):
            assert key in row, (row, key)
        assert row["notebook"] == stem and row["tier"] in (0, 1, 2)
        folder = (out / row["run_dir"]).resolve()
        assert folder == store / row["key"], row
        m = json.loads((folder / "metrics.json").read_text())
        for key in ("key", "spec", "execution", "dataset", "imbalance_ratio", "seed", "config"):
            assert key in m, (folder, key)
        assert m["key"] == row["key"] and m["spec"]["method"] == row["method"]
        assert math.isfinite(m["top1_last"]) and 0 <= m["top1_last"] <= 100
    pngs = list(out.rglob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert (out / f"{stem}.ipynb").exists()


# --------------------------------------------------------------------------------------------
# Readable, clean, concluded notebooks (issue 17): the sources cite the method reference and end
# with a conclusion cell; one smoke execution of every notebook (shared by the tests below) has no
# stderr output, no absolute path, no echoed return value, a computed conclusion and every figure
# as PNG and PDF.

import os  # noqa: E402
import re  # noqa: E402

#: An absolute path of this machine (a relative ``../../tmp/...`` is fine: preceded by a dot).
_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:tmp|home|root|work|Users|private|var|usr|opt|mnt|srv)/")


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _text_values(obj, where=""):
    """``(location, string)`` for every string of a notebook's JSON except embedded images (base64
    may contain anything); the location reads like ``/cells[3]/outputs[0]/text``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not str(k).startswith("image/") and k != "application/pdf":
                yield from _text_values(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _text_values(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


def _method_anchors() -> set:
    heads = [line.lstrip("#").strip() for line in (ROOT / "docs" / "methods.md").read_text().splitlines()
             if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_source_cites_the_method_reference_and_concludes(stem):
    nb = _load(ROOT / "notebooks" / f"{stem}.ipynb")
    cells = nb["cells"]
    text = "".join("".join(c["source"]) for c in cells)
    assert "SPEC §" not in text
    # The opening: title, then the paper's idea with rendered equations and links into docs/methods.md.
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    idea = "".join(cells[1]["source"])
    assert cells[1]["cell_type"] == "markdown" and "$$" in idea and "../docs/methods.md#" in idea
    anchors = _method_anchors()
    for anchor in re.findall(r"\.\./docs/methods\.md#([\w\-]+)", text):
        assert anchor in anchors, anchor
    tagged = [c for c in cells if "conclusion" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code" and cells[-1] is tagged[0]


#: Most code lines a notebook may hold (tools/codestats.py: non-blank, non-comment lines of code cells).
MAX_CODE_LINES = 170


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_is_thin(stem):
    """Issue 23: a notebook opens its session with ltbench.notebook.setup (no hand-written preamble),
    plans its runs from its parameters (no forwarded keywords), and stays short: computations live
    in its experiment module, tables come from ltbench.tables."""
    import importlib.util
    import sys

    codestats = sys.modules.get("codestats")
    if codestats is None:
        spec = importlib.util.spec_from_file_location("codestats", ROOT / "tools" / "codestats.py")
        codestats = sys.modules["codestats"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(codestats)
    assert codestats.notebook_code_lines(ROOT)[f"{stem}.ipynb"] <= MAX_CODE_LINES
    code = ["".join(c["source"]) for c in _load(ROOT / "notebooks" / f"{stem}.ipynb")["cells"] if c["cell_type"] == "code"]
    assert f'session = setup("{stem}", globals())' in code[1]
    text = "\n".join(code[1:])
    for preamble in ("apply_profile", "filterwarnings", "check_datasets", "use_style", "experiment.runs(", "CAVEATS",
                     "summary_frame", "def pm("):
        assert preamble not in text, (stem, preamble)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """The smoke profile reproduced once as ``make reproduce`` does it (``execute`` trains the runs,
    then ``run`` executes every notebook, which renders from the run store), with the relative
    paths it uses (results and notebooks folders relative to the working directory)."""
    from ltbench.executor import execute

    base = tmp_path_factory.mktemp("smoke_all")
    overrides = {} if real_cifar10_root() else {"datasets": ["synthetic"]}
    notebooks = os.path.relpath(ROOT / "notebooks", base)
    mp = pytest.MonkeyPatch()
    mp.setenv("LTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ltbench-cache"))
    mp.chdir(base)
    try:
        report = execute("smoke", "results", overrides=overrides, notebooks_dir=notebooks, progress=False,
                         verbose=False)
        assert not report.failed, report.failed
        statuses = run_notebooks(profile="smoke", results_dir="results", notebooks_dir=notebooks,
                                 overrides=overrides, progress=False, verbose=False)
    finally:
        mp.undo()
    assert exit_code(statuses) == 0, [(s.notebook, s.status, s.error) for s in statuses]
    return base / "results" / "smoke"


@pytest.mark.slow
def test_notebook_01_renders_the_data_copy_check(smoke_results):
    """The smoke profile's jpeg_qualities=[50]: its run is stored, tabled beside CE and concluded."""
    import pandas as pd

    out = smoke_results / "01_long_tailed_cifar"
    rows = json.loads((out / "runs.json").read_text())["runs"]
    assert sorted(r["label"] for r in rows) == ["CE", "CE, JPEG q50"]
    assert next(r for r in rows if r["label"] == "CE, JPEG q50")["tier"] == 2
    table = pd.read_csv(out / "tables" / "jpeg.csv")
    assert list(table["data"]) == ["as loaded", "re-encoded at q50"]
    assert table["added MSE"].iloc[0] == 0 and table["added MSE"].iloc[1] > 0
    assert table["change"].iloc[1] == pytest.approx(table["top1 last"].iloc[1] - table["top1 last"].iloc[0])
    assert "CE on the data re-encoded once more: as loaded" in (out / "conclusion.md").read_text()


@pytest.mark.slow
def test_executed_notebooks_are_clean(smoke_results):
    for stem in NOTEBOOKS:
        nb = _load(smoke_results / stem / f"{stem}.ipynb")
        for i, cell in enumerate(nb["cells"]):
            for o in cell.get("outputs", []):
                assert not (o["output_type"] == "stream" and o["name"] == "stderr"), (stem, i, "".join(o["text"])[:300])
                assert o["output_type"] != "error", (stem, i, o.get("evalue"))
                plain = "".join(o.get("data", {}).get("text/plain", ""))
                assert "PosixPath(" not in plain, (stem, i, plain[:200])  # an echoed return value
                assert "IProgress" not in "".join(o.get("text", "")), (stem, i)
        # Anywhere in the file, papermill's metadata included (the runner must record relative paths).
        hits = [(where, s[m.start():m.start() + 80]) for where, s in _text_values(nb) for m in [_ABSOLUTE.search(s)] if m]
        assert not hits, (stem, hits)


@pytest.mark.slow
def test_executed_notebooks_end_with_a_computed_conclusion(smoke_results):
    for stem in NOTEBOOKS:
        nb = _load(smoke_results / stem / f"{stem}.ipynb")
        cell = next(c for c in nb["cells"] if "conclusion" in c.get("metadata", {}).get("tags", []))
        shown = ["".join(o["data"]["text/markdown"]) for o in cell["outputs"] if "text/markdown" in o.get("data", {})]
        assert len(shown) == 1, stem
        assert shown[0].startswith("## Conclusion") and "**The paper's claim.**" in shown[0], stem
        assert "profile `smoke`" in shown[0] and re.search(r"\d", shown[0].split("**What this run shows**")[1]), stem
        # conclusion.md holds the same text, its links rewritten relative to the notebook's results folder.
        unlink = lambda t: re.sub(r"\]\([^)]*\)", "]", t)  # noqa: E731
        assert unlink((smoke_results / stem / "conclusion.md").read_text()) == unlink(shown[0])


@pytest.mark.slow
def test_every_figure_is_saved_as_png_and_pdf(smoke_results):
    for stem in NOTEBOOKS:
        figures = smoke_results / stem / "figures"
        pngs, pdfs = sorted(figures.glob("*.png")), sorted(figures.glob("*.pdf"))
        assert pngs, stem
        assert [p.stem for p in pngs] == [p.stem for p in pdfs], stem
        for png, pdf in zip(pngs, pdfs):
            assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000, png
            assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000, pdf


@pytest.fixture(scope="module")
def partial_results(smoke_results, tmp_path_factory):
    """Every notebook rendered with ``--no-train``'s parameter (train_missing=False) from a copy of
    the smoke store that lacks about half of its runs (every run whose key starts with a digit
    below 8, the CE baselines kept), as a harvest's store is part-way; nothing may train."""
    import shutil

    base = tmp_path_factory.mktemp("partial")
    shutil.copytree(smoke_results / "runs", base / "results" / "smoke" / "runs")
    removed = set()
    for folder in sorted((base / "results" / "smoke" / "runs").iterdir()):
        spec = json.loads((folder / "spec.json").read_text())
        baseline = spec["method"] == "joint" and spec["config"]["loss"] == "ce" and spec["config"]["sampler"] == "instance"
        if folder.name[0] in "01234567" and not baseline:
            shutil.rmtree(folder)
            removed.add(folder.name)
    overrides = {} if real_cifar10_root() else {"datasets": ["synthetic"]}
    overrides.update({f"{stem}:train_missing": False for stem in NOTEBOOKS if stem != "08_your_method"})
    mp = pytest.MonkeyPatch()
    mp.setenv("LTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "ltbench-cache"))
    mp.chdir(base)
    try:
        statuses = run_notebooks(profile="smoke", results_dir="results", notebooks_dir=os.path.relpath(ROOT / "notebooks", base),
                                 only=[s for s in NOTEBOOKS if s != "08_your_method"], overrides=overrides,
                                 progress=False, verbose=False)
    finally:
        mp.undo()
    assert exit_code(statuses) == 0, [(s.notebook, s.status, s.error) for s in statuses]
    return base / "results" / "smoke", removed


@pytest.mark.slow
def test_a_render_without_training_shows_the_finished_runs_and_names_the_pending_ones(partial_results):
    out, removed = partial_results
    assert removed, "the partial store lost no run: the test checks nothing"
    # nothing was trained: the store holds exactly the runs that were left in it
    assert not removed & {p.name for p in (out / "runs").iterdir()}
    n_pending = 0
    for stem in (s for s in NOTEBOOKS if s != "08_your_method"):
        rows = json.loads((out / stem / "runs.json").read_text())["runs"]
        pending = {r["key"] for r in rows if r["status"] == "pending"}
        assert pending == {r["key"] for r in rows} & removed, stem
        conclusion = (out / stem / "conclusion.md").read_text()
        if pending:
            assert f"{len(pending)} run(s) pending" in conclusion, stem
            assert (out / stem / "completed.json").is_file()  # rendered, but the runner will render it again
        n_pending += len(pending)
    assert n_pending
