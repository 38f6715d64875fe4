"""Packed runs (ltbench.fastpath): K runs of one recipe trained as one grouped-convolution network
equal K single eager runs, and each is stored exactly as if trained alone."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import real_cifar10_root

from ltbench import fastpath
from ltbench.bbn import BBNConfig
from ltbench.engine import DeadlineReached, Trainer
from ltbench.executor import PlanEntry, pack_units
from ltbench.methods import bbn_spec, joint_spec, stage_two_spec
from ltbench.runs import ExecOptions, RunStore, run, run_pack
from test_fastpath import _cfg, _double, _rel

ROOT = Path(__file__).resolve().parents[1]

#: The issue's pack: plain CE, class-balanced focal (sigmoid, prior bias, no decay on it) and
#: LDAM-DRW on a cosine head, each with its own seed (sampler, augmentation, initialisation).
THREE = [dict(loss="ce"), dict(loss="cb_focal", seed=1), dict(loss="ldam", classifier="cosine", drw_epoch=1, seed=2)]


def _three(epochs=2, double=True):
    make = _double if double else (lambda t: t)
    # batches of 128: 128 + 128 + a padded 46 per epoch
    return [make(Trainer(_cfg(epochs=epochs, batch_size=128, **kw), progress=False)) for kw in THREE]


def _assert_runs_equal(singles, packed, results_a, results_b, tol=1e-6):
    for a, b, ra, rb in zip(singles, packed, results_a, results_b):
        assert [h["train_loss"] for h in rb.history] == pytest.approx([h["train_loss"] for h in ra.history], rel=1e-6)
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert _rel(x, y) < tol, name  # weights and every BatchNorm statistic, per run
        for (name, x), y in zip(a.loss_fn.state_dict().items(), b.loss_fn.state_dict().values()):
            assert _rel(x, y) < 1e-5, name
        sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert _rel(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) < 1e-5
        assert rb.last.per_class == pytest.approx(ra.last.per_class)


def test_pack_of_ce_cb_focal_and_ldam_drw_equals_three_single_runs():
    singles, packed = _three(), _three()
    ra = [t.fit(None) for t in singles]
    rb = fastpath.fit_pack(packed, [None] * 3, mode="static")
    _assert_runs_equal(singles, packed, ra, rb)
    assert len({r.train_seconds for r in rb}) == 1  # each run's share of the packed epochs


@pytest.mark.slow
def test_compiled_pack_equals_three_single_runs():
    singles, packed = _three(), _three()
    ra = [t.fit(None) for t in singles]
    rb = fastpath.fit_pack(packed, [None] * 3, mode="graph", backend="aot_eager")
    _assert_runs_equal(singles, packed, ra, rb)


def test_packed_network_is_the_runs_networks():
    """Copying in and out is exact; the packed backbone's features are the runs' features side by side."""
    runs = [t.model.double().eval() for t in _three(double=False)]
    net = fastpath.PackedCifarResNet(runs).eval()
    x = [torch.randn(4, 3, 16, 16, dtype=torch.float64) for _ in runs]
    with torch.no_grad():
        feats = net.forward_features(torch.cat(x, dim=1))
        for k, (m, xi) in enumerate(zip(runs, x)):
            assert torch.allclose(feats[:, 16 * k:16 * (k + 1)], m.forward_features(xi), atol=1e-12)
        before = [p.clone() for m in runs for p in m.state_dict().values()]
        net.copy_out()
    assert all(torch.equal(a, b) for a, b in zip(before, [p for m in runs for p in m.state_dict().values()]))


def test_run_pack_stores_each_run_as_if_trained_alone(tmp_path):
    specs = [joint_spec(_cfg(epochs=2, checkpoint_every=1, **kw)) for kw in THREE]
    opts = ExecOptions(device="cpu", progress=False)
    alone = [run(s, RunStore(tmp_path / "alone"), opts) for s in specs]
    packed = run_pack(specs, RunStore(tmp_path / "packed"), opts)
    for spec, a, b in zip(specs, alone, packed):
        fa = RunStore(tmp_path / "alone").folder(spec)
        fb = RunStore(tmp_path / "packed").folder(spec)
        ma, mb = json.loads((fa / "metrics.json").read_text()), json.loads((fb / "metrics.json").read_text())
        assert set(ma) == set(mb) and ma["key"] == mb["key"] == spec.key and ma["config"] == mb["config"]
        assert mb["execution"]["pack"]["size"] == 3 and spec.key in mb["execution"]["pack"]["runs"]
        assert sorted(p.name for p in fa.iterdir()) == sorted(p.name for p in fb.iterdir())
        assert b.top1_last == pytest.approx(a.top1_last, abs=20)  # float32: same run, chaotic digits
        # the store now holds a finished run: run() loads it instead of training
        again = run(spec, RunStore(tmp_path / "packed"), opts)
        assert again.history == b.history


def test_run_pack_stops_at_the_deadline_and_resumes_in_lockstep(tmp_path):
    specs = [joint_spec(_cfg(epochs=2, checkpoint_every=2, **kw)) for kw in THREE[:2]]
    opts = ExecOptions(device="cpu", progress=False)
    full = run_pack(specs, RunStore(tmp_path / "full"), opts)
    store = RunStore(tmp_path / "stopped")
    with pytest.raises(DeadlineReached):
        run_pack(specs, store, ExecOptions(device="cpu", progress=False, deadline=time.time()))
    assert [store.start_epoch(s) for s in specs] == [1, 1]
    resumed = run_pack(specs, store, opts)
    for a, b in zip(full, resumed):
        assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
        assert a.last.per_class == b.last.per_class


def test_pack_units_group_only_runs_of_one_recipe(tmp_path):
    store = RunStore(tmp_path)
    ce = joint_spec(_cfg())
    specs = [ce, joint_spec(_cfg(loss="focal")), joint_spec(_cfg(seed=3, sampler="class_balanced")),
             joint_spec(_cfg(imbalance_ratio=10.0)),  # other data
             joint_spec(_cfg(lr=0.05)),  # other recipe
             bbn_spec(_cfg(BBNConfig)),  # other method
             stage_two_spec(ce, "crt"),  # a dependency
             joint_spec(_cfg(loss="ldam", classifier="cosine", drw_epoch=1))]
    entries = [PlanEntry(s, 0, ["nb"], [], "pending", None) for s in specs]
    keys = [s.key for s in specs]
    assert pack_units(entries, 1, store) == [[k] for k in keys]
    units = pack_units(entries, 3, store)
    assert units[0] == [keys[0], keys[1], keys[2]]
    assert [keys[7]] in units and [keys[3]] in units and [keys[4]] in units and [keys[5]] in units
    assert sum(len(u) for u in units) == len(keys)
    assert fastpath.pack_key(specs[5]) is None and fastpath.pack_key(specs[6]) is None
    with pytest.raises(ValueError, match="one recipe"):
        run_pack([specs[0], specs[4]], store)


@pytest.mark.slow
@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_execute_pack_trains_a_notebooks_runs_as_one_pack(tmp_path):
    from ltbench import executor

    kw = dict(only=["02"], notebooks_dir=ROOT / "notebooks", verbose=False, device="cpu")
    alone = executor.execute("smoke", tmp_path / "k1", **kw)
    packed = executor.execute("smoke", tmp_path / "k2", pack=4, **kw)
    assert alone.count("trained") == packed.count("trained") == 2 and not packed.failed
    for f in (tmp_path / "k2" / "smoke" / "runs").glob("*/metrics.json"):
        m, ref = json.loads(f.read_text()), json.loads((tmp_path / "k1" / "smoke" / "runs" / f.parent.name /
                                                        "metrics.json").read_text())
        assert set(m) == set(ref) and m["config"] == ref["config"] and m["execution"]["pack"]["size"] == 2
        assert abs(m["top1_last"] - ref["top1_last"]) < 10  # one float32 epoch: the same run up to rounding chaos
    again = executor.execute("smoke", tmp_path / "k2", pack=4, **kw)
    assert again.count("trained") == 0 and again.count("done") == 2
    with pytest.raises(ValueError, match="pack"):
        executor.execute("smoke", tmp_path / "k3", pack=0, **kw)
