"""The old name of :mod:`ltbench.ops`, the GPU-session code (make carry, restore, snapshot, smoke,
pack, import, tree-size): it lives in ``ltbench/ops/`` now; this module re-exports its public
names, and ``python -m ltbench.session ...`` runs ``python -m ltbench.ops ...``."""
from __future__ import annotations

import sys

from .ops import *  # noqa: F403 - the old module's public names, unchanged
from .ops import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
