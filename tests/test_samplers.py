"""Tests for ltbench.samplers (SPEC §5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ltbench.samplers import SAMPLERS, build_sampler

COUNTS = [50, 20, 10, 5, 2]
LABELS = [c for c, n in enumerate(COUNTS) for _ in range(n)]
N = len(LABELS)
C = len(COUNTS)
ALL = ["instance", "class_balanced", "square_root", "progressive", "reversed"]
CLASS_LEVEL = ["class_balanced", "square_root", "progressive", "reversed"]


def make(name: str, **kw):
    if name == "progressive":
        kw.setdefault("total_epochs", 10)
    return build_sampler(name, LABELS, **kw)


def expected_probs(name: str, epoch: int = 0, total: int = 10) -> np.ndarray:
    n = np.array(COUNTS, dtype=float)
    if name == "instance":
        return n / n.sum()
    if name == "class_balanced":
        return np.full(C, 1 / C)
    if name == "square_root":
        return np.sqrt(n) / np.sqrt(n).sum()
    if name == "progressive":
        a = min(epoch / total, 1.0)
        return (1 - a) * n / n.sum() + a / C
    if name == "reversed":
        w = n.max() / n
        return w / w.sum()
    raise AssertionError(name)


def empirical(sampler, epoch: int) -> np.ndarray:
    labels = torch.tensor(LABELS)[sampler.global_indices(epoch)]
    return torch.bincount(labels, minlength=C).double().numpy() / labels.numel()


def test_registry_names():
    assert SAMPLERS.names() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_class_probabilities_match_spec(name):
    s = make(name)
    p = s.class_probabilities(0).numpy()
    np.testing.assert_allclose(p, expected_probs(name, 0), rtol=1e-12)
    assert p.sum() == pytest.approx(1.0)


def test_reversed_is_proportional_to_nmax_over_nc():
    p = make("reversed").class_probabilities().numpy()
    ratio = p * np.array(COUNTS) / max(COUNTS)  # p_c * n_c / n_max is constant
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)


@pytest.mark.parametrize(
    "name,epoch", [(n, 0) for n in ALL] + [("progressive", 5), ("progressive", 10)]
)
def test_empirical_class_frequencies(name, epoch):
    m = 200_000
    s = make(name, num_samples=m, seed=3)
    p = expected_probs(name, epoch)
    np.testing.assert_allclose(s.class_probabilities(epoch).numpy(), p, rtol=1e-12)
    freq = empirical(s, epoch)
    # 5 binomial standard deviations (plus slack for instance's repeated permutations).
    tol = 5 * np.sqrt(p * (1 - p) / m) + 1e-4
    assert np.all(np.abs(freq - p) < tol), (freq, p)


def test_progressive_endpoints_and_clamp():
    s = make("progressive", total_epochs=10)
    np.testing.assert_allclose(s.class_probabilities(0), expected_probs("instance"))
    np.testing.assert_allclose(s.class_probabilities(10), np.full(C, 1 / C))
    np.testing.assert_allclose(s.class_probabilities(25), np.full(C, 1 / C))  # clamped past T
    s.set_epoch(5)
    np.testing.assert_allclose(s.class_probabilities(), expected_probs("progressive", 5))


def test_within_class_uniform():
    m = 200_000
    s = make("class_balanced", num_samples=m, seed=1)
    hits = torch.bincount(s.global_indices(0), minlength=N).double().numpy() / m
    expected = np.array([1 / C / COUNTS[c] for c in LABELS])
    tol = 5 * np.sqrt(expected * (1 - expected) / m)
    assert np.all(np.abs(hits - expected) < tol)


def test_class_balanced_k_consecutive():
    k, m = 4, 40_002  # not a multiple of k: last block truncated
    s = make("class_balanced", k=k, num_samples=m, seed=7)
    g = s.global_indices(0)
    assert g.numel() == m
    cls = torch.tensor(LABELS)[g]
    full = cls[: (m // k) * k].view(-1, k)
    assert torch.all(full == full[:, :1])  # each block of k is one class
    assert torch.all(cls[(m // k) * k :] == cls[(m // k) * k])
    # Samples within a block are drawn independently (not k copies of one index).
    assert (g[: (m // k) * k].view(-1, k) != g[: (m // k) * k].view(-1, k)[:, :1]).any()
    block_freq = torch.bincount(full[:, 0], minlength=C).double().numpy() / full.shape[0]
    assert np.all(np.abs(block_freq - 1 / C) < 5 * np.sqrt(0.16 / full.shape[0]))


@pytest.mark.parametrize("name", ALL)
def test_determinism_epoch_and_seed(name):
    a, b = make(name, seed=11), make(name, seed=11)
    assert torch.equal(a.global_indices(3), b.global_indices(3))
    a.set_epoch(3)
    assert list(a) == b.global_indices(3).tolist()
    assert not torch.equal(a.global_indices(0), a.global_indices(1))
    assert not torch.equal(a.global_indices(0), make(name, seed=12).global_indices(0))
    # Re-reading an old epoch after others gives the same draw (no hidden state).
    first = a.global_indices(0).clone()
    a.global_indices(5)
    assert torch.equal(a.global_indices(0), first)


@pytest.mark.parametrize("name", ALL)
def test_label_container_types_agree(name):
    ref = make(name).global_indices(2)
    for labels in (np.array(LABELS), torch.tensor(LABELS, dtype=torch.int32)):
        kw = {"total_epochs": 10} if name == "progressive" else {}
        assert torch.equal(build_sampler(name, labels, **kw).global_indices(2), ref)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("num_samples", [None, 1, 50, 1000])
def test_epoch_length(name, num_samples):
    s = make(name, num_samples=num_samples)
    expected = N if num_samples is None else num_samples
    assert len(s) == expected
    idx = s.indices()
    assert idx.dtype == torch.int64 and idx.numel() == expected
    assert 0 <= int(idx.min()) and int(idx.max()) < N
    assert len(list(s)) == expected and all(type(i) is int for i in s)


def test_instance_is_permutation():
    s = make("instance", seed=5)
    for epoch in range(3):
        assert sorted(s.global_indices(epoch).tolist()) == list(range(N))
    # Longer epochs: each full pass is a permutation.
    g = make("instance", num_samples=3 * N + 7).global_indices(0)
    for p in range(3):
        assert sorted(g[p * N : (p + 1) * N].tolist()) == list(range(N))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_samples", [None, 100, 101])
def test_shards_partition_global_draw(name, world_size, num_samples):
    ref = make(name, seed=4, num_samples=num_samples).global_indices(6)
    shards = [make(name, seed=4, num_samples=num_samples, rank=r, world_size=world_size)
              for r in range(world_size)]
    merged = torch.empty_like(ref)
    for r, s in enumerate(shards):
        s.set_epoch(6)
        shard = s.indices()
        assert torch.equal(s.global_indices(), ref)  # every rank computes the same global draw
        assert list(s) == shard.tolist()  # __iter__ matches indices()
        assert len(s) == shard.numel()
        merged[r::world_size] = shard
    assert sum(len(s) for s in shards) == ref.numel()
    assert torch.equal(merged, ref)


def test_indices_device_and_explicit_epoch():
    s = make("square_root", seed=2)
    s.set_epoch(1)
    assert torch.equal(s.indices(4, device="cpu"), s.global_indices(4))
    assert s.indices(device=torch.device("cpu")).device.type == "cpu"
    assert torch.equal(s.indices(), s.global_indices(1))
    if torch.cuda.is_available():
        assert torch.equal(s.indices(4, device="cuda").cpu(), s.global_indices(4))


@pytest.mark.parametrize("name", ALL)
def test_dataloader_compatibility(name):
    ds = TensorDataset(torch.arange(N), torch.tensor(LABELS))
    s = make(name, num_samples=64, seed=9)
    s.set_epoch(2)
    loader = DataLoader(ds, batch_size=8, sampler=s)
    got = torch.cat([x for x, _ in loader])
    assert len(loader) == 8
    assert torch.equal(got, s.indices())


def test_num_classes_option():
    s = build_sampler("instance", LABELS, num_classes=7)  # empty trailing classes are fine here
    assert s.class_probabilities().numel() == 7 and float(s.class_probabilities()[5:].sum()) == 0
    s = build_sampler("class_balanced", LABELS, num_classes=C)
    assert s.class_probabilities().numel() == C


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_sampler("nope", LABELS), r"sampler='nope'.*class_balanced"),
        (lambda: build_sampler("instance", []), r"labels is empty"),
        (lambda: build_sampler("instance", [0, -1, 2]), r"labels must be >= 0.*-1"),
        (lambda: build_sampler("instance", [0.5, 1.0]), r"labels must be integers"),
        (lambda: build_sampler("instance", LABELS, num_samples=0), r"num_samples must be >= 1.*0"),
        (lambda: build_sampler("instance", LABELS, num_samples=-3), r"num_samples.*-3"),
        (lambda: build_sampler("class_balanced", LABELS, k=0), r"k must be >= 1.*k=0"),
        (lambda: build_sampler("instance", LABELS, rank=2, world_size=2), r"rank must be in \[0, world_size\) = \[0, 2\), got rank=2"),
        (lambda: build_sampler("instance", LABELS, rank=-1), r"rank must be in \[0, world_size\).*rank=-1"),
        (lambda: build_sampler("instance", LABELS, world_size=0), r"world_size must be >= 1.*0"),
        (lambda: build_sampler("progressive", LABELS), r"requires total_epochs"),
        (lambda: build_sampler("progressive", LABELS, total_epochs=0), r"total_epochs must be >= 1"),
        (lambda: build_sampler("instance", LABELS, num_classes=3), r"num_classes=3.*class 4"),
        (lambda: build_sampler("instance", LABELS, bogus=1), r"unknown option.*bogus"),
        (lambda: build_sampler("instance", LABELS).set_epoch(-1), r"epoch must be >= 0"),
    ],
)
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", CLASS_LEVEL)
def test_empty_class_is_an_error_for_class_level(name):
    kw = {"total_epochs": 10} if name == "progressive" else {}
    with pytest.raises(ValueError, match=rf"{name}.*class 5 has 0 samples"):
        build_sampler(name, LABELS, num_classes=7, **kw)
    with pytest.raises(ValueError, match=r"class 1 has 0 samples"):
        build_sampler(name, [0, 0, 2, 2], **kw)  # a hole in the label range
