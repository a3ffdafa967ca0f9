"""The symbolic-formula tasks of Section 3.1, custom formula tasks, and their data (MSE regression).

The order of random draws is part of the spec: `np.random.seed(seed)`, then the training inputs, then
the test inputs, each `np.random.rand(n, d_in) * 2 - 1` in float64 (for the default input range
[-1, 1]). Labels are computed in float64 and only then cast to float32, exactly as the reference
notebook does. Optional label noise is drawn last, so it never changes the inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from bimt.formula import Formula
from bimt.tasks.base import Dataset, Task


def _prediction_figures(model, data: Dataset, task: Task) -> dict:
    """Predicted against true test values of replica 0."""
    from bimt.plot import draw_predictions  # drawing needs the model; the task only names it

    with torch.no_grad():
        predicted = model(data.test_x[:1])[0]
    error = float(((predicted - data.test_y[0]) ** 2).mean())
    return {"pred_vs_true": draw_predictions(data.test_y[0], predicted, f"{task.name}\ntest MSE = {error:.2e}")}


def _independence(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4 = x.T
    return np.stack([(x1 + x3) ** 3, x2**2 + np.sin(np.pi * x4)], axis=1)


def _feature_sharing(x: np.ndarray) -> np.ndarray:
    x1, x2, x3 = x.T
    return np.stack([x1**2, x1**2 + x2**2, x1**2 + x2**2 + x3**2], axis=1)


def _compositionality(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4 = x.T
    return np.sqrt((x1 - x2) ** 2 + (x3 - x4) ** 2)[:, None]


def _formula_task(name: str, inputs: int, labels: tuple[str, ...], formula, uses, plain: tuple[str, ...]) -> Task:
    """A formula task: MSE regression on inputs drawn by `make_dataset`, pictured by its predictions."""
    return Task(name, inputs, len(labels), labels, data=_formula_data, figures=_prediction_figures, formula=formula,
                uses=uses, output_formulas=plain)


def _formula_data(task: Task, settings, seed: int) -> Dataset:
    return make_dataset(task, seed, settings.n_train, settings.n_test, settings.low, settings.high, settings.noise)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _formula_task("independence", 4, (r"$(x_1+x_3)^3$", r"$x_2^2+\sin(\pi x_4)$"), _independence,
                      ((1, 3), (2, 4)), ("(x1+x3)^3", "x2^2+sin(pi*x4)")),
        _formula_task("feature_sharing", 3, (r"$x_1^2$", r"$x_1^2+x_2^2$", r"$x_1^2+x_2^2+x_3^2$"), _feature_sharing,
                      ((1,), (1, 2), (1, 2, 3)), ("x1^2", "x1^2+x2^2", "x1^2+x2^2+x3^2")),
        _formula_task("compositionality", 4, (r"$\sqrt{(x_1-x_2)^2+(x_3-x_4)^2}$",), _compositionality,
                      ((1, 2, 3, 4),), ("sqrt((x1-x2)^2+(x3-x4)^2)",)),
    )
}


def custom_task(name: str, inputs: int, formulas: list[Formula]) -> Task:
    """A task whose outputs are user formulas over x1..x{inputs}."""

    def formula(x: np.ndarray) -> np.ndarray:
        return np.stack([f(x) for f in formulas], axis=1)

    labels = tuple(f.text.replace("**", "^") for f in formulas)
    return _formula_task(name, inputs, labels, formula, tuple(f.inputs_used for f in formulas), labels)


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
