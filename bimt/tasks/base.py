"""What a task declares: its data, its loss, its metrics and its figures.

A new task is a data function and a `Task` (plus its config in `conf/task/`); the engines, the
trainer and the outputs read only what is declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
Sampler = Callable[[int, int, Sequence[int]], Any]  # (training samples, batch size, seeds) -> the minibatches

ARCHITECTURES = ("mlp", "transformer")


@dataclass(frozen=True)
class Task:
    """A task from `inputs` features (or, with `tokens`, that many token ids, each embedded) to
    `outputs` values (loss `mse`) or classes (loss `cross_entropy`), with labels for the drawings.

    `data` draws the task's data for a seed from the settings of its config section (`task.*`).
    `uses[o]`, where given, lists the inputs (1-based) that output o depends on: the module
    structure a well-trained modular network should show. `figures` names the task's own pictures
    of a trained model beyond the network (`bimt.pictures.FIGURES` draws them).

    `architecture` is the model the task's inputs fit: an "mlp" (numbers or embedded tokens) or a
    "transformer" (token sequences). `sampler` draws its minibatches where the notebook draws them
    its own way (default: a fresh shuffle per epoch, `Minibatches`); `init_prelude` makes the draws
    the notebook makes from torch's generator between seeding it and building the model.
    `class_modules`: each class is one of the task's modules (the digits), for the modularity of
    the task's own partition (`modules`).
    `final_metrics(model, data)` gives the task's own final metrics, (R,) tensors by name.
    `sample_counts(settings)` gives the training and test samples a config trains on where the task
    reads them from files and a config may leave their number to what the files hold (MNIST, tables).
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
    architecture: str = "mlp"
    input_names: tuple[str, ...] = ()  # the inputs' labels where they are not x1, x2, ...
    final_metrics: Callable[[Any, Dataset], dict[str, Any]] | None = field(default=None, compare=False)
    sampler: Sampler | None = field(default=None, compare=False)
    init_prelude: Callable[[], object] | None = field(default=None, compare=False)
    sample_counts: Callable[[Any], tuple[int, int]] | None = field(default=None, compare=False)
    class_modules: bool = False

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
    def modules(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None:
        """The task's own modules, each (its inputs, its outputs), 0-based; None where it has none.

        Outputs whose declared inputs (`uses`) overlap, directly or through other outputs, are one
        module: independence has two, {x1, x3} -> out1 and {x2, x4} -> out2; a task whose outputs all
        share inputs has one, which is no partition, so None. With `class_modules`, each class is a
        module of its own and no input is assigned to one."""
        if self.class_modules:
            return tuple(((), (o,)) for o in range(self.outputs))
        if self.uses is None:
            return None
        module_of = list(range(self.outputs))  # union-find over outputs that share an input

        def root(o: int) -> int:
            while module_of[o] != o:
                o = module_of[o]
            return o

        for i in range(1, self.inputs + 1):
            users = [o for o, inputs in enumerate(self.uses) if i in inputs]
            for o in users[1:]:
                module_of[root(o)] = root(users[0])
        roots = sorted({root(o) for o in range(self.outputs)})
        if len(roots) < 2:
            return None
        modules = []
        for r in roots:
            outputs = tuple(o for o in range(self.outputs) if root(o) == r)
            inputs = tuple(sorted({i - 1 for o in outputs for i in self.uses[o]}))
            modules.append((inputs, outputs))
        return tuple(modules)

    @property
    def input_labels(self) -> tuple[str, ...]:
        return self.input_names or tuple(f"$x_{{{i + 1}}}$" for i in range(self.inputs))
