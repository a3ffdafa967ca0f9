"""The tasks: Section 3.1's formulas (and your own), two moons, group operations, in-context regression,
handwritten digits, and your own data from a file (`table`).

Each module declares its tasks' data, loss and figures (see `bimt.tasks.base.Task`) and a `build`
function that checks a config's `task` section and returns the task. `build_task` is the one place
that maps a task's name to its module: a new task is a module, an entry in `BUILDERS` and its
config in `conf/task/`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bimt.tasks import formulas, groups, images, incontext, moons, table
from bimt.tasks.base import SettingError, Task
from bimt.tasks.dataset import Dataset
from bimt.tasks.formulas import TASKS, custom_task, make_dataset
from bimt.tasks.groups import modular_addition_data, modular_addition_task, permutation_data, permutation_task
from bimt.tasks.images import DataError, digits_task, mnist_task
from bimt.tasks.minibatches import Minibatches
from bimt.tasks.moons import two_moons_data, two_moons_task

BUILDERS: dict[str, Callable[[Any], Task]] = {
    **{name: formulas.build for name in TASKS},
    "two_moons": moons.build,
    "modular_addition": groups.build,
    "permutation_s4": groups.build,
    "incontext": incontext.build,
    "digits": images.build,
    "mnist": images.build,
    "table": table.build,
}


def build_task(settings: Any) -> Task:
    """The task a config's `task` section names, its settings checked (`SettingError` otherwise): a
    task of `BUILDERS`, or any other name with formulas of its own (`task=custom`). Pure: it draws
    and reads no data."""
    return BUILDERS.get(settings.name, formulas.build)(settings)


__all__ = [
    "BUILDERS",
    "TASKS",
    "DataError",
    "Dataset",
    "Minibatches",
    "SettingError",
    "Task",
    "build_task",
    "custom_task",
    "digits_task",
    "make_dataset",
    "mnist_task",
    "modular_addition_data",
    "modular_addition_task",
    "permutation_data",
    "permutation_task",
    "two_moons_data",
    "two_moons_task",
]
