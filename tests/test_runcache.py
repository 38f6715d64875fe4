"""Sharing finished runs between notebooks (ltbench.runcache through ltbench.engine.train)."""
from __future__ import annotations

import json

import pytest

from ltbench import runcache
from ltbench.config import TrainConfig
from ltbench.engine import Trainer, train
from ltbench.ohem import OHEMTrainer

SYN = dict(dataset="synthetic", imbalance_ratio=10, epochs=1, batch_size=32, device="cpu", warmup_epochs=0,
           data_options={"n_train_per_class": 20, "n_test_per_class": 5, "image_size": 8})


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**SYN, **kw})


@pytest.fixture
def index(tmp_path, monkeypatch):
    monkeypatch.setenv(runcache.ENV_VAR, str(tmp_path / "index"))
    return tmp_path / "index"


def _no_training(monkeypatch):
    def fail(self, out_dir=None):
        raise AssertionError("the run was trained again instead of being reused")
    monkeypatch.setattr(Trainer, "fit", fail)


def test_identical_run_is_copied_with_the_new_labels(tmp_path, index, monkeypatch):
    first = train(_cfg(), tmp_path / "nb1" / "CE", meta={"notebook": "01", "method": "CE"}, progress=False)
    assert len(list(index.glob("*.json"))) == 1
    _no_training(monkeypatch)
    again = train(_cfg(), tmp_path / "nb2" / "softmax", meta={"notebook": "03", "method": "softmax"}, progress=False)
    assert again.last.per_class == first.last.per_class and again.best_top1 == first.best_top1
    m = json.loads((tmp_path / "nb2" / "softmax" / "metrics.json").read_text())
    assert m["notebook"] == "03" and m["method"] == "softmax"
    assert m["reused_from"] == "../../nb1/CE"
    for name in ("per_class.csv", "curves.csv", "checkpoint.pt"):
        assert (tmp_path / "nb2" / "softmax" / name).read_bytes() == (tmp_path / "nb1" / "CE" / name).read_bytes()
    assert again.meta["reused_from"] == m["reused_from"]


def test_other_config_or_trainer_arguments_are_not_shared(tmp_path, index, monkeypatch):
    train(_cfg(), tmp_path / "a", progress=False)
    calls = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, out_dir=None: calls.append(type(self).__name__) or fit(self, out_dir))
    train(_cfg(lr=0.05), tmp_path / "b", progress=False)
    train(_cfg(), tmp_path / "c", trainer_cls=OHEMTrainer, keep_ratio=0.5, progress=False)
    train(_cfg(), tmp_path / "d", trainer_cls=OHEMTrainer, keep_ratio=0.25, progress=False)
    train(_cfg(), tmp_path / "e", trainer_cls=OHEMTrainer, keep_ratio=0.25, progress=False)  # same as d: shared
    assert calls == ["Trainer", "OHEMTrainer", "OHEMTrainer"]
    assert "reused_from" in json.loads((tmp_path / "e" / "metrics.json").read_text())


def test_without_index_or_with_force_the_run_is_trained(tmp_path, monkeypatch):
    monkeypatch.delenv(runcache.ENV_VAR, raising=False)
    train(_cfg(), tmp_path / "a", progress=False)
    monkeypatch.setenv(runcache.ENV_VAR, str(tmp_path / "index"))
    train(_cfg(), tmp_path / "b", progress=False)  # indexed now
    _no_training(monkeypatch)
    with pytest.raises(AssertionError, match="trained again"):
        train(_cfg(), tmp_path / "c", force=True, progress=False)
    monkeypatch.delenv(runcache.ENV_VAR)
    with pytest.raises(AssertionError, match="trained again"):
        train(_cfg(), tmp_path / "d", progress=False)


def test_stale_index_entry_is_ignored(tmp_path, index, monkeypatch):
    train(_cfg(), tmp_path / "a", progress=False)
    (tmp_path / "a" / "metrics.json").unlink()  # the indexed run is gone
    key = runcache.run_key(_cfg().to_dict(), Trainer, {})
    assert runcache.lookup(key) is None
    (index / f"{key}.json").write_text("not json")
    assert runcache.lookup(key) is None
