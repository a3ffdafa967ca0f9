"""The BIMT training loop: loss + lambda * connection cost, AdamW, relocation every few hundred steps.

Every replica of the model trains in lockstep; per-replica settings are (R,) tensors. The steps
themselves run in an engine (`bimt.engine` in torch, `bimt.native` compiled), in stretches between
the events of a `Calendar`: a log line, a change of lambda or of the bias penalty, a relocation, a
snapshot, a checkpoint. The loop calls a small `Logger` interface and knows nothing about
TensorBoard or files.
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

from bimt.cost import active_weights, connection_cost, priced_cost, wire_factors
from bimt.engine import EagerEngine
from bimt.losses import LOSSES, Loss, final_losses
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
    relocate_weight_factor: float = 1.0  # locality weight of the cost that scores candidate swaps
    relocate_inputs: bool = True  # input neurons move too (MNIST's pixels stay in place)
    local_last: bool = True  # the last layer's wires cost their length in the loss (the notebooks' no_penalize_last)
    permute_optimizer_state: bool = False
    log_every: int = 200
    snapshot_every: int = 0  # 0: no snapshots during training
    checkpoint_every: int = 0  # 0: no checkpoints during training
    progress: bool = True
    engine: str = "eager"  # "eager" (torch, bit for bit the notebook's numbers) or "native" (numba)
    loss: str = "mse"  # "mse" or "cross_entropy" (see bimt.losses)


@dataclass(frozen=True)
class TrainResult:
    optimizer: AdamW
    steps_done: int  # steps completed; the model holds the state after the last of them
    status: str  # "completed", "diverged" (the loss of step `steps_done` was not finite) or "interrupted"
    diverged: torch.Tensor | None = None  # (R,) bool when diverged: the replicas whose loss was not finite


class Engine(Protocol):
    """What the loop asks of an engine (`bimt.engine.EagerEngine`, `bimt.native.NativeEngine`)."""

    def set_lambda(self, lam: torch.Tensor) -> None:
        """lambda of every replica, (R,), from the next step on."""

    def run(self, step: int, count: int, penalize_bias: bool) -> tuple[int, torch.Tensor]:
        """Up to `count` steps from step `step` on: the number done, and each step's training loss (steps, R)."""

    def relocated(self) -> None:
        """The model's neurons have moved: re-read its permutations."""

    def test_metrics(self) -> dict[str, torch.Tensor]:
        """`loss/test` (R,), and `acc/test`, `acc/train` for a classifier, of the model as it is."""


@dataclass(frozen=True)
class Calendar:
    """Every event of a run, as a function of the step: the loop stops for them and nowhere else.

    Step s is the (s+1)-th update. A log line is written with step s's forward pass, before its
    update; lambda and the bias penalty change at the schedule's steps; relocation, snapshots and
    checkpoints happen after an update, once `done` steps are done.
    """

    steps: int
    log_every: int
    relocate_every: int  # 0: no relocation
    snapshot_every: int  # 0: none during training
    checkpoint_every: int  # 0: none during training
    changes: tuple[int, ...]  # steps at which lambda or the bias penalty may change

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0

    def relocates(self, done: int) -> bool:
        return bool(self.relocate_every) and done % self.relocate_every == 0

    def snapshots(self, done: int) -> bool:
        """A snapshot shows the network after step done - 1 (so step 0's is the first)."""
        return bool(self.snapshot_every) and (done - 1) % self.snapshot_every == 0

    def checkpoints(self, done: int) -> bool:
        return bool(self.checkpoint_every) and done % self.checkpoint_every == 0 and done < self.steps

    def next_stop(self, step: int) -> int:
        """The first step count after `step` at which the loop must come back: before a log line or
        a change of lambda or of the bias penalty, after a relocation, snapshot or checkpoint."""

        def next_multiple(every: int) -> int:
            return (step // every + 1) * every

        stops = [self.steps, next_multiple(self.log_every), *(change for change in self.changes if change > step)]
        for every in (self.relocate_every, self.checkpoint_every):
            if every:
                stops.append(next_multiple(every))
        if self.snapshot_every:
            stops.append(-(-step // self.snapshot_every) * self.snapshot_every + 1)
        return min(stops)


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
    prices = wire_factors(model, replicas.locality, settings.local_last)
    engine = make_engine(settings.engine, model, data, prices, optimizer, LOSSES[settings.loss])
    lam_value = None
    step = start_step
    with tqdm(initial=start_step, total=settings.steps, disable=None if settings.progress else True,
              unit="step") as progress:
        while step < settings.steps:
            if schedule.lam(step, settings.steps) != lam_value:
                lam_value = schedule.lam(step, settings.steps)
                exact = torch.tensor(lam_value, dtype=torch.float64, device=replicas.l1.device)
                lam = torch.where(replicas.l1, exact, 0.0).to(model.params.dtype)  # beyond float32's range: inf
                if not torch.isfinite(lam).all():
                    return TrainResult(optimizer, step, "diverged", ~torch.isfinite(lam))
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
                return TrainResult(optimizer, step + done, "diverged", ~torch.isfinite(losses[-1]))
            step = end
            if calendar.relocates(step):
                relocate(model, settings.top_k, replicas.swap, relocation_optimizer, settings.relocate_weight_factor,
                         settings.relocate_inputs)
                engine.relocated()
            if calendar.snapshots(step):
                logger.snapshot(step - 1, model)
            if calendar.checkpoints(step):
                logger.checkpoint(step, model, optimizer)
            if should_stop() and step < settings.steps:
                return TrainResult(optimizer, step, "interrupted")
    return TrainResult(optimizer, settings.steps, "completed")


def make_engine(name: str, model: BioMLP, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW,
                loss: Loss) -> Engine:
    """The training engine called `name`: "eager" (torch) or "native" (numba)."""
    if name == "native":
        return NativeEngine(model, data, prices, optimizer, loss)
    return EagerEngine(model, data, prices, optimizer, loss)
