"""Training a lockstep group of jobs from their plan, and writing every job's outputs.

A run directory that holds a checkpoint is continued from it, so a killed run resumes where its last
checkpoint left off and ends with exactly the numbers of an uninterrupted run. SIGINT and SIGTERM
(Ctrl-C, a cluster's time limit) stop training between two steps and save a checkpoint first.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bimt.experiment.checkpoints import CHECKPOINT, load_checkpoint, read_checkpoint
from bimt.experiment.files import WriteFailed, save_figures, write_json_atomic
from bimt.experiment.memory import keep_freed_memory
from bimt.experiment.outcome import resume_command
from bimt.experiment.plan import plan_group
from bimt.experiment.rundir import METRICS, checkpoint_step, read_status
from bimt.experiment.schema import RunConfig
from bimt.experiment.tensorboard import RunLogger, flat_hparams, quiet_event_writer_threads
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.pictures import task_figures
from bimt.pictures.video import write_video
from bimt.tasks import Dataset, Task
from bimt.tasks.losses import LOSSES
from bimt.tasks.metrics import modularity_metrics, modularity_scalars
from bimt.training import Status, evaluate, make_optimizer, train


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by the first SIGINT or SIGTERM; a second signal acts as it normally would.

    Outside the main thread (where signals cannot be caught) the event is simply never set.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum, frame):
        requested.set()
        signal.signal(signum, previous[signum])

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resume_replicas(run_dirs: Sequence[Path], model: BioMLP, optimizer: AdamW) -> int:
    """Load each directory's checkpoint into its replica; returns the step they all continue from.

    The jobs of a group train in lockstep, so they must all have done the same number of steps (the
    batched launcher groups them so); a directory without a checkpoint starts at step 0."""
    checkpoints = [read_checkpoint(d / CHECKPOINT) if (d / CHECKPOINT).is_file() else None for d in run_dirs]
    steps = {0 if checkpoint is None else checkpoint["step"] for checkpoint in checkpoints}
    if len(steps) > 1:
        raise ValueError(f"jobs at different steps ({sorted(steps)}) cannot train as one group")
    for replica, checkpoint in enumerate(checkpoints):
        if checkpoint is not None:
            load_checkpoint(checkpoint, model, optimizer, replica)
    return steps.pop()


def run_group(configs: Sequence[RunConfig], run_dirs: Sequence[Path], task: Task) -> list[dict[str, Any]]:
    """Train validated jobs that share their `group_identity` (and `task`, as `validate` resolved it)
    as one batched model, each into its own run directory; a single run is a group of one.

    Raises ConfigError, before anything is written, for what the machine or the data refuse
    (`bimt.experiment.plan`). Every directory gets exactly what a single run writes. A job whose loss stops being finite is
    written off as diverged (its last checkpoint kept) and the others train on without it. Jobs
    continue from their directories' checkpoints, which must all be at the same step. A write that
    fails (a full disk) ends the group: its jobs not yet completed are marked failed, with their last
    intact checkpoint. Returns each job's metrics (for a job that did not complete: its status, and
    for a diverged or failed one the error, in one line).
    """
    configs, run_dirs = list(configs), list(run_dirs)
    quiet_event_writer_threads()
    try:
        return _run_group(configs, run_dirs, task)
    except WriteFailed as error:
        return [_write_failed(config, run_dir, error) for config, run_dir in zip(configs, run_dirs)]


def _write_failed(config: RunConfig, run_dir: Path, error: WriteFailed) -> dict[str, Any]:
    """A job's status after a failed write: its metrics if it had completed, else `failed`, with
    one line naming what could not be written, the last intact checkpoint and how to continue."""
    if read_status(run_dir) == Status.COMPLETED:
        return json.loads((run_dir / METRICS).read_text())
    step = checkpoint_step(run_dir)
    if (run_dir / CHECKPOINT).is_file():
        after = (f"the last intact checkpoint is step {step} ({run_dir / CHECKPOINT}); free space, then continue "
                 f"with: {resume_command(run_dir)}")
    else:
        after = "no checkpoint was written yet; free space, then run it again"
    status = {"status": Status.FAILED.value, **_summary(config), "step": step, "error": f"{error}; {after}"}
    with suppress(WriteFailed):
        write_json_atomic(run_dir / METRICS, status)
    return status


def _run_group(configs: list[RunConfig], run_dirs: list[Path], task: Task) -> list[dict[str, Any]]:
    first = configs[0]
    keep_freed_memory()
    torch.set_num_threads(first.threads)
    plan = plan_group(configs, task)
    model, data, settings, replicas, device = plan.model, plan.data, plan.settings, plan.replicas, plan.device
    optimizer = make_optimizer(model, settings)
    start = resume_replicas(run_dirs, model, optimizer)
    titles = [f"{task.name}, train_type {config.train_type}, seed {config.run_seed}" for config in configs]
    logger = RunLogger(run_dirs, task, [asdict(config) for config in configs], titles, purge_step=start)
    results: dict[int, dict[str, Any]] = {}
    active = list(range(len(configs)))  # the jobs still training, in the model's replica order

    began = time.perf_counter()
    with stop_requests() as requested:
        while True:
            result = train(model, data, replicas, first.schedule, settings, logger, optimizer, start, requested.is_set)
            if result.status != Status.DIVERGED:
                break
            bad = result.diverged.tolist()
            for replica in (r for r, is_bad in enumerate(bad) if is_bad):
                job = active[replica]
                results[job] = _diverged(configs[job], run_dirs[job], result.steps_done, time.perf_counter() - began)
            keep = [r for r, is_bad in enumerate(bad) if not is_bad]
            logger.keep(keep)
            if not keep:
                return [results[job] for job in range(len(configs))]
            index = torch.as_tensor(keep, device=device)
            active = [active[r] for r in keep]
            model = model.replica_subset(keep)
            optimizer = result.optimizer.replica_subset(model.params, index)
            data, replicas = data.replica_subset(index), replicas.replica_subset(index)
            start = result.steps_done
    wall_s = time.perf_counter() - began

    if result.status == Status.INTERRUPTED:
        logger.checkpoint(result.steps_done, model, optimizer)
        logger.close()
        for job in active:
            results[job] = {"status": Status.INTERRUPTED.value, **_summary(configs[job]), "step": result.steps_done,
                            "wall_s": wall_s}
            write_json_atomic(run_dirs[job] / METRICS, results[job])
        return [results[job] for job in range(len(configs))]

    final = evaluate(model, data, LOSSES[task.loss])
    if task.final_metrics is not None:
        final.update(task.final_metrics(model, data))
    for replica, job in enumerate(active):
        values = {key: value[replica].item() for key, value in final.items()}
        results[job] = _finish_job(configs[job], run_dirs[job], task, model, data, replica, values, wall_s, logger)
    logger.checkpoint(first.steps, model, optimizer)
    logger.close()
    for job in active:
        if configs[job].video:
            write_video(run_dirs[job])
        write_json_atomic(run_dirs[job] / METRICS, results[job])
    return [results[job] for job in range(len(configs))]


def _finish_job(config: RunConfig, run_dir: Path, task: Task, model: BioMLP, data: Dataset, replica: int,
                values: dict[str, float], wall_s: float, logger: RunLogger) -> dict[str, Any]:
    """A completed job's metrics, figures and final TensorBoard entries, from replica `replica`."""
    alone, alone_data = model.replica_subset([replica]), data.replica_subset(slice(replica, replica + 1))
    modularity = modularity_metrics(alone, alone_data, task)
    images = save_figures(run_dir, {"network": logger.network(model, replica)})
    images.update(save_figures(run_dir, task_figures(alone, alone_data, task)))
    logger.finish(replica, config.steps, flat_hparams(asdict(config)), {key: float(v) for key, v in values.items()},
                  modularity_scalars(modularity), images)
    return {"status": Status.COMPLETED.value, **_summary(config), **values, "in_perm": alone.in_perm[0].tolist(),
            "out_perm": alone.out_perm[0].tolist(), **modularity, "wall_s": wall_s}


def _summary(config: RunConfig) -> dict[str, Any]:
    """What names a run in metrics.json: the headline keys, and the whole config (for reports)."""
    return {"task": config.task.name, "train_type": config.train_type, "seed": config.run_seed,
            "steps": config.steps, "config": asdict(config)}


def _diverged(config: RunConfig, run_dir: Path, step: int, wall_s: float) -> dict[str, Any]:
    """Write a diverged job's status; returns it, with the one-line error."""
    checkpoint = run_dir / CHECKPOINT
    error = (f"training diverged at step {step}: the loss is NaN or inf "
             f"(last good checkpoint: {checkpoint if checkpoint.exists() else 'none'})")
    status = {"status": Status.DIVERGED.value, **_summary(config), "step": step, "wall_s": wall_s}
    write_json_atomic(run_dir / METRICS, status)
    return {**status, "error": error}
