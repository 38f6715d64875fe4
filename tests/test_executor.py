"""plan / execute: a profile's runs listed, ordered and trained without opening a notebook."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import real_cifar10_root
from ltbench import executor
from ltbench.engine import Trainer
from ltbench.experiments import EXPERIMENTS, materialize, runs_for_notebook, notebook_parameters
from ltbench.runs import DONE, PENDING, RunStore

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
needs_cifar = pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")


def _plan(profile, tmp_path, **kw):
    return executor.plan(profile, tmp_path, notebooks_dir=NOTEBOOKS, **kw)


def test_plan_lists_unique_runs_with_dependencies_first(tmp_path):
    entries = _plan("smoke", tmp_path)
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    pos = {k: i for i, k in enumerate(keys)}
    for e in entries:
        assert all(pos[d] < pos[e.key] for d in e.deps), e.spec.describe()
        assert e.status == PENDING and e.cost is not None and e.cost >= 0
    assert {nb for e in entries for nb in e.notebooks} == set(EXPERIMENTS)
    # the CE baseline is shared by every notebook that trains it, listed once, tier 0
    ce = [e for e in entries if e.tier == 0]
    assert len(ce) == 1 and len(ce[0].notebooks) >= 5
    tiers = [e.tier for e in entries if not any(e.key in o.deps for o in entries)]
    assert tiers == sorted(tiers)


def test_plan_of_the_paper_profile_cifar10_one_seed(tmp_path):
    entries = _plan("paper", tmp_path, seeds=1, overrides={"datasets": ["cifar10"]})
    by_tier = {t: sum(e.tier == t for e in entries) for t in (0, 1, 2)}
    # 166 runs before this round; + mixup (BBN Table 1) and notebook 05's three baselines with gradient
    # statistics, each at IR 100, 50 and 10
    assert len(entries) == sum(by_tier.values()) == 178
    assert by_tier[0] == 3  # CE at IR 100, 50, 10
    assert all(e.spec.config["dataset"] == "cifar10" and e.spec.config["seed"] == 0 for e in entries)
    # every run that fills a published CIFAR-10 cell is in tier 0 or 1, and every tier-1 run fills one
    from ltbench.published import published

    tier_of = {e.key: e.tier for e in entries}
    fills = set()
    for runs in executor.collect("paper", seeds=1, overrides={"datasets": ["cifar10"]}, notebooks_dir=NOTEBOOKS).values():
        for r in runs:
            c = r.spec.config
            if r.published_method and published(r.published_method, c["dataset"], c["imbalance_ratio"]) is not None:
                assert tier_of[r.spec.key] <= 1, r.label
                fills.add(r.spec.key)
    assert {e.key for e in entries if e.tier == 1} <= fills


def test_plan_cli_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ltbench", "plan", "--profile", "smoke", "--results", str(tmp_path),
                          "--json", "--only", "01", "02"], capture_output=True, text=True, check=True, cwd=ROOT)
    rows = json.loads(out.stdout)
    assert {"key", "tier", "notebooks", "label", "status", "cost"} <= set(rows[0])
    assert sorted(r["label"] for r in rows) == ["CE", "CE, JPEG q50", "sigmoid focal gamma 1"]


@pytest.mark.parametrize("kwargs,match", [
    ({"deadline": 0}, "deadline"), ({"deadline": -5}, "deadline"), ({"workers": 0}, "workers"),
    ({"tiers": [3]}, "unknown tier 3"), ({"tiers": []}, "tiers is empty"),
])
def test_bad_execute_arguments_fail_before_anything(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        executor.execute("smoke", tmp_path, notebooks_dir=NOTEBOOKS, verbose=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_unknown_profile_and_parameter(tmp_path):
    from ltbench.runner import ConfigError

    with pytest.raises(ConfigError, match="valid profiles"):
        _plan("fast", tmp_path)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['epoch'\]"):
        _plan("smoke", tmp_path, overrides={"epoch": 3})


def test_missing_data_fails_fast_naming_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="cifar100"):
        executor.execute("smoke", tmp_path / "r", only=["01"], overrides={"datasets": ["cifar100"]},
                         data_root=str(tmp_path / "empty"), notebooks_dir=NOTEBOOKS, verbose=False)
    assert not (tmp_path / "r" / "smoke" / "runs").exists() or not any((tmp_path / "r" / "smoke" / "runs").iterdir())


def _metrics(results, profile="smoke"):
    out = {}
    for f in sorted((Path(results) / profile / "runs").glob("*/metrics.json")):
        m = json.loads(f.read_text())
        out[m["key"]] = (m["top1_last"], m["per_class"], m["confusion"])
    return out


@needs_cifar
@pytest.mark.slow
def test_two_workers_give_the_results_of_one(tmp_path):
    kw = dict(only=["02"], notebooks_dir=NOTEBOOKS, threads=1, verbose=False, device="cpu")
    one = executor.execute("smoke", tmp_path / "k1", workers=1, **kw)
    two = executor.execute("smoke", tmp_path / "k2", workers=2, **kw)
    assert one.count("trained") == two.count("trained") == 2 and not one.failed and not two.failed
    assert _metrics(tmp_path / "k1") == _metrics(tmp_path / "k2")
    for a in (tmp_path / "k1" / "smoke" / "runs").glob("*/curves.csv"):
        b = tmp_path / "k2" / "smoke" / "runs" / a.parent.name / "curves.csv"
        assert a.read_text() == b.read_text()


@needs_cifar
@pytest.mark.slow
def test_execute_stops_at_the_deadline_and_resumes(tmp_path):
    kw = dict(only=["07"], overrides={"epochs": 2, "keep_ratios": [0.5], "forms": ["masked"]},
              notebooks_dir=NOTEBOOKS, verbose=False, device="cpu")
    first = executor.execute("smoke", tmp_path, deadline=1e-3, **kw)
    assert first.deadline_hit and first.count("stopped") == 1 and first.count("not started") == 1
    entries = _plan("smoke", tmp_path, only=["07"], overrides=kw["overrides"])
    assert sorted(e.status for e in entries) == ["partial", "pending"]
    # The partial run resumes after the epoch its checkpoint holds: half of its 2 epochs are left.
    part, pend = sorted(entries, key=lambda e: e.status != "partial")
    assert part.epochs_done == 1 and part.cost_left == pytest.approx(part.cost / 2)
    assert pend.epochs_done == 0 and pend.cost_left == pend.cost
    assert f"{(part.cost_left + pend.cost_left) / 1e6:.2f} M still to train" in executor.format_plan(entries, "smoke")
    second = executor.execute("smoke", tmp_path, **kw)
    assert second.count("trained") == 2 and not second.deadline_hit
    uninterrupted = executor.execute("smoke", tmp_path / "ref", **kw)
    assert _metrics(tmp_path) == _metrics(tmp_path / "ref") and uninterrupted.count("trained") == 2


@needs_cifar
@pytest.mark.slow
def test_a_copied_results_folder_renders_without_training(tmp_path, monkeypatch):
    executor.execute("smoke", tmp_path / "a", only=["06"], notebooks_dir=NOTEBOOKS, verbose=False, device="cpu")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    params = notebook_parameters(NOTEBOOKS / "06_feature_space_augmentation.ipynb")
    from ltbench.profiles import resolve_overrides

    params.update(resolve_overrides("smoke", "06_feature_space_augmentation"))
    planned = runs_for_notebook("06_feature_space_augmentation", params)
    store = RunStore(tmp_path / "b" / "smoke")
    results = materialize(planned, store, tmp_path / "b" / "smoke" / "06", device="cpu",
                          weights=[planned[0].spec])
    assert [r.meta["key"] for r in results] == [p.spec.key for p in planned]
    manifest = json.loads((tmp_path / "b" / "smoke" / "06" / "runs.json").read_text())
    assert all(not Path(r["run_dir"]).is_absolute() for r in manifest["runs"])


@needs_cifar
@pytest.mark.slow
def test_the_ddp_entry_point_shares_runs_with_the_notebooks_path(tmp_path, monkeypatch):
    from ltbench.config import TrainConfig
    from ltbench.methods import joint_spec
    from ltbench.runs import ExecOptions, run
    from ltbench.train import load_run_config, main

    store = tmp_path / "store"
    conf = tmp_path / "joint.toml"
    conf.write_text(f'kind = "train"\nout_dir = "{store}"\n[train]\ndataset = "synthetic"\nimbalance_ratio = 5.0\n'
                    'n_max = 40\nepochs = 1\nbatch_size = 32\nwarmup_epochs = 0\ndevice = "cpu"\ncheckpoint_every = 1\n'
                    '[train.data_options]\nn_train_per_class = 40\nn_test_per_class = 10\n[launch]\nnum_workers = 0\n')
    assert main(["--config", str(conf), "--no-progress"]) == 0
    rc = load_run_config(conf)
    spec = joint_spec(TrainConfig(dataset="synthetic", imbalance_ratio=5.0, n_max=40, epochs=1, batch_size=32,
                                  warmup_epochs=0, data_options={"n_train_per_class": 40, "n_test_per_class": 10}))
    assert rc.spec == spec and RunStore(store).status(spec) == DONE
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert run(spec, RunStore(store), ExecOptions(device="cpu", progress=False)).meta["key"] == spec.key
    assert main(["--config", str(conf), "--no-progress"]) == 0  # and back: reused, not retrained
    # a corrupt result is moved aside by both paths alike: the DDP path recomputes it
    m = RunStore(store).folder(spec) / "metrics.json"
    m.write_text("{")
    monkeypatch.undo()
    assert main(["--config", str(conf), "--no-progress"]) == 0
    assert json.loads(m.read_text())["key"] == spec.key


def test_committed_quick_results_are_complete_for_this_code():
    """`make reproduce` on a fresh clone: every quick-profile run is in the committed store and every
    notebook's completion marker matches its source, so nothing is retrained or re-executed."""
    from ltbench import runner

    results = ROOT / "results"
    entries = executor.plan("quick", results, notebooks_dir=NOTEBOOKS)
    pending = [e.spec.describe() for e in entries if e.status != DONE]
    assert not pending, f"results/quick lacks runs of the current code (regenerate with make reproduce): {pending}"
    for plan in runner.plan_runs("quick", results_dir=results, notebooks_dir=NOTEBOOKS):
        done, why = runner.completion_state(plan)
        assert done, f"{plan.stem}: {why}"


@needs_cifar
def test_a_changed_parameter_is_another_run_beside_the_finished_one(tmp_path):
    """The README's override (-p 01_long_tailed_cifar:epochs=...) once failed on existing checkpoints."""
    kw = dict(only=["01"], notebooks_dir=NOTEBOOKS, verbose=False, device="cpu")
    executor.execute("smoke", tmp_path, **kw)
    before = _metrics(tmp_path)
    again = executor.execute("smoke", tmp_path, overrides={"01_long_tailed_cifar:epochs": 2}, **kw)
    # Notebook 01's two smoke runs (CE and its data-copy check), each again at 2 epochs.
    assert len(before) == 2 and again.count("trained") == 2 and not again.failed
    after = _metrics(tmp_path)
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
