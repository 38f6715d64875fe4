"""Objects from outside the package, named by reference: ``"path/to/file.py:Name"`` or
``"package.module:Name"``.

Every registry (:class:`ltbench.registry.Registry`: losses, samplers, models, ...) accepts such a
reference where it accepts a built-in name, so a loss written in your own file is a run like any
built-in: ``TrainConfig(loss="examples/logit_adjustment.py:LogitAdjustedLoss", loss_params={...})``.
The reference and the parameters are part of the run's identity (another parameter is another
run); the source file's digest is recorded with each run (``metrics.json["execution"]["plugins"]``),
and a run reused after its source changed is reported (:func:`changed_sources`).

A relative file path is looked up under the repository that holds ``ltbench`` first (so a
notebook, the harvest's worktree and a worker process find the same file), then under the
current folder. Errors name the reference, what was searched and what to fix (docs/your_method.md).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["is_reference", "load", "source_file", "source_digest", "references", "digests", "changed_sources",
           "PluginError"]

#: The checkout (or site-packages folder) that holds the ltbench package.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_LOADED: Dict[str, Any] = {}


class PluginError(ValueError):
    """A reference that cannot be loaded, or an object that does not fit where it is used."""


def is_reference(name: Any) -> bool:
    """Whether ``name`` names an object outside the registries (``"<module or file>:<attribute>"``)."""
    return isinstance(name, str) and ":" in name and not name.startswith(":") and not name.endswith(":")


def _split(ref: str) -> Tuple[str, str]:
    target, _, attr = ref.rpartition(":")
    if not target or not attr.isidentifier():
        raise PluginError(f"{ref!r} is not a reference: write '<file.py or module>:<Name>', e.g. "
                          "'examples/logit_adjustment.py:LogitAdjustedLoss' or 'mypackage.losses:MyLoss'")
    return target, attr


def source_file(ref: str) -> Optional[Path]:
    """The file a file reference points to (None for a module reference); PluginError if missing."""
    target, _ = _split(ref)
    if not target.endswith(".py"):
        return None
    path = Path(target)
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([PACKAGE_ROOT / path, Path.cwd() / path]))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise PluginError(f"{ref!r}: file not found; looked for {' and '.join(str(c) for c in candidates)}. "
                      "Give a path relative to the repository root (or the current folder), or an absolute one")


def _import(ref: str) -> Any:
    target, attr = _split(ref)
    path = source_file(ref)
    if path is not None:
        name = "ltbench_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise PluginError(f"{ref!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise PluginError(f"{ref!r}: module {target!r} not found ({exc}); install it, put it on PYTHONPATH, "
                              "or name its file: 'path/to/file.py:Name'") from None
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise PluginError(f"{ref!r}: {target} has no {attr!r}; it defines: {', '.join(public) or '(nothing)'}")
    return getattr(module, attr)


def load(ref: str) -> Any:
    """The object ``ref`` names (imported once per process)."""
    if ref not in _LOADED:
        _LOADED[ref] = _import(ref)
    return _LOADED[ref]


def source_digest(ref: str) -> Optional[str]:
    """The first 16 hex digits of the SHA-256 of the source that defines ``ref`` (None if unknown)."""
    path = source_file(ref)
    if path is None:
        module = sys.modules.get(_split(ref)[0])
        file = getattr(module, "__file__", None)
        path = Path(file) if file else None
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def references(config: Mapping[str, Any]) -> List[str]:
    """The references among a run configuration's string fields (``loss``, ``sampler``, ...)."""
    return sorted({v for v in config.values() if is_reference(v)})


def digests(config: Mapping[str, Any]) -> Dict[str, Optional[str]]:
    """Reference -> source digest, for every reference of ``config`` (what a run records)."""
    return {ref: source_digest(ref) for ref in references(config)}


def changed_sources(recorded: Mapping[str, Any]) -> List[str]:
    """Messages for the references whose source differs from the digest ``recorded`` at training."""
    out = []
    for ref, then in dict(recorded or {}).items():
        try:
            now = source_digest(ref)
        except PluginError as exc:
            out.append(f"{ref}: {exc}")
            continue
        if then is not None and now != then:
            out.append(f"{ref}: its source changed since the run was trained (digest {then}, now {now})")
    return out
