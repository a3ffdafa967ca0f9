"""A task's data as the engines read it: train and test splits stacked over replicas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bimt.tasks.minibatches import Minibatches


@dataclass(frozen=True)
class Dataset:
    """Train and test split of one task, stacked over replicas: inputs (R, n, inputs), float numbers
    or int64 token ids; targets (R, n, outputs) float values, or (R, n) int64 class ids.

    With `batches`, each step trains on a minibatch of the training set instead of all of it. With
    `eval_size`, the metrics logged during training are measured on the first `eval_size` samples
    of each split (the data functions shuffle them, so that is a fixed random subset); the final
    metrics always use the whole splits.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    batches: Minibatches | None = None
    eval_size: int | None = None

    def replica_subset(self, index: torch.Tensor | slice) -> Dataset:
        """The given replicas (rows of the leading axis) of stacked (R, n, d) data."""
        batches = None if self.batches is None else self.batches.replica_subset(index)
        return Dataset(self.train_x[index], self.train_y[index], self.test_x[index], self.test_y[index], batches,
                       self.eval_size)

    def expand(self, replicas: int) -> Dataset:
        """The data of a single replica (R = 1) repeated for `replicas`, as views, not copies."""
        return Dataset(*(t.expand(replicas, *t.shape[1:]) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
                       self.batches, self.eval_size)

    def evaluation_subset(self) -> Dataset:
        """The samples that logged metrics are measured on (all of them without `eval_size`)."""
        if self.eval_size is None:
            return self
        size = self.eval_size
        return Dataset(self.train_x[:, :size], self.train_y[:, :size], self.test_x[:, :size], self.test_y[:, :size])


def stack_datasets(datasets: Sequence[Dataset], device: torch.device) -> Dataset:
    """Stack per-replica datasets into (R, n, d) tensors."""
    return Dataset(*(torch.stack(parts).to(device) for parts in zip(*(
        (d.train_x, d.train_y, d.test_x, d.test_y) for d in datasets))))
