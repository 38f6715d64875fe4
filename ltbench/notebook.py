"""Small helpers the notebooks call: the session a notebook opens (:func:`setup`), run folders,
tables (CSV + Markdown) and figures (PNG + PDF + inline), the caveats and the computed conclusion
a notebook ends with.

They keep the notebooks thin. A notebook's first code cell calls
``session = setup("<notebook>", globals())``: the profile's values, the plotting style, the run
store and the datasets present, in one call. It then plans its runs (``session.plan()``, the
experiment module's ``runs`` with the notebook's parameters), gets them (``session.materialize``),
computes its frames with the paper's experiment module (:mod:`ltbench.experiments`), shows its
tables (:func:`ltbench.tables.method_table`, ``session.show``) and figures (``session.figure``),
always written atomically, and ends with ``session.conclude``. The figures' style is
:mod:`ltbench.plotting`.
"""
from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence

from . import plotting, profiles
from .engine import TrainResult
from .experiments import PlannedRun, check_datasets, experiment, materialize
from .io import atomic_write_text
from .published import CAVEATS
from .runs import RunSpec, RunStore
from .text import verdict  # noqa: F401 - notebooks import it from here
from .plotting import DPI, FORMATS, save


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


def run_dir(out_dir: str | Path, *parts: Any) -> Path:
    """``out_dir/runs/<part1>_<part2>...``: one folder per training run."""
    return Path(out_dir) / "runs" / "_".join(slug(str(p)) for p in parts)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|")


def markdown_table(df: "Any", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of a pandas DataFrame (floats to 2 decimals, NaN as '-')."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df: "Any", out_dir: str | Path, name: str, title: Optional[str] = None) -> "Any":
    """Write ``name.csv`` and ``name.md`` under ``out_dir/tables`` and return ``df``.

    A notebook shows a table explicitly, ``display(save_table(...))``, so that no cell ends with a
    bare expression whose value Jupyter would echo.
    """
    folder = Path(out_dir) / "tables"
    atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False))
    md = (f"### {title}\n\n" if title else "") + markdown_table(df)
    atomic_write_text(folder / f"{name}.md", md)
    return df


def save_figure(fig: "Any", out_dir: str | Path, name: str, show: bool = True, dpi: int = DPI) -> None:
    """Save ``fig`` as ``out_dir/figures/name.png`` (``dpi``) and ``name.pdf``, atomically, then
    show it inline (or close it with ``show=False``).

    Returns None, so a cell ending with ``save_figure(...)`` echoes nothing; the written paths are
    ``figure_paths(out_dir, name)``.
    """
    import matplotlib.pyplot as plt

    png = save(fig, Path(out_dir) / "figures" / name, dpi=dpi)[0]
    managed = plt.fignum_exists(getattr(fig, "number", -1))  # library figures (plotting.new_figure) are not pyplot's
    if show and managed:
        plt.show()
    elif show:
        try:
            from IPython.display import Image
        except ImportError:  # pragma: no cover - notebooks always have IPython
            return
        _show(Image(filename=str(png)))
    elif managed:
        plt.close(fig)


def figure_paths(out_dir: str | Path, name: str) -> tuple:
    """The files :func:`save_figure` writes for ``name``: PNG and PDF."""
    return tuple(Path(out_dir) / "figures" / f"{name}.{fmt}" for fmt in FORMATS)


def _relink(text: str, folder: Path) -> str:
    """``text`` with its relative Markdown links (written relative to the working directory, the
    notebook's folder) rewritten relative to ``folder``, where the text is saved."""
    def fix(m: "re.Match[str]") -> str:
        target, anchor = m.group(1), m.group(2) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("/", "#")):
            return m.group(0)
        rel = os.path.relpath(Path.cwd() / target, folder.resolve())
        return f"]({Path(rel).as_posix()}{anchor})"

    return re.sub(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", fix, text)


def conclusion(claim: str, findings: "Any", profile: str, out_dir: Optional[str | Path] = None,
               title: str = "Conclusion", note: Optional[str] = None) -> "Any":
    """The notebook's closing statement, computed from its results, as Markdown.

    ``claim``: the paper's main claim (with its docs/methods.md link); ``findings``: lines, each
    "our numbers -> verdict" written from computed values (never typed by hand); ``profile``: the
    profile the numbers come from (a non-paper profile adds that the verdict says little about the
    paper). With ``out_dir`` the text is also written to ``out_dir/conclusion.md``. Returns an
    ``IPython.display.Markdown`` (plain text when IPython is absent); show it with ``display``.
    """
    lines = [f"## {title}", "", f"**The paper's claim.** {claim}", "",
             f"**What this run shows** (profile `{profile}`):", ""]
    findings = [findings] if isinstance(findings, str) else list(findings)
    lines += [f"- {f}" for f in findings] if findings else ["- no result to check (no run finished)."]
    lines.append("")
    if profile == "cpu":
        lines += ["> Profile `cpu` trains the papers' data and recipe compressed to a CPU budget (docs/methods.md §2): "
                  "a verdict compares each method's gain over the baseline with the published gain (its sign and "
                  "size; a published gain within ±0.5 points claims no difference, "
                  "[methods §10.8](../docs/methods.md#108-verdicts)), not the absolute numbers, "
                  "which no paper reports at this length.", ""]
    elif profile != "paper":
        lines += [f"> Profile `{profile}` trains briefly on a subset: a verdict here checks the pipeline and the "
                  "direction of an effect, not the paper's numbers (those need the `paper` profile).", ""]
    if note:
        lines += [note, ""]
    text = "\n".join(lines)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "conclusion.md", _relink(text, Path(out_dir)))
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover - notebooks always have IPython
        return text
    return Markdown(text)


def caveats(profile: str, detail: str = "") -> None:
    """Print the caveats every comparison with a published number carries (:data:`ltbench.published.CAVEATS`),
    and for a profile other than ``paper`` that its schedule is shortened (``detail`` is added to that line)."""
    print("Caveats:")
    for c in CAVEATS:
        print(" -", c)
    if profile != "paper":
        print(f" - profile '{profile}' uses a shortened schedule / subset{detail}: not comparable with the published numbers.")


def show(obj: Any) -> None:
    """Display ``obj`` in the notebook (print it outside IPython); returns None, so nothing is echoed."""
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - notebooks always have IPython
        print(obj)
        return
    display(obj)


_show = show  # save_figure's argument ``show`` hides the name there


# --------------------------------------------------------------------------------------------
# The session a notebook opens

_LITERALS = (type(None), bool, int, float, str)
#: Names IPython keeps in a notebook's namespace that hold literals but are no parameters.
_NOT_PARAMETERS = {"In", "Out"}


def _is_literal(v: Any) -> bool:
    if isinstance(v, _LITERALS):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_literal(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, _LITERALS) and _is_literal(x) for k, x in v.items())
    return False


def parameters_of(namespace: Mapping[str, Any]) -> Dict[str, Any]:
    """The parameters in a notebook's namespace: every public name bound to a plain literal (the
    ``parameters`` cell may hold nothing else); modules, functions and IPython's own names are left out."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in _NOT_PARAMETERS and _is_literal(v)}


def call_with(fn: Callable[..., Any], parameters: Mapping[str, Any], **overrides: Any) -> Any:
    """``fn`` called with the entries of ``{**parameters, **overrides}`` that it names (the rest are
    ignored), as :func:`ltbench.experiments.runs_for_notebook` calls an experiment's ``runs``."""
    sig = inspect.signature(fn)
    given = {**parameters, **overrides}
    return fn(**{k: v for k, v in given.items() if k in sig.parameters})


@dataclass
class Session:
    """What :func:`setup` opened for a notebook: its parameters (after the profile), its output
    folder, the run store and the datasets present.

    ``params``: the parameters (the namespace's literals, the profile's values applied);
    ``out``: ``out_dir``; ``store``: the run store at ``store_dir``; ``present`` / ``skipped``:
    the datasets of ``datasets`` whose data is here, and those skipped with the reason;
    ``changed``: what the profile changed.
    """

    name: str
    params: Dict[str, Any]
    out: Path
    store: RunStore
    present: List[str]
    skipped: Dict[str, str] = field(default_factory=dict)
    changed: Dict[str, Any] = field(default_factory=dict)
    #: The planned runs the last :meth:`materialize` left out (``train_missing=False``).
    pending: List[PlannedRun] = field(default_factory=list)

    @property
    def profile(self) -> str:
        return self.params["profile"]

    def call(self, fn: Callable[..., Any], **overrides: Any) -> Any:
        """``fn`` with the parameters it names, ``datasets`` being the datasets present
        (e.g. ``session.call(experiment.settings)``)."""
        return call_with(fn, {**self.params, "datasets": self.present}, **overrides)

    def plan(self, **overrides: Any) -> List[PlannedRun]:
        """The notebook's runs: its experiment module's ``runs`` with the notebook's parameters
        (:meth:`call`), as ``python -m ltbench plan`` enumerates them, on the datasets present."""
        return self.call(experiment(self.name).runs, **overrides)

    def materialize(self, planned: Sequence[PlannedRun], weights: Iterable[RunSpec] = ()) -> List[TrainResult]:
        """The results of ``planned``: loaded from the store, trained where missing
        (:func:`ltbench.experiments.materialize`); the manifest ``runs.json`` goes to ``out``.
        With the parameter ``train_missing=False`` nothing trains: the runs not in the store are
        left out, kept in ``self.pending`` and named by :meth:`conclude`."""
        results = materialize(planned, self.store, self.out, device=self.params.get("device", "auto"),
                              data_root=self.params.get("data_root"), weights=weights,
                              train=self.params.get("train_missing", True))
        got = {r.meta["key"] for r in results}
        self.pending = [r for r in planned if r.spec.key not in got]
        return results

    def save(self, df: Any, name: str, title: Optional[str] = None) -> Any:
        """:func:`save_table` into ``out``; returns ``df``."""
        return save_table(df, self.out, name, title)

    def show(self, df: Any, name: str, title: Optional[str] = None) -> None:
        """:func:`save_table` into ``out``, then display the table."""
        show(save_table(df, self.out, name, title))

    def figure(self, fig: Any, name: str, show: bool = True) -> None:
        """:func:`save_figure` into ``out``."""
        save_figure(fig, self.out, name, show=show)

    def caveats(self, detail: str = "") -> None:
        """:func:`caveats` of this profile."""
        caveats(self.profile, detail)

    def conclude(self, claim: str, findings: Any, note: Optional[str] = None) -> None:
        """Display the notebook's :func:`conclusion` (written to ``out/conclusion.md`` too); a
        render that left runs pending says which, before ``note``."""
        if self.pending:
            labels = list(dict.fromkeys(r.label for r in self.pending))
            keys = {r.spec.key for r in self.pending}
            left = (f"**Rendered before every run was trained** (`train_missing=False`): {len(keys)} run(s) pending, "
                    f"so these rows and the verdicts that need them are missing: {', '.join(labels)}. "
                    f"`python -m ltbench run --profile {self.profile} --only {self.name[:2]}` renders the notebook "
                    "again (it trains what is still missing unless `--no-train`).")
            note = left + ("\n\n" + note if note else "")
            findings = [findings] if isinstance(findings, str) else list(findings)
            findings = findings or ["no verdict yet: each needs a run that is still pending (below)."]
        show(conclusion(claim, findings, self.profile, self.out, note=note))


def setup(name: str, namespace: MutableMapping[str, Any]) -> Session:
    """Open notebook ``name``'s session from its namespace (``globals()``, holding the parameters).

    Applies the profile (:func:`ltbench.profiles.apply_profile`: a parameter still at its quick
    default takes ``profile``'s value, in ``namespace`` itself, so the notebook's names see it),
    sets the plotting style, silences tqdm's warning about missing ipywidgets (under papermill
    each run prints one line instead of a bar), opens the run store, checks which datasets are
    present (printing a ``SKIPPED`` line for each missing one) and prints what it trains on.
    """
    # tqdm.auto warns once when ipywidgets is missing.
    warnings.filterwarnings("ignore", message="IProgress not found")
    plotting.use_style()
    changed = profiles.apply_profile(name, namespace)
    params = parameters_of(namespace)
    present, skipped = check_datasets(params["datasets"], params.get("data_root"))
    for dataset, why in skipped.items():
        print(f"SKIPPED {dataset}: {why}")
    print("training on:", present)
    return Session(name, params, Path(params["out_dir"]), RunStore(params["store_dir"]), present, skipped, changed)
