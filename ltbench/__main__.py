"""Command line: ``python -m ltbench {plan, execute, run, report, import, methods, profiles}``.

``plan`` lists a profile's unique training runs, ``execute`` trains the pending ones (tier order,
workers, deadline), ``run`` executes the notebooks (which then only render), ``report`` collects
everything into ``results/README.md``.

Heavy imports (papermill, pandas, matplotlib, torch) happen inside the subcommands so that
``--help`` and argument errors are instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from ltbench.profiles import DEFAULT_PROFILE, PROFILES


def _runs_args(p: argparse.ArgumentParser) -> None:
    """The arguments plan and execute share (which runs)."""
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"parameter profile ({', '.join(PROFILES)}; default {DEFAULT_PROFILE})")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                   help="notebooks whose runs to include (stem or unique prefix such as 04); default all")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds=list(range(N)) for every notebook")
    p.add_argument("-p", "--param", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override a notebook parameter as for `run` (e.g. -p 'datasets=[\"cifar10\"]')")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default results)")
    p.add_argument("--notebooks", default="notebooks", metavar="DIR", help="notebooks folder (default notebooks)")


def _add_plan_execute(sub: Any) -> None:
    pl = sub.add_parser("plan", help="list a profile's unique runs with tier, cost and status",
                        description="List the unique training runs of every notebook of a profile (shared runs "
                        "once, dependencies included) with tier (0 baselines, 1 published cells, 2 the rest), "
                        "estimated cost in image-passes and status (done / partial / pending).")
    _runs_args(pl)
    pl.add_argument("--json", action="store_true", help="print the plan as a JSON list")

    ex = sub.add_parser("execute", help="train a profile's pending runs (tier order, workers, deadline)",
                        description="Train the pending runs of a profile in tier order, dependencies first. At "
                        "the deadline each worker finishes its epoch, checkpoints and stops; run again to resume.")
    _runs_args(ex)
    ex.add_argument("--tiers", default=None, metavar="T,T", help="tiers to train, e.g. 0,1 (default all)")
    ex.add_argument("--deadline", type=float, metavar="SECONDS", help="stop starting epochs after this many seconds")
    ex.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes (default 1)")
    ex.add_argument("--threads", type=int, metavar="N", help="torch threads per worker (default CPUs / K)")
    ex.add_argument("--device", default="auto", help="device of every run: auto (default), cpu, cuda, cuda:N")
    ex.add_argument("--compile", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the model: auto (default: on for CPU and CUDA where the trainer allows "
                         "it), on (bare --compile), off")
    ex.add_argument("--fast", nargs="?", const="graph", default=None, choices=["static", "graph"],
                    help="the fast path (an execution option): padded static shapes, and with 'graph' (the "
                    "default of a bare --fast) forward+loss+backward+SGD compiled as one graph, CUDA graphs on CUDA")
    ex.add_argument("--pack", type=int, default=1, metavar="K",
                    help="train up to K compatible runs (joint runs of one recipe) as one packed network "
                    "(default 1: no packing); with --fast graph the packed step is compiled")
    ex.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default $LTBENCH_DATA, else ./data)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")



def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run", help="execute the notebooks with papermill into RESULTS/<profile>/<notebook>/",
        description="Execute notebooks with papermill. Every parameter is validated against "
        "each notebook's 'parameters' cell before anything runs; completed notebooks are "
        "skipped unless --force; one failing notebook does not stop the others.")
    run.add_argument("--profile", default=DEFAULT_PROFILE,
                     help=f"parameter profile ({', '.join(PROFILES)}; default {DEFAULT_PROFILE}); "
                     "see ltbench/profiles.py")
    run.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                     help="notebooks to run (stem, file name or unique prefix such as 01; "
                     "comma-separated or repeated); default all")
    run.add_argument("--seeds", type=int, metavar="N", help="pass seeds=list(range(N))")
    run.add_argument("--force", action="store_true", help="re-run notebooks already complete")
    run.add_argument("--results", default="results", metavar="DIR",
                     help="results folder (default results)")
    run.add_argument("--notebooks", default="notebooks", metavar="DIR",
                     help="folder of the notebooks (default notebooks)")
    run.add_argument("-p", "--param", nargs="+", action="extend", default=[],
                     metavar="KEY=VALUE",
                     help="override a parameter for every selected notebook, or for one with "
                     "NOTEBOOK:KEY=VALUE; VALUE is a Python literal or YAML "
                     "(e.g. -p epochs=5 'imbalance_ratios=[100, 10]' 01:batch_size=64)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel (default python3)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate and show what would run, execute nothing")
    run.add_argument("--no-train", action="store_true",
                     help="train nothing: render the runs already in the store and list the rest as pending "
                     "(-p train_missing=False for every notebook that has it; a harvest's progress so far)")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    run.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                     help="stop a notebook whose cell runs longer than this (default 12 h)")
    run.add_argument("--backend", default="local", metavar="NAME",
                     help="where notebooks execute: local (this process, default) or submitit (one job per "
                     "notebook: a SLURM job array, or local processes without SLURM); see ltbench/submit.py")
    sub_opts = run.add_argument_group("submitit backend options (with --backend submitit)")
    sub_opts.add_argument("--cluster", metavar="{auto,slurm,local}",
                          help="auto (default: slurm where srun exists, else local), slurm or local")
    sub_opts.add_argument("--partition", metavar="P", help="SLURM partition")
    sub_opts.add_argument("--gpus-per-job", type=int, metavar="N",
                          help="GPUs per job (default: 1 on SLURM, every visible GPU locally)")
    sub_opts.add_argument("--time-min", type=int, metavar="M", help="time limit per job in minutes (default 240)")
    sub_opts.add_argument("--cpus-per-job", type=int, metavar="C", help="CPU cores per job")
    sub_opts.add_argument("--mem-gb", type=float, metavar="G", help="memory per job in GB")
    sub_opts.add_argument("--array-parallelism", type=int, metavar="K",
                          help="jobs running at once (SLURM array limit; local default 1)")



def _add_report_import_profiles(sub: Any) -> None:
    rep = sub.add_parser("report", help="collect metrics.json files into summary.csv, "
                         "README.md and figures/")
    rep.add_argument("--results", default="results", metavar="DIR",
                     help="results folder (default results)")

    imp = sub.add_parser("import", help="merge the files a GPU session returned into RESULTS/<profile>/",
                         description="Merge the run packs of a GPU session (tools/gpu_session.sh: runs*.tgz, "
                         "weights*.tgz, manifest.json) into RESULTS/<profile>/runs/ (profile from the packs). A "
                         "finished run that differs from one already here is refused (its folder unchanged, the others "
                         "imported, exit 3); "
                         "identical ones are accepted; partial runs' resume state is kept for the next session.")
    imp.add_argument("files", nargs="+", metavar="FILE", help="files of the session's $OUT")
    imp.add_argument("--results", default="results", metavar="DIR", help="results folder (default results)")
    imp.add_argument("--dry-run", action="store_true", help="say what would be imported, change nothing")

    prof = sub.add_parser("profiles", help="show the parameter overrides of a profile")
    prof.add_argument("--profile", default=None, help="one profile (default all)")


def _add_compare(sub: Any) -> None:
    cmp = sub.add_parser(
        "compare", help="your loss or training step against the baselines (CE, balanced CE, CB focal, LDAM-DRW, cRT, BBN) "
        "from the store",
        description="Train your loss, or your Trainer subclass (a class in your own file or module), on the "
        "profile's CE recipe and seeds, "
        "load the profile's baselines from its store (never retrained unless --train-baselines) and write the "
        "table, the per-class figure and a verdict per baseline to RESULTS/<profile>/compare/<name>/ "
        "(docs/your_method.md).")
    cmp.add_argument("--method", required=True, metavar="FILE.py:NAME",
                     help="your method: 'path/to/file.py:ClassName' or 'module:ClassName' (a LossBase subclass, "
                     "or a Trainer subclass for a training step)")
    cmp.add_argument("--param", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                     help="its constructor arguments (e.g. --param tau=1.0); part of the runs' identity")
    cmp.add_argument("--name", default=None, help="its name in the table (default: the class name with the parameters)")
    cmp.add_argument("--profile", default=DEFAULT_PROFILE, help=f"profile ({', '.join(PROFILES)})")
    cmp.add_argument("--seeds", type=int, metavar="N", help="seeds=list(range(N)) (default: the profile's)")
    cmp.add_argument("--results", default="results", metavar="DIR", help="results folder (default results)")
    cmp.add_argument("--notebooks", default="notebooks", metavar="DIR", help="notebooks folder (default notebooks)")
    cmp.add_argument("--device", default="auto", help="device of your runs: auto (default), cpu, cuda")
    cmp.add_argument("--train-baselines", action="store_true", help="train the baselines missing from the store")


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ltbench",
                                 description="Reproduce long-tailed recognition papers.")
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{plan,execute,run,report,import,methods,profiles,compare}")
    _add_plan_execute(sub)
    listing = sub.add_parser("methods", help="list the registered training methods, or losses, samplers, models, "
                             "schedules (one line each, with what installed plugins register)")
    listing.add_argument("kind", nargs="?", default="methods", choices=["methods", "losses", "samplers", "models",
                                                                         "schedules"])
    _add_run(sub)
    _add_report_import_profiles(sub)
    _add_compare(sub)
    return ap


#: ``--flag`` -> option of the submitit backend (ltbench.submit.SubmititOptions).
_SUBMITIT_FLAGS = {"cluster": "cluster", "partition": "partition", "gpus_per_job": "gpus_per_job",
                   "time_min": "time_min", "cpus_per_job": "cpus_per_job", "mem_gb": "mem_gb",
                   "array_parallelism": "array_parallelism"}


def _parse_tiers(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(f"unknown tier {part!r} in --tiers {text!r}: valid tiers are 0, 1, 2") from None
    return out


def _cmd_plan(args: argparse.Namespace) -> int:
    import json

    from ltbench import executor, runner

    try:
        entries = executor.plan(args.profile, args.results, args.seeds, args.only,
                                runner.parse_assignments(args.param), args.notebooks)
    except (runner.ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
    else:
        print(executor.format_plan(entries, args.profile))
    return 0


def _cmd_execute(args: argparse.Namespace) -> int:
    from ltbench import executor, runner

    try:
        report = executor.execute(
            args.profile, args.results, tiers=_parse_tiers(args.tiers), deadline=args.deadline,
            workers=args.workers, seeds=args.seeds, only=args.only, overrides=runner.parse_assignments(args.param),
            notebooks_dir=args.notebooks, device=args.device, data_root=args.data_root,
            progress=False if args.no_progress else "auto", threads=args.threads, compile={"on": True, "off": False}.get(args.compile, "auto"),
            fast=args.fast or False, pack=args.pack)
    except (runner.ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if report.failed else 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from ltbench.losses import LOSSES
    from ltbench.models import MODELS
    from ltbench.runs import METHODS
    from ltbench.samplers import SAMPLERS
    from ltbench.schedules import SCHEDULES

    registry = {"methods": METHODS, "losses": LOSSES, "samplers": SAMPLERS, "models": MODELS,
                "schedules": SCHEDULES}[args.kind]
    print("\n".join(registry.table()))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ltbench import batch, runner

    backend_options = {opt: getattr(args, flag) for flag, opt in _SUBMITIT_FLAGS.items()
                       if getattr(args, flag) is not None}
    try:
        if backend_options and args.backend != "submitit":
            flags = ", ".join("--" + f.replace("_", "-") for f in backend_options)
            raise runner.ConfigError(f"only with --backend submitit: {flags} (got --backend {args.backend})")
        only, overrides = args.only, runner.parse_assignments(args.param)
        if args.no_train:
            only, no_train, left_out = runner.no_train_selection(args.only, args.notebooks)
            for stem in left_out:
                print(f"--no-train: {stem} left out (no '{runner.TRAIN_MISSING}' parameter: it renders only "
                      "with its runs trained)")
            overrides = {**no_train, **overrides}
        statuses = batch.run_batch(
            args.backend,
            profile=args.profile, only=only, seeds=args.seeds, force=args.force,
            results_dir=args.results, notebooks_dir=args.notebooks,
            overrides=overrides, kernel_name=args.kernel,
            progress=not args.no_progress, dry_run=args.dry_run, **backend_options,
            **({"cell_timeout": args.cell_timeout} if args.cell_timeout is not None else {}),
        )
    except runner.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return runner.exit_code(statuses)


def _cmd_report(args: argparse.Namespace) -> int:
    from ltbench.report import write_report

    try:
        out = write_report(args.results)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out['runs']} runs in {out['groups']} configurations")
    print(f"wrote {out['summary_csv']}\nwrote {out['readme']}")
    for paths in out["figures"].values():
        for p in paths:
            print(f"wrote {p}")
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from ltbench.ops import main as session_main

    # One implementation (exit 3: a refused conflicting run, 2: bad input): ltbench.ops'.
    return session_main(["import", *args.files, "--results", args.results, *(["--dry-run"] if args.dry_run else [])])


def _cmd_profiles(args: argparse.Namespace) -> int:
    import json

    from ltbench.profiles import check_profile

    names = [args.profile] if args.profile else list(PROFILES)
    try:
        for n in names:
            check_profile(n)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for n in names:
        print(f"[{n}]")
        for stem, params in PROFILES[n].items():
            print(f"  {stem}: {json.dumps(params)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ltbench import compare, runner

    try:
        result = compare.compare(args.method, runner.parse_assignments(args.param), args.profile, args.seeds,
                                 args.results, args.notebooks, args.name, args.train_baselines, args.device)
    except (runner.ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table.to_string(index=False))
    for v in result.verdicts:
        print(f"- {v}")
    for f in result.files:
        print(f"wrote {f}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m ltbench`` and of the ``ltbench`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        return {"plan": _cmd_plan, "execute": _cmd_execute, "methods": _cmd_methods, "run": _cmd_run,
                "report": _cmd_report, "import": _cmd_import, "profiles": _cmd_profiles,
                "compare": _cmd_compare}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
