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
notebook's ``parameters`` cell (:mod:`ltbench.parameters`, the one parameter pipeline).

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

import contextlib
import datetime as _dt
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
from ltbench.parameters import (RUNNER_PARAMETERS, ConfigError, check_values, discover_notebooks,  # noqa: F401
                                notebook_parameters, outside_clone_hint, parse_assignments, parse_value, resolve,
                                select_notebooks)
from ltbench.profiles import DEFAULT_PROFILE
from ltbench.text import markdown_table

MARKER = "completed.json"
#: The notebook's run manifest (``ltbench.experiments.MANIFEST``; not imported, which would load torch).
MANIFEST = "runs.json"
LOG = "run.log"
DEFAULT_KERNEL = "python3"
#: Seconds one notebook cell may run before it is stopped and the notebook counts as failed, so a
#: hung cell cannot block a batch forever (notebooks only render once `execute` has trained their
#: runs; a cell that trains a paper-scale run on a GPU stays well inside it).
DEFAULT_CELL_TIMEOUT = 12 * 3600
#: Parameters not compared for completeness: ``out_dir`` is where the marker itself lies, so
#: comparing it would only make a moved results folder re-run everything.
#: The notebook parameter ``--no-train`` sets to False (:func:`no_train_selection`). Not compared
#: either: a render with every run in the store is the same with it True or False.
TRAIN_MISSING = "train_missing"
_NOT_COMPARED = ("out_dir", "store_dir", TRAIN_MISSING)

OK, FAILED, SKIPPED, DEAD = "ok", "failed", "skipped", "dead-kernel"
INTERRUPTED, PENDING = "interrupted", "would-run"


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
# Completion markers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _comparable(parameters: Mapping[str, Any]) -> Any:
    # JSON round trip so tuples and lists (and int/float keys) compare as they are stored.
    return json.loads(json.dumps({k: v for k, v in parameters.items() if k not in _NOT_COMPARED},
                                 sort_keys=True, default=str))


def no_train_selection(only: Optional[Iterable[str]], notebooks_dir: os.PathLike | str = "notebooks"
                       ) -> Tuple[List[str], Dict[str, Any], List[str]]:
    """What ``ltbench run --no-train`` runs: (the notebooks, the overrides setting their
    ``train_missing`` parameter to False, the notebooks left out because they have none).

    Without ``only`` a notebook without the parameter (08, which trains only your runs) is left
    out; one named in ``only`` raises :class:`ConfigError`."""
    available = discover_notebooks(notebooks_dir)
    chosen = select_notebooks(list(available), only)
    has = {stem: TRAIN_MISSING in notebook_parameters(available[stem]) for stem in chosen}
    if only and not all(has.values()):
        raise ConfigError(f"--no-train: {', '.join(s for s in chosen if not has[s])} has no '{TRAIN_MISSING}' "
                          "parameter, so it cannot render without training; run it without --no-train")
    keep = [s for s in chosen if has[s]]
    return keep, {f"{s}:{TRAIN_MISSING}": False for s in keep}, [s for s in chosen if not has[s]]


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
    left_out = _pending_in_manifest(plan.run_dir / MANIFEST)
    if left_out:
        return False, f"rendered with {left_out} run(s) pending"
    return True, "complete"


def _pending_in_manifest(path: Path) -> int:
    """How many runs the manifest at ``path`` lists as pending (a render that trained nothing)."""
    try:
        rows = json.loads(path.read_text()).get("runs") or []
    except (OSError, ValueError, AttributeError):
        return 0
    return sum(1 for r in rows if isinstance(r, dict) and r.get("status") == "pending")


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
    """Resolve and validate everything (:func:`ltbench.parameters.resolve`, plus the parameters
    the runner sets); raise ConfigError listing every problem found."""
    resolved = resolve(profile, only, seeds, overrides, notebooks_dir)
    out_root = Path(results_dir).resolve() / profile
    _check_writable(out_root)
    plans, problems = [], []
    for nb in resolved:
        params = dict(nb.layer)
        params["profile"] = profile
        if "fill_from_profile" in nb.declared:
            params["fill_from_profile"] = False  # resolved here, overrides included: the notebook must not redo it
        run_dir = out_root / nb.stem
        params["out_dir"] = _kernel_path(run_dir, nb.path.parent)
        params["store_dir"] = _kernel_path(out_root, nb.path.parent)
        runner_set = {k: v for k, v in params.items() if k not in nb.layer}
        problems += nb.problems + (check_values(nb.stem, nb.declared, runner_set, {}) if nb.declared else [])
        plans.append(_Planned(nb.stem, nb.path, params, run_dir, _sha256(nb.path)))
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
