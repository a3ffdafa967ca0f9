"""`hydra/launcher=batched`: the jobs of a multirun that can train in lockstep train as one model.

A BIMT network is so small that K replicas trained with batched tensors cost little more than one.
This launcher prepares every job as Hydra's basic launcher does (its own directory, with `.hydra/`
holding its config and overrides), validating each once, groups the jobs that differ only in seed,
train type and lambda0 (the same task, model, rest of the schedule, steps, optimizer, relocation,
device and engine: `bimt.experiment.schema.group_identity`), trains each group of at most
`max_group` jobs as one batched model, and writes into every job's directory exactly what a single
run writes. A job whose config is invalid or whose loss diverges fails alone; the sweep then ends
with a non-zero exit code, after every other job has finished.

    python train.py -m hydra/launcher=batched task=independence train_type=1,2,3,4,5 'seed=range(10)'

`hydra/sweeper=deferred` is Hydra's basic sweeper without its up-front composition of every job's
config: this launcher composes each job anyway (in its worker processes, when `n_jobs` > 1), and a
job that does not compose fails the sweep there, before anything trains, as in the sweeper. On a
large sweep that saves a serial tenth of a second per job (15 s of the 150-job ablation preset).
"""


import json
import logging
import multiprocessing
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from bimt.experiment.cli import JobFailed, fail
from bimt.experiment.objective import objective_value
from bimt.experiment.outcome import outcome
from bimt.experiment.run import run_group
from bimt.experiment.rundir import checkpoint_step, config_for_run_dir, read_metrics, read_status
from bimt.experiment.schema import RunConfig, group_identity
from bimt.experiment.validate import ConfigError, load_config, validate
from bimt.training import Status

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.bimt_launchers.batched.BatchedLauncher"
    max_group: int = 256  # most jobs trained together in one model
    n_jobs: int = 1  # groups trained at once, each in a process of its own (e.g. one per core)


@dataclass
class SweeperConf:
    _target_: str = "hydra_plugins.bimt_launchers.batched.Sweeper"
    max_batch_size: Optional[int] = None  # as the basic sweeper's: jobs handed to the launcher at once
    params: Optional[dict[str, str]] = None
    compose_every_job_first: bool = True  # false: leave it to the batched launcher (it composes each job)


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="bimt")
ConfigStore.instance().store(group="hydra/sweeper", name="bimt", node=SweeperConf, provider="bimt")
for name in ("deferred", "batched"):  # `batched`: its name before it was `deferred`, for commands that use it
    ConfigStore.instance().store(group="hydra/sweeper", name=name, node=SweeperConf(compose_every_job_first=False),
                                 provider="bimt")


class Sweeper(BasicSweeper):
    """Hydra's basic sweeper (the default in conf/config.yaml), except for failed jobs.

    A job of this runner that fails (a bad value, a diverging loss, a write that fails, Ctrl-C) has
    printed its one-line error already; the basic sweeper would print Hydra's traceback of it and
    stop. Here every job runs, and the sweep then ends with exit code 1, in one line.

    `compose_every_job_first=false` skips the basic sweeper's check that every job's config composes:
    the batched launcher composes each job itself, and fails the sweep on one that does not, before
    training starts (`hydra/sweeper=deferred`)."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None,
                 compose_every_job_first: bool = True) -> None:
        super().__init__(max_batch_size, params)
        self.compose_every_job_first = compose_every_job_first

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if self.compose_every_job_first:
            super().validate_batch_is_legal(batch)

    def sweep(self, arguments: list[str]) -> Any:
        failed: list[JobReturn] = []
        launch = self.launcher.launch

        def launch_and_keep_failures(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            returns = launch(job_overrides, initial_job_idx=initial_job_idx)
            for job in returns:
                if job.status == JobStatus.FAILED and isinstance(job._return_value, JobFailed):
                    failed.append(job)
                    job.status = JobStatus.COMPLETED  # reported already: the sweep goes on
            return returns

        self.launcher.launch = launch_and_keep_failures
        returns = super().sweep(arguments)
        if failed:
            total = sum(len(batch) for batch in returns)
            print(f"error: {len(failed)} of {total} jobs did not complete (see above)", file=sys.stderr)
            raise SystemExit(1)
        return returns


def _prepare(cfg: DictConfig) -> tuple[RunConfig, Path] | float | list[float]:
    """A job's task function: its config, validated, and its run directory (training comes later, in
    groups), or the objective of a run that completed before. (Not the task: a task may hold local
    functions, which do not pickle to the worker processes; a group's worker builds it again.)"""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = config_for_run_dir(load_config(cfg), run_dir)
        validate(config)
    except ConfigError as error:
        fail(str(error), run_dir, in_sweep=True)
    if read_status(run_dir) == Status.COMPLETED:
        return objective_value(read_metrics(run_dir), config.objective)
    return config, run_dir


class BatchedLauncher(Launcher):
    def __init__(self, max_group: int = 256, n_jobs: int = 1) -> None:
        for key, value in (("max_group", max_group), ("n_jobs", n_jobs)):
            if value < 1:
                raise ValueError(f"hydra.launcher.{key}={value} is not allowed; it must be >= 1")
        self.max_group, self.n_jobs = max_group, n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.pool: ProcessPoolExecutor | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """(`task_function` is not called: each job's task here is `_prepare`, and training is by group.)"""
        self.config, self.hydra_context = config, hydra_context
        if self.n_jobs > 1:
            self.pool = self._start_pool()

    def _start_pool(self) -> ProcessPoolExecutor:
        """The worker processes, started now: they import torch and the engine while Hydra's sweeper
        checks that every job's config composes (seconds, in a large sweep), before `launch`."""
        pool = ProcessPoolExecutor(self.n_jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_share_hydra_state, initargs=(Singleton.get_state()["instances"],))
        for _ in range(self.n_jobs):
            pool.submit(int)  # a task to do makes the pool start a worker
        return pool

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [(list(overrides), initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        for overrides, idx in jobs:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        if self.n_jobs == 1:
            returns = _prepare_jobs(self.hydra_context, self.config, jobs)
            groups = self._groups(returns)
            for done, group in enumerate(groups, start=1):
                results = _train_group(*_configs_and_dirs(group))
                self._report(group, results)
                if any(metrics["status"] == Status.INTERRUPTED for metrics in results):
                    left = sum(len(rest) for rest in groups[done:])
                    print(f"interrupted: {left} more job(s) not started; run the same command again (same "
                          "hydra.sweep.dir) to continue the sweep", file=sys.stderr)
                    break
            return returns
        # One pool for every launch of the sweep (a search hands over each batch of trials as a launch of
        # its own): starting workers costs seconds each time; they end with the process.
        self.pool = pool = self.pool or self._start_pool()
        # Preparing a job (composing its config, writing .hydra/) takes a tenth of a second:
        # the workers share it, in chunks small enough to keep them all busy.
        size = -(-len(jobs) // (4 * self.n_jobs))
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        returns = [job for prepared in pool.map(_prepare_jobs, [self.hydra_context] * len(chunks),
                                                [self.config] * len(chunks), chunks) for job in prepared]
        futures = {pool.submit(_train_group, *_configs_and_dirs(group)): group for group in self._groups(returns)}
        for future in as_completed(futures):
            self._report(futures[future], future.result())
        return returns

    def _groups(self, returns: list[JobReturn]) -> list[list[JobReturn]]:
        """Jobs to train, grouped by `group_identity` and by the step their checkpoints continue from (0
        without one), so that an interrupted sweep run again continues batched. Groups are cut at
        `max_group` jobs, and into `n_jobs` equal parts when they train in parallel, so that every
        process gets a share."""
        by_key: dict[tuple[str, int], list[JobReturn]] = defaultdict(list)
        for job in returns:
            if job.status != JobStatus.COMPLETED or not isinstance(job._return_value, tuple):
                continue  # failed, or completed before
            config, run_dir = job._return_value
            shared = json.dumps(group_identity(asdict(config)), sort_keys=True)
            by_key[shared, checkpoint_step(run_dir)].append(job)
        groups = []
        for jobs in by_key.values():
            size = min(self.max_group, -(-len(jobs) // self.n_jobs))
            groups += [jobs[i : i + size] for i in range(0, len(jobs), size)]
        return groups

    def _report(self, group: list[JobReturn], results: list[dict]) -> None:
        """Each job's outcome into its JobReturn (its objective, as the basic launcher's task function
        returns it), and one line for it on the terminal. A job that did not complete fails the sweep
        (a non-zero exit), an interrupted one too."""
        for job, metrics in zip(group, results):
            config, run_dir = job._return_value
            result = outcome(metrics, run_dir, in_sweep=True)
            if result.is_error:
                print(result.line, file=sys.stderr)
                job.status, job._return_value = JobStatus.FAILED, JobFailed(
                    result.line, interrupted=metrics["status"] == Status.INTERRUPTED)
                continue
            job.return_value = objective_value(metrics, config.objective)
            print(result.line)


def _share_hydra_state(instances: dict) -> None:
    """Give a worker process the Hydra singletons of the launching one (config store, plugins, job
    runtime), as Hydra's joblib launcher does; OmegaConf's resolvers are Hydra's standard ones."""
    setup_globals()
    Singleton._instances = instances


def _prepare_jobs(hydra_context: HydraContext, config: DictConfig, jobs: list[tuple[list[str], int]]) -> list[JobReturn]:
    """Prepare each (overrides, index) job as the basic launcher runs one, with `_prepare` as its task:
    its own directory and `.hydra/`; its return value is its validated config and directory."""
    returns = []
    for overrides, idx in jobs:
        sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        returns.append(run_job(hydra_context=hydra_context, task_function=_prepare, config=sweep_config,
                               job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns


def _configs_and_dirs(group: list[JobReturn]) -> tuple[list[RunConfig], list[Path]]:
    configs, run_dirs = zip(*(job._return_value for job in group))
    return list(configs), list(run_dirs)


def _train_group(configs: list[RunConfig], run_dirs: list[Path]) -> list[dict]:
    """`run_group`, with what the machine or the data refuse, or an unexpected error, turned into
    every job's failure (so that no other group is lost)."""
    log.info(f"Training {len(configs)} job(s) as one batched model")
    try:
        return run_group(configs, run_dirs, validate(configs[0]))
    except ConfigError as error:
        return [{"status": Status.INVALID.value, "error": str(error)}] * len(configs)
    except Exception as error:  # noqa: BLE001 - one group's failure must not lose the others
        return [{"status": Status.FAILED.value, "error": f"{type(error).__name__}: {error}"}] * len(configs)
