"""The one reader of a run's ``checkpoint.pt``.

The engine writes a checkpoint (:meth:`ltbench.engine.Trainer.state_dict`: ``config``, ``model``,
``epoch``, optimizer, history, ...) atomically at the end of an epoch. Everything that asks
"how far is this run?", "is this file usable?" or "give me the weights of this finished run"
(the store, the planner, packs, stage 2, FSA phase II, BBN's analyses) asks it here, so the
answer is the same everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = ["CHECKPOINT_FILE", "load_state", "read_state", "progress", "is_readable", "finished_state",
           "load_finished"]

CHECKPOINT_FILE = "checkpoint.pt"
#: The keys every ltbench checkpoint holds.
REQUIRED_KEYS = ("config", "model", "epoch")

PathLike = Union[str, os.PathLike]


def load_state(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """The checkpoint's state (tensors only, ``weights_only``); errors are the caller's."""
    return torch.load(path, map_location=map_location, weights_only=True)


def read_state(path: PathLike, map_location: Any = "cpu") -> Optional[Dict[str, Any]]:
    """The state at ``path`` if the file exists, loads and holds :data:`REQUIRED_KEYS`; else None."""
    if not Path(path).is_file():
        return None
    try:
        state = load_state(path, map_location)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is "not a checkpoint" to every caller
        return None
    return state if isinstance(state, dict) and set(REQUIRED_KEYS) <= set(state) else None


def _epochs(state: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    try:
        return int(state["epoch"]), int(state["config"]["epochs"])
    except (KeyError, TypeError, ValueError):
        return None


def progress(path: PathLike) -> Optional[Tuple[int, int]]:
    """(epochs trained, epochs of the run) of the checkpoint at ``path``; None if it has none readable."""
    state = read_state(path)
    return None if state is None else _epochs(state)


def is_readable(path: PathLike) -> bool:
    """Whether ``path`` is a checkpoint a run can resume from (else the store sets it aside)."""
    return read_state(path) is not None


def finished_state(path: PathLike, map_location: Any = "cpu") -> Optional[Dict[str, Any]]:
    """The state at ``path`` if it is readable and at its run's last epoch; else None."""
    state = read_state(path, map_location)
    if state is None:
        return None
    done = _epochs(state)
    return state if done is not None and done[0] == done[1] else None


def load_finished(folder: PathLike, role: str, missing_hint: str, required: Sequence[str] = REQUIRED_KEYS,
                  map_location: Any = "cpu") -> Dict[str, Any]:
    """The checkpoint of the finished run in ``folder``, which another run builds on (``role``:
    "stage-1", "Phase-I"). FileNotFoundError (with ``missing_hint``) when there is none,
    ValueError when it lacks ``required`` keys or is not at its last epoch."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {role} checkpoint at {path}: {missing_hint}")
    state = load_state(path, map_location)
    missing = [k for k in required if k not in state] if isinstance(state, dict) else list(required)
    if missing:
        raise ValueError(f"{path} is not an ltbench checkpoint (missing {missing})")
    epochs = state["config"].get("epochs")
    if "epoch" in state and state["epoch"] != epochs:
        raise ValueError(f"{role} run {folder} is unfinished (epoch {state['epoch']} of {epochs}); "
                         "finish it with ltbench.runs.run(spec, store) first")
    return state
