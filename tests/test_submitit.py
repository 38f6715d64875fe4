"""The submitit batch backend (ltbench.submit): ``python -m ltbench run --backend submitit``.

Without SLURM the jobs run under submitit's local executor, so the end-to-end tests execute real
notebooks in job processes: two smoke notebooks (01 and 02, the fastest, on synthetic data when
LTBENCH_DATA is unset, as tests/test_notebooks.py does), and the runner's fixture notebooks for
the failure summary. The SLURM side is checked without a cluster: the sbatch script submitit
would submit for the options given.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, copy_fixture_notebook, real_cifar10_root
from ltbench import runner
from ltbench.__main__ import main
from ltbench.batch import run_batch
from ltbench.runner import FAILED, OK, PENDING, SKIPPED, ConfigError, exit_code
from ltbench.submit import SubmititOptions, _crashed, _executor, resolve_cluster

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = ["01_long_tailed_cifar", "02_focal_and_balanced_ce"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the jobs and their kernels


def _batch(results: Path, **kw):
    kw.setdefault("profile", "smoke")
    kw.setdefault("cluster", "local")
    kw.setdefault("notebooks_dir", ROOT / "notebooks")
    kw.setdefault("verbose", False)
    return run_batch("submitit", results_dir=results, progress=False, **kw)


def _job_folders(folder: Path) -> list:
    """submitit's per-job folders (it also keeps a literal '%j' folder for files shared by jobs)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and "%" not in p.name)


@pytest.mark.slow
def test_local_executor_batch_of_two_smoke_notebooks(tmp_path: Path) -> None:
    overrides = {} if real_cifar10_root() else {"datasets": ["synthetic"]}
    # Under the smoke profile both notebooks start with the same CE baseline: the second job waits
    # for the first to finish it (see test_concurrent_jobs_share_a_run_instead_of_failing).
    statuses = _batch(tmp_path, only=SMOKE, overrides=overrides, array_parallelism=2)
    assert [s.status for s in statuses] == [OK, OK], [(s.status, s.error) for s in statuses]
    assert exit_code(statuses) == 0
    for stem in SMOKE:  # the local backend's layout
        out = tmp_path / "smoke" / stem
        marker = json.loads((out / runner.MARKER).read_text())
        assert marker["notebook"] == stem and marker["profile"] == "smoke"
        assert (out / f"{stem}.ipynb").is_file() and not (out / f"{stem}.running.ipynb").exists()
        assert (out / runner.LOG).read_text().startswith(f"# ltbench run: {stem}")
        # The notebook's runs: labelled in its manifest, stored once in the profile's run store.
        rows = json.loads((out / "runs.json").read_text())["runs"]
        assert rows and all(r["notebook"] == stem for r in rows)
        for r in rows:
            folder = (out / r["run_dir"]).resolve()
            assert folder.parent == (tmp_path / "smoke" / "runs").resolve() and folder.name == r["key"]
            assert json.loads((folder / "metrics.json").read_text())["key"] == r["key"]
    jobs = _job_folders(tmp_path / "smoke" / ".submitit")
    assert len(jobs) == 2  # one job per notebook, submitit's files beside the results
    # Re-running skips the completed notebooks without submitting anything.
    again = _batch(tmp_path, only=SMOKE, overrides=overrides)
    assert [s.status for s in again] == [SKIPPED, SKIPPED]
    assert _job_folders(tmp_path / "smoke" / ".submitit") == jobs


@pytest.fixture
def nbdir(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    for name in ("01_ok", "02_raises"):
        copy_fixture_notebook(FIXTURES / f"{name}.ipynb", d)
    return d


@pytest.mark.slow
def test_failure_summary_and_resume(nbdir: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    rc = main(["run", "--backend", "submitit", "--cluster", "local", "--profile", "smoke", "--notebooks", str(nbdir),
               "--results", str(results), "--no-progress", "--array-parallelism", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "02_raises: failed" in out and "1 of 2 notebooks did not succeed" in out and "01_ok: ok" in out
    assert (results / "smoke" / "02_raises" / "02_raises.failed.ipynb").is_file()
    assert not (results / "smoke" / "02_raises" / runner.MARKER).exists()
    assert (results / "smoke" / "01_ok" / runner.MARKER).is_file()
    # Fix the notebook: the next batch skips 01_ok and re-runs only 02 (its finished run is kept).
    nb = json.loads((nbdir / "02_raises.ipynb").read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = src.replace("raise ", "_ = ")
    (nbdir / "02_raises.ipynb").write_text(json.dumps(nb))
    statuses = _batch(results, notebooks_dir=nbdir)
    assert [s.status for s in statuses] == [SKIPPED, OK], [(s.status, s.error) for s in statuses]


def test_dry_run_submits_nothing(tmp_path: Path, capsys) -> None:
    statuses = _batch(tmp_path, only=SMOKE, dry_run=True, verbose=True)
    assert [s.status for s in statuses] == [PENDING, PENDING]
    assert "would submit to local" in capsys.readouterr().out
    assert not (tmp_path / "smoke").exists()


@pytest.mark.parametrize("kw,match", [
    ({"gpus_per_job": -1}, r"--gpus-per-job -1"),
    ({"time_min": 0}, r"--time-min 0"),
    ({"array_parallelism": 0}, r"--array-parallelism 0"),
    ({"cluster": "pbs"}, r"unknown cluster: cluster='pbs'; valid: auto, local, slurm"),
    ({"only": ["99_missing"]}, r"unknown notebook"),
    ({"overrides": {"epochz": 1}}, r"unknown parameter 'epochz'"),
    ({"walltime": 5}, r"unknown submitit option\(s\) \['walltime'\]"),
])
def test_bad_options_fail_before_submitting(tmp_path: Path, kw: dict, match: str) -> None:
    kw.setdefault("only", SMOKE[:1])
    with pytest.raises(ConfigError, match=match):
        _batch(tmp_path, **kw)
    assert not (tmp_path / "smoke" / ".submitit").exists()


def test_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["run", "--backend", "pbs", "--only", "01", "--dry-run", "--results", str(tmp_path)]) == 2
    assert "unknown backend: backend='pbs'; valid backend names: local, submitit" in capsys.readouterr().err
    assert main(["run", "--partition", "gpu", "--only", "01", "--dry-run", "--results", str(tmp_path)]) == 2
    assert "only with --backend submitit: --partition" in capsys.readouterr().err


def test_slurm_detection_and_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit.slurm.slurm as slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    assert resolve_cluster("auto") == "local"
    with pytest.raises(ConfigError, match="no SLURM here"):
        resolve_cluster("slurm")
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert resolve_cluster("auto") == "slurm"
    opts = SubmititOptions(partition="gpu", gpus_per_job=2, time_min=90, cpus_per_job=8, mem_gb=32,
                           array_parallelism=3).validate()
    ex = _executor("slurm", tmp_path, "paper", opts)
    assert ex._executor.parameters["array_parallelism"] == 3
    script = ex._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=90", "--cpus-per-task=8", "--mem=32GB",
                 "--job-name=ltbench-paper"):
        assert f"#SBATCH {line}" in script


def test_a_crashed_job_is_a_failed_notebook(tmp_path: Path) -> None:
    plan = runner._Planned("01_x", tmp_path / "01_x.ipynb", {"epochs": 1}, tmp_path / "01_x", "sha")
    job = SimpleNamespace(job_id="123_4", paths=SimpleNamespace(stderr=tmp_path / "123_4_0_log.err"))
    (tmp_path / "123_4_0_log.err").write_text("slurmstepd: error: *** JOB CANCELLED DUE TO TIME LIMIT ***\n")
    st = _crashed(plan, job, RuntimeError("Job 123_4 (task: 0) failed\ntimeout"), 12.0)
    assert st.status == FAILED and not st.succeeded and st.executed == tmp_path / "123_4_0_log.err"
    assert st.error == "job 123_4 failed: RuntimeError: Job 123_4 (task: 0) failed"


CHILD = r"""
import json, sys
from ltbench.runs import ExecOptions, RunSpec, RunStore, run
spec = RunSpec.from_dict(json.loads(sys.argv[2]))
run(spec, RunStore(sys.argv[1]), ExecOptions(device="cpu", progress=False))
"""


@pytest.mark.slow
def test_concurrent_jobs_share_a_run_instead_of_failing(tmp_path: Path) -> None:
    """Two jobs (notebooks) of one profile need the same run: the second waits for the first to
    finish it and loads it, as notebooks sharing the store must (submitit's array jobs)."""
    import os
    import subprocess
    import sys
    import time

    from ltbench.config import TrainConfig
    from ltbench.engine import TrainResult
    from ltbench.experiments import materialize, planned
    from ltbench.methods import joint_spec
    from ltbench.runs import LOCK_FILE, RunStore

    cfg = TrainConfig(dataset="synthetic", imbalance_ratio=10, epochs=10, batch_size=32, warmup_epochs=0,
                      data_options={"n_train_per_class": 60, "n_test_per_class": 10, "image_size": 16})
    spec, store = joint_spec(cfg), RunStore(tmp_path / "store")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store.root), json.dumps(spec.to_dict())], env=env)
    try:
        lock = store.folder(spec) / LOCK_FILE
        while not lock.exists():  # the other job is training the run
            assert child.poll() is None, "the other job ended before it took the run's lock"
            time.sleep(0.02)
        (result,) = materialize([planned(spec, "CE", "99_test", "paper", "table")], store, device="cpu",
                                progress=False)
    finally:
        child.wait(timeout=600)
    assert child.returncode == 0
    # Trained once, by the other job; this one loaded it.
    assert result.meta["key"] == spec.key
    assert result.train_seconds == TrainResult.load(store.folder(spec)).train_seconds
