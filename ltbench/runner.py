"""Batch execution of the project's notebooks with papermill.

Layout of one batch (``results/<profile>/<notebook>/``):

* ``<notebook>.ipynb``: the executed notebook of the last successful run;
* ``<notebook>.failed.ipynb``: the executed notebook of the last failed run, holding the error
  (papermill puts its error banner at the top); removed once the notebook succeeds again;
* ``<notebook>.running.ipynb``: the notebook while it executes (papermill saves it after every
  cell, so it can be opened to watch progress); renamed to one of the above at the end;
* ``run.log``: the cells' stdout/stderr as they stream, plus the error, of the last attempt;
* ``completed.json``: completion marker, written atomically and only after success; a run
  counts as complete when its marker holds the same parameters and the same notebook source;
* whatever the notebook writes under ``out_dir`` (tables, figures, ``runs.json``: its runs' labels
  and keys). The training runs themselves live in the profile's run store ``results/<profile>/runs/``
  (``store_dir``, :mod:`ltbench.runs`), shared by every notebook; the runner never deletes them,
  so a failed or interrupted notebook resumes through :func:`ltbench.runs.run`.

Everything that can be checked before executing is checked before executing anything: the
profile, the ``--only`` names, the results folder, the kernel, and every override against the
notebook's ``parameters`` cell (``papermill.inspect_notebook``).

Kernel: notebooks run in the Jupyter kernel ``python3`` (``--kernel`` to change). ``make install``
registers it inside the venv (``ipykernel install --sys-prefix --name python3``, argv = the venv's
python); in a venv jupyter looks in ``sys.prefix`` before the user's and the system's folders, so
that spec shadows any other ``python3``. Without it, ipykernel's bundled spec has
``argv[0] == "python"``, which jupyter_client replaces by ``sys.executable``: either way the
kernel is the interpreter running this module. The runner fails early on an unknown kernel and
warns when the spec points at another environment. The kernel inherits this process's
environment, with the folder holding ``ltbench`` added to ``PYTHONPATH``.
"""
from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import difflib
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from ltbench.io import atomic_write_json
from ltbench.profiles import DEFAULT_PROFILE, PROFILES, check_profile, resolve_overrides
from ltbench.registry import Registry

MARKER = "completed.json"
LOG = "run.log"
DEFAULT_KERNEL = "python3"
#: Seconds one notebook cell may run before it is stopped and the notebook counts as failed, so a
#: hung cell cannot block a batch forever (notebooks only render once `execute` has trained their
#: runs; a cell that trains a paper-scale run on a GPU stays well inside it).
DEFAULT_CELL_TIMEOUT = 12 * 3600
#: Parameters the runner sets itself; overriding them would break the results layout.
RUNNER_PARAMETERS = ("profile", "out_dir", "store_dir")
#: Parameters not compared for completeness: ``out_dir`` is where the marker itself lies, so
#: comparing it would only make a moved results folder re-run everything.
_NOT_COMPARED = ("out_dir", "store_dir")

OK, FAILED, SKIPPED, DEAD = "ok", "failed", "skipped", "dead-kernel"
INTERRUPTED, PENDING = "interrupted", "would-run"


class ConfigError(ValueError):
    """A problem found before executing anything (bad profile, name, parameter, folder)."""


@dataclass
class RunStatus:
    """Outcome of one notebook of a batch."""

    notebook: str
    status: str  # ok | failed | skipped | dead-kernel | interrupted | would-run (dry run)
    seconds: float
    run_dir: Path
    executed: Optional[Path]  # the executed notebook (holding the error when failed)
    parameters: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def succeeded(self) -> bool:
        return self.status in (OK, SKIPPED, PENDING)


@dataclass
class _Planned:
    stem: str
    path: Path
    parameters: Dict[str, Any]
    run_dir: Path
    sha256: str


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
# Parameters


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


def _literal(text: Any) -> Tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        return False, None


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list,
               "tuple": tuple, "dict": dict}


def _expected_type(info: Mapping[str, Any]) -> Tuple[Optional[type], Any]:
    """(type, default value) from papermill's inspection: the default literal's type, else the
    annotation's (``epochs: int = ...``); ``None`` when unknown or when the default is None."""
    ok, default = _literal(info.get("default"))
    if ok:
        if default is None:
            return None, None
        for t in (bool, int, float, str, list, tuple, dict):  # bool before int
            if isinstance(default, t):
                return t, default
    name = str(info.get("inferred_type_name") or "").lower()
    for key, t in _TYPE_NAMES.items():
        if name == key or name.startswith(key + "[") or name.startswith(key.capitalize() + "["):
            return t, None
    return None, None


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


def _declares(path: Path, name: str) -> bool:
    """Whether the notebook's ``parameters`` cell assigns ``name`` (False if it cannot be read)."""
    import papermill as pm

    try:
        return name in (pm.inspect_notebook(str(path)) or {})
    except Exception:  # noqa: BLE001 - check_parameters reports an unreadable notebook
        return False


def check_parameters(
    stem: str, path: Path, parameters: Mapping[str, Any], sources: Mapping[str, str]
) -> List[str]:
    """Problems of ``parameters`` against the notebook's ``parameters`` cell (empty = fine)."""
    import papermill as pm

    try:
        declared = pm.inspect_notebook(str(path))
    except Exception as exc:  # noqa: BLE001 - unreadable notebook: report, do not crash
        return [f"{stem}: cannot inspect {path}: {type(exc).__name__}: {exc}"]
    if not declared:
        return [f"{stem}: {path} has no cell tagged 'parameters' (see the notebook contract)"]
    problems = []
    valid = ", ".join(declared)
    for key, value in parameters.items():
        src = sources.get(key, "runner")
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{stem}: unknown parameter {key!r} (set by {src}){hint}; "
                f"valid parameters: {valid}"
            )
            continue
        expected, default = _expected_type(declared[key])
        if not _type_ok(value, expected):
            problems.append(
                f"{stem}: parameter {key!r} = {value!r} ({type(value).__name__}, set by {src}) "
                f"has the wrong type: expected {expected.__name__} "
                f"(notebook default: {declared[key].get('default')})"
            )
        elif value is not None and expected in (list, tuple) and isinstance(default, (list, tuple)):
            why = _element_problem(value, default)
            if why:
                problems.append(
                    f"{stem}: parameter {key!r} = {value!r} (set by {src}): {why} "
                    f"(notebook default: {declared[key].get('default')})"
                )
    return problems


def _split_overrides(
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


def _sources(profile: str, stem: str, extra: Mapping[str, Any]) -> Dict[str, str]:
    """Which layer set each parameter, for error messages."""
    out: Dict[str, str] = {}
    for layer in ("*", stem):
        for key in PROFILES[profile].get(layer, {}):
            out[key] = f"profile {profile!r} entry {layer!r} (ltbench/profiles.py)"
    for key in extra:
        out[key] = "the command line / overrides"
    return out


# --------------------------------------------------------------------------------------------
# Completion markers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _comparable(parameters: Mapping[str, Any]) -> Any:
    # JSON round trip so tuples and lists (and int/float keys) compare as they are stored.
    return json.loads(json.dumps({k: v for k, v in parameters.items() if k not in _NOT_COMPARED},
                                 sort_keys=True, default=str))


def completion_state(plan: _Planned) -> Tuple[bool, str]:
    """(complete?, why not) for a planned run."""
    _ = object()  # "absent" differs from any value, None included
    marker = plan.run_dir / MARKER
    if not marker.is_file():
        return False, "no completion marker"
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        return False, f"unreadable marker ({exc})"
    old, new = data.get("parameters_compared"), _comparable(plan.parameters)
    if old != new:
        old = old or {}
        show = lambda d, k: repr(d[k]) if k in d else "(notebook default)"  # noqa: E731
        changed = sorted(k for k in set(old) | set(new) if old.get(k, _) != new.get(k, _))
        return False, "parameters changed: " + ", ".join(
            f"{k} {show(old, k)} -> {show(new, k)}" for k in changed
        )
    if data.get("notebook_sha256") != plan.sha256:
        return False, "notebook source changed"
    if not (plan.run_dir / f"{plan.stem}.ipynb").is_file():
        return False, "executed notebook missing"
    return True, "complete"


# --------------------------------------------------------------------------------------------
# Execution


@contextlib.contextmanager
def _kernel_can_import_ltbench() -> Iterator[None]:
    """Put the folder holding the ``ltbench`` package on the kernel's PYTHONPATH.

    Kernels start in the notebook's folder, from which ``import ltbench`` fails unless the
    package is installed; the kernel inherits this process's environment."""
    root = str(Path(__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    parts = old.split(os.pathsep) if old else []
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def check_kernel(kernel_name: str) -> Optional[str]:
    """Raise ConfigError if the kernel is unknown; return a warning if it runs another Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ConfigError(
            f"unknown Jupyter kernel {kernel_name!r}; available: "
            f"{', '.join(sorted(ksm.find_kernel_specs())) or '(none)'}"
        ) from None
    exe = spec.argv[0] if spec.argv else ""
    if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return None  # jupyter_client substitutes sys.executable
    # Compare unresolved folders: a venv's python is a symlink to the base interpreter, which
    # would look identical once resolved but sees other packages; bin/python vs bin/python3 of
    # one environment are the same.
    if os.path.isabs(exe) and os.path.dirname(os.path.abspath(exe)) != os.path.dirname(
            os.path.abspath(sys.executable)):
        return (f"warning: kernel {kernel_name!r} ({spec.resource_dir}) runs {exe}, not this "
                f"interpreter {sys.executable}; the notebooks may see other packages")
    return None


def _check_writable(folder: Path) -> None:
    """Fail early if ``folder`` cannot be written, without creating it (dry runs stay clean)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise OSError(f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(f"results folder {folder} is not writable: {exc}") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _rel(path: Optional[Path]) -> str:
    if path is None:
        return "-"
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _kernel_path(path: Path, kernel_cwd: Path) -> str:
    """``path`` as the notebook's kernel (run in ``kernel_cwd``) should see it: relative when it can
    be, so the executed notebooks and every ``metrics.json`` (stage-1 folders, ...) name portable
    paths like the notebooks' own ``../results/...`` defaults, not this clone's location."""
    try:
        return os.path.relpath(path, Path(kernel_cwd).resolve())
    except ValueError:  # another drive (Windows)
        return str(path)


def _execute(plan: _Planned, kernel_name: str, progress: bool, profile: str,
             cell_timeout: Optional[float] = DEFAULT_CELL_TIMEOUT) -> RunStatus:
    """Execute one planned notebook; never raises except on KeyboardInterrupt."""
    import nbclient.exceptions
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    run_dir, stem = plan.run_dir, plan.stem
    run_dir.mkdir(parents=True, exist_ok=True)
    # This attempt supersedes the last one: until it succeeds the folder is not complete.
    (run_dir / MARKER).unlink(missing_ok=True)
    running = run_dir / f"{stem}.running.ipynb"
    final = run_dir / f"{stem}.ipynb"
    failed = run_dir / f"{stem}.failed.ipynb"
    started, t0 = _now(), time.monotonic()
    status, error = OK, None
    with open(run_dir / LOG, "w", buffering=1) as log:
        log.write(f"# ltbench run: {stem}, profile {profile}, started {started}\n"
                  f"# input: {plan.path}\n# parameters: {json.dumps(plan.parameters)}\n\n")
        try:
            with _kernel_can_import_ltbench():
                pm.execute_notebook(
                    str(plan.path), str(running), parameters=plan.parameters,
                    kernel_name=kernel_name, progress_bar=progress,
                    stdout_file=log, stderr_file=log, cwd=str(plan.path.parent),
                    execution_timeout=cell_timeout,
                )
        except PapermillExecutionError as exc:
            # papermill has saved the notebook with its error banner; keep its summary line.
            status, error = FAILED, f"{exc.ename}: {exc.evalue}"
            log.write(f"\n# FAILED in cell {exc.exec_count}:\n{exc}\n")
        except nbclient.exceptions.DeadKernelError as exc:
            status, error = DEAD, f"kernel died ({exc}); out of memory or a crash in native code?"
            log.write(f"\n# DEAD KERNEL: {exc}\n")
        except KeyboardInterrupt:
            log.write("\n# INTERRUPTED\n")
            if running.exists():
                os.replace(running, failed)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the kernel failed to start
            status, error = FAILED, f"{type(exc).__name__}: {exc}"
            log.write(f"\n# FAILED:\n{traceback.format_exc()}\n")
        seconds = time.monotonic() - t0
        log.write(f"\n# {status} after {seconds:.1f} s\n")

    if status == OK:
        _portable(running, plan.path.parent)
        os.replace(running, final)
        failed.unlink(missing_ok=True)
        atomic_write_json(run_dir / MARKER, {
            "schema": 1,
            "notebook": stem,
            "input": str(plan.path),
            "notebook_sha256": plan.sha256,
            "profile": profile,
            "parameters": plan.parameters,
            "parameters_compared": _comparable(plan.parameters),
            "started": started,
            "finished": _now(),
            "seconds": round(seconds, 3),
            "papermill": pm.__version__,
            "python": sys.version.split()[0],
            "kernel": kernel_name,
            "executed": final.name,
        })
        return RunStatus(stem, OK, seconds, run_dir, final, plan.parameters)
    executed: Optional[Path] = None
    if running.exists():
        os.replace(running, failed)
        executed = failed
    return RunStatus(stem, status, seconds, run_dir, executed or run_dir / LOG,
                     plan.parameters, error)


def _portable(executed: Path, source_dir: Path) -> None:
    """Make an executed notebook independent of this clone's location: papermill's recorded input
    and output paths become relative to the results folder, and the notebook's relative Markdown
    links (written for ``notebooks/``) point from where the executed copy lives."""
    import re

    nb = json.loads(executed.read_text())
    meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str) and os.path.isabs(meta[key]):
            meta[key] = Path(os.path.relpath(meta[key], executed.parent.resolve())).as_posix()

    def fix(m: "re.Match[str]") -> str:
        target, anchor = m.group(1), m.group(2) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("/", "#")):
            return m.group(0)
        rel = os.path.relpath((source_dir / target).resolve(), executed.parent.resolve())
        return f"]({Path(rel).as_posix()}{anchor})"

    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = re.sub(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", fix, src)
    executed.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def plan_runs(
    profile: str = DEFAULT_PROFILE,
    only: Optional[Iterable[str]] = None,
    seeds: Optional[int] = None,
    results_dir: os.PathLike | str = "results",
    notebooks_dir: os.PathLike | str = "notebooks",
    overrides: Optional[Mapping[str, Any]] = None,
) -> List[_Planned]:
    """Resolve and validate everything; raise ConfigError listing every problem found."""
    try:
        check_profile(profile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    available = discover_notebooks(notebooks_dir)
    stems = select_notebooks(list(available), only)
    extra_common, scoped = _split_overrides(dict(overrides or {}), list(available))
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"seeds={seeds!r}: expected a positive number of seeds")
        extra_common["seeds"] = list(range(seeds))
    out_root = Path(results_dir).resolve() / profile
    _check_writable(out_root)

    plans, problems = [], []
    for stem in stems:
        extra = {**extra_common, **scoped.get(stem, {})}
        params = resolve_overrides(profile, stem, extra)
        params["profile"] = profile
        if _declares(available[stem], "fill_from_profile"):
            params["fill_from_profile"] = False  # resolved here, overrides included: the notebook must not redo it
        run_dir = out_root / stem
        params["out_dir"] = _kernel_path(run_dir, available[stem].parent)
        params["store_dir"] = _kernel_path(out_root, available[stem].parent)
        problems += check_parameters(stem, available[stem], params,
                                     _sources(profile, stem, extra))
        plans.append(_Planned(stem, available[stem], params, run_dir, _sha256(available[stem])))
    if problems:
        raise ConfigError("invalid parameters (nothing was executed):\n  " + "\n  ".join(problems))
    return plans


def run_notebooks(
    profile: str = DEFAULT_PROFILE,
    only: Optional[Iterable[str]] = None,
    seeds: Optional[int] = None,
    force: bool = False,
    results_dir: os.PathLike | str = "results",
    notebooks_dir: os.PathLike | str = "notebooks",
    overrides: Optional[Mapping[str, Any]] = None,
    *,
    kernel_name: str = DEFAULT_KERNEL,
    progress: bool = True,
    verbose: bool = True,
    dry_run: bool = False,
    cell_timeout: Optional[float] = DEFAULT_CELL_TIMEOUT,
) -> List[RunStatus]:
    """Execute the selected notebooks of ``notebooks_dir`` under ``profile``.

    ``seeds=N`` passes ``seeds=list(range(N))``; ``overrides`` maps parameter names (or
    ``"<notebook>:<name>"`` for one notebook) to values and wins over the profile. Raises
    :class:`ConfigError` before executing anything if the configuration is invalid. A failing
    notebook does not stop the others; inspect the returned statuses (or the printed summary).
    """
    if cell_timeout is not None and (isinstance(cell_timeout, bool) or not isinstance(cell_timeout, (int, float))
                                     or not cell_timeout > 0):
        raise ConfigError(f"cell_timeout={cell_timeout!r}: expected a positive number of seconds (or None)")
    plans = plan_runs(profile, only, seeds, results_dir, notebooks_dir, overrides)
    warning = check_kernel(kernel_name)
    say = print if verbose else (lambda *a, **k: None)
    if warning:
        say(warning, file=sys.stderr)

    statuses: List[RunStatus] = []
    try:
        for i, plan in enumerate(plans, 1):
            done, why = completion_state(plan)
            head = f"[{i}/{len(plans)}] {plan.stem}"
            if done and not force:
                say(f"{head}: skipped (complete; --force re-runs) -> {_rel(plan.run_dir)}")
                statuses.append(RunStatus(plan.stem, SKIPPED, 0.0, plan.run_dir,
                                          plan.run_dir / f"{plan.stem}.ipynb", plan.parameters))
                continue
            reason = "forced" if done else why
            if dry_run:
                say(f"{head}: would run ({reason}) with {plan.parameters}")
                statuses.append(RunStatus(plan.stem, PENDING, 0.0, plan.run_dir, None,
                                          plan.parameters))
                continue
            say(f"{head}: running ({reason}) -> {_rel(plan.run_dir)}", flush=True)
            st = _execute(plan, kernel_name, progress, profile, cell_timeout)
            statuses.append(st)
            say(f"{head}: {st.status} in {st.seconds:.1f} s"
                + (f" -- {st.error}; see {_rel(st.executed)}" if st.error else ""), flush=True)
    except KeyboardInterrupt:
        done_names = {s.notebook for s in statuses}
        for plan in plans:
            if plan.stem not in done_names:
                statuses.append(RunStatus(plan.stem, INTERRUPTED, 0.0, plan.run_dir,
                                          None, plan.parameters, "interrupted"))
        say(format_summary(statuses))
        raise
    say(format_summary(statuses))
    return statuses


def format_summary(statuses: Sequence[RunStatus]) -> str:
    """The end-of-batch table: notebook, status, seconds, executed notebook (error holder)."""
    from ltbench.report import markdown_table

    rows = [[s.notebook, s.status, f"{s.seconds:.1f}", _rel(s.executed), s.error or ""]
            for s in statuses]
    bad = sum(not s.succeeded for s in statuses)
    if bad:
        tail = f"{bad} of {len(statuses)} notebooks did not succeed"
    elif any(s.status == PENDING for s in statuses):
        tail = "dry run: nothing was executed"
    else:
        tail = "all notebooks succeeded (or were already complete)"
    return "\nSummary\n" + markdown_table(
        ["notebook", "status", "seconds", "executed notebook", "error"], rows) + f"\n{tail}\n"


def exit_code(statuses: Sequence[RunStatus]) -> int:
    """0 if every notebook succeeded or was skipped, else 1."""
    return 0 if all(s.succeeded for s in statuses) else 1


# --------------------------------------------------------------------------------------------
# Backends: where the notebooks execute (``--backend``)


def _submitit_backend(*args: Any, **kwargs: Any) -> List[RunStatus]:
    """One submitit job per notebook: a SLURM job array, or local processes (:mod:`ltbench.submit`)."""
    from ltbench.submit import run_notebooks_submitit

    return run_notebooks_submitit(*args, **kwargs)


#: ``--backend`` name -> batch function with :func:`run_notebooks`' arguments (plus its own options).
BACKENDS: Registry = Registry("backend", "backend")
BACKENDS.register("local")(run_notebooks)
BACKENDS.register("submitit")(_submitit_backend)


def run_batch(backend: str = "local", *args: Any, **kwargs: Any) -> List[RunStatus]:
    """:func:`run_notebooks` on ``backend`` (``local``: this process; ``submitit``: jobs); same
    skip-completed / resume / failure-summary behaviour and results layout on every backend."""
    try:
        run = BACKENDS.get(backend)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return run(*args, **kwargs)
