"""Bring your own method (issue 24): a loss from outside the package is a run like any built-in,
a bad one is refused before any training, and ``ltbench compare`` trains only the user's runs and
loads the baselines from the store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import real_cifar10_root
from test_fastpath import SYN as FASTPATH_SYN
from ltbench import plugins
from ltbench.compare import check_method
from ltbench.config import TrainConfig
from ltbench.losses import build_loss
from ltbench.methods import joint_spec
from ltbench.parameters import ConfigError
from ltbench.runs import ExecOptions, RunStore, run

ROOT = Path(__file__).resolve().parent.parent
LA = "examples/logit_adjustment.py:LogitAdjustedLoss"
BS = "examples/balanced_softmax.py:BalancedSoftmaxLoss"
SYN = {**FASTPATH_SYN, "epochs": 2}  # a tiny synthetic recipe (test_fastpath registers its tiny model)


def test_the_examples_are_the_closed_form_losses():
    counts = [100, 10, 1]
    z = torch.tensor([[100.0, -100.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    prior = torch.tensor(counts, dtype=torch.float64) / 111
    shifted = z.double() + torch.log(prior)
    expected = torch.nn.functional.cross_entropy(shifted, y)
    la = build_loss(LA, counts, tau=1.0)
    assert torch.allclose(la(z, y).double(), expected, atol=1e-4)
    # Balanced Softmax = logit adjustment with tau 1 (log counts and log prior differ by a constant).
    assert torch.allclose(build_loss(BS, counts)(z, y), la(z, y), atol=1e-5)
    # tau = 0 is plain CE.
    assert torch.allclose(build_loss(LA, counts, tau=0.0)(z, y), torch.nn.functional.cross_entropy(z, y), atol=1e-5)


def _bad(tmp_path: Path, body: str) -> str:
    f = tmp_path / "bad_loss.py"
    f.write_text("import torch\nfrom ltbench.losses import LossBase\n\n\nclass Bad(LossBase):\n"
                 "    def __init__(self, class_counts, k=1.0):\n        super().__init__(class_counts)\n\n"
                 f"    def compute(self, z, y):\n        {body}\n")
    return f"{f}:Bad"


@pytest.mark.parametrize("method, params, match", [
    ("logit_adjustment", {}, "name your loss as '<file.py or module>:<Name>'"),
    ("examples/missing.py:X", {}, "file not found; looked for"),
    ("examples/logit_adjustment.py:Missing", {}, "has no 'Missing'; it defines: .*LogitAdjustedLoss"),
    ("no_such_module_xyz:Loss", {}, "module 'no_such_module_xyz' not found"),
    (LA, {"taux": 1.0}, r"unknown hyper-parameter\(s\) \['taux'\]; valid: tau"),
])
def test_a_bad_method_is_refused_before_training_naming_the_problem(tmp_path, method, params, match):
    with pytest.raises(ConfigError, match=match):
        check_method(method, params)


@pytest.mark.parametrize("body, match", [
    ("return torch.nn.functional.cross_entropy(z, y, reduction='none')", "must return a scalar tensor"),
    ("return z.sum() * float('nan')", "must be finite"),
    ("return torch.tensor(1.0)", "no finite gradient"),
    ("raise RuntimeError('boom')", "failed on a test batch.*boom"),
])
def test_a_broken_loss_is_refused_with_what_to_fix(tmp_path, body, match):
    ref = _bad(tmp_path, body)
    with pytest.raises(ConfigError, match=match):
        check_method(ref, {})
    with pytest.raises(ValueError, match=match):  # a config naming it fails validation the same way
        TrainConfig(**SYN, loss=ref).validate()


def test_a_loss_by_reference_is_a_run_whose_key_names_it_and_its_parameters(tmp_path, capsys):
    src = tmp_path / "my_loss.py"
    src.write_text((ROOT / "examples" / "logit_adjustment.py").read_text())
    ref = f"{src}:LogitAdjustedLoss"
    a = joint_spec(TrainConfig(**SYN, loss=ref, loss_params={"tau": 1.0}))
    b = joint_spec(TrainConfig(**SYN, loss=ref, loss_params={"tau": 0.5}))
    assert a.key != b.key and a.config["loss"] == ref
    store = RunStore(tmp_path / "store")
    first = run(a, store, ExecOptions(device="cpu", progress=False, compile=False))
    record = json.loads((store.folder(a) / "metrics.json").read_text())["execution"]["plugins"]
    assert record == {ref: plugins.source_digest(ref)}
    capsys.readouterr()
    assert run(a, store).top1_last == first.top1_last  # reused, silently while the source is the same
    assert "source changed" not in capsys.readouterr().err
    src.write_text(src.read_text() + "\n# an edit\n")
    again = run(a, store)
    assert again.top1_last == first.top1_last
    err = capsys.readouterr().err
    assert f"run {a.key} is reused although {ref}: its source changed" in err and "force=True" in err


@pytest.mark.skipif(real_cifar10_root() is None, reason="LTBENCH_DATA with cifar10/ not set")
def test_compare_on_smoke_trains_only_the_users_runs_and_loads_the_baselines(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "LTBENCH_COMPILE": "0"}
    cli = [sys.executable, "-m", "ltbench"]
    base = subprocess.run([*cli, "execute", "--profile", "smoke", "--only", "03", "04",
                           "--results", str(results), "--device", "cpu", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert base.returncode == 0, base.stdout + base.stderr
    runs = results / "smoke" / "runs"
    before = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    out = subprocess.run([*cli, "compare", "--method", LA, "--param", "tau=1.0", "--profile", "smoke",
                          "--results", str(results), "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((results / "smoke" / "compare" / "LogitAdjustedLoss" / "comparison.json").read_text())
    assert record["trained"] == record["user_runs"] and len(record["user_runs"]) == 1
    assert {"CE", "LDAM-DRW", "cRT", "BBN"} <= set(record["baselines"])
    for keys in record["baselines"].values():  # every baseline was in the store and was loaded, not rewritten
        for k in keys:
            assert (runs / k / "metrics.json").stat().st_mtime_ns == before[k]
    after = {p.parent.name for p in runs.glob("*/metrics.json")}
    assert after - set(before) == set(record["user_runs"])
    assert len(record["verdicts"]) == len(record["baselines"]) and "points" in record["verdicts"][0]
    md = (results / "smoke" / "compare" / "LogitAdjustedLoss" / "comparison.md").read_text()
    assert "| LogitAdjustedLoss" in md and "| CE" in md
    assert (results / "smoke" / "compare" / "LogitAdjustedLoss" / "per_class_vs_count.png").is_file()
    # A second compare trains nothing.
    again = subprocess.run(out.args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "compare: trained" not in again.stdout
    # A missing baseline is named, with the command that trains it; nothing is trained.
    ce = record["baselines"]["CE"][0]
    (runs / ce / "metrics.json").unlink()
    refused = subprocess.run(out.args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and f"CE [{ce}]" in refused.stderr and "--train-baselines" in refused.stderr


def test_the_harvest_queues_the_examples_right_after_the_cpu_tiers_0_1(tmp_path):
    from ltbench.comparison import plan_comparison
    from ltbench.harvest import QUEUE, _plan

    names = [s.name for s in QUEUE]
    first = names.index("cpu tiers 0-1, seed 0") + 1
    steps = [s for s in QUEUE if s.method]
    assert [s.method for s in steps] == [LA, BS] and [QUEUE.index(s) for s in steps] == [first, first + 1]
    entries = _plan(steps[0], tmp_path / "results", ROOT / "notebooks")
    assert len(entries) == 1 and entries[0].status == "pending"
    cell, baselines, mine = plan_comparison(LA, {"tau": 1.0}, "cpu", notebooks_dir=ROOT / "notebooks")
    assert cell == ("cifar10", 100.0) and [e.spec for e in entries] == mine
    ce, ours = baselines["CE"][0].config, mine[0].config
    assert {k for k in set(ce) | set(ours) if ce.get(k) != ours.get(k)} == {"loss", "loss_params"}
    assert ours["loss"] == LA and ours["loss_params"] == {"tau": 1.0}
