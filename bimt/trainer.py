"""The BIMT training loop: MSE + lambda * connection cost, AdamW, relocation every few hundred steps.

Every replica of the model trains in lockstep; per-replica settings are (R,) tensors. The loop calls
a small `Logger` interface and knows nothing about TensorBoard or files. It can start from a saved
state (`start_step` and a restored optimizer) and stops early, between steps, when the loss stops
being finite or when `should_stop` says so; the state it leaves is always that of a whole step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from bimt.cost import active_weights, connection_cost, priced_cost, wire_factor
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
    checkpoint_every: int = 0  # 0: no checkpoints during training
    progress: bool = True


@dataclass(frozen=True)
class TrainResult:
    optimizer: torch.optim.Optimizer
    steps_done: int  # steps completed; the model holds the state after the last of them
    status: str  # "completed", "diverged" (the loss of step `steps_done` was not finite) or "interrupted"


class Logger(Protocol):
    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Values of shape (R,) computed in `step`'s forward pass, before its update."""

    def snapshot(self, step: int, model: BioMLP) -> None:
        """The network as it stands after `step` (its update and any relocation)."""

    def checkpoint(self, steps_done: int, model: BioMLP, optimizer: torch.optim.Optimizer) -> None:
        """Everything needed to continue after `steps_done` steps."""


class NullLogger:
    """A logger that keeps nothing, for training from a notebook or a test."""

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        pass

    def snapshot(self, step: int, model: BioMLP) -> None:
        pass

    def checkpoint(self, steps_done: int, model: BioMLP, optimizer: torch.optim.Optimizer) -> None:
        pass


def make_optimizer(model: BioMLP, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over all parameters in one `foreach` call per operation: twice as fast as the default
    per-tensor loop on these small tensors, and bit-for-bit the same numbers."""
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, foreach=True)


def mse(model: BioMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every replica on (R, n, d) data, shape (R,)."""
    return _mse(model(x), y)


def _mse(predicted: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((predicted - y) ** 2).mean(dim=(1, 2))


def _in_positions(model: BioMLP, data: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test inputs in position order, and the output order: valid until the next relocation."""
    return model.to_positions(data.train_x), model.to_positions(data.test_x), model.output_order()


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
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train `model` in place on (R, n, d) data from `start_step` on (with `optimizer`'s saved state)."""
    optimizer = optimizer or make_optimizer(model, settings)
    relocation_optimizer = optimizer if settings.permute_optimizer_state else None
    any_swap = bool(replicas.swap.any())
    factors = [wire_factor(model, i, replicas.locality) for i in range(model.depth)]
    train_x, test_x, output_order = _in_positions(model, data)
    lam_value, lam = None, None
    steps = tqdm(range(start_step, settings.steps), initial=start_step, total=settings.steps,
                 disable=None if settings.progress else True, unit="step")
    for step in steps:
        if schedule.lam(step, settings.steps) != lam_value:
            lam_value = schedule.lam(step, settings.steps)
            exact = torch.tensor(lam_value, dtype=torch.float64, device=replicas.l1.device)
            lam = torch.where(replicas.l1, exact, 0.0).to(torch.float32)  # beyond float32's range: inf
        log_now = step % settings.log_every == 0
        optimizer.zero_grad()
        train_mse = _mse(model.forward_positions(train_x, output_order), data.train_y)
        cost = priced_cost(model, factors, penalize_bias=schedule.penalize_bias(step, settings.steps))
        total = train_mse + lam * cost
        if not torch.isfinite(total).all():
            return TrainResult(optimizer, step, "diverged")
        if log_now:
            with torch.no_grad():
                test_mse = _mse(model.forward_positions(test_x, output_order), data.test_y)
            values = {"loss/train": train_mse, "loss/test": test_mse, "loss/total": total,
                      "cost/connection": cost, "lambda": lam}
            logger.scalars(step, {tag: value.detach() for tag, value in values.items()})
        total.sum().backward()
        optimizer.step()
        if any_swap and (step + 1) % settings.relocate_every == 0:
            relocate(model, settings.top_k, replicas.swap, relocation_optimizer)
            train_x, test_x, output_order = _in_positions(model, data)
        if settings.snapshot_every and step % settings.snapshot_every == 0:
            logger.snapshot(step, model)
        done = step + 1
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
            logger.checkpoint(done, model, optimizer)
        if should_stop() and done < settings.steps:
            return TrainResult(optimizer, done, "interrupted")
    return TrainResult(optimizer, settings.steps, "completed")
