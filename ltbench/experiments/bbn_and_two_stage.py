"""Notebook 04: BBN (Zhou et al. 2020) and two-stage re-balancing (Kang et al. 2020) on CIFAR-LT.

Sections (``section`` tag of each planned run): ``main`` (the main table beside the published
numbers), ``grid`` (BBN Fig. 2: stage-1 representation x stage-2 classifier), ``tau`` (the CE runs
whose classifier the tau-norm sweep normalises; their weights are loaded), ``ablation`` (BBN
Tables 3-4: the re-balancing sampler and the adaptor) and ``branches`` (BBN runs whose branches
are compared per class).

Besides the runs (:func:`runs`, :func:`settings`), the notebook's computations: the grid and
BBN's two findings on it (:func:`grid_frame`, :func:`grid_matrix`, :func:`grid_checks`,
:func:`table5`), the tau-norm sweep (:func:`tau_frames`), the ablations (:func:`ablation_runs`,
:func:`ablation_summary`), the branches (:func:`branches`, :func:`branch_frame`) and the
conclusion's lines (:func:`findings`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..bbn import load_branches
from ..engine import EvalResult, TrainResult
from ..methods import bbn_spec, joint_spec, mixup_spec, stage_two_spec
from ..published import published, published_row
from ..runs import RunStore
from ..text import pm, verdict
from ..two_stage import select_tau, tau_sweep
from . import PlannedRun, check_choice, common_config, gain_findings, grid, planned, results_frame, select

NOTEBOOK = "04_bbn_and_two_stage"
PAPER = "BBN (Zhou et al. 2020) / Decoupling (Kang et al. 2020)"

#: One-stage runs: label -> TrainConfig overrides (DRW / DRS epochs are filled in per profile).
STAGE1: Dict[str, Dict[str, Any]] = {
    "CE": {"loss": "ce"},
    "CE-DRW": {"loss": "ce", "drw_epoch": "defer"},
    "CE-DRS": {"loss": "ce", "drs_epoch": "defer"},
    "LDAM-DRW": {"loss": "ldam", "classifier": "cosine", "drw_epoch": "defer"},
    "RW": {"loss": "balanced_ce", "loss_params": {"power": 1.0}},  # grid representations
    "RS": {"loss": "ce", "sampler": "class_balanced"},
}
#: Two-stage runs on the CE run: label -> registered method.
STAGE2 = {"cRT": "crt", "tau-norm": "tau_norm", "LWS": "lws"}
#: Main-table label -> row of ltbench.published.
MAIN_METHODS = {"CE": "CE (softmax)", "Mixup": "Mixup (alpha 1)", "CE-DRW": "CE-DRW", "CE-DRS": "CE-DRS",
                "LDAM-DRW": "LDAM-DRW",
                "cRT": "cRT (re-implementation)", "tau-norm": "tau-norm (re-implementation)",
                "LWS": "LWS (re-implementation)", "BBN": "BBN"}
REPS = ["CE", "RW", "RS"]
#: Grid classifier label -> registered stage-2 method.
CLASSIFIERS = {"CE": "stage2_ce", "RW": "stage2_rw", "RS": "stage2_rs"}
SAMPLER_VARIANTS = {"uniform": "instance", "balanced": "class_balanced", "reversed": "reversed"}
ADAPTOR_VARIANTS = {"0.5": "constant", "parabolic increment": "parabolic_increment", "linear decay": "linear_decay",
                    "cosine decay": "cosine_decay", "parabolic decay": "parabolic_decay"}


def bbn_label(sampler: str = "reversed", adaptor: str = "parabolic_decay") -> str:
    return "BBN" if (sampler, adaptor) == ("reversed", "parabolic_decay") else f"BBN-{sampler}-{adaptor}"


def settings(epochs: int, imbalance_ratios: Sequence[float], datasets: Sequence[str], grid_imbalance_ratio: float,
             ablation_dataset: str, crt_epochs: Optional[int], lws_epochs: Optional[int]) -> Dict[str, Any]:
    """The values the notebook derives from its parameters (and prints when they differ from the papers')."""
    return {
        "grid_ir": grid_imbalance_ratio if grid_imbalance_ratio in imbalance_ratios else imbalance_ratios[0],
        "ablation_dataset": ablation_dataset if ablation_dataset in datasets else (datasets[0] if datasets else None),
        "crt_epochs": min(30, epochs) if crt_epochs is None else crt_epochs,
        "lws_epochs": min(5, epochs) if lws_epochs is None else lws_epochs,
        "defer": min(epochs - 1, round(0.8 * epochs)),  # docs/methods.md §6: DRW / DRS from epoch 160 of 200 (0-based)
    }


def runs(datasets: Sequence[str] = ("cifar10", "cifar100"), imbalance_ratios: Sequence[float] = (100, 50, 10),
         seeds: Sequence[int] = (0,), epochs: int = 200, n_max: Optional[int] = None,
         test_per_class: Optional[int] = None, batch_size: int = 128, eval_every: int = 1, amp_cpu: bool = False,
         methods: Optional[Sequence[str]] = None, grid_imbalance_ratio: float = 50,
         ablation_dataset: str = "cifar10", run_grid: bool = True, run_ablations: bool = True,
         ablation_samplers: Optional[Sequence[str]] = None, ablation_adaptors: Optional[Sequence[str]] = None,
         crt_epochs: Optional[int] = None, lws_epochs: Optional[int] = None) -> List[PlannedRun]:
    """Every run of notebook 04 (see the module docstring for the sections)."""
    check_choice("methods", methods, MAIN_METHODS)
    check_choice("ablation_samplers", ablation_samplers, SAMPLER_VARIANTS)
    check_choice("ablation_adaptors", ablation_adaptors, ADAPTOR_VARIANTS)
    selected = list(MAIN_METHODS) if methods is None else list(methods)
    s = settings(epochs, imbalance_ratios, datasets, grid_imbalance_ratio, ablation_dataset, crt_epochs, lws_epochs)
    recipe = dict(epochs=epochs, n_max=n_max, test_per_class=test_per_class, batch_size=batch_size, eval_every=eval_every,
                  amp_cpu=amp_cpu)

    def stage1(label: str, ds: str, ir: float, seed: int):
        overrides = {k: (s["defer"] if v == "defer" else v) for k, v in STAGE1[label].items()}
        return joint_spec(common_config(ds, ir, seed, **recipe, **overrides))

    def stage2(method: str, s1, epochs_: Optional[int]):
        return stage_two_spec(s1, method, **({} if method == "tau_norm" else {"epochs": epochs_}))

    def bbn(ds: str, ir: float, seed: int, sampler: str = "reversed", adaptor: str = "parabolic_decay"):
        return bbn_spec(common_config(ds, ir, seed, **recipe), bbn_sampler=sampler, bbn_adaptor=adaptor)

    out: List[PlannedRun] = []
    g_ir = s["grid_ir"]
    for ds, ir, seed in grid(datasets, imbalance_ratios, seeds):
        for label in selected:
            if label in STAGE1:
                spec = stage1(label, ds, ir, seed)
            elif label == "Mixup":
                spec = mixup_spec(common_config(ds, ir, seed, **recipe), alpha=1.0)
            elif label in STAGE2:
                spec = stage2(STAGE2[label], stage1("CE", ds, ir, seed),
                              s["lws_epochs"] if label == "LWS" else s["crt_epochs"])
            else:
                spec = bbn(ds, ir, seed)
            out.append(planned(spec, label, NOTEBOOK, PAPER, "BBN Table 1", MAIN_METHODS[label], section="main"))
    if run_grid:
        for ds in datasets:
            for seed in seeds:
                for rep in REPS:
                    s1 = stage1(rep, ds, g_ir, seed)
                    out.append(planned(s1, rep, NOTEBOOK, PAPER, "BBN Fig. 2", section="grid-stage1", representation=rep))
                    for clf, method in CLASSIFIERS.items():
                        out.append(planned(stage2(method, s1, s["crt_epochs"]),
                                           f"grid-{rep}-features-{clf}-classifier", NOTEBOOK, PAPER, "BBN Fig. 2",
                                           section="grid", representation=rep, classifier=clf))
    if seeds:
        for ds in datasets:
            for ir in imbalance_ratios:
                out.append(planned(stage1("CE", ds, ir, seeds[0]), "CE", NOTEBOOK, PAPER, "tau-norm sweep",
                                   MAIN_METHODS["CE"], section="tau"))
    abl_ds = s["ablation_dataset"]
    if run_ablations and abl_ds is not None:
        variants = [("sampler", name, dict(sampler=v)) for name, v in SAMPLER_VARIANTS.items()
                    if ablation_samplers is None or name in ablation_samplers]
        variants += [("adaptor", name, dict(adaptor=v)) for name, v in ADAPTOR_VARIANTS.items()
                     if ablation_adaptors is None or name in ablation_adaptors]
        for kind, name, kw in variants:
            for seed in seeds:
                out.append(planned(bbn(abl_ds, g_ir, seed, **kw), bbn_label(**kw), NOTEBOOK, PAPER, "BBN Tables 3-4",
                                   f"BBN {kind} {name}", section="ablation", ablation=kind, variant=name))
    for ds in datasets:
        for seed in seeds:
            out.append(planned(bbn(ds, g_ir, seed), "BBN", NOTEBOOK, PAPER, "BBN branches", MAIN_METHODS["BBN"],
                               section="branches"))
    return out


# --------------------------------------------------------------------------------------------
# The notebook's computations

#: The ablation table's metric columns (:func:`ltbench.tables.method_table`).
ABLATION_METRICS = {"top1 last": "top1_last", "top1 best (test-picked)": "top1_best"}
#: BBN's choice in each ablation (Tables 3-4).
ABLATION_DEFAULTS = {"sampler": "reversed", "adaptor": "parabolic decay"}


def grid_frame(results: Sequence[TrainResult], grid_ir: float) -> "Any":
    """One row per grid run (section ``grid``): dataset, IR, seed, representation, classifier,
    the last-epoch top-1 and shot groups, and the top-1 of its stage-1 run."""
    import pandas as pd

    rows = []
    for r in select(results, section="grid"):
        ds, seed, rep = r.config["dataset"], r.config["seed"], r.meta["representation"]
        # A stage-1 run can be pending beside its finished stage 2 (its folder deleted, or a render
        # of a part-way store): the grid row stands, its stage-1 top-1 is unknown.
        s1 = select(results, section="grid-stage1", dataset=ds, seed=seed, representation=rep)
        rows.append({"dataset": ds, "IR": grid_ir, "seed": seed, "representation": rep,
                     "classifier": r.meta["classifier"], "top1": r.last.top1, "many": r.last.many,
                     "medium": r.last.medium, "few": r.last.few,
                     "stage1_top1": s1[0].last.top1 if s1 else float("nan")})
    return pd.DataFrame(rows)


def grid_matrix(grid_df: "Any", dataset: str) -> "Any":
    """The seed-mean top-1 of ``dataset``'s grid: representations (rows) x classifiers (columns)."""
    return grid_df[grid_df.dataset == dataset].pivot_table(index="representation", columns="classifier", values="top1",
                                                           aggfunc="mean").reindex(index=REPS, columns=list(CLASSIFIERS))


def grid_checks(grid_df: "Any") -> "Any":
    """BBN Fig. 2's two findings checked on the grid, one row per dataset, finding and case:
    (1) for a fixed classifier, CE features are best; (2) for fixed features, an RW or RS
    classifier beats a CE one. A case that needs a cell without a run (pending) has ``holds``
    None: it cannot be checked, rather than failing."""
    import pandas as pd

    def cells(values: Any) -> str:
        return ", ".join(f"{k} {v:.2f}" if v == v else f"{k} pending" for k, v in values.items())

    checks = []
    for ds in (grid_df["dataset"].unique() if not grid_df.empty else []):
        mat = grid_matrix(grid_df, ds)
        for clf in CLASSIFIERS:
            col = mat[clf]
            checks.append({"dataset": ds, "finding": "1: CE features best for a fixed classifier",
                           "case": f"{clf} classifier", "holds": None if col.isna().any() else bool(col.idxmax() == "CE"),
                           "detail": cells(col)})
        for rep in REPS:
            row = mat.loc[rep]
            holds = None if row.isna().any() else bool(max(row["RW"], row["RS"]) > row["CE"])
            checks.append({"dataset": ds, "finding": "2: RW/RS classifier beats CE for fixed features",
                           "case": f"{rep} features", "holds": holds, "detail": cells(row)})
    return pd.DataFrame(checks, columns=["dataset", "finding", "case", "holds", "detail"])


def table5(grid_df: "Any") -> "Any":
    """BBN Table 5 (CIFAR-100-IR50, error % -> accuracy) beside our grid's rows there, mean ± std
    over seeds per classifier ('-' when CIFAR-100 at IR50 did not run)."""
    import pandas as pd

    rows = []
    for rep in REPS:
        row = {"representation": rep, "published (BBN Table 5)": published(f"BBN Table 5 {rep}", "cifar100", 50)}
        sel = grid_df[(grid_df.dataset == "cifar100") & (grid_df.IR == 50) & (grid_df.representation == rep)] \
            if not grid_df.empty else grid_df
        for clf in CLASSIFIERS:
            row[f"ours, {clf} classifier"] = pm(sel[sel.classifier == clf]["top1"]) if len(sel) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def tau_frames(results: Sequence[TrainResult], store: RunStore, taus: Sequence[float], device: str = "auto",
               data_root: Optional[str] = None) -> Tuple["Any", "Any"]:
    """``(sweep, picks)``: the tau-norm sweep of each CE run of section ``tau`` (one row per
    dataset, IR and tau: test top-1 and shot groups, validation top-1), and per (dataset, IR) tau
    chosen on the validation split (None without one), on the test set (optimistic) and tau = 1."""
    import pandas as pd

    rows = []
    for r in select(results, section="tau"):
        ds, ir = r.config["dataset"], r.config["imbalance_ratio"]
        for d in tau_sweep(store.folder(r.meta["key"]), taus, device=device, data_root=data_root):
            rows.append({"dataset": ds, "IR": ir, **{k: d[k] for k in ("tau", "top1", "many", "medium", "few", "val_top1")}})
    sweep = pd.DataFrame(rows)
    picks = []
    for (ds, ir), s in (sweep.groupby(["dataset", "IR"], sort=False) if not sweep.empty else []):
        rows_ = s.to_dict("records")
        val_pick = select_tau(rows_)
        test_pick = max(rows_, key=lambda r_: r_["top1"])
        default = min(rows_, key=lambda r_: abs(r_["tau"] - 1.0))
        picks.append({"dataset": ds, "IR": ir,
                      "tau (val-picked)": None if val_pick is None else val_pick["tau"],
                      "test top-1 at val-picked tau": None if val_pick is None else val_pick["top1"],
                      "tau (test-picked, optimistic)": test_pick["tau"], "test top-1 at it": test_pick["top1"],
                      "test top-1 at tau = 1": default["top1"]})
    return sweep, pd.DataFrame(picks)


def ablation_runs(results: Sequence[TrainResult]) -> "Any":
    """One row per ablation run (``results_frame`` columns, with ``ablation``, ``variant`` and the
    paper's ``published error``, of which ``published`` is 100 minus)."""
    df = results_frame(select(results, section="ablation"))
    if df.empty:
        return df
    abl = select(results, section="ablation")
    df.insert(0, "ablation", [r.meta["ablation"] for r in abl])
    df.insert(1, "variant", [r.meta["variant"] for r in abl])
    df["published error"] = [published_row(f"BBN {k} {v}").error.get((ds, float(ir)))
                             for k, v, ds, ir in zip(df["ablation"], df["variant"], df["dataset"], df["IR"])]
    return df


def ablation_summary(abl_runs: "Any") -> "Any":
    """One row per ablation variant of :func:`ablation_runs`: ``mean`` (last-epoch top-1 over
    seeds) and ``published`` (None where the paper has no number)."""
    import pandas as pd

    if abl_runs.empty:
        return pd.DataFrame(columns=["ablation", "variant", "mean", "published"])
    g = abl_runs.groupby(["ablation", "variant"], sort=False)
    out = g["top1_last"].mean().rename("mean").reset_index()
    out["published"] = [next((float(v) for v in s if v is not None and v == v), None) for _, s in g["published"]]
    return out


def branches(results: Sequence[TrainResult], store: RunStore) -> List[Tuple[TrainResult, Dict[str, EvalResult]]]:
    """Each BBN run of section ``branches`` with its per-branch test metrics (combined model,
    conventional branch alone, re-balancing branch alone)."""
    return [(r, load_branches(store.folder(r.meta["key"]))) for r in select(results, section="branches")]


def branch_frame(branch_runs: Sequence[Tuple[TrainResult, Dict[str, EvalResult]]]) -> "Any":
    """One row per BBN run and prediction of :func:`branches`: top-1 and shot groups."""
    import pandas as pd

    def ir(v: float) -> Any:
        return int(v) if float(v).is_integer() else v

    return pd.DataFrame([{"dataset": r.config["dataset"], "IR": ir(r.config["imbalance_ratio"]), "seed": r.config["seed"],
                          "prediction": name, "top1": ev.top1, "many": ev.many, "medium": ev.medium, "few": ev.few}
                         for r, evs in branch_runs for name, ev in evs.items()])


#: What is known about a main-table claim that falls short at a compressed schedule, printed after its
#: line (``gain_findings`` ``context``).
SHORT_SCHEDULE_CONTEXT = {
    "Mixup": ("Read, not measured: mixup regularises and wants longer training; the BagofTricks-LT author "
              "doubles the schedule for it (400 epochs on CIFAR-LT, BagofTricks-LT issue #1). Whether the schedule "
              "explains ours shows at 200 epochs (the paper profile, queued)."),
}


def findings(checks: "Any", abl: "Any", df: "Any", grid_ir: float, ablation_dataset: Optional[str],
             epochs: Optional[int] = None) -> List[str]:
    """The conclusion's lines: BBN's two grid findings (``checks``, :func:`grid_checks`) per
    dataset; whether BBN's sampler and adaptor are the best of each ablation (``abl``,
    :func:`ablation_summary`); and each main-table method's gain over CE beside the published
    gain (``df``: ``results_frame`` of the main table)."""
    lines = []
    for (ds, finding), g in (checks.groupby(["dataset", "finding"], sort=False) if not checks.empty else []):
        cases = "; ".join(f"{c}: {d}" for c, d in zip(g["case"], g["detail"]))
        known = [bool(h) for h in g["holds"] if h is not None and h == h]
        if not known:
            lines.append(f"{ds}-IR{grid_ir:g}, finding {finding}: every case needs a pending run ({cases}) → "
                         f"{verdict(None)}.")
            continue
        unknown = len(g) - len(known)
        lines.append(f"{ds}-IR{grid_ir:g}, finding {finding}: true in {sum(known)} of {len(known)} cases"
                     + (f" ({unknown} more wait for pending runs)" if unknown else "") + f" ({cases}) → "
                     f"{verdict(all(known), partial=any(known) and not all(known))}.")
    for kind, default in ABLATION_DEFAULTS.items():
        a = abl[abl.ablation == kind] if not abl.empty else abl
        if len(a) < 2 or default not in set(a["variant"]):
            lines.append(f"BBN {kind} ablation: fewer than two variants (or no {default}) at this profile → cannot be checked.")
            continue
        best = a.loc[a["mean"].idxmax()]
        ours = float(a.loc[a["variant"] == default, "mean"].iloc[0])
        others = ", ".join(f"{v} {m:.2f}" for v, m in zip(a["variant"], a["mean"]) if v != default)
        lines.append(f"BBN {kind} ablation ({ablation_dataset}-IR{grid_ir:g}): {default} {ours:.2f} vs {others} → "
                     f"{default} best: {verdict(best['variant'] == default)}.")
    # Each method's gain over CE beside the published gain (docs/methods.md §2: compressed schedules).
    return lines + gain_findings(df, baseline="CE", epochs=epochs, context=SHORT_SCHEDULE_CONTEXT)
