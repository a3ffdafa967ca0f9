"""What a task declares: its data, its loss, its metrics and its figures.

A new task is a data function and a `Task` (plus its config in `conf/task/`); the engines, the
trainer and the outputs read only what is declared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bimt.batches import Minibatches

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bimt.model import BioMLP


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


FigureMaker = Callable[["BioMLP", Dataset, "Task"], dict[str, "Figure"]]
DataMaker = Callable[["Task", Any, int], Dataset]  # (task, its config section `task`, seed) -> data


@dataclass(frozen=True)
class Task:
    """A task from `inputs` features (or, with `tokens`, that many token ids, each embedded) to
    `outputs` values (loss `mse`) or classes (loss `cross_entropy`), with labels for the drawings.

    `data` draws the task's data for a seed from the settings of its config section (`task.*`).
    `uses[o]`, where given, lists the inputs (1-based) that output o depends on: the module
    structure a well-trained modular network should show. `figures` draws the task's own pictures
    of a trained model (replica 0) beyond the network (name -> figure).
    """

    name: str
    inputs: int
    outputs: int
    output_labels: tuple[str, ...]  # for the drawings (matplotlib's LaTeX)
    data: DataMaker = field(compare=False)
    figures: FigureMaker = field(compare=False)
    loss: str = "mse"
    tokens: int = 0  # vocabulary of the embedded token ids; 0: the inputs are numbers
    formula: Callable[[np.ndarray], np.ndarray] | None = None
    uses: tuple[tuple[int, ...], ...] | None = None
    output_formulas: tuple[str, ...] = ()  # the outputs in plain text, for the terminal

    @property
    def classifies(self) -> bool:
        return self.loss == "cross_entropy"

    @property
    def dependencies(self) -> np.ndarray | None:
        """(inputs, outputs) booleans: does output o depend on input i? None where not declared."""
        if self.uses is None:
            return None
        matrix = np.zeros((self.inputs, self.outputs), dtype=bool)
        for o, inputs in enumerate(self.uses):
            matrix[[i - 1 for i in inputs], o] = True
        return matrix

    @property
    def input_labels(self) -> tuple[str, ...]:
        return tuple(f"$x_{{{i + 1}}}$" for i in range(self.inputs))
