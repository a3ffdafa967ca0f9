"""The BIMT training loop: loss + lambda * connection cost, AdamW, relocation every few hundred steps.

Every replica of the model trains in lockstep; per-replica settings are (R,) tensors. The steps
themselves run in an engine (`bimt.engines.eager` in torch, `bimt.engines.native` compiled), in stretches between
the events of a `Calendar`: a log line, a change of lambda or of the bias penalty, a relocation, a
snapshot, a checkpoint. The loop calls a small `Logger` interface and knows nothing about
TensorBoard or files.
It can start from a saved state (`start_step` and a restored optimizer) and stops early, between
steps, when the loss stops being finite or when `should_stop` says so; the state it leaves is always
that of a whole step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from tqdm import tqdm

from bimt.engines import make_engine
from bimt.network.cost import active_weights, connection_cost, priced_cost, wire_factors
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.relocation import relocate
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import LOSSES, Loss, final_losses
from bimt.training.calendar import Calendar
from bimt.training.schedule import Schedule
from bimt.training.status import Status


@dataclass(frozen=True)
class ReplicaSettings:
    """What the replicas vary, one entry per replica (all tensors of shape (R,)): the train types'
    switches, and lambda's starting value (a search's trials differ in it)."""

    l1: torch.Tensor  # bool: connection cost in the loss
    locality: torch.Tensor  # float: weight of wire length in the loss's cost
    swap: torch.Tensor  # bool: relocate neurons
    lambda0: torch.Tensor | None = None  # float64: each replica's `Schedule.lambda0`; None: the schedule's own

    def replica_subset(self, index: torch.Tensor) -> ReplicaSettings:
        lambda0 = None if self.lambda0 is None else self.lambda0[index]
        return ReplicaSettings(self.l1[index], self.locality[index], self.swap[index], lambda0)

    def schedules(self, schedule: Schedule) -> list[Schedule]:
        """Each replica's schedule: `schedule` with the replica's lambda0, so that its lambda is the
        float a single run computes (one schedule for all where they share the schedule's own)."""
        if self.lambda0 is None:
            return [schedule]
        return [replace(schedule, lambda0=value) for value in self.lambda0.tolist()]


@dataclass(frozen=True)
class TrainSettings:
    """The loop's settings. Defaults are `conf/`'s (tests/test_config.py pins them); the engine has none."""

    steps: int
    engine: str  # "native" (numba, CPU, fastest) or "eager" (torch, CPU or CUDA; bit for bit the notebook's numbers)
    lr: float = 0.002
    weight_decay: float = 0.0
    relocate_every: int = 200
    top_k: int = 5
    relocate_locality: float = 1.0  # locality weight of the cost that scores candidate swaps
    relocate_inputs: bool = True  # input neurons move too (MNIST's pixels stay in place)
    local_output_layer: bool = True  # the last layer's wires cost their length in the loss (the notebooks' no_penalize_last)
    permute_optimizer_state: bool = False
    log_every: int = 200
    snapshot_every: int = 0  # 0: no snapshots during training
    checkpoint_every: int = 0  # 0: no checkpoints during training
    progress: bool = True
    loss: str = "mse"  # a name of `bimt.tasks.losses.LOSSES`
    exact_batches: bool = True  # eager: each replica's products with a single run's kernels (see bimt.engines)


@dataclass(frozen=True)
class TrainResult:
    optimizer: AdamW
    steps_done: int  # steps completed; the model holds the state after the last of them
    status: Status  # COMPLETED, DIVERGED (the loss of step `steps_done` was not finite) or INTERRUPTED
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


class RecordingLogger(NullLogger):
    """A logger that keeps every logged value in memory: `rows[step][tag]` is a list over replicas."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, list[float]]] = {}

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self.rows[step] = {tag: value.tolist() for tag, value in values.items()}


def make_optimizer(model: BioMLP, settings: TrainSettings) -> AdamW:
    """AdamW over the model's flat parameters (torch's arithmetic, without its per-step overhead)."""
    return AdamW(model.params, lr=settings.lr, weight_decay=settings.weight_decay)


@torch.no_grad()
def evaluate(model: BioMLP, data: Dataset, loss: Loss | None = None) -> dict[str, torch.Tensor]:
    """Final metrics per replica: the losses (`train_mse`, `test_mse` for MSE; `train_loss`,
    `test_loss`, `train_acc`, `test_acc` for a classifier), the full connection cost (locality 1,
    biases in), sparsity."""
    return {**final_losses(model, data, loss or LOSSES["mse"]),
            "connection_cost": connection_cost(model, 1.0, penalize_bias=True),
            "n_active_weights": active_weights(model, 1e-2)}


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
    calendar = Calendar(settings.steps, settings.log_every, settings.relocate_every if bool(replicas.swap.any()) else 0,
                        settings.snapshot_every, settings.checkpoint_every, tuple(schedule.changes(settings.steps)))
    prices = wire_factors(model, replicas.locality, settings.local_output_layer)
    engine = make_engine(settings.engine, model, data, prices, optimizer, LOSSES[settings.loss],
                         settings.exact_batches)
    schedules = replicas.schedules(schedule)  # read once: lambda0 may live on the GPU
    lam_values = None
    step = start_step
    with tqdm(initial=start_step, total=settings.steps, disable=None if settings.progress else True,
              unit="step") as progress:
        while step < settings.steps:
            values = [replica.lam(step, settings.steps) for replica in schedules]
            if values != lam_values:
                lam_values = values
                exact = torch.tensor(lam_values, dtype=torch.float64, device=replicas.l1.device)
                lam = torch.where(replicas.l1, exact, 0.0).to(model.params.dtype)  # beyond float32's range: inf
                if not torch.isfinite(lam).all():
                    return TrainResult(optimizer, step, Status.DIVERGED, ~torch.isfinite(lam))
                engine.set_lambda(lam)
            penalize_bias = schedule.penalize_bias(step, settings.steps)
            end = calendar.next_stop(step)
            if calendar.logs(step):  # measured before this step's update, as the step's training loss is
                cost, measured = priced_cost(model, prices, penalize_bias), engine.test_metrics()
            done, losses = engine.run(step, end - step, penalize_bias)
            if calendar.logs(step) and done:
                logger.scalars(step, {"loss/train": losses[0], **measured, "loss/total": losses[0] + lam * cost,
                                      "cost/connection": cost, "lambda": lam})
            progress.update(done)
            if done < end - step:
                return TrainResult(optimizer, step + done, Status.DIVERGED, ~torch.isfinite(losses[-1]))
            step = end
            if calendar.relocates(step):
                relocate(model, settings.top_k, replicas.swap, relocation_optimizer, settings.relocate_locality,
                         settings.relocate_inputs)
                engine.relocated()
            if calendar.snapshots(step):
                logger.snapshot(step - 1, model)
            if calendar.checkpoints(step):
                logger.checkpoint(step, model, optimizer)
            if should_stop() and step < settings.steps:
                return TrainResult(optimizer, step, Status.INTERRUPTED)
    return TrainResult(optimizer, settings.steps, Status.COMPLETED)
