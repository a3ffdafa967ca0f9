"""What a task declares: its data, its loss, its metrics and its figures.

A new task is a data function and a `Task` (plus its config in `conf/task/`); the engines, the
trainer and the outputs read only what is declared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import LOSSES


class SettingError(ValueError):
    """A task setting (`task.*`) that the task cannot use; the message is one line for the terminal."""


def require(ok: bool, message: str) -> None:
    """Raise `SettingError(message)` unless `ok`."""
    if not ok:
        raise SettingError(message)


DataMaker = Callable[["Task", Any, int], Dataset]  # (task, its config section `task`, seed) -> data


@dataclass(frozen=True)
class Task:
    """A task from `inputs` features (or, with `tokens`, that many token ids, each embedded) to
    `outputs` values (loss `mse`) or classes (loss `cross_entropy`), with labels for the drawings.

    `data` draws the task's data for a seed from the settings of its config section (`task.*`).
    `uses[o]`, where given, lists the inputs (1-based) that output o depends on: the module
    structure a well-trained modular network should show. `figures` names the task's own pictures
    of a trained model beyond the network (`bimt.pictures.FIGURES` draws them).
    """

    name: str
    inputs: int
    outputs: int
    output_labels: tuple[str, ...]  # for the drawings (matplotlib's LaTeX)
    data: DataMaker = field(compare=False)
    figures: tuple[str, ...] = ()
    loss: str = "mse"
    tokens: int = 0  # vocabulary of the embedded token ids; 0: the inputs are numbers
    formula: Callable[[np.ndarray], np.ndarray] | None = None
    uses: tuple[tuple[int, ...], ...] | None = None
    output_formulas: tuple[str, ...] = ()  # the outputs in plain text, for the terminal

    @property
    def classifies(self) -> bool:
        """Targets are classes and accuracy is a metric: what the task's loss says."""
        return LOSSES[self.loss].classifies

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
