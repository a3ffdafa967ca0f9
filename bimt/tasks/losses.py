"""The training losses, per replica, with the gradients that autograd computes for them.

A task names its loss: `mse` (the formulas of Section 3.1), `cross_entropy` (the classifiers of
Sections 3.2-3.3) or `one_hot_mse` (MNIST, Section 3.5: a classifier trained by the squared error
to one-hot targets). Each loss gives its value per replica and, from what its forward pass kept, the
gradient with respect to the network's outputs, computed with the very kernels autograd runs for
the notebooks' `torch.mean((pred - y) ** 2)`, `nn.CrossEntropyLoss()` and `nn.MSELoss()`: one
replica's numbers are then bit for bit the notebooks'. Outputs are (R, n, out) in feature order; targets are (R, n, out)
values or (R, n) class ids.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from bimt.network.spatial import SpatialModel
    from bimt.tasks.dataset import Dataset


class Loss(Protocol):
    name: str  # as tasks and configs name it
    classifies: bool  # targets are class ids, and accuracy is a metric

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The loss of every replica (R,), and what `backward` needs."""

    def backward(self, saved: Any) -> torch.Tensor:
        """d loss / d output, shape of the output, from what `forward` kept."""


class MeanSquaredError:
    name = "mse"
    classifies = False

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        error = output - target
        return (error**2).mean(dim=(1, 2)), error

    def backward(self, error: torch.Tensor) -> torch.Tensor:
        return error * 2.0 * _mean_scale(error[0].numel(), error.dtype, error.device)


@functools.cache
def _mean_scale(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1 / count as autograd's mean backward computes it (a tensor division), made once, not every step."""
    return torch.ones((), dtype=dtype, device=device) / count


class CrossEntropy:
    """Mean cross-entropy over the samples: log_softmax, then the negative log-likelihood."""

    name = "cross_entropy"
    classifies = True

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        log_p = torch.log_softmax(output, dim=2)
        losses = torch.stack([F.nll_loss(log_p[r], target[r]) for r in range(len(log_p))])
        return losses, (log_p, target)

    def backward(self, saved: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        log_p, target = saved
        samples = log_p.shape[1]
        grad = torch.zeros_like(log_p).scatter_(2, target[:, :, None], -1.0 / samples)  # nll_loss's backward
        return torch.ops.aten._log_softmax_backward_data(grad, log_p, 2, log_p.dtype)


class OneHotMeanSquaredError:
    """`nn.MSELoss()` between the outputs and the one-hot rows of the target classes: the mean over
    samples and outputs, with `mse_loss` and its own backward kernel, one replica at a time."""

    name = "one_hot_mse"
    classifies = True

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        one_hot = F.one_hot(target, output.shape[2]).to(output.dtype)
        losses = torch.stack([F.mse_loss(output[r], one_hot[r]) for r in range(len(output))])
        return losses, (output, one_hot)

    def backward(self, saved: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        output, one_hot = saved
        seed = _mean_scale(1, output.dtype, output.device)  # d total / d loss = 1, as backward() seeds it
        mean = 1  # torch's Reduction::Mean
        return torch.stack([torch.ops.aten.mse_loss_backward(seed, output[r], one_hot[r], mean) for r in range(len(output))])


class InContextMeanSquaredError:
    """The squared error of a sequence model at its predicted positions (Section 3.4): outputs and
    targets (R, n, tokens, channels); every other token from the first, channel 0, as the notebook's
    `pred[:, ::2, 0]`. `last` is the error at the last position alone, the in-context prediction."""

    name = "incontext_mse"
    classifies = False

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Size]]:
        error = output[:, :, ::2, 0] - target[:, :, ::2, 0]
        return (error**2).mean(dim=(1, 2)), (error, output.shape)

    def backward(self, saved: tuple[torch.Tensor, torch.Size]) -> torch.Tensor:
        error, shape = saved
        grad = torch.zeros(shape, dtype=error.dtype, device=error.device)
        grad[:, :, ::2, 0] = error * 2.0 * _mean_scale(error[0].numel(), error.dtype, error.device)
        return grad

    def last(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The squared error at the last position, per replica (R,)."""
        return ((output[:, :, -1, 0] - target[:, :, -1, 0]) ** 2).mean(dim=1)


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (MeanSquaredError(), CrossEntropy(), OneHotMeanSquaredError(),
                                                        InContextMeanSquaredError())}


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of samples whose largest output is the target class, per replica (R,) (ties: the first)."""
    return (output.argmax(dim=2) == target).float().mean(dim=1)


@torch.no_grad()
def measure(model: SpatialModel, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> dict[str, torch.Tensor]:
    """`loss` of every replica on (R, n, ...) data, shape (R,), `acc` for a classifier and `last` for
    a loss that measures a last position.

    Each replica is computed on its own, with a single run's kernels: a job's numbers do not
    depend on the batch it trains in (a batched product may round differently on some CPUs)."""
    outputs = model.replica_outputs(x)
    values = {"loss": torch.cat([loss.forward(output, y[r : r + 1])[0] for r, output in enumerate(outputs)])}
    if loss.classifies:
        values["acc"] = torch.cat([accuracy(output, y[r : r + 1]) for r, output in enumerate(outputs)])
    if hasattr(loss, "last"):
        values["last"] = torch.cat([loss.last(output, y[r : r + 1]) for r, output in enumerate(outputs)])
    return values


def final_losses(model: SpatialModel, data: Dataset, loss: Loss, prefix: str = "") -> dict[str, torch.Tensor]:
    """Both splits' losses (R,), named as metrics.json names them: `{prefix}train_mse`, `{prefix}test_mse`,
    or for a classifier `{prefix}train_loss`, `{prefix}train_acc`, `{prefix}test_loss`, `{prefix}test_acc`."""
    name = "loss" if loss.classifies else "mse"
    metrics = {}
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        values = measure(model, x, y, loss)
        metrics[f"{prefix}{split}_{name}"] = values["loss"]
        if loss.classifies:
            metrics[f"{prefix}{split}_acc"] = values["acc"]
        if "last" in values:
            metrics[f"{prefix}{split}_last_mse"] = values["last"]
    return metrics


def logged_metrics(model: SpatialModel, data: Dataset, loss: Loss) -> dict[str, torch.Tensor]:
    """What a log line shows besides the training loss: `loss/test`, for a classifier `acc/test` and
    `acc/train`, for a sequence model `loss/test_last`, on the data's evaluation subset."""
    data = data.evaluation_subset()
    test = measure(model, data.test_x, data.test_y, loss)
    if "last" in test:
        return {"loss/test": test["loss"], "loss/test_last": test["last"]}
    if not loss.classifies:
        return {"loss/test": test["loss"]}
    return {"loss/test": test["loss"], "acc/test": test["acc"],
            "acc/train": measure(model, data.train_x, data.train_y, loss)["acc"]}
