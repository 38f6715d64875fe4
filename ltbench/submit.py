"""Batch runs through submitit: one job per notebook as a SLURM job array, or local processes.

``python -m ltbench run --backend submitit [--cluster auto|slurm|local] [--partition P]
[--gpus-per-job N] [--time-min M] [--cpus-per-job C] [--mem-gb G] [--array-parallelism K]``

Everything the local backend checks is checked before anything is submitted (profile, notebook
names, every override against each notebook's ``parameters`` cell, the results folder, the
kernel: :func:`ltbench.runner.plan_runs`). Completed notebooks are skipped with the same
completion markers; the others become one job each (:class:`NotebookJob`), which runs the very
function the local backend runs (:func:`ltbench.runner._execute`), so a job writes exactly the
local layout under ``results/<profile>/<notebook>/`` (executed notebook, ``run.log``,
``completed.json``, the notebook's own ``runs/``). A failing notebook does not stop the others;
the end-of-batch summary is the local one, with a crashed job (killed, out of memory, over its
time limit) reported as failed with its submitit log. A re-run resumes: finished notebooks are
skipped and unfinished ones restart, resuming each training run from its ``checkpoint.pt``.

Clusters (:data:`CLUSTERS`): ``slurm`` submits a job array through submitit's ``AutoExecutor``
(``--array-parallelism`` caps how many tasks run at once); ``local`` uses submitit's
``LocalExecutor`` (each notebook in its own process, ``--array-parallelism`` of them at a time,
default 1); ``auto`` is ``slurm`` where ``srun`` exists, else ``local``. A SLURM job that reaches
its time limit or is preempted is requeued by submitit (``NotebookJob`` is checkpointable) and
picks up where its training runs stopped. submitit's own files (pickled jobs, stdout/stderr)
go to ``results/<profile>/.submitit/``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import submitit

from ltbench import runner
from ltbench.profiles import DEFAULT_PROFILE
from ltbench.registry import Registry
from ltbench.runner import (DEFAULT_KERNEL, FAILED, INTERRUPTED, PENDING, SKIPPED, ConfigError, RunStatus,
                            _Planned)

__all__ = ["CLUSTERS", "SubmititOptions", "NotebookJob", "resolve_cluster", "run_notebooks_submitit"]

LOG_FOLDER = ".submitit"


def _slurm_available() -> bool:
    from submitit.slurm.slurm import SlurmExecutor

    return SlurmExecutor.affinity() > 0


def _slurm() -> str:
    if not _slurm_available():
        raise ConfigError("--cluster slurm: no SLURM here (no 'srun' on PATH); use --cluster local or auto")
    return "slurm"


#: ``--cluster`` value -> function giving submitit's executor name (raising ConfigError if unusable).
CLUSTERS: Registry[str] = Registry("cluster", "cluster")
CLUSTERS.register("slurm")(_slurm)
CLUSTERS.register("local")(lambda: "local")
CLUSTERS.register("auto")(lambda: "slurm" if _slurm_available() else "local")


def resolve_cluster(name: str) -> str:
    """submitit's executor name for ``--cluster name`` (``auto`` -> ``slurm`` if available, else ``local``)."""
    if name not in CLUSTERS:
        raise ConfigError(f"unknown cluster: cluster={name!r}; valid: {', '.join(CLUSTERS.names())}")
    return CLUSTERS.get(name)()


@dataclass
class SubmititOptions:
    """Resources of each job. ``gpus_per_job``: ``None`` = 1 on SLURM; on the local cluster every
    GPU this process sees (submitit's local executor hides the others from the job).
    ``array_parallelism``: tasks running at once (SLURM: ``--array=...%K``; local: default 1)."""

    cluster: str = "auto"
    partition: Optional[str] = None
    gpus_per_job: Optional[int] = None
    cpus_per_job: Optional[int] = None
    mem_gb: Optional[float] = None
    time_min: int = 240
    array_parallelism: Optional[int] = None
    log_dir: Optional[str] = None
    poll_s: float = 2.0

    def validate(self) -> "SubmititOptions":
        def need(ok: bool, flag: str, value: Any, valid: str) -> None:
            if not ok:
                raise ConfigError(f"invalid {flag} {value!r}: must be {valid}")

        def is_int(v: Any, lo: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        need(isinstance(self.cluster, str), "--cluster", self.cluster, f"one of {', '.join(CLUSTERS.names())}")
        need(self.partition is None or (isinstance(self.partition, str) and self.partition.strip() != ""),
             "--partition", self.partition, "a SLURM partition name")
        need(self.gpus_per_job is None or is_int(self.gpus_per_job, 0), "--gpus-per-job", self.gpus_per_job,
             "an int >= 0")
        need(self.cpus_per_job is None or is_int(self.cpus_per_job, 1), "--cpus-per-job", self.cpus_per_job,
             "a positive int")
        need(self.mem_gb is None or (isinstance(self.mem_gb, (int, float)) and not isinstance(self.mem_gb, bool)
                                     and self.mem_gb > 0), "--mem-gb", self.mem_gb, "a positive number")
        need(is_int(self.time_min, 1), "--time-min", self.time_min, "a positive number of minutes")
        need(self.array_parallelism is None or is_int(self.array_parallelism, 1), "--array-parallelism",
             self.array_parallelism, "a positive int")
        need(isinstance(self.poll_s, (int, float)) and self.poll_s > 0, "poll_s", self.poll_s, "a positive number")
        return self


class NotebookJob(submitit.helpers.Checkpointable):
    """One array task: execute one planned notebook exactly as the local backend does.

    Checkpointable: when SLURM preempts the job or its time limit nears, submitit requeues the
    same call; the notebook then resumes through its runs' ``checkpoint.pt`` files.
    """

    def __call__(self, plan: _Planned, kernel_name: str, profile: str, env: Mapping[str, str]) -> RunStatus:
        os.environ.update(env)
        return runner._execute(plan, kernel_name, False, profile)


def _job_env(results_dir: Path, profile: str) -> Dict[str, str]:
    """Environment the jobs need beyond their inherited one: ``ltbench`` importable (PYTHONPATH).
    Runs are shared between jobs through the profile's run store (``store_dir``, set per notebook)."""
    root = str(Path(__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([root] + ([old] if old else []))}


def _local_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() != ""])
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch / no driver: no GPU
        return 0


def _executor(cluster: str, folder: Path, profile: str, opts: SubmititOptions) -> Any:
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    gpus = opts.gpus_per_job if opts.gpus_per_job is not None else (1 if cluster == "slurm" else _local_gpus())
    params: Dict[str, Any] = dict(name=f"ltbench-{profile}", timeout_min=opts.time_min, gpus_per_node=gpus,
                                  nodes=1, tasks_per_node=1, cpus_per_task=opts.cpus_per_job, mem_gb=opts.mem_gb)
    if cluster == "slurm":
        params.update(slurm_partition=opts.partition, slurm_array_parallelism=opts.array_parallelism)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _crashed(plan: _Planned, job: Any, exc: BaseException, seconds: float) -> RunStatus:
    """Status of a job that ended without returning one (killed, out of memory, time limit)."""
    first = str(exc).strip().splitlines()
    why = first[0] if first else type(exc).__name__
    log = Path(job.paths.stderr) if getattr(job, "paths", None) is not None else None
    return RunStatus(plan.stem, FAILED, seconds, plan.run_dir, log if log and log.exists() else plan.run_dir / runner.LOG,
                     plan.parameters, f"job {job.job_id} failed: {type(exc).__name__}: {why}")


def run_notebooks_submitit(
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
    options: Optional[SubmititOptions] = None,
    **option_fields: Any,
) -> List[RunStatus]:
    """:func:`ltbench.runner.run_notebooks` with each notebook executed as a submitit job.

    Same arguments and return value as the local backend, plus :class:`SubmititOptions` (as
    ``options`` or as its fields: ``cluster``, ``partition``, ``gpus_per_job``, ``time_min``, ...).
    Raises :class:`ltbench.runner.ConfigError` before submitting anything if something is invalid.
    """
    if options is None:
        valid = [f for f in SubmititOptions.__dataclass_fields__]
        unknown = sorted(set(option_fields) - set(valid))
        if unknown:
            raise ConfigError(f"unknown submitit option(s) {unknown}; valid: {', '.join(valid)}")
        options = SubmititOptions(**option_fields)
    elif option_fields:
        raise ConfigError("give either options=SubmititOptions(...) or its fields, not both")
    opts = options.validate()
    plans = runner.plan_runs(profile, only, seeds, results_dir, notebooks_dir, overrides)
    cluster = resolve_cluster(opts.cluster)
    warning = runner.check_kernel(kernel_name)
    say: Callable[..., None] = print if verbose else (lambda *a, **k: None)
    if warning:
        say(warning, file=sys.stderr)
    if opts.partition and cluster != "slurm":
        say(f"note: --partition {opts.partition} is ignored on the {cluster} cluster", file=sys.stderr)

    n = len(plans)
    statuses: Dict[int, RunStatus] = {}
    todo: List[Tuple[int, _Planned]] = []
    for i, plan in enumerate(plans):
        done, why = runner.completion_state(plan)
        head = f"[{i + 1}/{n}] {plan.stem}"
        if done and not force:
            say(f"{head}: skipped (complete; --force re-runs) -> {runner._rel(plan.run_dir)}")
            statuses[i] = RunStatus(plan.stem, SKIPPED, 0.0, plan.run_dir, plan.run_dir / f"{plan.stem}.ipynb",
                                    plan.parameters)
        elif dry_run:
            say(f"{head}: would submit to {cluster} ({'forced' if done else why}) with {plan.parameters}")
            statuses[i] = RunStatus(plan.stem, PENDING, 0.0, plan.run_dir, None, plan.parameters)
        else:
            todo.append((i, plan))
    if todo:
        results = Path(results_dir).resolve()
        folder = Path(opts.log_dir).resolve() if opts.log_dir else results / profile / LOG_FOLDER
        executor = _executor(cluster, folder, profile, opts)
        env = _job_env(results, profile)
        statuses.update(_submit_and_wait(executor, cluster, todo, kernel_name, profile, env, opts, say, n))
    ordered = [statuses[i] for i in range(n)]
    say(runner.format_summary(ordered))
    return ordered


def _submit_and_wait(executor: Any, cluster: str, todo: List[Tuple[int, _Planned]], kernel_name: str, profile: str,
                     env: Dict[str, str], opts: SubmititOptions, say: Callable[..., None],
                     n: int) -> Dict[int, RunStatus]:
    """Submit ``todo`` (SLURM: one array; local: at most ``array_parallelism`` processes at a time)
    and collect a status per notebook as jobs finish."""
    # Absolute notebook paths: a job may start in another working directory.
    todo = [(i, _Planned(p.stem, p.path.resolve(), p.parameters, p.run_dir, p.sha256)) for i, p in todo]
    pending = list(todo)
    running: Dict[int, Tuple[_Planned, Any, float]] = {}
    out: Dict[int, RunStatus] = {}
    limit = len(todo) if cluster == "slurm" else (opts.array_parallelism or 1)

    def submit(batch: List[Tuple[int, _Planned]]) -> None:
        job_fn = NotebookJob()
        with runner._kernel_can_import_ltbench():  # the job processes inherit PYTHONPATH too
            if len(batch) == 1:
                jobs = [executor.submit(job_fn, batch[0][1], kernel_name, profile, env)]
            else:
                jobs = executor.map_array(job_fn, [p for _, p in batch], [kernel_name] * len(batch),
                                          [profile] * len(batch), [env] * len(batch))
        for (i, plan), job in zip(batch, jobs):
            running[i] = (plan, job, time.monotonic())
            say(f"[{i + 1}/{n}] {plan.stem}: submitted as {cluster} job {job.job_id} -> {runner._rel(plan.run_dir)}",
                flush=True)

    try:
        while pending or running:
            free = limit - len(running)
            if pending and free > 0:
                batch, pending = pending[:free], pending[free:]
                submit(batch)
            finished = [i for i, (_, job, _) in running.items() if job.done()]
            for i in finished:
                plan, job, t0 = running.pop(i)
                try:
                    st = job.result()
                    if not isinstance(st, RunStatus):
                        raise TypeError(f"job returned {type(st).__name__}, not a RunStatus")
                except Exception as exc:  # noqa: BLE001 - a crashed job is one failed notebook
                    st = _crashed(plan, job, exc, time.monotonic() - t0)
                out[i] = st
                say(f"[{i + 1}/{n}] {plan.stem}: {st.status} in {st.seconds:.1f} s"
                    + (f" -- {st.error}; see {runner._rel(st.executed)}" if st.error else ""), flush=True)
            if running and not finished:
                time.sleep(opts.poll_s)
    except KeyboardInterrupt:
        for i, (plan, job, _) in running.items():
            job.cancel(check=False)
            out[i] = RunStatus(plan.stem, INTERRUPTED, 0.0, plan.run_dir, None, plan.parameters,
                               f"interrupted; job {job.job_id} cancelled")
        for i, plan in pending:
            out[i] = RunStatus(plan.stem, INTERRUPTED, 0.0, plan.run_dir, None, plan.parameters, "interrupted")
        say(runner.format_summary([out[i] for i in sorted(out)]))
        raise
    return out
