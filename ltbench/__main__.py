"""Command line: ``python -m ltbench run ...`` / ``report ...`` / ``profiles ...``.

Heavy imports (papermill, pandas, matplotlib, torch) happen inside the subcommands so that
``--help`` and argument errors are instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ltbench.profiles import DEFAULT_PROFILE, PROFILES


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ltbench",
                                 description="Reproduce long-tailed recognition papers.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{run,report,profiles}")

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
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
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

    rep = sub.add_parser("report", help="collect metrics.json files into summary.csv, "
                         "README.md and figures/")
    rep.add_argument("--results", default="results", metavar="DIR",
                     help="results folder (default results)")

    prof = sub.add_parser("profiles", help="show the parameter overrides of a profile")
    prof.add_argument("--profile", default=None, help="one profile (default all)")
    return ap


#: ``--flag`` -> option of the submitit backend (ltbench.submit.SubmititOptions).
_SUBMITIT_FLAGS = {"cluster": "cluster", "partition": "partition", "gpus_per_job": "gpus_per_job",
                   "time_min": "time_min", "cpus_per_job": "cpus_per_job", "mem_gb": "mem_gb",
                   "array_parallelism": "array_parallelism"}


def _cmd_run(args: argparse.Namespace) -> int:
    from ltbench import runner

    backend_options = {opt: getattr(args, flag) for flag, opt in _SUBMITIT_FLAGS.items()
                       if getattr(args, flag) is not None}
    try:
        if backend_options and args.backend != "submitit":
            flags = ", ".join("--" + f.replace("_", "-") for f in backend_options)
            raise runner.ConfigError(f"only with --backend submitit: {flags} (got --backend {args.backend})")
        statuses = runner.run_batch(
            args.backend,
            profile=args.profile, only=args.only, seeds=args.seeds, force=args.force,
            results_dir=args.results, notebooks_dir=args.notebooks,
            overrides=runner.parse_assignments(args.param), kernel_name=args.kernel,
            progress=not args.no_progress, dry_run=args.dry_run, **backend_options,
        )
    except runner.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return runner.exit_code(statuses)


def _cmd_report(args: argparse.Namespace) -> int:
    from ltbench.report import write_report

    out = write_report(args.results)
    print(f"{out['runs']} runs in {out['groups']} configurations")
    print(f"wrote {out['summary_csv']}\nwrote {out['readme']}")
    for paths in out["figures"].values():
        for p in paths:
            print(f"wrote {p}")
    for w in out["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


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


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m ltbench`` and of the ``ltbench`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        return {"run": _cmd_run, "report": _cmd_report, "profiles": _cmd_profiles}[
            args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
