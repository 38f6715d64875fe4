"""Share finished runs between notebooks: a content-addressed index of run folders.

Several notebooks train the very same run: the CE baseline of CIFAR-10-LT IR100 is a row of
notebooks 01, 02, 03, 05 and 07 and the phase I of 06; sigmoid CE is a row of 02, 03 and 05.
A run is a deterministic function of its configuration, so training it again only costs time
(on the 2-core machine, most of the quick profile's). When an index folder is set,
:func:`ltbench.engine.train` records every finished run under the key of what produced it
(the full ``TrainConfig``, the trainer class and its keyword arguments) and, before training,
adopts an indexed run with the same key: its files are copied into the new run folder and
``metrics.json`` gets the new run's ``meta`` plus ``reused_from`` (the folder it came from,
relative to the new one), so
each notebook's output stays complete and self-describing.

The index is the folder named by ``$LTBENCH_RUN_INDEX``; ``python -m ltbench run`` sets it to
``results/<profile>/.run_index`` unless it is already set. Without it nothing is shared, which is
what an interactive session gets.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .io import atomic_write_json

ENV_VAR = "LTBENCH_RUN_INDEX"

#: The labels a run's ``meta`` puts at the top level of ``metrics.json`` (see ``TrainResult.to_metrics``).
META_KEYS = ("notebook", "paper", "table", "method", "published_method", "profile", "reused_from", "trainer")

#: Files of a finished run folder that are copied when it is adopted (metrics.json last).
RUN_FILES = ("per_class.csv", "curves.csv", "extras.json", "checkpoint.pt", "metrics.json")


def index_dir() -> Optional[Path]:
    """The index folder from ``$LTBENCH_RUN_INDEX``, or None (sharing off)."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value) if value else None


def run_key(config: Mapping[str, Any], trainer_cls: type, trainer_kwargs: Mapping[str, Any]) -> str:
    """A hex digest of everything that determines a run's outcome.

    ``trainer_kwargs`` enter by ``repr``: plain values (OHEM's ``keep_ratio``, ``mode``) give a
    stable key, objects without a value ``repr`` give a key that never matches, so such runs are
    simply not shared.
    """
    payload = json.dumps({"config": config, "trainer": f"{trainer_cls.__module__}.{trainer_cls.__qualname__}",
                          "kwargs": repr(sorted(trainer_kwargs.items()))}, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def lookup(key: str, exclude: Optional[Path] = None) -> Optional[Path]:
    """The indexed run folder for ``key`` if it still holds a finished run (else None)."""
    index = index_dir()
    if index is None:
        return None
    entry = index / f"{key}.json"
    try:
        folder = Path(json.loads(entry.read_text())["run_dir"])
    except (OSError, KeyError, ValueError):
        return None
    if exclude is not None and folder.resolve() == Path(exclude).resolve():
        return None
    return folder if (folder / "metrics.json").exists() else None


def record(key: str, run_dir: os.PathLike | str) -> None:
    """Index a finished run folder under ``key`` (no-op without an index folder)."""
    index = index_dir()
    if index is None:
        return
    index.mkdir(parents=True, exist_ok=True)
    atomic_write_json(index / f"{key}.json", {"run_dir": str(Path(run_dir).resolve())})


def adopt(source: Path, target: os.PathLike | str, meta: Mapping[str, Any]) -> None:
    """Copy the finished run in ``source`` to ``target``, with ``meta`` and ``reused_from`` in its metrics.

    The copy goes through a temporary name per file and ``metrics.json`` is written last, so an
    interrupted adoption leaves no finished-looking folder behind.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES[:-1]:
        src = source / name
        if src.exists():
            tmp = target / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, target / name)
    metrics: Dict[str, Any] = json.loads((source / "metrics.json").read_text())
    for k in META_KEYS:  # the source's labels (its notebook, method, table) are not this run's
        metrics.pop(k, None)
    # Relative, so that committed results stay valid wherever the repository is cloned.
    metrics.update(dict(meta), reused_from=os.path.relpath(source.resolve(), target.resolve()))
    atomic_write_json(target / "metrics.json", metrics)
