"""One experiment from a validated config: data, model, training, and every per-run artefact.

A run directory that holds a checkpoint is continued from it, so a killed run resumes where its last
checkpoint left off and ends with exactly the numbers of an uninterrupted run. SIGINT and SIGTERM
(Ctrl-C, a cluster's time limit) stop training between two steps and save a checkpoint first.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bimt.analysis import modularity_metrics, modularity_scalars
from bimt.batches import Minibatches
from bimt.config import (
    DTYPES,
    ConfigError,
    RunConfig,
    check_memory,
    load_config,
    model_shape,
    resolve_device,
    resolve_task,
    saved_config,
    task_data,
)
from bimt.losses import LOSSES
from bimt.memory import keep_freed_memory
from bimt.model import BioMLP
from bimt.optim import AdamW
from bimt.outputs import (
    CHECKPOINT,
    METRICS,
    RunLogger,
    WriteFailed,
    flat_hparams,
    flatten,
    load_checkpoint,
    quiet_event_writer_threads,
    read_checkpoint,
    read_status,
    save_figures,
    saved_checkpoint,
    write_json_atomic,
)
from bimt.tasks import Dataset, Task
from bimt.trainer import ReplicaSettings, TrainSettings, evaluate, make_optimizer, train
from bimt.video import write_video


class Diverged(RuntimeError):
    """Training stopped because the loss was no longer finite; the message is one line."""


def build_settings(config: RunConfig) -> TrainSettings:
    return TrainSettings(
        steps=config.steps,
        lr=config.optim.lr,
        weight_decay=config.optim.weight_decay,
        relocate_every=config.relocate.every,
        top_k=config.relocate.top_k,
        relocate_weight_factor=config.relocate.weight_factor,
        relocate_inputs=config.relocate.inputs,
        local_last=config.model.local_last,
        permute_optimizer_state=config.relocate.permute_optimizer_state,
        log_every=config.log_every,
        snapshot_every=config.snapshot_interval,
        checkpoint_every=config.checkpoint_interval,
        engine=config.engine,
        loss=resolve_task(config.task).loss,
    )


def build_model(config: RunConfig, task: Task, seeds: Sequence[int]) -> BioMLP:
    """The run's network, one replica per seed (initial weights drawn from each)."""
    m = config.model
    embedding = (task.tokens, m.embedding_dim) if task.tokens else None
    return BioMLP(model_shape(config, task), seeds, m.in_fold, m.out_fold, m.l0, embedding, DTYPES[m.dtype],
                  m.mean_cost, m.embedding_cost, m.geometry)


def replica_settings(configs: list[RunConfig], device: torch.device) -> ReplicaSettings:
    """Per-replica train-type switches as (R,) tensors."""
    types = [c.switches for c in configs]
    return ReplicaSettings(
        l1=torch.tensor([t.l1 for t in types], device=device),
        locality=torch.tensor([c.model.weight_factor if t.local else 0.0 for c, t in zip(configs, types)], device=device),
        swap=torch.tensor([t.swap for t in types], device=device),
    )


def stack_datasets(datasets: list[Dataset], device: torch.device) -> Dataset:
    """Stack per-replica datasets into (R, n, d) tensors."""
    return Dataset(*(torch.stack(parts).to(device) for parts in zip(*(
        (d.train_x, d.train_y, d.test_x, d.test_y) for d in datasets))))


def group_data(config: RunConfig, task: Task, seeds: Sequence[int], device: torch.device) -> Dataset:
    """Every replica's data, stacked into (R, n, d) tensors, with each replica's minibatch order.

    Replicas that share a data seed share their data: it is drawn (or read) once, and where all of
    them share it, the stack is a view that repeats it (MNIST is not copied per replica)."""
    keys = [seed if config.task.data_seed is None else config.task.data_seed for seed in seeds]
    drawn: dict[int, Dataset] = {}
    for key, seed in zip(keys, seeds):
        if key not in drawn:
            drawn[key] = task_data(config.task, task, seed)
    datasets = [drawn[key] for key in keys]
    if len(drawn) == 1:
        stacked = stack_datasets(datasets[:1], device).expand(len(seeds))
    else:
        stacked = stack_datasets(datasets, device)
    batches = None if config.batch_size is None else Minibatches(stacked.train_x.shape[1], config.batch_size, seeds)
    return replace(stacked, batches=batches, eval_size=datasets[0].eval_size)


def resume_command(run_dir: Path) -> str:
    """The shell command that continues the run in `run_dir`."""
    return f"python train.py {shlex.quote(f'resume={run_dir}')}"


MAY_DIFFER_ON_RESUME = {"device", "threads", "resume"}


def config_for_run_dir(config: RunConfig, run_dir: Path) -> RunConfig:
    """The config to run in `run_dir`: with `resume`, the one saved there (device and threads may
    change); otherwise `config`, which must equal the saved one if the directory already holds a run."""
    checkpoint = saved_checkpoint(run_dir)
    saved = None if checkpoint is None else saved_config(checkpoint["config"])
    if config.resume is not None:
        if saved is None:
            raise ConfigError(f"resume={config.resume}: there is no {CHECKPOINT} in that directory to continue from")
        resumed = load_config(OmegaConf.create(saved))
        resumed.device, resumed.threads = config.device, config.threads
        return resumed
    if saved is not None:
        now, before = flatten(asdict(config)), flatten(saved)
        for key in sorted(set(now) | set(before)):
            if key.split(".")[0] not in MAY_DIFFER_ON_RESUME and now.get(key) != before.get(key):
                raise ConfigError(
                    f"{run_dir} holds a run with another config ({key}={before.get(key)!r} there, "
                    f"{now.get(key)!r} now); choose another hydra.run.dir, or continue it with {resume_command(run_dir)}"
                )
    return config


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


def run(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Train one configuration (resuming from `run_dir`'s checkpoint if it has one) and write its outputs.

    Returns the metrics written to metrics.json; raises `Diverged` when the loss stops being finite.
    """
    (metrics,) = run_group([config], [run_dir])
    if metrics["status"] == "diverged":
        raise Diverged(metrics["error"])
    return metrics


def group_key(config: RunConfig) -> str:
    """Jobs with equal keys can train in lockstep as one batched model: everything but the seed and
    the train type (which only set each replica's data, initial weights and switches) is shared."""
    shared = asdict(config)
    for key in ("seed", "train_type", "resume"):
        shared.pop(key)
    shared["task"].pop("seed")
    return json.dumps(shared, sort_keys=True)


def checkpoint_step(run_dir: Path) -> int:
    """The steps a run directory's checkpoint has done; 0 without one."""
    path = run_dir / CHECKPOINT
    return read_checkpoint(path)["step"] if path.is_file() else 0


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


def run_group(configs: Sequence[RunConfig], run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Train jobs that share a `group_key` as one batched model, each into its own run directory.

    Every directory gets exactly what a single run writes. A job whose loss stops being finite is
    written off as diverged (its last checkpoint kept) and the others train on without it. Jobs
    continue from their directories' checkpoints, which must all be at the same step. A write that
    fails (a full disk) ends the group: its jobs not yet completed are marked failed, with their last
    intact checkpoint. Returns each job's metrics (for a job that did not complete: its status, and
    for a diverged or failed one the error, in one line).
    """
    configs, run_dirs = list(configs), list(run_dirs)
    quiet_event_writer_threads()
    try:
        return _run_group(configs, run_dirs)
    except WriteFailed as error:
        return [_write_failed(config, run_dir, error) for config, run_dir in zip(configs, run_dirs)]


def _write_failed(config: RunConfig, run_dir: Path, error: WriteFailed) -> dict[str, Any]:
    """A job's status after a failed write: its metrics if it had completed, else `failed`, with
    one line naming what could not be written, the last intact checkpoint and how to continue."""
    if read_status(run_dir) == "completed":
        return json.loads((run_dir / METRICS).read_text())
    step = checkpoint_step(run_dir)
    if (run_dir / CHECKPOINT).is_file():
        after = (f"the last intact checkpoint is step {step} ({run_dir / CHECKPOINT}); free space, then continue "
                 f"with: {resume_command(run_dir)}")
    else:
        after = "no checkpoint was written yet; free space, then run it again"
    status = {"status": "failed", **_summary(config), "step": step, "error": f"{error}; {after}"}
    with suppress(WriteFailed):
        write_json_atomic(run_dir / METRICS, status)
    return status


def _run_group(configs: list[RunConfig], run_dirs: list[Path]) -> list[dict[str, Any]]:
    first = configs[0]
    keep_freed_memory()
    torch.set_num_threads(first.threads)
    device = resolve_device(first.device, first.engine)
    task = resolve_task(first.task)
    check_memory(first, task, len(configs))
    seeds = [config.run_seed for config in configs]
    data = group_data(first, task, seeds, device)
    model = build_model(first, task, seeds).to(device)
    settings = build_settings(first)
    optimizer = make_optimizer(model, settings)
    start = resume_replicas(run_dirs, model, optimizer)
    titles = [f"{task.name}, train_type {config.train_type}, seed {config.run_seed}" for config in configs]
    logger = RunLogger(run_dirs, task, [asdict(config) for config in configs], titles, purge_step=start)
    replicas = replica_settings(configs, device)
    results: dict[int, dict[str, Any]] = {}
    active = list(range(len(configs)))  # the jobs still training, in the model's replica order

    began = time.perf_counter()
    with stop_requests() as requested:
        while True:
            result = train(model, data, replicas, first.schedule, settings, logger, optimizer, start, requested.is_set)
            if result.status != "diverged":
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

    if result.status == "interrupted":
        logger.checkpoint(result.steps_done, model, optimizer)
        logger.close()
        for job in active:
            results[job] = {"status": "interrupted", **_summary(configs[job]), "step": result.steps_done,
                            "wall_s": wall_s}
            write_json_atomic(run_dirs[job] / METRICS, results[job])
        return [results[job] for job in range(len(configs))]

    final = evaluate(model, data, LOSSES[task.loss])
    for replica, job in enumerate(active):
        values = {key: value[replica].item() for key, value in final.items()}
        results[job] = _finish_job(configs[job], run_dirs[job], model, data, replica, values, wall_s, logger)
    logger.checkpoint(first.steps, model, optimizer)
    logger.close()
    for job in active:
        if configs[job].video:
            write_video(run_dirs[job])
        write_json_atomic(run_dirs[job] / METRICS, results[job])
    return [results[job] for job in range(len(configs))]


def _finish_job(config: RunConfig, run_dir: Path, model: BioMLP, data: Dataset, replica: int,
                values: dict[str, float], wall_s: float, logger: RunLogger) -> dict[str, Any]:
    """A completed job's metrics, figures and final TensorBoard entries, from replica `replica`."""
    task = resolve_task(config.task)
    alone, alone_data = model.replica_subset([replica]), data.replica_subset(slice(replica, replica + 1))
    modularity = modularity_metrics(alone, alone_data, task)
    images = save_figures(run_dir, {"network": logger.network(model, replica)})
    images.update(save_figures(run_dir, task.figures(alone, alone_data, task)))
    logger.finish(replica, config.steps, flat_hparams(asdict(config)), {key: float(v) for key, v in values.items()},
                  modularity_scalars(modularity), images)
    return {"status": "completed", **_summary(config), **values, "in_perm": alone.in_perm[0].tolist(),
            "out_perm": alone.out_perm[0].tolist(), **modularity, "wall_s": wall_s}


def result_line(metrics: dict[str, Any]) -> str:
    """A completed job's headline numbers, one line: its losses (and accuracies) and cost."""
    if "test_acc" in metrics:
        numbers = (f"train loss {metrics['train_loss']:.3e} | test loss {metrics['test_loss']:.3e} | "
                   f"train acc {metrics['train_acc']:.3f} | test acc {metrics['test_acc']:.3f}")
    else:
        numbers = f"train MSE {metrics['train_mse']:.3e} | test MSE {metrics['test_mse']:.3e}"
    return (f"{metrics['task']} train_type={metrics['train_type']} seed={metrics['seed']}: {numbers} | "
            f"connection cost {metrics['connection_cost']:.3f}")


def _summary(config: RunConfig) -> dict[str, Any]:
    """What names a run in metrics.json: the headline keys, and the whole config (for reports)."""
    return {"task": resolve_task(config.task).name, "train_type": config.train_type, "seed": config.run_seed,
            "steps": config.steps, "config": asdict(config)}


def _diverged(config: RunConfig, run_dir: Path, step: int, wall_s: float) -> dict[str, Any]:
    """Write a diverged job's status; returns it, with the one-line error."""
    checkpoint = run_dir / CHECKPOINT
    error = (f"training diverged at step {step}: the loss is NaN or inf "
             f"(last good checkpoint: {checkpoint if checkpoint.exists() else 'none'})")
    status = {"status": "diverged", **_summary(config), "step": step, "wall_s": wall_s}
    write_json_atomic(run_dir / METRICS, status)
    return {**status, "error": error}
