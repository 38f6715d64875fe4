"""The GPU session (issue 15): make carry, pack, import, and a CPU rehearsal of tools/gpu_session.sh.

The rehearsal runs the exact command a lent GPU runs, on the CPU with the smoke profile, a
temporary $OUT and results folder, then imports what came back into a fresh results folder,
renders notebook 01 from it and regenerates the report. The other tests fabricate run folders
(no training) to check the pack's limits and the import's merge rules.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from conftest import real_cifar10_root
from ltbench import session
from ltbench.executor import plan

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PAPER = {"datasets": ["cifar10"]}


# --------------------------------------------------------------------------------------------
# Fabricated run folders


def _paper_specs(results: Path):
    """Three runs of the paper profile: CE at IR100 (stage 1 of cRT, LWS, FSA ...), LDAM-DRW at
    IR100 and focal at IR100 (no dependents)."""
    entries = plan("paper", results, 1, None, PAPER, NOTEBOOKS, with_status=False)
    deps = {d.key for e in entries for _, d in e.spec.deps}
    by_desc = {e.spec.describe(): e.spec for e in entries}
    ce = by_desc["joint ce cifar10-IR100 seed0 200ep"]
    ldam = next(s for d, s in by_desc.items() if d.startswith("joint ldam drw@") and "IR100" in d)
    other = next(e.spec for e in entries if e.spec.method == "joint" and e.spec.key not in deps
                 and e.spec.key != ldam.key and "IR100" in e.spec.describe())
    assert ce.key in deps and ldam.key not in deps
    return ce, ldam, other


def _fake_run(results: Path, spec, epoch: int, finished: bool, top1: float = 40.0, profile: str = "paper",
              checkpoint: bool = True) -> Path:
    folder = results / profile / "runs" / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec.to_dict()))
    if checkpoint:
        torch.save({"config": spec.config, "epoch": epoch, "model": {"w": torch.full((4,), float(epoch))},
                    "optimizer": {"state": {}, "param_groups": [], "big": torch.zeros(1000)}},
                   folder / "checkpoint.pt")
    if finished:
        metrics = {"key": spec.key, "spec": spec.to_dict(), "top1_last": top1, "top1_best": top1 + 1,
                   "best_epoch": epoch, "per_class": [top1] * 10, "counts": [1] * 10, "confusion": [[0]],
                   "ece": 5.0, "many": top1, "medium": top1, "few": top1, "classes": list("abcdefghij"),
                   "dataset": "cifar10", "imbalance_ratio": 100.0, "seed": 0, "epochs": 200, "schema": 1,
                   "config": dict(spec.config, device="cuda", data_root="/tmp/x"), "train_seconds": 12.5,
                   "device": "NVIDIA H100", "torch": "2.11.0", "created": "2026-11-27T00:00:00+00:00",
                   "execution": {"device": "cuda", "host": "gpu", "pid": 1}}
        (folder / "curves.csv").write_text("epoch,train_loss\n1,2.0\n")
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _members(path: Path):
    with tarfile.open(path) as tar:
        return sorted(tar.getnames())


def test_pack_sends_what_changed_within_the_limits_and_import_merges_it(tmp_path):
    res = tmp_path / "gpu"
    ce, ldam, other = _paper_specs(res)
    _fake_run(res, other, 200, True, top1=30.0)
    before = session.snapshot(res, "paper")  # `other` was there before the session
    _fake_run(res, ce, 200, True, top1=70.0)   # trained in the session; a dependency: weights come back
    _fake_run(res, ldam, 57, False)            # stopped at the deadline: resume state comes back
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "session.log").write_text("hello\n")
    bench = tmp_path / "bench.csv"
    bench.write_text("date,device,torch,loop,images_per_s,ratio\n")
    out = tmp_path / "out"
    manifest = session.pack("paper", res, out, before, logs, bench, notebooks=NOTEBOOKS)
    assert session.check_out_dir(out) == []
    names = sorted(p.name for p in out.iterdir())
    assert names == ["benchmark.csv", "logs.tgz", "manifest.json", "runs.tgz", "weights.tgz"]
    runs = _members(out / "runs.tgz")
    assert f"runs/{ce.key}/metrics.json" in runs and f"runs/{ldam.key}/spec.json" in runs
    assert not any(m.endswith("checkpoint.pt") for m in runs)
    assert not any(other.key in m for m in runs)  # unchanged since the snapshot
    weights = _members(out / "weights.tgz")
    assert f"runs/{ce.key}/checkpoint.pt" in weights and f"runs/{ldam.key}/checkpoint.pt" in weights
    assert manifest["profile"] == "paper" and manifest["runs"][ldam.key]["epoch"] == 57

    # Import into a fresh results folder: finished CE with its (weights-only) checkpoint, partial LDAM.
    fresh = tmp_path / "fresh"
    files = sorted(out.iterdir())
    rep = session.import_packs(files, fresh)
    assert rep.profile == "paper" and rep.added == [ce.key] and rep.resume == [ldam.key]
    assert any("benchmark.csv" in s for s in rep.skipped_files)
    runs_dir = fresh / "paper" / "runs"
    state = torch.load(runs_dir / ce.key / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 200 and "optimizer" not in state
    assert torch.load(runs_dir / ldam.key / "checkpoint.pt", weights_only=True)["optimizer"]["big"].numel() == 1000
    assert not (runs_dir / ldam.key / "metrics.json").exists()
    assert not list((fresh / "paper").glob(".import-*"))

    # The same files again: identical results are accepted, nothing changes.
    sig = (runs_dir / ce.key / "metrics.json").stat().st_mtime_ns
    rep = session.import_packs(files, fresh)
    assert rep.identical == [ce.key] and rep.kept == [ldam.key] and rep.added == []
    assert (runs_dir / ce.key / "metrics.json").stat().st_mtime_ns == sig

    # A different finished result under the same key is refused, naming the key and both files.
    m = json.loads((runs_dir / ce.key / "metrics.json").read_text())
    m["top1_last"] = 12.0
    (runs_dir / ce.key / "metrics.json").write_text(json.dumps(m))
    (runs_dir / ldam.key / "checkpoint.pt").unlink()
    with pytest.raises(session.ImportConflict, match=ce.key) as err:
        session.import_packs(files, fresh)
    assert str(runs_dir / ce.key / "metrics.json") in str(err.value) and "runs.tgz" in str(err.value)
    assert json.loads((runs_dir / ce.key / "metrics.json").read_text())["top1_last"] == 12.0  # left as it was
    assert (runs_dir / ldam.key / "checkpoint.pt").is_file()  # the other runs were imported
    r = subprocess.run([sys.executable, "-m", "ltbench", "import", *map(str, files), "--results", str(fresh)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3 and ce.key in r.stderr, r.stderr


def test_import_keeps_the_newest_resume_state_and_replaces_a_partial_run_by_its_result(tmp_path):
    res, here = tmp_path / "gpu", tmp_path / "here"
    ce, ldam, _ = _paper_specs(res)
    _fake_run(res, ldam, 80, False)
    _fake_run(res, ce, 200, True)
    out = tmp_path / "out"
    session.pack("paper", res, out, None, notebooks=NOTEBOOKS)
    files = sorted(out.iterdir())
    _fake_run(here, ldam, 120, False)  # further along here: kept
    _fake_run(here, ce, 150, False)    # partial here, finished in the pack: replaced, stale checkpoint gone
    rep = session.import_packs(files, here)
    runs_dir = here / "paper" / "runs"
    assert rep.kept == [ldam.key] and rep.added == [ce.key]
    assert torch.load(runs_dir / ldam.key / "checkpoint.pt", weights_only=True)["epoch"] == 120
    assert torch.load(runs_dir / ce.key / "checkpoint.pt", weights_only=True)["epoch"] == 200
    (runs_dir / ldam.key / "checkpoint.pt").unlink()
    _fake_run(here, ldam, 40, False)  # behind: the pack's epoch 80 is taken
    rep = session.import_packs(files, here)
    assert rep.resume == [ldam.key]
    assert torch.load(runs_dir / ldam.key / "checkpoint.pt", weights_only=True)["epoch"] == 80
    # Where, when and how fast a result was computed does not make it another result.
    a = json.loads((runs_dir / ce.key / "metrics.json").read_text())
    b = dict(a, train_seconds=99.0, device="cpu", execution={"device": "cpu"}, created="x",
             config=dict(a["config"], device="cpu", data_root=None))
    assert session.same_result(a, b) and not session.same_result(a, dict(a, top1_best=1.0))


def test_pack_spreads_resume_state_over_files_and_names_what_does_not_fit(tmp_path):
    res = tmp_path / "gpu"
    entries = plan("paper", res, 1, None, PAPER, NOTEBOOKS, with_status=False)
    joint = [e.spec for e in entries if e.spec.method == "joint"][:6]
    for i, spec in enumerate(joint):
        folder = _fake_run(res, spec, 10, False, checkpoint=False)
        n = 5_000_000 if i == 5 else 1_000_000  # 4 MB each (random: gzip cannot shrink it); the last 20 MB
        torch.save({"config": spec.config, "epoch": 10, "model": {"w": torch.randn(n)}}, folder / "checkpoint.pt")
    out = tmp_path / "out"
    manifest = session.pack("paper", res, out, {}, notebooks=NOTEBOOKS)
    assert session.check_out_dir(out) == []
    weights = sorted(p.name for p in out.glob("weights*.tgz"))
    assert weights == ["weights-2.tgz", "weights.tgz"]
    packed = {m.split("/")[1] for w in weights for m in _members(out / w) if m.endswith("checkpoint.pt")}
    assert packed == {s.key for s in joint[:5]}
    assert [lo["key"] for lo in manifest["left_out"]] == [joint[5].key]


def test_check_out_dir_names_every_broken_limit(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as fh:
        fh.truncate(17 * session.MIB)
    problems = " | ".join(session.check_out_dir(tmp_path))
    for what in ("deep.txt: more than 2 folders deep", "bad name.txt: name outside", "big.bin: 17.00 MiB",
                 "11 files > 8"):
        assert what in problems, problems


def test_make_carry_holds_data_resume_state_and_needed_stage1_weights(tmp_path):
    data = tmp_path / "data"
    for split in ("train", "test"):
        (data / "cifar10" / split / "airplane").mkdir(parents=True)
        (data / "cifar10" / split / "airplane" / "0000.jpg").write_bytes(b"\xff\xd8jpeg")
    res = tmp_path / "results"
    ce, ldam, other = _paper_specs(res)
    _fake_run(res, ce, 200, True)     # finished stage 1 of pending cRT/LWS/FSA: weights travel
    _fake_run(res, ldam, 57, False)   # partial: resume state travels
    _fake_run(res, other, 200, True)  # finished, nobody needs its weights: stays
    carry = tmp_path / ".carry"
    m = session.make_carry("paper", res, carry, str(data), notebooks=NOTEBOOKS, repo=ROOT)
    assert _members(carry / "cifar10.tgz")[:1] == ["cifar10"]
    assert "cifar10/train/airplane/0000.jpg" in _members(carry / "cifar10.tgz")
    assert {c["key"]: c["why"] for c in m["state"]} == {ldam.key: "partial", ce.key: "dependency"}
    assert not (carry / "state" / other.key).exists()
    assert "optimizer" not in torch.load(carry / "state" / ce.key / "checkpoint.pt", weights_only=True)
    assert torch.load(carry / "state" / ldam.key / "checkpoint.pt", weights_only=True)["epoch"] == 57
    assert m["total_bytes"] < 64 * session.MIB and json.loads((carry / "MANIFEST.json").read_text())["profile"] == "paper"

    # On the GPU machine: restored into a store that lacks them; a carry of another profile is not.
    gpu = tmp_path / "gpu"
    assert session.restore_carry(carry, gpu, "smoke") == []
    assert sorted(session.restore_carry(carry, gpu, "paper")) == sorted([ce.key, ldam.key])
    assert (gpu / "paper" / "runs" / ldam.key / "checkpoint.pt").is_file()
    with pytest.raises(ValueError, match="no CIFAR-10"):
        session.make_carry("paper", res, tmp_path / "c2", str(tmp_path / "nowhere"), notebooks=NOTEBOOKS, repo=ROOT)


def _git_tree(root: Path) -> Path:
    """A tiny git checkout: a tracked file (in the index), a tracked file deleted from the disk, an
    ignored file, an ignored folder, an untracked file git does not ignore and one in a subfolder."""
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "tracked.py").write_text("x = 1\n" * 10)
    (root / "gone.py").write_text("y = 2\n")
    subprocess.run(["git", "-C", str(root), "add", ".gitignore", "tracked.py", "gone.py"], check=True)
    (root / "gone.py").unlink()
    (root / "ignored.log").write_bytes(b"z" * 5000)
    (root / "build").mkdir()
    (root / "build" / "out.bin").write_bytes(b"b" * 7000)
    (root / "untracked.txt").write_text("new\n" * 3)
    (root / "sub").mkdir()
    (root / "sub" / "notes.md").write_text("# notes\n")
    return root


def test_tree_size_counts_what_git_tracks_or_does_not_ignore(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = _git_tree(tmp_path / "repo")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    from_git = sum((root / p).lstat().st_size for p in set(listed) if p and (root / p).exists())
    by_hand = sum((root / p).stat().st_size for p in (".gitignore", "tracked.py", "untracked.txt", "sub/notes.md"))
    assert session.tree_size(root) == from_git == by_hand
    assert session.tree_size(root / "sub") == (root / "sub" / "notes.md").stat().st_size
    (root / "ignored.log").write_bytes(b"z" * 50_000)  # what git ignores does not count
    assert session.tree_size(root) == by_hand


def test_tree_size_refuses_a_folder_that_is_not_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a")
    with pytest.raises(ValueError, match="not a git checkout") as err:
        session.tree_size(plain)
    assert str(plain) in str(err.value)
    with pytest.raises(ValueError, match="not a git checkout"):
        session.make_carry("paper", tmp_path / "res", tmp_path / "c", str(tmp_path / "nowhere"), repo=plain)
    assert not (tmp_path / "c").exists()  # refused before any other work


@pytest.mark.parametrize("module", ["ltbench.ops", "ltbench.session"])
def test_tree_size_command_under_both_names(tmp_path, module):
    root = _git_tree(tmp_path / "repo")
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", module, "tree-size", str(root)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{session.tree_size(root)} bytes (")
    (tmp_path / "plain").mkdir()
    r = subprocess.run([sys.executable, "-m", module, "tree-size", str(tmp_path / "plain")], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a git checkout" in r.stderr and str(tmp_path / "plain") in r.stderr, r.stderr


def test_session_script_fails_fast_without_data(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), LTBENCH_RESULTS=str(tmp_path / "res"),
               LTBENCH_SESSION_CARRY=str(tmp_path / "nocarry"), LTBENCH_SESSION_PROFILE="smoke",
               LTBENCH_DATA=str(tmp_path / "nodata"))
    t0 = time.monotonic()
    r = subprocess.run(["bash", "tools/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stdout[-3000:]
    assert "no CIFAR-10" in r.stdout and time.monotonic() - t0 < 60
    assert session.check_out_dir(out) == [] and (out / "logs.tgz").is_file()


# --------------------------------------------------------------------------------------------
# The rehearsal


@pytest.mark.slow
def test_gpu_session_rehearsal_on_cpu_then_import_render_and_report(tmp_path):
    data = real_cifar10_root()
    if data is None:
        pytest.skip("CIFAR-10 not found under $LTBENCH_DATA")
    out, results, fresh = tmp_path / "out", tmp_path / "session_results", tmp_path / "fresh"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), LTBENCH_RESULTS=str(results),
               LTBENCH_SESSION_CARRY=str(tmp_path / "carry"), LTBENCH_SESSION_PROFILE="smoke",
               LTBENCH_SESSION_SECONDS="400", LTBENCH_SESSION_ONLY="01", LTBENCH_SESSION_SMOKE_SECONDS="1",
               LTBENCH_SESSION_SMOKE_GRACE="600",
               LTBENCH_SESSION_BENCH_STEPS="1", LTBENCH_SESSION_BENCH_SECONDS="300", LTBENCH_DATA=data)
    r = subprocess.run(["bash", "tools/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert session.check_out_dir(out) == []
    names = sorted(p.name for p in out.iterdir())
    # The CE baseline is stage 1 of notebook 04's stage-2 runs: its weights come back too.
    assert {"manifest.json", "runs.tgz", "weights.tgz", "logs.tgz", "benchmark.csv"} <= set(names), names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["session"]["device"] == "cpu"
    logs = _members(out / "logs.tgz")
    for f in ("logs/session.log", "logs/versions.txt", "logs/smoke.json", "logs/execute.log"):
        assert f in logs, logs
    keys = [k for k, v in manifest["runs"].items() if v.get("result")]
    assert keys, manifest["runs"]

    # Back on the CPU machine: import into a fresh results folder.
    files = [str(p) for p in sorted(out.iterdir())]
    r = subprocess.run([sys.executable, "-m", "ltbench", "import", *files, "--results", str(fresh)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    # The CE baseline: the finished run whose weights travel as a dependency.
    ce = next(k for k in keys if str(manifest["runs"][k].get("weights", "")).startswith("weights (dependency"))
    metrics = fresh / "smoke" / "runs" / ce / "metrics.json"
    assert (metrics.parent / "checkpoint.pt").is_file()
    original = metrics.read_text()
    # A conflicting result is refused; the identical one is accepted.
    changed = json.loads(original)
    changed["top1_last"] = changed["top1_last"] + 1.0
    metrics.write_text(json.dumps(changed))
    r = subprocess.run([sys.executable, "-m", "ltbench", "import", *files, "--results", str(fresh)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3 and ce in r.stderr and str(metrics) in r.stderr, r.stderr
    metrics.write_text(original)
    r = subprocess.run([sys.executable, "-m", "ltbench", "import", *files, "--results", str(fresh)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr

    # Notebooks render from the store (no training: the run folder is untouched), the report regenerates.
    before = metrics.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "ltbench", "run", "--profile", "smoke", "--only", "01", "--results",
                        str(fresh), "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert (fresh / "smoke" / "01_long_tailed_cifar" / "01_long_tailed_cifar.ipynb").is_file()
    assert metrics.stat().st_mtime_ns == before
    r = subprocess.run([sys.executable, "-m", "ltbench", "report", "--results", str(fresh)], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and (fresh / "README.md").is_file(), r.stdout + r.stderr
