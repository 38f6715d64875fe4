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

An installed package can instead register names (``register_loss("mine")``, ``register_method``)
from a function it declares as an entry point of the group ``ltbench.plugins``
(:data:`ENTRY_POINT_GROUP`); every registry calls those functions once per process, on the first
name it does not know, so a worker process or the harvest finds them too. A name registered from
outside the package has its source file's digest recorded like a reference's
(:func:`note_external`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["is_reference", "load", "source_file", "source_digest", "references", "digests", "changed_sources",
           "PluginError", "ENTRY_POINT_GROUP", "load_entry_points", "note_external", "is_external"]

#: The checkout (or site-packages folder) that holds the ltbench package.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_LOADED: Dict[str, Tuple[Any, Optional[str]]] = {}  # reference -> (object, digest of its file when loaded)
#: The entry-point group whose functions register names (``[project.entry-points."ltbench.plugins"]``).
ENTRY_POINT_GROUP = "ltbench.plugins"
_ENTRY_POINTS_LOADED: List[str] = []
_ENTRY_POINTS_DONE = False
#: Names registered from outside the package -> the file that defines what they name.
_EXTERNAL: Dict[str, Path] = {}


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
        digest = _file_digest(path)
        if module is None or getattr(module, "__ltbench_digest__", None) != digest:  # new, or edited since
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            module.__ltbench_digest__ = digest
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


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load(ref: str) -> Any:
    """The object ``ref`` names: imported once per process, and again when its file changed since
    (so what trains is always the source whose digest a run records)."""
    path = source_file(ref) if ref not in _LOADED or _LOADED[ref][1] is not None else None
    now = _file_digest(path) if path is not None else None
    if ref not in _LOADED or _LOADED[ref][1] != now:
        _LOADED[ref] = (_import(ref), now)
    return _LOADED[ref][0]


def load_entry_points() -> List[str]:
    """Call every installed ``ltbench.plugins`` entry point (a function taking no argument that
    registers names), once per process; the names of the entry points called. A broken one is a
    PluginError naming it and its distribution."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return list(_ENTRY_POINTS_LOADED)
    _ENTRY_POINTS_DONE = True  # before the calls: a plugin's register() looks names up itself
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
        where = f"entry point {ep.name!r} = {ep.value!r} of {dist} (group {ENTRY_POINT_GROUP!r})"
        try:
            hook = ep.load()
        except Exception as exc:
            raise PluginError(f"{where}: importing it failed: {type(exc).__name__}: {exc}") from exc
        if not callable(hook):
            raise PluginError(f"{where} is a {type(hook).__name__}; it must name a function that registers names")
        try:
            hook()
        except Exception as exc:
            raise PluginError(f"{where}: calling it failed: {type(exc).__name__}: {exc}") from exc
        _ENTRY_POINTS_LOADED.append(ep.name)
    return list(_ENTRY_POINTS_LOADED)


def _defining_file(obj: Any) -> Optional[Path]:
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def is_external(obj: Any) -> bool:
    """Whether ``obj`` (a class or function) is defined outside the ltbench package."""
    module = getattr(obj, "__module__", None) or ""
    return not (module == "ltbench" or module.startswith("ltbench."))


def note_external(name: str, obj: Any) -> None:
    """Remember that ``name`` was registered for ``obj`` from outside the package, so runs that
    use it record its source digest (:func:`digests`)."""
    if is_external(obj):
        path = _defining_file(obj)
        if path is not None:
            _EXTERNAL[name] = path


def source_digest(ref: str) -> Optional[str]:
    """The first 16 hex digits of the SHA-256 of the source that defines ``ref`` (a reference, or
    a name registered from outside the package; None if unknown)."""
    if not is_reference(ref):
        path = _EXTERNAL.get(ref)
        return _file_digest(path) if path is not None and path.is_file() else None
    path = source_file(ref)
    if path is None:
        module = sys.modules.get(_split(ref)[0])
        file = getattr(module, "__file__", None)
        path = Path(file) if file else None
    if path is None or not path.is_file():
        return None
    return _file_digest(path)


def references(config: Mapping[str, Any], method: Optional[str] = None) -> List[str]:
    """The references among a run configuration's string fields (``loss``, ``sampler``, ...) and
    its ``method``, with the names registered from outside the package."""
    values = [v for v in config.values() if isinstance(v, str)] + ([method] if isinstance(method, str) else [])
    return sorted({v for v in values if is_reference(v) or v in _EXTERNAL})


def digests(config: Mapping[str, Any], method: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Reference -> source digest, for every reference of ``config`` and ``method`` (what a run
    records)."""
    return {ref: source_digest(ref) for ref in references(config, method)}


def changed_sources(recorded: Mapping[str, Any]) -> List[str]:
    """Messages for the references whose source differs from the digest ``recorded`` at training."""
    out = []
    for ref, then in dict(recorded or {}).items():
        if not is_reference(ref):
            load_entry_points()
            if ref not in _EXTERNAL:  # registered by code this process has not run: nothing to compare
                continue
        try:
            now = source_digest(ref)
        except PluginError as exc:
            out.append(f"{ref}: {exc}")
            continue
        if then is not None and now != then:
            out.append(f"{ref}: its source changed since the run was trained (digest {then}, now {now})")
    return out
