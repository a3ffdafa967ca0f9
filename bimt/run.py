"""One experiment from a validated config: data, model, training, and every per-run artefact.

A run directory that holds a checkpoint is continued from it, so a killed run resumes where its last
checkpoint left off and ends with exactly the numbers of an uninterrupted run. SIGINT and SIGTERM
(Ctrl-C, a cluster's time limit) stop training between two steps and save a checkpoint first.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bimt.analysis import modularity_metrics, modularity_scalars
from bimt.config import ConfigError, RunConfig, load_config, resolve_device, resolve_task
from bimt.logging import (
    CHECKPOINT,
    METRICS,
    RunLogger,
    flat_hparams,
    flatten,
    load_checkpoint,
    save_figures,
    saved_config,
    write_json_atomic,
)
from bimt.model import BioMLP
from bimt.tasks import Dataset, make_dataset
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
        permute_optimizer_state=config.relocate.permute_optimizer_state,
        log_every=config.log_every,
        snapshot_every=config.snapshot_every,
        checkpoint_every=config.checkpoint_interval,
        engine=config.engine,
    )


def replica_settings(configs: list[RunConfig], device: torch.device) -> ReplicaSettings:
    """Per-replica train-type switches as (R,) tensors."""
    types = [c.switches for c in configs]
    return ReplicaSettings(
        l1=torch.tensor([t.l1 for t in types], device=device),
        locality=torch.tensor([1.0 if t.local else 0.0 for t in types], device=device),
        swap=torch.tensor([t.swap for t in types], device=device),
    )


def stack_datasets(datasets: list[Dataset], device: torch.device) -> Dataset:
    """Stack per-replica datasets into (R, n, d) tensors."""
    return Dataset(*(torch.stack(parts).to(device) for parts in zip(*(
        (d.train_x, d.train_y, d.test_x, d.test_y) for d in datasets))))


MAY_DIFFER_ON_RESUME = {"device", "threads", "resume"}


def config_for_run_dir(config: RunConfig, run_dir: Path) -> RunConfig:
    """The config to run in `run_dir`: with `resume`, the one saved there (device and threads may
    change); otherwise `config`, which must equal the saved one if the directory already holds a run."""
    saved = saved_config(run_dir)
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
                    f"{now.get(key)!r} now); choose another hydra.run.dir, or continue it with resume={run_dir}"
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
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device, config.engine)
    task = resolve_task(config.task)
    seed = config.run_seed
    t = config.task
    data = stack_datasets([make_dataset(task, seed, t.n_train, t.n_test, t.low, t.high, t.noise)], device)
    shape = [task.inputs, *config.model.hidden, task.outputs]
    model = BioMLP(shape, [seed], config.model.in_fold, config.model.out_fold, config.model.l0).to(device)
    settings = build_settings(config)
    optimizer = make_optimizer(model, settings)
    start = load_checkpoint(run_dir / CHECKPOINT, model, optimizer) if (run_dir / CHECKPOINT).is_file() else 0
    plain_config = asdict(config)
    logger = RunLogger([run_dir], task, plain_config, purge_step=start or None)
    summary = {"task": task.name, "train_type": config.train_type, "seed": seed, "steps": config.steps}

    began = time.perf_counter()
    with stop_requests() as requested:
        result = train(model, data, replica_settings([config], device), config.schedule, settings, logger,
                       optimizer, start, requested.is_set)
    wall_s = time.perf_counter() - began

    if result.status != "completed":
        if result.status == "interrupted":
            logger.checkpoint(result.steps_done, model, optimizer)
        logger.close()
        status = {"status": result.status, **summary, "step": result.steps_done, "wall_s": wall_s}
        write_json_atomic(run_dir / METRICS, status)
        if result.status == "diverged":
            raise Diverged(
                f"training diverged at step {result.steps_done}: the loss is NaN or inf "
                f"(last good checkpoint: {run_dir / CHECKPOINT if (run_dir / CHECKPOINT).exists() else 'none'})"
            )
        return status

    final = {key: value[0].item() for key, value in evaluate(model, data).items()}
    modularity = modularity_metrics(model, data, task)
    metrics = {
        "status": "completed",
        **summary,
        **final,
        "in_perm": model.in_perm[0].tolist(),
        "out_perm": model.out_perm[0].tolist(),
        **modularity,
        "wall_s": wall_s,
    }
    with torch.no_grad():
        predicted = model(data.test_x)[0]
    title = f"{task.name}, train_type {config.train_type}, seed {seed}"
    figures = save_figures(run_dir, model, 0, task, predicted, data.test_y[0], final["test_mse"], title)
    logger.finish(0, config.steps, flat_hparams(plain_config), {k: float(v) for k, v in final.items()},
                  modularity_scalars(modularity), figures)
    logger.checkpoint(config.steps, model, optimizer)
    logger.close()
    if config.video:
        write_video(run_dir)
    write_json_atomic(run_dir / METRICS, metrics)
    return metrics
