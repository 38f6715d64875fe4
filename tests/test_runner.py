"""The papermill batch runner, on the tiny fixture notebooks of tests/fixtures (not the real ones).

Fixtures: ``01_ok`` writes metrics.json per (dataset, IR, seed) and appends a line to
``calls.log`` per execution; ``02_raises`` writes one run then raises; ``03_dies`` kills its
kernel with ``os._exit``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, copy_fixture_notebook
from ltbench import profiles, runner
from ltbench.__main__ import main

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the kernels


@pytest.fixture
def nbdir(tmp_path: Path) -> Path:
    """A private copy of the fixtures (tests edit notebooks), plus 04_ok_again after 02_raises;
    each with the ``store_dir`` parameter the runner sets."""
    d = tmp_path / "notebooks"
    d.mkdir()
    for name in ("01_ok", "02_raises", "03_dies"):
        copy_fixture_notebook(FIXTURES / f"{name}.ipynb", d)
    copy_fixture_notebook(FIXTURES / "01_ok.ipynb", d / "04_ok_again.ipynb")
    return d


def run(nbdir: Path, results: Path, **kw):
    kw.setdefault("profile", "smoke")
    return runner.run_notebooks(notebooks_dir=nbdir, results_dir=results, progress=False,
                                verbose=False, **kw)


def calls(results: Path, stem: str = "01_ok") -> int:
    f = results / "smoke" / stem / "calls.log"
    return len(f.read_text().splitlines()) if f.exists() else 0


# --------------------------------------------------------------------------------------------
# Without executing anything


def test_profiles_structure_and_resolution() -> None:
    for name, prof in profiles.PROFILES.items():
        assert set(prof) <= {"*", *profiles.NOTEBOOKS}, name
        assert set(prof.get("*", {})) <= set(profiles.COMMON_PARAMETERS), name
    assert set(profiles.PROFILES) >= {"smoke", "quick", "cpu", "paper"}
    paper = profiles.resolve_overrides("paper", "01_long_tailed_cifar")
    assert paper["epochs"] == 200 and sorted(paper["imbalance_ratios"]) == [10, 50, 100]
    assert set(paper["datasets"]) == {"cifar10", "cifar100"}
    got = profiles.resolve_overrides("smoke", "01_long_tailed_cifar", {"epochs": 7})
    assert got["epochs"] == 7 and got["device"] == "cpu"  # extra > notebook entry > "*"
    got["seeds"].append(99)  # a fresh copy: PROFILES is untouched
    assert profiles.PROFILES["smoke"]["*"]["seeds"] == [0]
    assert profiles.resolve_overrides("quick", "99_unknown") == profiles.PROFILES["quick"]["*"]
    with pytest.raises(ValueError, match="valid profiles: smoke, quick, cpu, paper"):
        profiles.resolve_overrides("nope", "01_long_tailed_cifar")


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("1e-3", 1e-3), ("[100, 50]", [100, 50]), ("None", None), ("null", None),
    ("cifar10", "cifar10"), ("[cifar10, cifar100]", ["cifar10", "cifar100"]), ("True", True),
    ("'x'", "x"), ("a b", "a b"),
])
def test_parse_value(text: str, value: object) -> None:
    assert runner.parse_value(text) == value


def test_parse_assignments() -> None:
    assert runner.parse_assignments(["epochs=5", "01:lr=0.5", "s=a=b"]) == {
        "epochs": 5, "01:lr": 0.5, "s": "a=b"}
    with pytest.raises(runner.ConfigError, match="key=value"):
        runner.parse_assignments(["epochs"])


def _nothing_ran(results: Path) -> bool:
    return not any(p.is_dir() for p in (results / "smoke").glob("*")) if results.exists() else True


@pytest.mark.parametrize("kw, match", [
    ({"profile": "nope"}, r"unknown profile.*valid profiles: smoke, quick, cpu, paper"),
    ({"only": ["09_missing"]}, r"unknown notebook.*valid notebooks: 01_ok, 02_raises"),
    ({"only": ["0"]}, r"ambiguous"),
    ({"overrides": {"epoch": 3}}, r"unknown parameter 'epoch'.*did you mean 'epochs'.*"
                                  r"valid parameters: profile, out_dir"),
    ({"overrides": {"epochs": "ten"}}, r"'epochs' = 'ten' \(str.*expected int"),
    ({"overrides": {"imbalance_ratios": 100}}, r"'imbalance_ratios' = 100 .*expected list"),
    ({"overrides": {"lr": [0.1]}}, r"'lr' = \[0.1\] .*expected float"),
    ({"overrides": {"datasets": [10]}}, r"'datasets' = \[10\].*elements should be strings"),
    ({"overrides": {"out_dir": "x"}}, r"set by the runner"),
    ({"overrides": {"09:epochs": 1}}, r"unknown notebook"),
    ({"seeds": 0}, r"positive number of seeds"),
])
def test_config_errors_before_execution(nbdir: Path, tmp_path: Path, kw: dict,
                                        match: str) -> None:
    results = tmp_path / "results"
    with pytest.raises(runner.ConfigError, match=match):
        run(nbdir, results, **kw)
    assert _nothing_ran(results)


def test_profile_entry_checked_against_notebook(nbdir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad key for the LAST notebook stops the batch before the first one runs.
    monkeypatch.setitem(profiles.PROFILES["smoke"], "04_ok_again", {"n_max": 5})
    with pytest.raises(runner.ConfigError,
                       match=r"04_ok_again: unknown parameter 'n_max' \(set by profile 'smoke' "
                             r"entry '04_ok_again'"):
        run(nbdir, tmp_path / "results", only=["01", "04"])
    assert calls(tmp_path / "results") == 0


def test_unknown_kernel(nbdir: Path, tmp_path: Path) -> None:
    with pytest.raises(runner.ConfigError, match="unknown Jupyter kernel 'no-such-kernel'"):
        run(nbdir, tmp_path / "results", kernel_name="no-such-kernel")
    assert _nothing_ran(tmp_path / "results")


def test_unwritable_results(nbdir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(runner.ConfigError, match="not writable"):
        run(nbdir, blocker / "results")


def test_cli_config_error_exit_code(nbdir: Path, tmp_path: Path, capsys) -> None:
    rc = main(["run", "--notebooks", str(nbdir), "--results", str(tmp_path / "r"),
               "--profile", "smoke", "-p", "epochs=ten"])
    assert rc == 2
    assert "expected int" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Executing the fixtures


@pytest.mark.slow
def test_success_writes_metrics_and_marker(nbdir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    (st,) = run(nbdir, results, only=["01_ok"], seeds=2,
                overrides={"imbalance_ratios": [100, 10]})
    assert st.status == "ok" and st.error is None, st
    rd = results / "smoke" / "01_ok"
    assert st.executed == rd / "01_ok.ipynb" and st.executed.is_file()
    assert not (rd / "01_ok.running.ipynb").exists()
    metrics = {p.relative_to(rd).as_posix() for p in rd.rglob("metrics.json")}
    assert metrics == {f"runs/cifar10_ir{ir}_ce_s{s}/metrics.json"
                       for ir in (10, 100) for s in (0, 1)}
    m = json.loads((rd / "runs/cifar10_ir100_ce_s1/metrics.json").read_text())
    assert m["seed"] == 1 and m["profile"] == "smoke" and m["top1_last"] == 51.0
    marker = json.loads((rd / runner.MARKER).read_text())
    assert marker["parameters"]["seeds"] == [0, 1]
    # Relative to the kernel's working directory (the notebooks' folder), like the notebooks' defaults.
    out_dir = marker["parameters"]["out_dir"]
    assert not os.path.isabs(out_dir) and (nbdir / out_dir).resolve() == rd.resolve()
    # The run store shared by the profile's notebooks: results/<profile>, relative as well.
    store_dir = marker["parameters"]["store_dir"]
    assert not os.path.isabs(store_dir) and (nbdir / store_dir).resolve() == (results / "smoke").resolve()
    assert marker["papermill"] and marker["finished"] and marker["notebook_sha256"]
    log = (rd / runner.LOG).read_text()
    assert "fixture running in" in log and "done" in log  # the cells' output is captured
    # The executed notebook carries the injected parameters.
    assert "injected-parameters" in st.executed.read_text()


@pytest.mark.slow
def test_skip_force_and_changed_parameters(nbdir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert run(nbdir, results, only=["01"])[0].status == "ok"
    assert calls(results) == 1
    assert run(nbdir, results, only=["01"])[0].status == "skipped"
    assert calls(results) == 1
    assert run(nbdir, results, only=["01"], force=True)[0].status == "ok"
    assert calls(results) == 2
    # A changed parameter makes the run incomplete; the same change again is complete.
    assert run(nbdir, results, only=["01"], overrides={"epochs": 2})[0].status == "ok"
    assert run(nbdir, results, only=["01"], overrides={"epochs": 2})[0].status == "skipped"
    assert calls(results) == 3
    # An edited notebook is re-run too (its results may differ).
    nb = json.loads((nbdir / "01_ok.ipynb").read_text())
    nb["cells"][0]["source"] = "# edited"
    (nbdir / "01_ok.ipynb").write_text(json.dumps(nb))
    assert run(nbdir, results, only=["01"], overrides={"epochs": 2})[0].status == "ok"
    assert calls(results) == 4
    # A render that left runs pending (materialize(train=False)) is not complete: the next batch
    # renders it again, with whatever the harvest has finished since.
    manifest = results / "smoke" / "01_ok" / runner.MANIFEST
    manifest.write_text(json.dumps({"schema": 1, "runs": [{"key": "a", "status": "done"}, {"key": "b", "status": "pending"}]}))
    plans = runner.plan_runs("smoke", ["01"], None, results, nbdir, {"epochs": 2})
    assert runner.completion_state(plans[0]) == (False, "rendered with 1 run(s) pending")
    manifest.write_text(json.dumps({"schema": 1, "runs": [{"key": "a", "status": "done"}]}))
    assert runner.completion_state(plans[0]) == (True, "complete")
    # A lost marker (e.g. an interrupted batch) means "not complete".
    (results / "smoke" / "01_ok" / runner.MARKER).unlink()
    plans = runner.plan_runs("smoke", ["01"], None, results, nbdir, {"epochs": 2})
    assert runner.completion_state(plans[0]) == (False, "no completion marker")


@pytest.mark.slow
def test_failure_does_not_stop_the_batch(nbdir: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert run(nbdir, results, only=["01"])[0].status == "ok"
    ok_dir = results / "smoke" / "01_ok"
    before = {p: p.read_bytes() for p in ok_dir.rglob("*") if p.is_file()}

    rc = main(["run", "--profile", "smoke", "--notebooks", str(nbdir), "--results",
               str(results), "--only", "01,02", "04", "--no-progress"])
    out = capsys.readouterr().out
    assert rc != 0
    failed_nb = results / "smoke" / "02_raises" / "02_raises.failed.ipynb"
    assert failed_nb.is_file() and "boom from fixture" in failed_nb.read_text()
    summary = out[out.index("Summary"):]
    assert "02_raises.failed.ipynb" in summary and "RuntimeError: boom from fixture" in summary
    assert "| 01_ok " in summary and "skipped" in summary
    assert "04_ok_again" in summary and calls(results, "04_ok_again") == 1  # ran after failure
    assert not (results / "smoke" / "02_raises" / runner.MARKER).exists()
    # The other notebook's results are byte-for-byte intact.
    assert {p: p.read_bytes() for p in ok_dir.rglob("*") if p.is_file()} == before
    # A re-run of the failing notebook keeps the runs it already wrote (for the notebook's
    # own skip logic) and still reports it as failed.
    partial = results / "smoke" / "02_raises" / "runs" / "partial" / "metrics.json"
    assert partial.is_file()
    (st,) = run(nbdir, results, only=["02"])
    assert st.status == "failed" and st.executed == failed_nb and partial.is_file()
    assert runner.exit_code([st]) == 1


@pytest.mark.slow
def test_dead_kernel_is_reported(nbdir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    (st,) = run(nbdir, results, only=["03_dies"])
    assert st.status == "dead-kernel" and "died" in st.error
    assert st.executed is not None and st.executed.name == "03_dies.failed.ipynb"
    assert st.executed.is_file()
    assert not (results / "smoke" / "03_dies" / runner.MARKER).exists()
    assert "DEAD KERNEL" in (results / "smoke" / "03_dies" / runner.LOG).read_text()
    assert "dead-kernel" in runner.format_summary([st])
    assert runner.exit_code([st]) == 1


def test_outside_a_clone_the_error_says_where_notebooks_and_configs_come_from(tmp_path, monkeypatch):
    """From a wheel install, `ltbench run` / `plan` / `ltbench.train` outside a clone say how to get the files."""
    from ltbench import executor
    from ltbench.runner import ConfigError, discover_notebooks
    from ltbench.train import read_config_file

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"notebooks folder not found: notebooks \(relative to .*clone of the "
                                          r"repository, or give --notebooks DIR"):
        discover_notebooks("notebooks")
    with pytest.raises(ConfigError, match=r"no notebooks of the project.*not of the installed package"):
        executor.plan("smoke", tmp_path / "results", notebooks_dir="notebooks")
    with pytest.raises(FileNotFoundError, match=r"configs are part of the ltbench repository.*--config PATH"):
        read_config_file("configs/cifar10_ir100_ce.toml")
    # inside a clone a missing file is just missing
    monkeypatch.chdir(ROOT)
    with pytest.raises(FileNotFoundError) as err:
        read_config_file("configs/no_such_config.toml")
    assert "installed package" not in str(err.value)
