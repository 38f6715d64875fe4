"""ltbench: reproduce long-tailed visual recognition papers.

The public names are re-exported here and imported on first use, so ``import ltbench`` (and
``python -m ltbench --help``) stays fast::

    from ltbench import RunSpec, RunStore, run, joint_spec, build_loss
"""
from ._version import __version__

#: Public name -> module that defines it.
_EXPORTS = {
    # runs as data
    "RunSpec": "runs", "RunStore": "runs", "ExecOptions": "runs", "METHODS": "runs", "Method": "runs",
    "make_spec": "runs", "register_method": "runs", "run": "runs", "train": "runs",
    "joint_spec": "methods", "bbn_spec": "methods", "ohem_spec": "methods", "stage_two_spec": "methods",
    "fsa_spec": "methods",
    "materialize": "experiments", "base_config": "experiments",
    # engine and configuration
    "TrainConfig": "config", "Trainer": "engine", "TrainResult": "engine", "EvalResult": "engine",
    "DeadlineReached": "engine",
    # pieces
    "build_loss": "losses", "LOSSES": "losses", "class_balanced_weights": "losses",
    "build_sampler": "samplers", "SAMPLERS": "samplers", "build_model": "models", "MODELS": "models",
    "build_long_tailed": "data", "long_tailed_counts": "data",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ltbench' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
