"""Small pieces shared by the steps of :mod:`ltbench.ops`: the formats' names and limits,
printing, hashes, the run store's folders, the plan and weights-only checkpoints."""
from __future__ import annotations

import hashlib
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from ..executor import plan
from ..io import atomic_write_bytes
from ..runs import LOCK_FILE

MIB = 1024 * 1024
PACK_FORMAT = "ltbench-session-pack"
CARRY_FORMAT = "ltbench-carry"
PACK_MANIFEST = "MANIFEST.json"
OUT_MANIFEST = "manifest.json"
#: The session's default run selection: CIFAR-10 (the only dataset on these machines), one seed.
DEFAULT_OVERRIDES = {"datasets": ["cifar10"]}
DEFAULT_SEEDS = 1
#: metrics.json fields that say how and when a run was computed, not what it computed.
VOLATILE_METRICS = ("execution", "train_seconds", "device", "torch", "created")
#: Files of a run folder that never travel (the lock of a live trainer, temporaries).
_NEVER = (LOCK_FILE,)
_NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")

PathLike = Union[str, os.PathLike]


def _say(*args: Any) -> None:
    print(*args, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fmt_mib(n: float) -> str:
    return f"{n / MIB:.2f} MiB"


def _store_dir(results: PathLike, profile: str) -> Path:
    return Path(results) / profile


def _runs_dir(results: PathLike, profile: str) -> Path:
    return _store_dir(results, profile) / "runs"


def _run_folders(runs_dir: Path) -> List[Path]:
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name.isalnum())


def _file_sig(path: Path) -> Optional[List[int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _plan_entries(profile: str, results: PathLike, seeds: Optional[int],
                  overrides: Optional[Mapping[str, Any]], notebooks: PathLike = "notebooks",
                  only: Optional[Sequence[str]] = None, with_status: bool = True) -> List[Any]:
    return plan(profile, results, seeds, only, overrides, notebooks, with_status=with_status)


def _dependency_keys(entries: Iterable[Any]) -> Dict[str, List[str]]:
    """Key of every run some planned run depends on -> keys of those dependents."""
    out: Dict[str, List[str]] = {}
    for e in entries:
        for _, dep in e.spec.deps:
            out.setdefault(dep.key, []).append(e.key)
    return out


def _weights_only(src: Path, dst: Path) -> int:
    """Copy a finished checkpoint without its optimizer state (what stage 2, FSA and the notebooks
    load); returns the bytes written."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    state.pop("optimizer", None)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(dst, buf.getvalue())
    return len(buf.getvalue())
