"""Epoch samplers for long-tailed training (docs/methods.md §5).

Every sampler draws a whole epoch at once as a deterministic function of ``(seed, epoch)``:
a CPU ``torch.Generator`` is seeded from both, so every rank and every device computes the same
*global* draw, vectorised (no Python loop over samples).

Sharding (docs/methods.md §5, DDP): rank ``r`` of ``world_size`` takes ``global[r::world_size]``. The shards
of all ranks, interleaved, are exactly the single-process draw. No padding is added (unlike
``torch.utils.data.DistributedSampler``), so when ``num_samples % world_size != 0`` the first
``num_samples % world_size`` ranks get one sample more; pick a divisible ``num_samples`` (or drop
the last partial batch) if equal per-rank step counts are needed. :meth:`LTSampler.shard` with
``even=True`` (what the DDP entry point :mod:`ltbench.train` uses) drops the last
``num_samples % world_size`` positions of the global draw instead, so every rank runs the same
number of steps and the shards together are a prefix of the single-process draw.

With a normal ``DataLoader`` (large datasets streamed from disk, :mod:`ltbench.data.large`), wrap
a sampler and an epoch in :class:`EpochSampler`: it yields this rank's shard of that epoch.

Class-level samplers (``class_balanced``, ``square_root``, ``progressive``, ``reversed``) draw a
class ``c`` with probability ``P_c`` (``torch.multinomial``, with replacement), then a sample of
that class uniformly with replacement, via a sorted-by-class index array and class offsets.

``class_aware`` is Decoupling's class-aware sampler (classifier-balancing's ``ClassAwareSampler``):
no independent draws but shuffled cycles, over classes and within each class, continued from one
epoch to the next (see :class:`ClassAwareSampler`).
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Sampler

from .registry import Registry

__all__ = [
    "SAMPLERS",
    "build_sampler",
    "LTSampler",
    "InstanceSampler",
    "ClassLevelSampler",
    "ClassBalancedSampler",
    "ClassAwareSampler",
    "SquareRootSampler",
    "ProgressiveSampler",
    "ReversedSampler",
    "EpochSampler",
]

SAMPLERS: Registry["LTSampler"] = Registry("sampler", "sampler")

LabelsLike = Union[Sequence[int], np.ndarray, torch.Tensor]
DeviceLike = Union[str, torch.device, None]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64 finaliser: a well-mixed 64-bit hash, so (seed, epoch) pairs do not collide
    the way ``seed * K + epoch`` does (e.g. (0, K) vs (1, 0))."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _epoch_seed(seed: int, epoch: int) -> int:
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64))


def _check_int(name: str, value: Any, minimum: Optional[int] = None) -> int:
    # bool is an int subclass; reject it so `num_samples=True` is not silently 1.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return value


def _as_labels(labels: LabelsLike) -> torch.Tensor:
    """Labels as a 1-D int64 CPU tensor (list, numpy array or tensor of non-negative ints)."""
    if isinstance(labels, torch.Tensor):
        t = labels.detach().cpu()
    else:
        arr = np.asarray(labels)
        if arr.dtype == object:
            raise ValueError("labels must be integers, got an array of dtype object")
        t = torch.from_numpy(arr.copy()) if arr.size else torch.empty(0, dtype=torch.int64)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"labels must be integers, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("labels is empty; a sampler needs at least one sample")
    t = t.to(torch.int64)
    lo = int(t.min())
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got a label {lo}")
    return t


class LTSampler(Sampler[int]):
    """Base class: one epoch is a global draw of ``num_samples`` dataset indices (docs/methods.md §5).

    Subclasses implement :meth:`_draw` (the global draw from a seeded CPU generator) and
    :meth:`class_probabilities` (``P_c`` of docs/methods.md §5).
    """

    name: str = ""

    def __init__(
        self,
        labels: LabelsLike,
        *,
        seed: int = 0,
        num_samples: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        num_classes: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.labels = _as_labels(labels)
        self.seed = _check_int("seed", seed)
        n = self.labels.numel()
        self.num_samples = n if num_samples is None else _check_int("num_samples", num_samples, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank must be in [0, world_size) = [0, {self.world_size}), got rank={self.rank}"
            )
        max_label = int(self.labels.max())
        if num_classes is None:
            self.num_classes = max_label + 1
        else:
            self.num_classes = _check_int("num_classes", num_classes, 1)
            if max_label >= self.num_classes:
                raise ValueError(
                    f"num_classes={self.num_classes} but labels contain class {max_label}; "
                    f"num_classes must be > every label"
                )
        self.class_counts = torch.bincount(self.labels, minlength=self.num_classes)  # n_c
        self.even_shards = False
        self.epoch = 0
        self._cache: Optional[tuple[int, torch.Tensor]] = None  # (epoch, global draw)

    # -- sharding (DDP) -------------------------------------------------------------------
    def shard(self, rank: int, world_size: int, even: bool = True) -> "LTSampler":
        """Make this sampler rank ``rank`` of ``world_size`` (docs/methods.md §5, DDP); returns ``self``.

        The global draw does not change: rank ``r`` takes ``global[r::world_size]``. With
        ``even`` every shard is cut to ``num_samples // world_size`` samples (the last
        ``num_samples % world_size`` positions of the global draw are dropped), so that all ranks
        run the same number of steps, which DistributedDataParallel needs.
        """
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got rank={rank}")
        if even and self.num_samples < world_size:
            raise ValueError(f"num_samples={self.num_samples} is smaller than world_size={world_size}: "
                             "some ranks would get no sample")
        self.rank, self.world_size, self.even_shards = rank, world_size, bool(even)
        return self

    def _shard_length(self) -> int:
        if self.even_shards:
            return self.num_samples // self.world_size
        # len(range(rank, num_samples, world_size)) without building it.
        return max(0, -(-(self.num_samples - self.rank) // self.world_size))

    # -- epoch handling -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``__iter__``/``indices()`` return (as DistributedSampler)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def _resolve_epoch(self, epoch: Optional[int]) -> int:
        return self.epoch if epoch is None else _check_int("epoch", epoch, 0)

    def _generator(self, epoch: int) -> torch.Generator:
        # CPU generator so the draw is bit-identical whatever device the engine uses.
        return torch.Generator(device="cpu").manual_seed(_epoch_seed(self.seed, epoch))

    # -- draws ----------------------------------------------------------------------------
    def _draw(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        """``P_c`` (float64, sums to 1) for ``epoch`` (default: the current epoch), docs/methods.md §5."""
        raise NotImplementedError

    def _global(self, epoch: Optional[int]) -> torch.Tensor:
        # One-epoch cache: __len__/__iter__/indices() of the same epoch reuse one draw.
        epoch = self._resolve_epoch(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._draw(self._generator(epoch), epoch))
        return self._cache[1]

    def global_indices(self, epoch: Optional[int] = None) -> torch.Tensor:
        """The full single-process draw for ``epoch`` (default: the current epoch), an int64
        CPU tensor of ``num_samples`` dataset indices (a copy; callers may modify it)."""
        return self._global(epoch).clone()

    def indices(self, epoch: Optional[int] = None, device: DeviceLike = None) -> torch.Tensor:
        """This rank's shard ``global[rank::world_size]`` of ``epoch`` (default: the current
        epoch) as an int64 tensor on ``device`` (default CPU); cut to equal length across ranks
        after :meth:`shard` with ``even=True``."""
        shard = self._global(epoch)[self.rank :: self.world_size]
        if self.even_shards:
            shard = shard[: self._shard_length()]
        return shard.to(device, copy=True) if device is not None else shard.clone()

    def __len__(self) -> int:
        return self._shard_length()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, num_classes={self.num_classes}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size}, epoch={self.epoch})"
        )


@SAMPLERS.register("instance")
class InstanceSampler(LTSampler):
    """Instance-balanced sampling: a random permutation, each sample once per epoch (docs/methods.md §5).

    ``P_c = n_c / N``. If ``num_samples`` exceeds ``len(labels)``, independent permutations are
    concatenated (then truncated), so each sample appears once per full pass.
    """

    name = "instance"

    def _draw(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        n = self.labels.numel()
        passes = -(-self.num_samples // n)  # loop over passes, not samples
        perm = torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])
        return perm[: self.num_samples]

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        counts = self.class_counts.to(torch.float64)
        return counts / counts.sum()


class ClassLevelSampler(LTSampler):
    """Class first (``torch.multinomial`` with ``P_c``), then a uniform sample of that class
    with replacement (docs/methods.md §5). With ``k > 1`` each drawn class yields ``k`` consecutive
    samples: ``global[j*k:(j+1)*k]`` share a class (the last block may be truncated).

    Every class in ``range(num_classes)`` must have at least one sample: a declared class is
    one the sampler is meant to draw, and it has nothing to draw from.
    """

    def __init__(self, labels: LabelsLike, *, k: int = 1, **kwargs: Any) -> None:
        super().__init__(labels, **kwargs)
        self.k = _check_int("k", k, 1)
        empty = torch.nonzero(self.class_counts == 0).flatten().tolist()
        if empty:
            raise ValueError(
                f"sampler {self.name!r} needs at least one sample in every class of "
                f"num_classes={self.num_classes}, but class {empty[0]} has 0 samples "
                f"(empty classes: {empty[:10]}{'...' if len(empty) > 10 else ''})"
            )
        # Index table: indices sorted by class; class c occupies [offsets[c], offsets[c] + n_c).
        self._by_class = torch.argsort(self.labels, stable=True)
        self._offsets = torch.cumsum(self.class_counts, 0) - self.class_counts

    def _draw(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        probs = self.class_probabilities(epoch)
        n_blocks = -(-self.num_samples // self.k)
        classes = torch.multinomial(probs, n_blocks, replacement=True, generator=gen)
        classes = classes.repeat_interleave(self.k)[: self.num_samples]
        n_c = self.class_counts[classes]
        # float64 uniforms: float32 * n_c could round up to n_c for very large classes.
        u = torch.rand(self.num_samples, generator=gen, dtype=torch.float64)
        within = torch.minimum((u * n_c).floor().to(torch.int64), n_c - 1)
        return self._by_class[self._offsets[classes] + within]


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(ClassLevelSampler):
    """Class-aware sampling, ``P_c = 1 / C``; option ``k`` consecutive samples per drawn class
    (Decoupling uses 4), docs/methods.md §5."""

    name = "class_balanced"

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)


# Tags that separate the two hash streams of ClassAwareSampler (any distinct 64-bit constants).
_TAG_CLASS_CYCLES = 0x3C1A55C7C1E5A11D
_TAG_WITHIN_CYCLES = 0x5A3F1E2D7B9C4E61


def _mix64(x: np.ndarray) -> np.ndarray:
    """:func:`_splitmix64` on a ``uint64`` array (wrapping arithmetic): a counter-based hash, so
    the random key of any (cycle, element) is computable on its own, in any epoch."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@SAMPLERS.register("class_aware")
class ClassAwareSampler(ClassLevelSampler):
    """Decoupling's class-aware sampler (Kang et al. 2020; classifier-balancing's
    ``data/ClassAwareSampler.py``), docs/methods.md §5 class-balanced sampling as cycles, not draws.

    Classes come from a shuffled cycle over all ``C`` classes (each class exactly once per cycle,
    a new shuffle every cycle); each class draw yields ``k`` consecutive samples (the authors'
    ``num_samples_cls``; 4 in their configs) taken from that class's own shuffled cycle (every
    sample of the class once before any repeats, a new shuffle every cycle). ``P_c = 1 / C``.

    Epochs are consecutive pieces of one endless stream, as with the authors' sampler object,
    whose cycle iterators persist from one epoch to the next: epoch ``t`` makes class draws
    ``t B .. t B + B - 1`` with ``B = ceil(num_samples / k)``; class draw ``d`` is class cycle
    ``d // C`` and consumes ``k`` samples of its class's stream even when the epoch's last draw is
    cut short (the authors' generator does the same). Every shuffle is keyed by a counter-based
    hash of ``(seed, cycle)``, so any epoch is computed on its own, vectorised, and the same on
    every rank.

    Epoch length (``num_samples``): by default ``epoch_length="n_max_x_classes"``, i.e.
    ``max_c n_c * C``, the authors' ``ClassAwareSampler.__len__``. Note that the authors' training
    loop (``run_networks.py``) stops every epoch after ``int(N / batch_size)`` steps, so the samples
    Decoupling actually trains on per epoch are about the dataset size: ``epoch_length="dataset"``
    (``N``, with ``drop_last``) reproduces that. An explicit ``num_samples`` overrides both.
    Not modelled: the few batches the authors' DataLoader workers prefetch past that break, which
    their stream then skips.
    """

    name = "class_aware"

    #: Valid values of ``epoch_length``.
    EPOCH_LENGTHS = ("n_max_x_classes", "dataset")

    def __init__(self, labels: LabelsLike, *, k: int = 1, epoch_length: str = "n_max_x_classes",
                 num_samples: Optional[int] = None, **kwargs: Any) -> None:
        if epoch_length not in self.EPOCH_LENGTHS:
            raise ValueError(f"epoch_length must be one of {self.EPOCH_LENGTHS}, got epoch_length={epoch_length!r}")
        super().__init__(labels, k=k, num_samples=num_samples, **kwargs)
        self.epoch_length = epoch_length
        if num_samples is None and epoch_length == "n_max_x_classes":
            self.num_samples = int(self.class_counts.max()) * self.num_classes
        self._counts_np = self.class_counts.numpy().astype(np.int64)
        self._offsets_np = self._offsets.numpy().astype(np.int64)
        self._key_classes = np.uint64(_splitmix64(_splitmix64(self.seed & _MASK64) ^ _TAG_CLASS_CYCLES))
        self._key_within = np.uint64(_splitmix64(_splitmix64(self.seed & _MASK64) ^ _TAG_WITHIN_CYCLES))

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        return torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)

    def class_cycles(self, first: int, count: int) -> np.ndarray:
        """Class cycles ``first .. first + count - 1`` of the stream, ``[count, C]`` class ids."""
        first = _check_int("first", first, 0)
        count = _check_int("count", count, 1)
        q = np.arange(first, first + count, dtype=np.uint64)[:, None]
        keys = _mix64(_mix64(self._key_classes ^ q) ^ np.arange(self.num_classes, dtype=np.uint64)[None, :])
        return np.argsort(keys, axis=1, kind="stable")

    def within_cycle(self, c: int, w: int) -> torch.Tensor:
        """Cycle ``w`` of class ``c``'s stream: its ``n_c`` dataset indices in shuffled order."""
        c = _check_int("c", c, 0)
        w = _check_int("w", w, 0)
        if c >= self.num_classes:
            raise ValueError(f"c must be a class in [0, {self.num_classes}), got c={c}")
        n = int(self._counts_np[c])
        seg_key = _mix64(_mix64(self._key_within ^ np.array([c], dtype=np.uint64)) ^ np.uint64(w))
        keys = _mix64(seg_key ^ np.arange(n, dtype=np.uint64))
        order = np.argsort(keys, kind="stable")
        return self._by_class[torch.from_numpy(self._offsets_np[c] + order)]

    def _draw(self, gen: torch.Generator, epoch: int) -> torch.Tensor:
        # ``gen`` is unused: the shuffles are hashes of (seed, cycle), not of (seed, epoch).
        L, k, C, counts = self.num_samples, self.k, self.num_classes, self._counts_np
        draws = -(-L // k)
        d = epoch * draws + np.arange(draws, dtype=np.int64)  # global class-draw indices
        q = d // C  # class cycle of each draw = how many draws of its class came before
        q0, q1 = int(q[0]), int(q[-1])
        cls_of_draw = self.class_cycles(q0, q1 - q0 + 1)[q - q0, d % C]
        # Position p of the epoch: draw b = p // k, j-th of its k samples; that is element q k + j of
        # its class's stream, i.e. offset o of within-class cycle w.
        p = np.arange(L, dtype=np.int64)
        b = p // k
        cls = cls_of_draw[b]
        s = q[b] * k + p % k
        w, o = np.divmod(s, counts[cls])
        # The within-class cycles this epoch touches: w_lo[c] .. w_hi[c] of each class c, laid out
        # one after the other (segments), each of n_c elements.
        w_lo = (q0 * k) // counts
        n_seg = ((q1 + 1) * k - 1) // counts - w_lo + 1
        seg_first = np.cumsum(n_seg) - n_seg
        seg_cls = np.repeat(np.arange(C, dtype=np.int64), n_seg)
        seg_w = w_lo[seg_cls] + np.arange(seg_cls.size, dtype=np.int64) - seg_first[seg_cls]
        seg_len = counts[seg_cls]
        elem_first = np.cumsum(seg_len) - seg_len
        elem_seg = np.repeat(np.arange(seg_cls.size, dtype=np.int64), seg_len)
        elem_i = np.arange(elem_seg.size, dtype=np.int64) - elem_first[elem_seg]
        seg_key = _mix64(_mix64(self._key_within ^ seg_cls.astype(np.uint64)) ^ seg_w.astype(np.uint64))
        keys = _mix64(seg_key[elem_seg] ^ elem_i.astype(np.uint64))
        order = np.lexsort((keys, elem_seg))  # each segment's elements, shuffled in place
        g = seg_first[cls] + (w - w_lo[cls])
        within = order[elem_first[g] + o] - elem_first[g]
        return self._by_class[torch.from_numpy(self._offsets_np[cls] + within)]


@SAMPLERS.register("square_root")
class SquareRootSampler(ClassLevelSampler):
    """Square-root sampling, ``P_c ∝ n_c ** 0.5`` (docs/methods.md §5)."""

    name = "square_root"

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        w = self.class_counts.to(torch.float64).sqrt()
        return w / w.sum()


@SAMPLERS.register("progressive")
class ProgressiveSampler(ClassLevelSampler):
    """Progressively-balanced sampling (docs/methods.md §5):
    ``P_c(t) = (1 - t/T) * n_c / N + (t/T) / C`` with ``t`` the 0-based epoch and
    ``T = total_epochs``. ``t = 0`` is instance-balanced, ``t = T`` class-balanced; epochs past
    ``T`` stay class-balanced (``t/T`` is clamped to 1).
    """

    name = "progressive"

    def __init__(
        self, labels: LabelsLike, *, total_epochs: Optional[int] = None, **kwargs: Any
    ) -> None:
        if total_epochs is None:
            raise ValueError(
                "sampler 'progressive' requires total_epochs (T in P_c(t) of docs/methods.md §5), "
                "an int >= 1; got total_epochs=None"
            )
        self.total_epochs = _check_int("total_epochs", total_epochs, 1)
        super().__init__(labels, **kwargs)

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        t = self._resolve_epoch(epoch)
        alpha = min(t / self.total_epochs, 1.0)
        counts = self.class_counts.to(torch.float64)
        probs = (1.0 - alpha) * counts / counts.sum() + alpha / self.num_classes
        return probs / probs.sum()  # renormalise away rounding


@SAMPLERS.register("reversed")
class ReversedSampler(ClassLevelSampler):
    """BBN reversed sampling: ``w_c = n_max / n_c``, ``P_c = w_c / sum w`` (docs/methods.md §5, §7)."""

    name = "reversed"

    def class_probabilities(self, epoch: Optional[int] = None) -> torch.Tensor:
        self._resolve_epoch(epoch)
        counts = self.class_counts.to(torch.float64)
        w = counts.max() / counts
        return w / w.sum()


class EpochSampler(Sampler[int]):
    """``torch.utils.data.Sampler`` view of one epoch of an :class:`LTSampler`, for a normal
    ``DataLoader`` (large datasets streamed from disk, docs/methods.md §5).

    Yields ``sampler.indices(epoch)``: this rank's shard (``rank``/``world_size`` of the wrapped
    sampler) of the deterministic global draw of ``epoch``, so class-level sampling works
    unchanged with a ``DataLoader`` and its worker processes::

        loader = DataLoader(dataset, batch_size=64, sampler=EpochSampler(sampler, epoch), num_workers=8)

    Unlike ``set_epoch`` on the wrapped sampler, the epoch is fixed here: build one per epoch (it
    costs nothing until iterated; the draw is cached per epoch by the wrapped sampler).
    """

    def __init__(self, sampler: LTSampler, epoch: int) -> None:
        super().__init__()
        if not isinstance(sampler, LTSampler):
            raise ValueError(f"sampler must be an LTSampler (build one with build_sampler), got {type(sampler).__name__}")
        self.sampler = sampler
        self.epoch = _check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler.indices(self.epoch).tolist())

    def __repr__(self) -> str:
        return f"EpochSampler({self.sampler!r}, epoch={self.epoch})"


def build_sampler(name: str, labels: LabelsLike, seed: int = 0, **options: Any) -> LTSampler:
    """Build sampler ``name`` (one of ``SAMPLERS.names()``) over ``labels`` (docs/methods.md §5).

    Common options: ``num_samples`` (default ``len(labels)``; ``class_aware``: ``max_c n_c * C``),
    ``rank=0``, ``world_size=1``, ``num_classes`` (default ``max(labels) + 1``). ``class_balanced``,
    ``class_aware`` (and the other class-level samplers) take ``k=1``; ``class_aware`` also
    ``epoch_length`` (``"n_max_x_classes"`` or ``"dataset"``); ``progressive`` requires
    ``total_epochs``.
    """
    cls = SAMPLERS.get(name)
    valid: set[str] = set()
    for klass in inspect.getmro(cls):
        if "__init__" in vars(klass) and issubclass(klass, LTSampler):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            valid |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"sampler {name!r} got unknown option(s) {unknown}; valid options: "
            f"{', '.join(sorted(valid - {'seed'}))}"
        )
    return cls(labels, seed=seed, **options)
