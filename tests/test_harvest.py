"""The harvest (ltbench/harvest.py): a stop request, committed resume state across a fresh clone,
what is staged, the queue; the head-bias fidelity point and compile='auto' it ships with."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ltbench import harvest
from ltbench.config import TrainConfig
from ltbench.engine import DeadlineReached, Trainer, request_stop, stop_requested
from ltbench.experiments import base_config
from ltbench.methods import joint_spec, stage_two_spec
from ltbench.models import build_model
from ltbench.runs import PARTIAL, ExecOptions, RunSpec, RunStore, make_spec, run

from conftest import real_cifar10_root

ROOT = Path(__file__).resolve().parents[1]
SYN = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=40, data_options={"n_train_per_class": 40, "n_test_per_class": 10},
           batch_size=32, warmup_epochs=1, device="cpu", epochs=3, lr=0.05)
CPU = ExecOptions(device="cpu", progress=False, compile=False)
needs_cifar = pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")


@pytest.fixture(autouse=True)
def _no_stop_left_behind():
    yield
    request_stop(False)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _stop_after_epoch(monkeypatch, epoch: int) -> None:
    original = Trainer.on_epoch_end

    def on_epoch_end(self, e, row):
        original(self, e, row)
        if e + 1 == epoch:
            request_stop()

    monkeypatch.setattr(Trainer, "on_epoch_end", on_epoch_end)


# --------------------------------------------------------------------------------------------
# Stop, commit, fresh clone, resume


def test_a_stop_request_ends_the_epoch_with_a_checkpoint_and_a_fresh_clone_resumes_it_exactly(tmp_path, monkeypatch):
    """Issue 22: interrupt, commit the resume state, clone, resume = the uninterrupted run."""
    spec = joint_spec(TrainConfig(**SYN))
    full = run(spec, RunStore(tmp_path / "full"), CPU)

    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # checkpoints are ignored, as in the project
    _git("init", "-q", cwd=repo)
    store = RunStore(repo / "results" / "cpu")
    _stop_after_epoch(monkeypatch, 1)
    with pytest.raises(DeadlineReached, match="after epoch 1 of 3"):
        run(spec, store, CPU)
    monkeypatch.undo()
    request_stop(False)
    assert store.status(spec) == PARTIAL
    staged = harvest.stage(repo / "results", queue=[harvest.Step("t", "cpu")], needed=set())
    assert staged == {"checkpoints_kept": 1, "checkpoints_untracked": 0}
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "partial", cwd=repo)
    assert f"results/cpu/runs/{spec.key}/checkpoint.pt" in _git("ls-files", cwd=repo).split()

    clone = tmp_path / "clone"
    _git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    resumed_store = RunStore(clone / "results" / "cpu")
    assert resumed_store.status(spec) == PARTIAL and resumed_store.progress(spec) == (1, 3)
    resumed = run(spec, resumed_store, CPU)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    assert resumed.last.per_class == full.last.per_class
    wa = torch.load(tmp_path / "full" / "runs" / spec.key / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(resumed_store.folder(spec) / "checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # Finished and built on by nothing queued: its checkpoint leaves the index (and stays on disk).
    (resumed_store.root / "runs" / spec.key / "checkpoint.pt").touch()
    assert harvest.stage(clone / "results", queue=[harvest.Step("t", "cpu")], needed=set()) == {
        "checkpoints_kept": 0, "checkpoints_untracked": 1}
    assert f"results/cpu/runs/{spec.key}/checkpoint.pt" not in _git("ls-files", "--cached", cwd=clone).split()
    assert (resumed_store.folder(spec) / "checkpoint.pt").exists()


def test_stage_keeps_resume_state_and_the_weights_others_build_on(tmp_path):
    runs = tmp_path / "cpu" / "runs"
    for name, finished in (("partial", False), ("stage1", True), ("leaf", True)):
        (runs / name).mkdir(parents=True)
        (runs / name / "checkpoint.pt").write_bytes(b"x")
        if finished:
            (runs / name / "metrics.json").write_text("{}")
    (runs / "nockpt").mkdir()
    keep, drop = harvest.stage_files(tmp_path, ["cpu"], needed={"stage1"})
    assert [p.parent.name for p in keep] == ["partial", "stage1"] and [p.parent.name for p in drop] == ["leaf"]


def test_the_signal_handler_asks_for_a_stop_and_a_second_signal_stops_at_once(monkeypatch):
    handlers = {}
    monkeypatch.setattr(harvest.signal, "signal", lambda sig, h: handlers.__setitem__(sig, h))
    harvest._install_signal_handlers()
    assert set(handlers) == {harvest.signal.SIGTERM, harvest.signal.SIGINT}
    assert not stop_requested()
    handlers[harvest.signal.SIGTERM](harvest.signal.SIGTERM, None)
    assert stop_requested()
    with pytest.raises(KeyboardInterrupt, match="second signal"):
        handlers[harvest.signal.SIGINT](harvest.signal.SIGINT, None)


# --------------------------------------------------------------------------------------------
# The queue


def test_every_queue_step_plans_and_the_cpu_profile_is_the_papers_data():
    rows = harvest.queue_plan(ROOT / "results", ROOT / "notebooks")
    assert len(rows) == len(harvest.QUEUE) and all(r["runs"] > 0 for r in rows)
    assert [r["profile"] for r in rows][:4] == ["quick", "cpu", "cpu", "cpu"]
    from ltbench import executor

    entries = executor.plan("cpu", ROOT / "results", notebooks_dir=ROOT / "notebooks")
    for e in entries:
        c = e.spec.config
        assert (c["dataset"], c["imbalance_ratio"], c["n_max"], c["test_per_class"]) == ("cifar10", 100, None, None)
        if e.spec.method in ("joint", "ohem", "mixup"):
            assert (c["batch_size"], c["lr"], c["model"], c["head_bias_init"]) == (128, 0.1, "resnet32", "uniform")
        if e.spec.method == "bbn":
            assert (c["batch_size"], c["model"]) == (128, "resnet32") and "head_bias_init" not in c
    # calibration: CE, LDAM-DRW, BBN at 30 and 50 epochs; DRW at 80 % of each length
    cal = [e for step in harvest.QUEUE[1:3] for e in harvest._plan(step, ROOT / "results", ROOT / "notebooks")]
    got = sorted((e.spec.method, e.spec.config["loss"], e.spec.config["epochs"], e.spec.config["drw_epoch"]) for e in cal)
    assert got == [("bbn", "ce", 30, None), ("bbn", "ce", 50, None), ("joint", "ce", 30, None), ("joint", "ce", 50, None),
                   ("joint", "ldam", 30, 24), ("joint", "ldam", 50, 40)]


def test_harvest_refuses_bad_arguments_before_training(tmp_path):
    with pytest.raises(ValueError, match="invalid deadline=-1"):
        harvest.harvest(tmp_path, ROOT / "notebooks", deadline=-1)
    with pytest.raises(ValueError, match=r"invalid start=99: must be a step index in \[0, "):
        harvest.harvest(tmp_path, ROOT / "notebooks", start=99)
    bad = [harvest.Step("bad", "cpu", ("01_long_tailed_cifar",), {"epochs": "thirty"})]
    with pytest.raises(ValueError, match="epochs"):
        harvest.harvest(tmp_path, ROOT / "notebooks", queue=bad)
    assert not (tmp_path / "cpu").exists()


def _script_checkout(tmp_path: Path) -> Path:
    """A one-commit git checkout holding only tools/harvest.sh, so the script's start runs in isolation."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "harvest.sh", repo / "tools" / "harvest.sh")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "script"], check=True)
    return repo


def test_the_harvest_script_refuses_a_missing_python_and_reports_one_that_dies_at_once(tmp_path):
    repo = _script_checkout(tmp_path)
    start = ["bash", str(repo / "tools" / "harvest.sh"), "start"]
    missing = subprocess.run(start, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "HARVEST_PYTHON": str(tmp_path / "no-venv" / "python")})
    assert missing.returncode == 1
    assert "no-venv/python' is not an executable (HARVEST_PYTHON" in missing.stderr and "make install" in missing.stderr
    assert not (repo / ".harvest" / "pid").exists() and not (repo / ".harvest" / "worktrees").exists()
    # `false` stands for a python that exits at once (an import error): reported, no pid left behind.
    dies = subprocess.run(start, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HARVEST_PYTHON": shutil.which("false"), "HARVEST_START_CHECK": "1"})
    assert dies.returncode == 1 and "exited at once" in dies.stderr and "started pid" not in dies.stdout
    assert not (repo / ".harvest" / "pid").exists()


@needs_cifar
def test_harvest_trains_its_queue_once_and_a_stop_leaves_the_rest(tmp_path):
    queue = [harvest.Step("smoke CE", "smoke", ("01_long_tailed_cifar",)),
             harvest.Step("smoke 02", "smoke", ("02_focal_and_balanced_ce",))]
    status = tmp_path / "status.json"
    out = harvest.harvest(tmp_path, ROOT / "notebooks", queue=queue, status_file=status, compile=False)
    assert out["reason"] == "queue done" and [s["failed"] for s in out["steps"]] == [[], []]
    assert json.loads(status.read_text())["finished"] is True
    again = harvest.harvest(tmp_path, ROOT / "notebooks", queue=queue, compile=False)
    assert all("trained" not in s["summary"] for s in again["steps"])
    request_stop()
    stopped = harvest.harvest(tmp_path, ROOT / "notebooks", queue=queue, compile=False)
    assert stopped == {**stopped, "reason": "stop requested", "steps": []}


# --------------------------------------------------------------------------------------------
# Head bias (issue 22, deliverable 6) and committed runs (deliverable 4)


def test_the_linear_head_bias_starts_as_pytorchs_default_and_zero_on_request():
    torch.manual_seed(0)
    b = build_model("resnet32", 10, head_bias_init="uniform").fc.bias
    bound = 1 / math.sqrt(64)
    assert b.abs().max() <= bound and b.abs().max() > bound / 2 and b.unique().numel() == 10
    assert torch.equal(build_model("resnet32", 10, head_bias_init="zero").fc.bias, torch.zeros(10))
    assert build_model("resnet32", 10, classifier="cosine", head_bias_init="uniform").fc.bias is None
    with pytest.raises(ValueError, match=r"invalid head_bias_init='kaiming': must be 'uniform' or 'zero'"):
        build_model("resnet32", 10, head_bias_init="kaiming")
    with pytest.raises(ValueError, match=r"invalid head_bias_init='kaiming': must be one of \('uniform', 'zero'\)"):
        TrainConfig(head_bias_init="kaiming").validate()
    # the trainer builds what its configuration says (sigmoid losses still start from the prior)
    t = Trainer(TrainConfig(**SYN), progress=False)
    assert t.model.fc.bias.abs().max() <= bound and t.model.fc.bias.abs().sum() > 0
    t0 = Trainer(TrainConfig(**SYN, head_bias_init="zero"), progress=False)
    assert torch.equal(t0.model.fc.bias, torch.zeros_like(t0.model.fc.bias))


def test_a_run_described_before_head_bias_init_keeps_its_key_and_is_a_zero_bias_run():
    new = joint_spec(TrainConfig(**SYN))
    legacy = joint_spec(TrainConfig(**SYN, head_bias_init="zero"))
    assert new.key != legacy.key
    old = legacy.to_dict()
    del old["config"]["head_bias_init"]
    old.pop("key")
    assert "head_bias_init" not in legacy.identity()["config"]
    read = RunSpec.from_dict(old)
    assert read.key == legacy.key and read.config["head_bias_init"] == "zero"
    assert RunSpec.from_dict({**old, "key": legacy.key}).key == legacy.key
    # BBN's classifier is a new Linear with PyTorch's default init whatever the field says: not in its identity
    from ltbench.methods import bbn_spec

    assert bbn_spec(TrainConfig(**SYN)).key == bbn_spec(TrainConfig(**SYN, head_bias_init="zero")).key
    assert "head_bias_init" not in bbn_spec(TrainConfig(**SYN)).config
    crt = stage_two_spec(legacy, "crt", epochs=1).to_dict()
    del crt["deps"]["stage1"]["config"]["head_bias_init"]
    assert RunSpec.from_dict(crt).key == stage_two_spec(legacy, "crt", epochs=1).key


def test_every_committed_run_rehashes_to_its_folder_and_loads():
    """Harvested hours are never thrown away: a change to what a spec means must change its key."""
    from ltbench.engine import TrainResult

    specs = sorted((ROOT / "results").glob("*/runs/*/spec.json"))
    assert specs, "no committed runs"
    for path in specs:
        spec = RunSpec.from_dict(json.loads(path.read_text()))
        assert spec.key == path.parent.name, path
        if (path.parent / "metrics.json").exists():
            assert TrainResult.load(path.parent).meta["key"] == spec.key, path


# --------------------------------------------------------------------------------------------
# compile="auto"


def test_compile_auto_is_on_for_cpu_joint_runs_and_off_where_it_does_not_pay(monkeypatch):
    monkeypatch.delenv("LTBENCH_COMPILE", raising=False)
    joint = joint_spec(base_config("cifar10", 100, epochs=30))  # 372,180 image-passes
    crt = stage_two_spec(joint, "crt", epochs=1)
    short = joint_spec(base_config("cifar10", 100, epochs=8, n_max=500))  # 9,888: the compile would not pay
    assert not ExecOptions(device="cpu").compiled(short) and ExecOptions(device="cpu", compile=True).compiled(short)
    auto = ExecOptions(device="cpu")
    assert auto.compile == "auto" and ExecOptions().compile == "auto"
    assert auto.compiled(joint) and not auto.compiled(crt)
    assert not ExecOptions(device="mps").compiled(joint)
    assert not dataclasses.replace(auto, fast="static").compiled(joint)
    assert ExecOptions(device="cpu", compile=True).compiled(crt) and not ExecOptions(compile=False).compiled(joint)
    assert auto.config_fields(joint)["compile"] is True and auto.config_fields(crt)["compile"] is False
    rec = auto.record(joint)
    assert (rec["compile"], rec["compile_option"]) == (True, "auto")
    monkeypatch.setenv("LTBENCH_COMPILE", "0")
    assert not auto.compiled(joint)
    with pytest.raises(ValueError, match=r"invalid compile='yes': must be True, False or 'auto'"):
        ExecOptions(compile="yes")


def test_base_config_of_the_cpu_recipe_scales_every_epoch_relative_event():
    c = base_config("cifar10", 100, epochs=30, drw_epoch=0.8)
    assert (c.warmup_epochs, c.drw_epoch, c.lr, c.head_bias_init) == (3, 24, 0.1, "uniform")
    assert make_spec("joint", c).key == joint_spec(c).key


def test_calibration_picks_the_shortest_length_with_half_the_published_gains(monkeypatch):
    """Half of LDAM-DRW's (77.03 - 70.36) and BBN's (79.82 - 70.36) published gains: 3.335 and 4.73."""
    from types import SimpleNamespace

    from ltbench.runs import RunStore

    table = {}

    def fake_plan(step, results, notebooks):
        ep = step.params["04_bbn_and_two_stage:epochs"]
        return [SimpleNamespace(labels=[m], status="done" if (ep, m) in table else "pending",
                                spec=SimpleNamespace(config={"epochs": ep}, key=f"{ep}{m}"))
                for m in ("CE", "LDAM-DRW", "BBN")]

    monkeypatch.setattr(harvest, "_plan", fake_plan)
    monkeypatch.setattr(RunStore, "load", lambda self, spec: SimpleNamespace(top1_last=table[(spec.config["epochs"],
                                                                                             spec.key[2:])]))
    assert harvest.calibration()["epochs"] is None
    table.update({(30, "CE"): 60.0, (30, "LDAM-DRW"): 63.34, (30, "BBN"): 64.73})
    c = harvest.calibration()
    assert c["epochs"] == 30 and c["rows"][0]["gains"] == {"LDAM-DRW": 3.34, "BBN": 4.73}
    assert c["half_published_gains"] == {"LDAM-DRW": 3.34, "BBN": 4.73}
    table[(30, "BBN")] = 64.7  # short of half BBN's gain: 30 fails, so the rule's answer is 50 before 50 is trained
    assert harvest.calibration()["epochs"] == 50
    table.update({(50, "CE"): 65.0, (50, "LDAM-DRW"): 66.0, (50, "BBN"): 66.0})
    assert harvest.calibration()["epochs"] == 50  # neither length meets it: the longest
