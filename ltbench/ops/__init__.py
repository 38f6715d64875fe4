"""The GPU session: what travels to a lent GPU machine, the checks run there, what comes back.

The operations corner of ltbench: nothing in the library needs it. A GPU is lent to a session
for minutes, on a bare machine (no papermill, no network, no ``../shared``); at most 8 files of
16 MiB come back. This package holds the Python side of ``tools/gpu_session.sh`` and of
``make carry``, one module per step:

- :mod:`.carry`: :func:`make_carry` (``make carry``) builds the git-ignored ``.carry/`` on the CPU
  machine: the CIFAR-10 image-folder tree as ``cifar10.tgz``, the resume state of the profile's
  unfinished runs and the finished stage-1 / phase-I checkpoints that pending runs need
  (``state/<key>/``), and ``MANIFEST.json``; checks that the working tree (:func:`tree_size`: what
  git tracks or does not ignore) plus ``.carry`` stays under 64 MiB. :func:`restore_carry`,
  :func:`snapshot`: on the GPU machine, put the carried state into the run store and remember
  what was there before the session.
- :mod:`.smoke`: :func:`smoke_check`: every registered method (:data:`ltbench.runs.METHODS`)
  trained for 2 epochs on a small synthetic set, eager and with ``torch.compile``, asserting
  finite losses and no recompilation storm.
- :mod:`.packs`: :func:`pack`: the session's new results into at most 8 files under ``$OUT``:
  finished runs without checkpoints (``runs.tgz``), checkpoints of partial runs and of the runs
  other runs depend on (``weights*.tgz``), the benchmark CSV, the logs, and ``manifest.json``;
  :func:`check_out_dir` checks them against :data:`LIMITS`.
- :mod:`.imports`: :func:`import_packs` (``python -m ltbench import FILE...``): merges returned
  files into ``results/<profile>/``, refusing to overwrite a different finished result.
- :mod:`.cli`: ``python -m ltbench.ops {carry,restore,snapshot,smoke,pack,import,tree-size}`` runs
  each step (``python -m ltbench.session ...`` is the old name of the same command).
"""
from __future__ import annotations

from ._common import (CARRY_FORMAT, DEFAULT_OVERRIDES, DEFAULT_SEEDS, MIB, OUT_MANIFEST, PACK_FORMAT, PACK_MANIFEST,
                      VOLATILE_METRICS)
from .carry import make_carry, restore_carry, snapshot, tree_size
from .cli import main
from .imports import ImportConflict, ImportReport, import_packs, same_result
from .packs import LIMITS, PackLimits, check_out_dir, pack
from .smoke import (MAX_COMPILES_PER_RUN, SMOKE_GRACE_S, SMOKE_MODES, SMOKE_OVERRIDES, smoke_check, smoke_specs)

__all__ = [
    "MIB", "LIMITS", "PackLimits", "make_carry", "restore_carry", "snapshot", "smoke_check", "pack",
    "import_packs", "ImportConflict", "ImportReport", "tree_size", "check_out_dir", "same_result",
    "smoke_specs", "main",
    "PACK_FORMAT", "CARRY_FORMAT", "PACK_MANIFEST", "OUT_MANIFEST", "DEFAULT_OVERRIDES", "DEFAULT_SEEDS",
    "VOLATILE_METRICS", "SMOKE_OVERRIDES", "SMOKE_GRACE_S", "MAX_COMPILES_PER_RUN", "SMOKE_MODES",
]
