"""Atomic file writing: a reader never sees a half-written result, and a crash loses nothing
that was already complete (write to a temporary file in the same folder, then ``os.replace``)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Union

PathLike = Union[str, os.PathLike]


def _atomic(path: PathLike, write: Callable[[IO], None], mode: str = "w") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _atomic(path, lambda fh: fh.write(text))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(path, lambda fh: fh.write(data), mode="wb")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (non-finite floats become ``null``)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return _atomic(path, lambda fh: torch.save(obj, fh), mode="wb")
