"""Tests for ltbench.samplers (docs/methods.md §5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ltbench.samplers import SAMPLERS, ClassAwareSampler, build_sampler

COUNTS = [50, 20, 10, 5, 2]
LABELS = [c for c, n in enumerate(COUNTS) for _ in range(n)]
N = len(LABELS)
C = len(COUNTS)
ALL = ["instance", "class_balanced", "class_aware", "square_root", "progressive", "reversed"]
CLASS_LEVEL = ["class_balanced", "class_aware", "square_root", "progressive", "reversed"]


def default_length(name: str) -> int:
    """Epoch length without ``num_samples``: the dataset, except class_aware's ``n_max * C``."""
    return max(COUNTS) * C if name == "class_aware" else N


def make(name: str, **kw):
    if name == "progressive":
        kw.setdefault("total_epochs", 10)
    return build_sampler(name, LABELS, **kw)


def expected_probs(name: str, epoch: int = 0, total: int = 10) -> np.ndarray:
    n = np.array(COUNTS, dtype=float)
    if name == "instance":
        return n / n.sum()
    if name in ("class_balanced", "class_aware"):
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
    expected = default_length(name) if num_samples is None else num_samples
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


# --------------------------------------------------------------------------- class_aware
# Decoupling's ClassAwareSampler (classifier-balancing data/ClassAwareSampler.py): a shuffled cycle
# over classes, a shuffled cycle within each class, k samples per class draw, and the iterators
# carried over from one epoch to the next.

LABELS_NP = np.array(LABELS)
MEMBERS = [np.flatnonzero(LABELS_NP == c) for c in range(C)]


def stream(sampler, epochs: int) -> np.ndarray:
    return torch.cat([sampler.global_indices(e) for e in range(epochs)]).numpy()


def test_class_aware_epoch_length_is_max_count_times_classes():
    s = build_sampler("class_aware", LABELS)
    assert s.num_samples == len(s) == 50 * 5 == 250 and len(s.indices()) == 250
    assert len(build_sampler("class_aware", LABELS, epoch_length="dataset")) == N
    assert len(build_sampler("class_aware", LABELS, num_samples=40, k=4)) == 40
    # Sharded: the global epoch is still n_max * C, split across ranks.
    shards = [build_sampler("class_aware", LABELS, rank=r, world_size=2) for r in range(2)]
    assert sum(len(x) for x in shards) == 250


@pytest.mark.parametrize("k", [1, 2, 4])
def test_class_aware_each_class_once_per_class_cycle(k):
    s = build_sampler("class_aware", LABELS, seed=5, k=k, num_samples=20 * k)  # whole draws per epoch
    idx = stream(s, 6)
    cls = LABELS_NP[idx]
    blocks = cls.reshape(-1, k)
    assert np.all(blocks == blocks[:, :1])  # k consecutive samples share their class
    draws = blocks[:, 0]
    cycles = draws[: (len(draws) // C) * C].reshape(-1, C)
    assert all(sorted(row) == list(range(C)) for row in cycles)  # every class once per cycle
    assert len({tuple(row) for row in cycles}) > 1  # and a new shuffle each cycle


@pytest.mark.parametrize("k", [1, 5])  # n_max * C = 250 is a multiple of k: no cut draw at epoch ends
def test_class_aware_within_class_no_repeat_before_all_seen(k):
    s = build_sampler("class_aware", LABELS, seed=2, k=k)
    idx = stream(s, 3)  # 3 epochs: the within-class cycles continue across epochs
    for c, members in enumerate(MEMBERS):
        seq = idx[LABELS_NP[idx] == c]
        n = len(members)
        full = seq[: (len(seq) // n) * n].reshape(-1, n)
        assert len(full) >= 2
        for row in full:  # each consecutive run of n_c draws of class c is a permutation of it
            assert sorted(row) == sorted(members)
        if n > 2:
            assert len({tuple(row) for row in full}) > 1  # reshuffled every cycle


def test_class_aware_epoch_counts_are_balanced():
    s = build_sampler("class_aware", LABELS, seed=0, k=1)
    cls = LABELS_NP[s.global_indices(0).numpy()]
    np.testing.assert_array_equal(np.bincount(cls, minlength=C), np.full(C, 50))  # n_max per class
    tail = s.global_indices(0).numpy()[cls == 4]
    np.testing.assert_array_equal(np.bincount(tail - MEMBERS[4][0], minlength=2), [25, 25])  # 50 / n_c each


def reference_class_aware(s: ClassAwareSampler, epochs: int) -> np.ndarray:
    """The authors' sampler loop, written out sequentially: two cycle iterators (classes, and one
    per class) that persist across epochs, and per epoch a fresh generator of ceil(L / k) class
    draws, each taking k consecutive items of its class's iterator (the last draw may be cut)."""
    L, k = s.num_samples, s.k
    state = {"class_cycle": 0, "class_pos": 0, "within": {c: [0, 0] for c in range(s.num_classes)}}

    def next_class() -> int:
        cyc = s.class_cycles(state["class_cycle"], 1)[0]
        c = int(cyc[state["class_pos"]])
        state["class_pos"] += 1
        if state["class_pos"] == s.num_classes:
            state["class_cycle"], state["class_pos"] = state["class_cycle"] + 1, 0
        return c

    def next_sample(c: int) -> int:
        w, o = state["within"][c]
        x = int(s.within_cycle(c, w)[o])
        o += 1
        state["within"][c] = [w + 1, 0] if o == len(MEMBERS[c]) else [w, o]
        return x

    out = []
    for _ in range(epochs):
        epoch = []
        while len(epoch) < L:
            c = next_class()
            group = [next_sample(c) for _ in range(k)]
            epoch.extend(group[: L - len(epoch)])
        out.extend(epoch)
    return np.array(out)


@pytest.mark.parametrize("k,num_samples", [(1, None), (4, None), (4, 30), (3, 31)])
def test_class_aware_matches_sequential_reference(k, num_samples):
    s = build_sampler("class_aware", LABELS, seed=9, k=k, num_samples=num_samples)
    np.testing.assert_array_equal(stream(s, 4), reference_class_aware(s, 4))
    # Any epoch computed alone equals its place in the stream (no hidden state).
    fresh = build_sampler("class_aware", LABELS, seed=9, k=k, num_samples=num_samples)
    L = s.num_samples
    np.testing.assert_array_equal(fresh.global_indices(3).numpy(), stream(s, 4)[3 * L:])


def test_class_aware_within_cycle_is_a_permutation_and_deterministic():
    s = build_sampler("class_aware", LABELS, seed=1)
    for c in range(C):
        perm = s.within_cycle(c, 7)
        assert sorted(perm.tolist()) == MEMBERS[c].tolist()
        assert torch.equal(perm, build_sampler("class_aware", LABELS, seed=1).within_cycle(c, 7))
    assert sorted(s.class_cycles(3, 2)[1].tolist()) == list(range(C))
    with pytest.raises(ValueError, match=r"c must be a class in \[0, 5\), got c=5"):
        s.within_cycle(5, 0)


def test_class_aware_errors_and_class_balanced_unchanged():
    with pytest.raises(ValueError, match=r"epoch_length must be one of .*'dataset'.*got epoch_length='epoch'"):
        build_sampler("class_aware", LABELS, epoch_length="epoch")
    with pytest.raises(ValueError, match=r"k must be >= 1.*k=0"):
        build_sampler("class_aware", LABELS, k=0)
    # The independent-draw sampler (BagofTricks-LT's CIFAR setting) keeps the dataset as its epoch.
    cb = build_sampler("class_balanced", LABELS, seed=0, k=4)
    assert len(cb) == N and cb.name == "class_balanced"
