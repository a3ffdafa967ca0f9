"""One experiment from a validated config: data, model, training, and every per-run artefact."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bimt.config import RunConfig, resolve_device, resolve_task
from bimt.logging import TensorBoardLogger, flat_hparams, save_checkpoint, save_figures, write_json_atomic
from bimt.model import BioMLP
from bimt.tasks import Dataset, make_dataset
from bimt.trainer import ReplicaSettings, TrainSettings, evaluate, train


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


def run(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Train one configuration and write its outputs into `run_dir`; returns the final metrics."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    task = resolve_task(config.task)
    seed = config.run_seed
    t = config.task
    data = stack_datasets([make_dataset(task, seed, t.n_train, t.n_test, t.low, t.high, t.noise)], device)
    shape = [task.inputs, *config.model.hidden, task.outputs]
    model = BioMLP(shape, [seed], config.model.in_fold, config.model.out_fold, config.model.l0).to(device)
    logger = TensorBoardLogger([run_dir], task)

    start = time.perf_counter()
    optimizer = train(
        model, data, replica_settings([config], device), config.schedule, build_settings(config), logger
    )
    wall_s = time.perf_counter() - start

    final = {key: value[0].item() for key, value in evaluate(model, data).items()}
    metrics = {
        "status": "completed",
        "task": task.name,
        "train_type": config.train_type,
        "seed": seed,
        "steps": config.steps,
        **final,
        "in_perm": model.in_perm[0].tolist(),
        "out_perm": model.out_perm[0].tolist(),
        "wall_s": wall_s,
    }
    plain_config = asdict(config)
    with torch.no_grad():
        predicted = model(data.test_x)[0]
    title = f"{task.name}, train_type {config.train_type}, seed {seed}"
    figures = save_figures(run_dir, model, 0, task, predicted, data.test_y[0], final["test_mse"], title)
    logger.finish(0, config.steps, flat_hparams(plain_config), {k: float(v) for k, v in final.items()}, figures)
    logger.close()
    save_checkpoint(run_dir / "checkpoint.pt", model, optimizer, 0, config.steps, plain_config)
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics
