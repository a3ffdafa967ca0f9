"""The symbolic-formula tasks of Section 3.1, custom formula tasks, and their data.

The order of random draws is part of the spec: `np.random.seed(seed)`, then the training inputs, then
the test inputs, each `np.random.rand(n, d_in) * 2 - 1` in float64 (for the default input range
[-1, 1]). Labels are computed in float64 and only then cast to float32, exactly as the reference
notebook does. Optional label noise is drawn last, so it never changes the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bimt.formula import Formula


@dataclass(frozen=True)
class Task:
    """A formula from inputs `x1..x{inputs}` to `outputs` values, with labels for the drawings.

    `uses[o]` lists the inputs (1-based) that output o depends on: the module structure a
    well-trained modular network should show.
    """

    name: str
    inputs: int
    outputs: int
    formula: Callable[[np.ndarray], np.ndarray]
    output_labels: tuple[str, ...]  # for the drawings (matplotlib's LaTeX)
    uses: tuple[tuple[int, ...], ...]
    output_formulas: tuple[str, ...]  # the same in plain text, for the terminal

    @property
    def dependencies(self) -> np.ndarray:
        """(inputs, outputs) booleans: does output o depend on input i?"""
        matrix = np.zeros((self.inputs, self.outputs), dtype=bool)
        for o, inputs in enumerate(self.uses):
            matrix[[i - 1 for i in inputs], o] = True
        return matrix

    @property
    def input_labels(self) -> tuple[str, ...]:
        return tuple(f"$x_{{{i + 1}}}$" for i in range(self.inputs))


def _independence(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4 = x.T
    return np.stack([(x1 + x3) ** 3, x2**2 + np.sin(np.pi * x4)], axis=1)


def _feature_sharing(x: np.ndarray) -> np.ndarray:
    x1, x2, x3 = x.T
    return np.stack([x1**2, x1**2 + x2**2, x1**2 + x2**2 + x3**2], axis=1)


def _compositionality(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4 = x.T
    return np.sqrt((x1 - x2) ** 2 + (x3 - x4) ** 2)[:, None]


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("independence", 4, 2, _independence, (r"$(x_1+x_3)^3$", r"$x_2^2+\sin(\pi x_4)$"), ((1, 3), (2, 4)),
             ("(x1+x3)^3", "x2^2+sin(pi*x4)")),
        Task(
            "feature_sharing",
            3,
            3,
            _feature_sharing,
            (r"$x_1^2$", r"$x_1^2+x_2^2$", r"$x_1^2+x_2^2+x_3^2$"),
            ((1,), (1, 2), (1, 2, 3)),
            ("x1^2", "x1^2+x2^2", "x1^2+x2^2+x3^2"),
        ),
        Task(
            "compositionality",
            4,
            1,
            _compositionality,
            (r"$\sqrt{(x_1-x_2)^2+(x_3-x_4)^2}$",),
            ((1, 2, 3, 4),),
            ("sqrt((x1-x2)^2+(x3-x4)^2)",),
        ),
    )
}


def custom_task(name: str, inputs: int, formulas: list[Formula]) -> Task:
    """A task whose outputs are user formulas over x1..x{inputs}."""

    def formula(x: np.ndarray) -> np.ndarray:
        return np.stack([f(x) for f in formulas], axis=1)

    labels = tuple(f.text.replace("**", "^") for f in formulas)
    return Task(name, inputs, len(formulas), formula, labels, tuple(f.inputs_used for f in formulas), labels)


@dataclass(frozen=True)
class Dataset:
    """Train and test split of one task, float32 tensors of shape (n, inputs) and (n, outputs)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def replica_subset(self, index: torch.Tensor | slice) -> Dataset:
        """The given replicas (rows of the leading axis) of stacked (R, n, d) data."""
        return Dataset(self.train_x[index], self.train_y[index], self.test_x[index], self.test_y[index])


def make_dataset(
    task: Task,
    seed: int,
    n_train: int = 100,
    n_test: int = 100,
    low: float = -1.0,
    high: float = 1.0,
    noise: float = 0.0,
) -> Dataset:
    """Draw the task's data with numpy's global RNG, in the reference notebook's order.

    Inputs are uniform in [low, high); `noise` is the standard deviation of Gaussian noise added to
    the training labels only, so the test MSE still measures the formula.
    """
    np.random.seed(seed)
    train_x = np.random.rand(n_train, task.inputs) * (high - low) + low
    test_x = np.random.rand(n_test, task.inputs) * (high - low) + low
    train_y = task.formula(train_x)
    if noise > 0:
        train_y = train_y + noise * np.random.randn(*train_y.shape)

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    return Dataset(
        train_x=as_tensor(train_x),
        train_y=as_tensor(train_y),
        test_x=as_tensor(test_x),
        test_y=as_tensor(task.formula(test_x)),
    )
