"""The BIMT training loop: MSE + lambda * connection cost, AdamW, relocation every few hundred steps.

Every replica of the model trains in lockstep; per-replica settings are (R,) tensors. The loop calls
a small `Logger` interface and knows nothing about TensorBoard or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from bimt.cost import active_weights, connection_cost
from bimt.model import BioMLP
from bimt.relocate import relocate
from bimt.schedule import Schedule
from bimt.tasks import Dataset


@dataclass(frozen=True)
class ReplicaSettings:
    """What the train types vary, one entry per replica (all tensors of shape (R,))."""

    l1: torch.Tensor  # bool: connection cost in the loss
    locality: torch.Tensor  # float: weight of wire length in the loss's cost
    swap: torch.Tensor  # bool: relocate neurons


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    lr: float = 0.002
    weight_decay: float = 0.0
    relocate_every: int = 200
    top_k: int = 5
    permute_optimizer_state: bool = False
    log_every: int = 200
    snapshot_every: int = 0  # 0: no snapshots during training
    progress: bool = True


class Logger(Protocol):
    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Values of shape (R,) computed in `step`'s forward pass, before its update."""

    def snapshot(self, step: int, model: BioMLP) -> None:
        """The network as it stands after `step` (its update and any relocation)."""


class NullLogger:
    """A logger that keeps nothing, for training from a notebook or a test."""

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        pass

    def snapshot(self, step: int, model: BioMLP) -> None:
        pass


def mse(model: BioMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every replica on (R, n, d) data, shape (R,)."""
    return ((model(x) - y) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def evaluate(model: BioMLP, data: Dataset) -> dict[str, torch.Tensor]:
    """Final metrics per replica: MSEs, the full connection cost (locality 1, biases in), sparsity."""
    return {
        "train_mse": mse(model, data.train_x, data.train_y),
        "test_mse": mse(model, data.test_x, data.test_y),
        "connection_cost": connection_cost(model, 1.0, penalize_bias=True),
        "n_active_weights": active_weights(model, 1e-2),
    }


def train(
    model: BioMLP,
    data: Dataset,
    replicas: ReplicaSettings,
    schedule: Schedule,
    settings: TrainSettings,
    logger: Logger,
) -> torch.optim.Optimizer:
    """Train `model` in place on (R, n, d) data; returns the optimizer (for checkpoints)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    relocation_optimizer = optimizer if settings.permute_optimizer_state else None
    any_swap = bool(replicas.swap.any())
    lam_value, lam = None, None
    for step in tqdm(range(settings.steps), disable=None if settings.progress else True, unit="step"):
        if schedule.lam(step, settings.steps) != lam_value:
            lam_value = schedule.lam(step, settings.steps)
            lam = torch.where(replicas.l1, lam_value, 0.0).to(torch.float32)
        log_now = step % settings.log_every == 0
        optimizer.zero_grad()
        train_mse = mse(model, data.train_x, data.train_y)
        cost = connection_cost(model, replicas.locality, penalize_bias=schedule.penalize_bias(step, settings.steps))
        total = train_mse + lam * cost
        if log_now:
            with torch.no_grad():
                test_mse = mse(model, data.test_x, data.test_y)
            values = {"loss/train": train_mse, "loss/test": test_mse, "loss/total": total,
                      "cost/connection": cost, "lambda": lam}
            logger.scalars(step, {tag: value.detach() for tag, value in values.items()})
        total.sum().backward()
        optimizer.step()
        if any_swap and (step + 1) % settings.relocate_every == 0:
            relocate(model, settings.top_k, replicas.swap, relocation_optimizer)
        if settings.snapshot_every and step % settings.snapshot_every == 0:
            logger.snapshot(step, model)
    return optimizer
