"""Process groups for ``torchrun`` (DistributedDataParallel): set-up from the environment, rank
and world helpers, collectives the engine needs, and rank-0-only writing.

``torchrun --nproc-per-node=N`` starts N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_distributed` reads them, picks the backend
from the device (``nccl`` for CUDA, ``gloo`` for CPU, PyTorch's recommendation), binds each CUDA
process to ``cuda:LOCAL_RANK`` and initialises the default process group. Without those variables
it returns a single-process :class:`DistInfo` and initialises nothing, so the same entry point
runs under ``python`` and under ``torchrun``.

Collectives: :func:`all_reduce_mean` (per-epoch scalars), :func:`broadcast_buffers` (BatchNorm
statistics from rank 0 before evaluation, so every rank evaluates the model rank 0 saves),
:func:`gather_shards` (evaluation predictions, each rank holding positions ``rank::world_size`` of
the test set, reassembled in test-set order). Stateful losses all-reduce their own statistics
(docs/methods.md §4, ``ltbench.losses._base``).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo", "BACKEND_FOR_DEVICE", "env_info", "init_distributed", "is_distributed", "get_rank", "get_world_size",
    "is_main_process", "barrier", "all_reduce_mean", "broadcast_buffers", "gather_shards", "on_main", "cleanup",
]

T = TypeVar("T")

#: Device type -> process-group backend (PyTorch: NCCL for CUDA tensors, Gloo for CPU tensors).
BACKEND_FOR_DEVICE: Dict[str, str] = {"cuda": "nccl", "cpu": "gloo"}
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, and the
    process-group ``backend`` (``None`` for a single process without a group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (set by torchrun)") from None


def env_info() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (1 process when unset)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world} "
                         "(need 0 <= RANK < WORLD_SIZE)")
    return DistInfo(rank, world, local, None)


def init_distributed(device: str = "auto", backend: Optional[str] = None,
                     timeout_s: float = 1800.0) -> Tuple[DistInfo, torch.device]:
    """Initialise the default process group from torchrun's environment; return (info, device).

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; under torchrun a CUDA
    process uses ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), so an explicit ``"cuda:N"`` is
    refused there. ``backend``: ``None`` picks :data:`BACKEND_FOR_DEVICE`; else ``"gloo"`` or
    ``"nccl"``. A single process (no ``WORLD_SIZE`` > 1) initialises no group.
    """
    info = env_info()
    if device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(device).type
        if info.distributed and device.startswith("cuda:"):
            raise ValueError(f"device={device!r} under torchrun: use 'cuda' or 'auto' (each process takes "
                             "cuda:LOCAL_RANK)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if kind not in BACKEND_FOR_DEVICE:
        raise ValueError(f"device={device!r}: distributed training supports {', '.join(BACKEND_FOR_DEVICE)} devices")
    if backend is not None and backend not in BACKEND_FOR_DEVICE.values():
        raise ValueError(f"unknown backend: dist_backend={backend!r}; valid: {', '.join(sorted(BACKEND_FOR_DEVICE.values()))}")
    if backend == "nccl" and kind != "cuda":
        raise ValueError("dist_backend='nccl' needs CUDA devices; use 'gloo' on CPU")
    if kind == "cuda":
        if info.distributed:
            if info.local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                                 "visible; start at most that many processes per node")
            torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if not info.distributed:
        return info, dev
    backend = backend or BACKEND_FOR_DEVICE[kind]
    if not dist.is_initialized():
        kwargs: Dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend), dev


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def _collective_device(device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors; Gloo works on CPU tensors.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(value: float, device: torch.device = torch.device("cpu")) -> float:
    """The mean of ``value`` over processes (``value`` itself on one process)."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy every buffer of ``module`` (BatchNorm running statistics, ...) from rank ``src``."""
    if not is_distributed():
        return
    for buf in module.buffers():
        if buf.is_floating_point() or buf.dtype in (torch.int64, torch.int32):
            if dist.get_backend() == "nccl" or buf.device.type == "cpu":
                dist.broadcast(buf, src)
            else:
                tmp = buf.detach().cpu()
                dist.broadcast(tmp, src)
                buf.copy_(tmp)


def gather_shards(shard: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble a tensor sharded as ``full[rank::world_size]`` (along dim 0) on every rank.

    Every rank passes its shard (``len(range(rank, total, world_size))`` rows); every rank gets
    the full ``[total, ...]`` tensor in the original order, on ``shard``'s device.
    """
    if not is_distributed():
        if shard.shape[0] != total:
            raise ValueError(f"gather_shards: one process holds {shard.shape[0]} rows, expected total={total}")
        return shard
    world, rank = dist.get_world_size(), dist.get_rank()
    expected = len(range(rank, total, world))
    if shard.shape[0] != expected:
        raise ValueError(f"gather_shards: rank {rank} holds {shard.shape[0]} rows, expected {expected} "
                         f"(positions {rank}::{world} of {total})")
    dev = _collective_device(shard.device)
    longest = -(-total // world)
    padded = torch.zeros((longest, *shard.shape[1:]), dtype=shard.dtype, device=dev)
    padded[:expected] = shard.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty((total, *shard.shape[1:]), dtype=shard.dtype, device=dev)
    for r, part in enumerate(parts):
        out[r::world] = part[: len(range(r, total, world))]
    return out.to(shard.device)


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
    """Run ``fn`` on rank 0 only (file writing), then wait for every process; ``None`` elsewhere."""
    try:
        return fn(*args, **kwargs) if is_main_process() else None
    finally:
        barrier()  # reached by rank 0 even when fn raised, so the others do not wait forever


def cleanup() -> None:
    """Destroy the default process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
