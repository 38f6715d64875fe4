"""One parameter pipeline for every way a notebook's runs are planned or executed.

A notebook's parameters come in layers: its ``parameters`` cell (plain literals, parsed once by
:func:`notebook_parameters`), then the profile's ``"*"`` and per-notebook entries
(:func:`ltbench.profiles.resolve_overrides`), then the caller's overrides (``-p name=value`` or
``-p notebook:name=value``). :func:`resolve` applies them and :func:`check_values` type-checks
every value against the cell's defaults, naming who set it. ``plan`` / ``execute``
(:mod:`ltbench.executor`), the papermill runner (:mod:`ltbench.runner`, and submitit through it)
use this module; inside a notebook :func:`ltbench.profiles.apply_profile` applies the same
profile layers.
"""
from __future__ import annotations

import ast
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ltbench.profiles import PROFILES, check_profile, resolve_overrides

__all__ = ["ConfigError", "RUNNER_PARAMETERS", "outside_clone_hint", "discover_notebooks", "select_notebooks",
           "parse_value", "parse_assignments", "notebook_parameters", "type_problem", "check_values",
           "NotebookParameters", "resolve"]


class ConfigError(ValueError):
    """A problem found before executing anything (bad profile, name, parameter, folder)."""


#: Parameters the runner sets itself; overriding them would break the results layout.
RUNNER_PARAMETERS = ("profile", "out_dir", "store_dir")


# --------------------------------------------------------------------------------------------
# Discovery and selection


def outside_clone_hint(path: os.PathLike | str, what: str) -> str:
    """Why ``path`` may be missing when ltbench runs outside its repository, and what to do.

    The notebooks and configs are files of the repository, not of the installed package (a wheel
    holds the library only); ``""`` when ``path`` is absolute or the current folder is a clone.
    """
    path = Path(path)
    if path.is_absolute() or (Path("notebooks").is_dir() and Path("ltbench").is_dir()):
        return ""
    flag = {"notebooks": "--notebooks DIR", "configs": "--config PATH"}.get(what, "its path")
    return (f" (relative to {Path.cwd()}). The {what} are part of the ltbench repository, not of the "
            f"installed package: run this from the root of a clone of the repository, or give {flag}.")


def discover_notebooks(notebooks_dir: os.PathLike | str) -> Dict[str, Path]:
    """``{stem: path}`` of the ``*.ipynb`` files in ``notebooks_dir`` (not hidden, not ``_*``)."""
    root = Path(notebooks_dir)
    if not root.is_dir():
        raise ConfigError(f"notebooks folder not found: {root}{outside_clone_hint(root, 'notebooks')}")
    return {
        p.stem: p
        for p in sorted(root.glob("*.ipynb"))
        if not p.name.startswith((".", "_")) and p.is_file()
    }


def _match_name(name: str, available: Sequence[str], what: str = "notebook") -> str:
    """Exact stem, stem + ``.ipynb``, or a unique prefix (``01`` -> ``01_long_tailed_cifar``)."""
    name = name.strip()
    if name.endswith(".ipynb"):
        name = name[: -len(".ipynb")]
    name = Path(name).name  # allow notebooks/01_x.ipynb
    if name in available:
        return name
    hits = [a for a in available if a.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    why = f"ambiguous, matches {', '.join(hits)}" if hits else "not found"
    raise ConfigError(
        f"unknown {what}: {name!r} ({why}); valid notebooks: {', '.join(available) or '(none)'}"
    )


def select_notebooks(available: Sequence[str], only: Optional[Iterable[str]]) -> List[str]:
    """The notebooks to run, in file order; ``only`` entries may be comma-separated."""
    if not available:
        raise ConfigError("no notebooks found")
    if not only:
        return list(available)
    names = [n for item in only for n in str(item).split(",") if n.strip()]
    if not names:
        return list(available)
    chosen = {_match_name(n, available) for n in names}
    return [a for a in available if a in chosen]


# --------------------------------------------------------------------------------------------
# Values


def parse_value(text: str) -> Any:
    """A ``-p key=value`` value: a Python literal (``3``, ``1e-3``, ``[100, 50]``, ``None``),
    else YAML (``cifar10``, ``[cifar10, cifar100]``, ``null``, ``true``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        import yaml  # papermill depends on PyYAML

        return yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - anything unparsable is just a string
        return text


def parse_assignments(items: Optional[Iterable[str]]) -> Dict[str, Any]:
    """``["epochs=5", "01_x:lr=0.1"]`` -> ``{"epochs": 5, "01_x:lr": 0.1}``."""
    out: Dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad parameter {item!r}: expected key=value or notebook:key=value")
        out[key.strip()] = parse_value(value.strip())
    return out


def notebook_parameters(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The assignments of a notebook's ``parameters`` cell, evaluated as Python literals.

    The cell must hold plain literals (``x = [1, 2]``, ``y = None``): anything else raises a
    ValueError naming the line, since papermill, ``plan`` and readers all rely on it.
    """
    path = Path(path)
    nb = json.loads(path.read_text())
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one cell tagged 'parameters', found {len(cells)}")
    source = "".join(cells[0]["source"])
    out: Dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path.name}: the parameters cell may only assign names, got line {node.lineno}: "
                             f"{ast.get_source_segment(source, node)!r}")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path.name}: parameter {node.targets[0].id} must be a plain literal, got "
                             f"{ast.get_source_segment(source, node.value)!r}") from None
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_ok(value: Any, expected: Optional[type]) -> bool:
    if value is None or expected is None:  # None is a legitimate "use the notebook's choice"
        return True
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return _is_number(value)
    if expected in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, expected)


def _element_problem(value: Sequence[Any], default: Sequence[Any]) -> Optional[str]:
    """For list defaults with one element kind (numbers or strings), check the given elements."""
    if not default:
        return None
    if all(_is_number(d) for d in default):
        bad = [v for v in value if not _is_number(v)]
        kind = "numbers"
    elif all(isinstance(d, str) for d in default):
        bad = [v for v in value if not isinstance(v, str)]
        kind = "strings"
    else:
        return None
    return f"elements should be {kind}, got {bad!r}" if bad else None


def type_problem(value: Any, default: Any) -> Optional[str]:
    """Why ``value`` cannot replace a parameter whose cell default is ``default`` (None: it can).
    The default's type is the parameter's (bool before int; a float takes any number); a None
    default, or a None value ("the notebook's choice"), takes anything; a list default of numbers
    or strings also fixes its elements' kind."""
    if default is None or value is None:
        return None
    expected = next(t for t in (bool, int, float, str, list, tuple, dict, object) if isinstance(default, t))
    if not _type_ok(value, expected):
        return f"expected {expected.__name__}"
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return _element_problem(value, default)
    return None


def check_values(stem: str, declared: Mapping[str, Any], values: Mapping[str, Any],
                 sources: Mapping[str, str]) -> List[str]:
    """Problems of ``values`` against the notebook's cell defaults ``declared`` (empty = fine),
    each naming the parameter, the value, who set it (``sources``) and what is valid."""
    problems = []
    valid = ", ".join(declared)
    for key, value in values.items():
        src = sources.get(key, "runner")
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{stem}: unknown parameter {key!r} (set by {src}){hint}; valid parameters: {valid}")
            continue
        why = type_problem(value, declared[key])
        if why:
            kind = f"({type(value).__name__}, set by {src}) has the wrong type" if why.startswith("expected") \
                else f"(set by {src})"
            problems.append(f"{stem}: parameter {key!r} = {value!r} {kind}: {why} "
                            f"(notebook default: {declared[key]!r})")
    return problems


def split_overrides(
    overrides: Mapping[str, Any], available: Sequence[str]
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Global overrides and ``notebook:key`` scoped ones, keyed by resolved notebook stem."""
    common: Dict[str, Any] = {}
    scoped: Dict[str, Dict[str, Any]] = {}
    for key, value in overrides.items():
        if ":" in key:
            nb, _, name = key.partition(":")
            scoped.setdefault(_match_name(nb, available), {})[name] = value
        else:
            common[key] = value
    for key in list(common) + [k for d in scoped.values() for k in d]:
        if key in RUNNER_PARAMETERS:
            raise ConfigError(
                f"parameter {key!r} is set by the runner (use --profile / --results instead)"
            )
    return common, scoped


def sources(profile: str, stem: str, extra: Mapping[str, Any]) -> Dict[str, str]:
    """Which layer set each parameter, for error messages."""
    out: Dict[str, str] = {}
    for layer in ("*", stem):
        for key in PROFILES[profile].get(layer, {}):
            out[key] = f"profile {profile!r} entry {layer!r} (ltbench/profiles.py)"
    for key in extra:
        out[key] = "the command line / overrides"
    return out


# --------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class NotebookParameters:
    """One notebook's parameters under a profile: ``declared`` (its cell's defaults), ``layer``
    (what the profile and the overrides set), ``values`` (``declared`` updated by ``layer``),
    ``sources`` (who set each key of ``layer``) and the problems of ``layer`` (empty: valid)."""

    stem: str
    path: Path
    declared: Dict[str, Any]
    layer: Dict[str, Any]
    sources: Dict[str, str]
    problems: List[str] = field(default_factory=list)

    @property
    def values(self) -> Dict[str, Any]:
        return {**self.declared, **self.layer}


def _declared(stem: str, path: Path) -> Tuple[Dict[str, Any], List[str]]:
    try:
        declared = notebook_parameters(path)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:
        return {}, [f"{stem}: cannot inspect {path}: {type(exc).__name__}: {exc}"]
    if not declared:
        return {}, [f"{stem}: {path} has no cell tagged 'parameters' (see the notebook contract)"]
    return declared, []


def resolve(profile: str, only: Optional[Iterable[str]] = None, seeds: Optional[int] = None,
            overrides: Optional[Mapping[str, Any]] = None,
            notebooks_dir: Union[str, os.PathLike] = "notebooks",
            stems: Optional[Sequence[str]] = None) -> List[NotebookParameters]:
    """Every selected notebook's parameters: the profile's layers and ``overrides`` on its cell's
    defaults, checked (see :class:`NotebookParameters`). ``seeds=N`` means
    ``seeds=list(range(N))``. ``stems``: the notebooks that may be chosen (default: every one in
    ``notebooks_dir``). Raises :class:`ConfigError` for a bad profile, notebook name or seeds."""
    try:
        check_profile(profile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    available = discover_notebooks(notebooks_dir)
    if stems is not None:
        available = {s: available[s] for s in stems if s in available}
    chosen = select_notebooks(list(available), only)
    common, scoped = split_overrides(dict(overrides or {}), list(available))
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds={seeds!r}: expected a positive number of seeds")
        common["seeds"] = list(range(seeds))
    out = []
    for stem in chosen:
        extra = {**common, **scoped.get(stem, {})}
        declared, problems = _declared(stem, available[stem])
        layer = resolve_overrides(profile, stem, extra)
        src = sources(profile, stem, extra)
        if declared:
            problems += check_values(stem, declared, layer, src)
        out.append(NotebookParameters(stem, available[stem], declared, layer, src, problems))
    return out
