"""Which code produced a result: ltbench's version and the git commit of its checkout. Every
run's ``metrics.json["execution"]`` and the report record it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

from ._version import __version__

__all__ = ["code_version"]

_CODE_VERSION: Optional[Dict[str, Any]] = None


def code_version() -> Dict[str, Any]:
    """The code that trains: ltbench's version and the git commit of its checkout (``+dirty`` with
    uncommitted changes to tracked files outside ``results/``, which holds outputs, not code), or
    ``$LTBENCH_COMMIT`` where the checkout has no ``.git`` (a device machine gets it from
    ``make carry``). Computed once per process."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        commit = os.environ.get("LTBENCH_COMMIT") or None
        repo = Path(__file__).resolve().parents[1]
        if commit is None and (repo / ".git").exists():
            try:
                git = ["git", "-C", str(repo)]
                commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip() or None
                dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                        ":(exclude)results"], capture_output=True, text=True, timeout=10).stdout.strip()
                if commit and dirty:
                    commit += "+dirty"
            except (OSError, subprocess.SubprocessError):
                commit = None
        _CODE_VERSION = {"ltbench": __version__, "commit": commit}
    return dict(_CODE_VERSION)
