"""The BIMT training loop: MSE + lambda * connection cost, AdamW, relocation every few hundred steps.

Every replica of the model trains in lockstep; per-replica settings are (R,) tensors. The steps
themselves run in an engine (`bimt.engine` in torch, `bimt.native` compiled), in stretches between
events: a log line, a change of lambda or of the bias penalty, a relocation, a snapshot, a
checkpoint. The loop calls a small `Logger` interface and knows nothing about TensorBoard or files.
It can start from a saved state (`start_step` and a restored optimizer) and stops early, between
steps, when the loss stops being finite or when `should_stop` says so; the state it leaves is always
that of a whole step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm import tqdm

from bimt.cost import active_weights, connection_cost, priced_cost, wire_factor
from bimt.engine import EagerEngine
from bimt.model import BioMLP
from bimt.native import NativeEngine
from bimt.optim import AdamW
from bimt.relocate import relocate
from bimt.schedule import Schedule
from bimt.tasks import Dataset


@dataclass(frozen=True)
class ReplicaSettings:
    """What the train types vary, one entry per replica (all tensors of shape (R,))."""

    l1: torch.Tensor  # bool: connection cost in the loss
    locality: torch.Tensor  # float: weight of wire length in the loss's cost
    swap: torch.Tensor  # bool: relocate neurons

    def replica_subset(self, index: torch.Tensor) -> ReplicaSettings:
        return ReplicaSettings(self.l1[index], self.locality[index], self.swap[index])


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
    engine: str = "eager"  # "eager" (torch, bit for bit the notebook's numbers) or "native" (numba)


@dataclass(frozen=True)
class TrainResult:
    optimizer: AdamW
    steps_done: int  # steps completed; the model holds the state after the last of them
    status: str  # "completed", "diverged" (the loss of step `steps_done` was not finite) or "interrupted"
    diverged: torch.Tensor | None = None  # (R,) bool when diverged: the replicas whose loss was not finite


class Logger(Protocol):
    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Values of shape (R,) computed in `step`'s forward pass, before its update."""

    def snapshot(self, step: int, model: BioMLP) -> None:
        """The network as it stands after `step` (its update and any relocation)."""

    def checkpoint(self, steps_done: int, model: BioMLP, optimizer: AdamW) -> None:
        """Everything needed to continue after `steps_done` steps."""


class NullLogger:
    """A logger that keeps nothing, for training from a notebook or a test."""

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        pass

    def snapshot(self, step: int, model: BioMLP) -> None:
        pass

    def checkpoint(self, steps_done: int, model: BioMLP, optimizer: AdamW) -> None:
        pass


def make_optimizer(model: BioMLP, settings: TrainSettings) -> AdamW:
    """AdamW over the model's flat parameters (torch's arithmetic, without its per-step overhead)."""
    return AdamW(model.params, lr=settings.lr, weight_decay=settings.weight_decay)


def mse(model: BioMLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every replica on (R, n, d) data, shape (R,).

    Each replica is computed on its own, with a single run's kernels: a job's final metrics do not
    depend on the batch it trained in (a batched product may round differently on some CPUs)."""
    x, order = model.to_positions(x), model.output_order()
    errors = [model.forward_positions(x[r : r + 1], order[r : r + 1], r) - y[r : r + 1] for r in range(model.replicas)]
    return torch.cat([(error**2).mean(dim=(1, 2)) for error in errors])


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
    optimizer: AdamW | None = None,
    start_step: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train `model` in place on (R, n, d) data from `start_step` on (with `optimizer`'s saved state)."""
    optimizer = optimizer or make_optimizer(model, settings)
    relocation_optimizer = optimizer if settings.permute_optimizer_state else None
    any_swap = bool(replicas.swap.any())
    prices = [wire_factor(model, i, replicas.locality) for i in range(model.depth)]
    engine = make_engine(settings.engine, model, data, prices, optimizer)
    lam_value = None
    step = start_step
    with tqdm(initial=start_step, total=settings.steps, disable=None if settings.progress else True,
              unit="step") as progress:
        while step < settings.steps:
            if schedule.lam(step, settings.steps) != lam_value:
                lam_value = schedule.lam(step, settings.steps)
                exact = torch.tensor(lam_value, dtype=torch.float64, device=replicas.l1.device)
                lam = torch.where(replicas.l1, exact, 0.0).to(torch.float32)  # beyond float32's range: inf
                if not torch.isfinite(lam).all():
                    return TrainResult(optimizer, step, "diverged", ~torch.isfinite(lam))
                engine.set_lambda(lam)
            penalize_bias = schedule.penalize_bias(step, settings.steps)
            end = _stretch_end(step, settings, schedule, any_swap)
            log_now = step % settings.log_every == 0
            if log_now:  # measured before this step's update, as the step's training loss is
                cost, test_mse = priced_cost(model, prices, penalize_bias), engine.test_mse()
            done, losses = engine.run(end - step, penalize_bias)
            if log_now and done:
                logger.scalars(step, {"loss/train": losses[0], "loss/test": test_mse,
                                      "loss/total": losses[0] + lam * cost, "cost/connection": cost, "lambda": lam})
            progress.update(done)
            if done < end - step:
                return TrainResult(optimizer, step + done, "diverged", ~torch.isfinite(losses[-1]))
            step = end
            if any_swap and step % settings.relocate_every == 0:
                relocate(model, settings.top_k, replicas.swap, relocation_optimizer)
                engine.relocated()
            if settings.snapshot_every and (step - 1) % settings.snapshot_every == 0:
                logger.snapshot(step - 1, model)
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < settings.steps:
                logger.checkpoint(step, model, optimizer)
            if should_stop() and step < settings.steps:
                return TrainResult(optimizer, step, "interrupted")
    return TrainResult(optimizer, settings.steps, "completed")


def _stretch_end(step: int, settings: TrainSettings, schedule: Schedule, any_swap: bool) -> int:
    """The first step after `step` at which the loop must come back: before a log line or a change
    of lambda or of the bias penalty, after a relocation, snapshot or checkpoint step."""

    def next_multiple(every: int) -> int:
        return (step // every + 1) * every

    ends = [settings.steps, next_multiple(settings.log_every)]
    ends += [change for change in schedule.changes(settings.steps) if change > step]
    if any_swap:
        ends.append(next_multiple(settings.relocate_every))
    if settings.snapshot_every:
        ends.append(-(-step // settings.snapshot_every) * settings.snapshot_every + 1)
    if settings.checkpoint_every:
        ends.append(next_multiple(settings.checkpoint_every))
    return min(ends)


def make_engine(name: str, model: BioMLP, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW):
    """The training engine called `name`: "eager" (torch) or "native" (numba)."""
    if name == "native":
        return NativeEngine(model, data, prices, optimizer)
    return EagerEngine(model, data, prices, optimizer)
