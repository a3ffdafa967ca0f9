"""The symbolic-formula tasks of Section 3.1, custom formula tasks, and their data (MSE regression).

The order of random draws is part of the spec: `np.random.seed(seed)`, then the training inputs, then
the test inputs, each `np.random.rand(n, d_in) * 2 - 1` in float64 (for the default input range
[-1, 1]). Labels are computed in float64 and only then cast to float32, exactly as the reference
notebook does. Optional label noise is drawn last, so it never changes the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bimt.tasks.base import SettingError, Task, require
from bimt.tasks.dataset import Dataset
from bimt.tasks.expressions import Formula, FormulaError, parse


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
    return Task(name, inputs, len(labels), labels, data=_formula_data, figures=("pred_vs_true",), formula=formula,
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


PAPER_LOW, PAPER_HIGH = -1.0, 1.0  # the paper tasks' input range
IMAGE_KEYS = ("path", "download", "eval_size", "source", "targets", "kind", "test_fraction", "standardize")


def build(settings: Any) -> Task:
    """The paper's formula task of that name, or a custom task built from the `outputs` formulas,
    after checking the settings (`task.*`) that apply. Pure: parses, draws nothing."""
    name = settings.name
    for key in IMAGE_KEYS:
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} applies only to the image and "
                f"table tasks (digits, mnist, table); leave it unset for {name}")
    for key in ("n_train", "n_test", "low", "high", "noise"):
        require(getattr(settings, key) is not None, f"task.{key}=None is not allowed; task {name} draws "
                "its inputs with it (see conf/task/custom.yaml)")
    require(settings.outputs is None or name not in TASKS,
            f"task.outputs cannot be used with the paper task {name} (task.name={name}); your own "
            "formulas need task=custom, with a task.name that is not a paper task's")
    require(settings.noise >= 0, f"task.noise={settings.noise} is not allowed; it is a standard deviation >= 0")
    if settings.outputs is None:
        require(name in TASKS, f"task={name} has no formulas: use a paper task ({', '.join(TASKS)}) or give your own, "
                "e.g. task=custom 'task.outputs=[x1*x2]'")
        require(settings.inputs is None, f"task.inputs={settings.inputs} is only for custom tasks; {name} has fixed formulas")
        for key, value, paper in (("low", settings.low, PAPER_LOW), ("high", settings.high, PAPER_HIGH)):
            require(value == paper, f"task.{key}={value} changes the inputs of the paper task {name} "
                    f"(drawn from [{PAPER_LOW}, {PAPER_HIGH})); for other inputs use task=custom with its formulas")
        return TASKS[name]
    require(settings.low < settings.high, f"task.low={settings.low} must be below task.high={settings.high}")
    require(len(settings.outputs) > 0, "task.outputs=[] is not allowed; give at least one formula")
    require(settings.inputs is None or (isinstance(settings.inputs, int) and not isinstance(settings.inputs, bool)),
            f"task.inputs={settings.inputs} is not allowed for {name}; it is the number of inputs x1..xn")
    formulas = []
    for i, text in enumerate(settings.outputs):
        try:
            formulas.append(parse(str(text), settings.inputs))
        except FormulaError as error:
            raise SettingError(f"task.outputs[{i}]={str(text)!r}: {error}") from None
    inputs = settings.inputs if settings.inputs is not None else max(f.max_input for f in formulas)
    require(inputs >= 1, f"task.inputs={inputs} is not allowed; a task needs at least one input")
    return custom_task(name, inputs, formulas)


def check_finite(settings: Any, data: Dataset) -> None:
    """Refuse formulas that give NaN or inf on the inputs the run samples (`SettingError`): their
    domain is only known once the data are drawn."""
    for i in range(data.train_y.shape[-1]):
        values = np.concatenate([data.train_y[..., i].reshape(-1).numpy(), data.test_y[..., i].reshape(-1).numpy()])
        bad = int((~np.isfinite(values)).sum())
        require(bad == 0, f"task.outputs[{i}]={settings.outputs[i]!r} gives NaN or inf on {bad} of {values.size} "
                f"samples drawn from [{settings.low}, {settings.high}); change task.low/task.high to keep inputs in its domain")
