"""Where a batch of notebooks executes (``python -m ltbench run --backend``): this process
(``local``, :func:`ltbench.runner.run_notebooks`) or one submitit job per notebook
(``submitit``, :func:`ltbench.submit.run_notebooks_submitit`). Same skip-completed / resume /
failure-summary behaviour and results layout on every backend."""
from __future__ import annotations

from typing import Any, List

from ltbench.registry import Registry
from ltbench.runner import ConfigError, RunStatus, run_notebooks

__all__ = ["BACKENDS", "run_batch"]

#: ``--backend`` name -> batch function with :func:`run_notebooks`' arguments (plus its own options).
BACKENDS: Registry = Registry("backend", "backend")
BACKENDS.register("local")(run_notebooks)


@BACKENDS.register("submitit")
def _submitit(*args: Any, **kwargs: Any) -> List[RunStatus]:
    """One submitit job per notebook: a SLURM job array, or local processes."""
    from ltbench.submit import run_notebooks_submitit  # submitit is an optional dependency (ltbench[slurm])

    return run_notebooks_submitit(*args, **kwargs)


def run_batch(backend: str = "local", *args: Any, **kwargs: Any) -> List[RunStatus]:
    """:func:`~ltbench.runner.run_notebooks` on ``backend`` (``local``: this process; ``submitit``: jobs)."""
    try:
        run = BACKENDS.get(backend)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return run(*args, **kwargs)
