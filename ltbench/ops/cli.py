"""``python -m ltbench.ops {carry,restore,snapshot,smoke,pack,import,tree-size}``: each step of
the GPU session from the command line (``tools/gpu_session.sh``, ``make carry``, ``python -m
ltbench import``). Exit 0: done; 1: the smoke check failed; 2: bad input (ValueError, OSError);
3: an import refused a conflicting run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..io import atomic_write_json
from ..runner import parse_assignments
from ._common import DEFAULT_OVERRIDES, DEFAULT_SEEDS, MIB, _fmt_mib
from .carry import make_carry, restore_carry, snapshot, tree_size
from .imports import ImportConflict, import_packs
from .packs import pack
from .smoke import SMOKE_GRACE_S, _smoke_one_mode, smoke_check, smoke_specs

#: The first line of the argparse description (the package's summary).
DESCRIPTION = "The GPU session: what travels to a lent GPU machine, the checks run there, what comes back."


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    return {**DEFAULT_OVERRIDES, **parse_assignments(items)}


def _selection(p: argparse.ArgumentParser) -> None:
    """The run selection's options (profile, results, seeds, parameters, notebooks)."""
    p.add_argument("--profile", default="paper")
    p.add_argument("--results", default="results")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    p.add_argument("-p", "--param", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="notebook parameter overrides (default datasets=[\"cifar10\"])")
    p.add_argument("--notebooks", default="notebooks")


def _add_gpu_side(sub: Any) -> None:
    """The subcommands run on the GPU machine: restore, snapshot, smoke (and its smoke-one)."""
    r = sub.add_parser("restore", help="restore .carry/state into the run store (and --snapshot it)")
    r.add_argument("--profile", default="paper")
    r.add_argument("--results", default="results")
    r.add_argument("--carry", default=".carry")
    r.add_argument("--snapshot", default=None, help="then write the store's snapshot (JSON) here")

    s = sub.add_parser("snapshot", help="record the run store before the session")
    s.add_argument("--profile", default="paper")
    s.add_argument("--results", default="results")
    s.add_argument("--out", required=True)

    sm = sub.add_parser("smoke", help="every method for 2 epochs, eager and compiled")
    sm.add_argument("--device", default="auto")
    sm.add_argument("--budget", type=float, default=90.0)
    sm.add_argument("--modes", default="eager,compile")
    sm.add_argument("--out", default=None)
    sm.add_argument("--grace", type=float, default=SMOKE_GRACE_S, help="seconds after the budget before a kill")

    one = sub.add_parser("smoke-one", help=argparse.SUPPRESS)
    one.add_argument("--mode", required=True)
    one.add_argument("--device", required=True)
    one.add_argument("--budget", type=float, required=True)
    one.add_argument("--out", required=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ltbench.ops", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("carry", help="build .carry/ for a GPU session (make carry)")
    _selection(c)
    c.add_argument("--carry", default=".carry")
    c.add_argument("--data-root", default=None, help="folder holding cifar10/ (default $LTBENCH_DATA)")
    c.add_argument("--force-data", action="store_true", help="rebuild cifar10.tgz")
    c.add_argument("--limit-mib", type=float, default=64.0)

    _add_gpu_side(sub)

    pk = sub.add_parser("pack", help="pack the session's results into OUT")
    _selection(pk)
    pk.add_argument("--out", required=True)
    pk.add_argument("--before", default=None, help="snapshot JSON of the session's start")
    pk.add_argument("--logs", default=None)
    pk.add_argument("--bench", default=None)
    pk.add_argument("--extra", default=None, help="JSON file merged into manifest.json")
    pk.add_argument("--no-runs", action="store_true", help="pack no run (the logs and the benchmark only)")

    im = sub.add_parser("import", help="merge returned files into results/<profile>/")
    im.add_argument("files", nargs="+")
    im.add_argument("--results", default="results")
    im.add_argument("--dry-run", action="store_true")

    ts = sub.add_parser("tree-size", help="bytes of the working tree a device run copies")
    ts.add_argument("root", nargs="?", default=".")
    return ap


def _json_file(path: Optional[str]) -> Optional[Any]:
    """The JSON in ``path``, None when no path is given or there is no such file."""
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def _run(args: argparse.Namespace) -> int:
    """Run one parsed subcommand; its exit status (errors propagate to :func:`main`)."""
    if args.cmd == "carry":
        make_carry(args.profile, args.results, args.carry, args.data_root, args.seeds, _overrides(args.param),
                   limit_bytes=int(args.limit_mib * MIB), force_data=args.force_data, notebooks=args.notebooks)
    elif args.cmd == "restore":
        restore_carry(args.carry, args.results, args.profile)
        if args.snapshot:
            atomic_write_json(args.snapshot, snapshot(args.results, args.profile))
    elif args.cmd == "snapshot":
        atomic_write_json(args.out, snapshot(args.results, args.profile))
    elif args.cmd == "smoke":
        rep = smoke_check(args.device, args.budget, [m for m in args.modes.split(",") if m], args.out, args.grace)
        return 0 if rep["ok"] else 1
    elif args.cmd == "smoke-one":
        _smoke_one_mode(args.mode, args.device, args.budget, smoke_specs(), args.out)
    elif args.cmd == "pack":
        before, extra = _json_file(args.before), _json_file(args.extra)
        pack(args.profile, args.results, args.out, before, args.logs, args.bench, args.seeds,
             _overrides(args.param), args.notebooks, extra=extra, runs=not args.no_runs)
    elif args.cmd == "import":
        import_packs(args.files, args.results, args.dry_run)
    elif args.cmd == "tree-size":
        n = tree_size(args.root)
        print(f"{n} bytes ({_fmt_mib(n)})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status (2: bad input, 3: a refused conflicting import)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ImportConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
