"""The throughput benchmark's rows run the code they name (benchmarks/throughput.py).

The GPU session runs the graph and pack rows first thing on a lent machine, where a broken row
costs device minutes; these tests run the same rows on a small synthetic set, eagerly (the
``static`` mode: the fast path's step without inductor's compile), and check that each timed
step trains: a finite rate, and every run's weights moved.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from ltbench.data import build_long_tailed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("ltbench_bench_throughput", ROOT / "benchmarks" / "throughput.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data():
    return build_long_tailed("synthetic", 5, n_max=40, n_train_per_class=40, n_test_per_class=4, image_size=32)


def _heads(trainers):
    # Each run's linear head: trained in place by the fast path's step, alone or in a pack (a pack
    # trains a packed copy of the backbones and copies it back only at the epoch's end).
    return [torch.cat([p.detach().flatten().clone() for p in t.model.fc.parameters()]) for t in trainers]


@pytest.mark.parametrize("row,runs", [("static", 1), ("pack2", 2)])
def test_fast_path_rows_train(throughput, data, monkeypatch, row, runs):
    from ltbench import engine, fastpath

    made, before = [], []
    real_init, real_pin = engine.Trainer.__init__, fastpath.FastPath._pin

    def init(self, *a, **k):
        real_init(self, *a, **k)
        made.append(self)

    def pin(self):  # the weights as the timed steps find them
        before.extend(_heads(made))
        real_pin(self)

    monkeypatch.setattr(engine.Trainer, "__init__", init)
    monkeypatch.setattr(fastpath.FastPath, "_pin", pin)
    dev = torch.device("cpu")
    if row == "static":
        out = throughput.bench_fast(data, dev, steps=2, warmup=1, batch_size=32, mode="static")
    else:
        out = throughput.bench_pack(data, dev, steps=2, warmup=1, batch_size=32, k=2, mode="static")
    assert (out.name, out.runs, out.steps) == (row, runs, 2)
    assert math.isfinite(out.images_per_s) and out.images_per_s > 0
    assert len(made) == len(before) == runs
    for a, b in zip(_heads(made), before):
        assert not torch.equal(a, b), "a timed step left the weights unchanged"
