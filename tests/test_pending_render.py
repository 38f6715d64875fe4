"""A render of what the store holds (``materialize(..., train=False)``): nothing trains, the rest
is pending in the manifest, the report leaves it out and the runner does not call it complete."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltbench import runner
from ltbench.engine import Trainer
from ltbench.experiments import MANIFEST, materialize, pending, planned
from ltbench.methods import joint_spec, stage_two_spec
from ltbench.runs import ExecOptions, RunStore, run
from ltbench.config import TrainConfig


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(dataset="synthetic", imbalance_ratio=5.0, n_max=40, epochs=1, batch_size=32, warmup_epochs=0,
                       device="cpu", data_options={"n_train_per_class": 40, "n_test_per_class": 10}, **kw)


@pytest.fixture()
def store_with_one_done(tmp_path):
    store = RunStore(tmp_path / "store")
    ce, focal = joint_spec(_cfg()), joint_spec(_cfg(loss="focal", loss_params={"gamma": 1.0}))
    run(ce, store, ExecOptions(device="cpu", progress=False))
    runs = [planned(ce, "CE", "99_test", "paper", "table"), planned(focal, "focal", "99_test", "paper", "table"),
            planned(stage_two_spec(ce, "crt", epochs=1), "cRT", "99_test", "paper", "table"),
            planned(ce, "CE again", "99_test", "paper", "other table")]
    return store, runs


def test_nothing_trains_and_the_missing_runs_are_pending_in_the_manifest(store_with_one_done, tmp_path, monkeypatch):
    store, runs = store_with_one_done
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    out = tmp_path / "nb"
    results = materialize(runs, store, out, device="cpu", train=False)
    assert [r.meta["method"] for r in results] == ["CE", "CE again"]
    assert [r.label for r in pending(runs, store)] == ["focal", "cRT"]
    rows = json.loads((out / MANIFEST).read_text())["runs"]
    assert [(r["label"], r["status"]) for r in rows] == [("CE", "done"), ("focal", "pending"), ("cRT", "pending"),
                                                         ("CE again", "done")]
    assert not (store.folder(runs[1].spec) / "metrics.json").exists()
    # the committed CE run without its checkpoint: pending for an analysis that loads its weights,
    # done for a table that only reads its metrics
    (store.folder(runs[0].spec) / "checkpoint.pt").unlink()
    assert [r.label for r in pending(runs, store, weights=[runs[0].spec])] == ["CE", "focal", "cRT", "CE again"]
    assert materialize(runs, store, device="cpu", train=False, weights=[runs[0].spec]) == []
    assert [r.meta["method"] for r in materialize(runs, store, device="cpu", train=False)] == ["CE", "CE again"]
    with pytest.raises(ValueError, match="train='no'"):
        materialize(runs, store, train="no")


def test_a_pending_row_is_no_report_problem_and_a_render_with_pending_runs_is_not_complete(store_with_one_done, tmp_path):
    from ltbench.experiments import MANIFEST as experiments_manifest
    from ltbench.report import collect

    assert runner.MANIFEST == experiments_manifest
    store, runs = store_with_one_done
    out = store.root / "99_test"
    materialize(runs, store, out, device="cpu", train=False)
    df, problems = collect(store.root.parent)
    assert problems == [] and list(df["method"]) == ["CE"]
    assert runner._pending_in_manifest(out / MANIFEST) == 2
    materialize(runs[:1], store, out, device="cpu", train=False)
    assert runner._pending_in_manifest(out / MANIFEST) == 0
    assert runner._pending_in_manifest(tmp_path / "absent.json") == 0


def test_the_report_counts_each_notebooks_runs_and_its_pending_ones(tmp_path):
    from ltbench.report import _run_count

    (tmp_path / "runs.json").write_text(json.dumps({"runs": [
        {"key": "a", "status": "done"}, {"key": "a", "status": "done"}, {"key": "b", "status": "pending"},
        {"key": "c"}]}))  # a manifest from before the status field: done
    assert _run_count(tmp_path) == "2 (1 pending)"
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [{"key": "a"}]}))
    assert _run_count(tmp_path) == "1" and _run_count(tmp_path / "absent") == "-"
