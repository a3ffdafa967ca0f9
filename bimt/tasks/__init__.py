"""The tasks: Section 3.1's formulas (and your own), two moons, group operations, handwritten digits.

Each module declares a task's data, loss and figures (see `bimt.tasks.base.Task`).
"""

from bimt.tasks.base import Dataset, Task
from bimt.tasks.formulas import TASKS, custom_task, make_dataset
from bimt.tasks.groups import modular_addition_data, modular_addition_task, permutation_data, permutation_task
from bimt.tasks.images import DataError, digits_task, mnist_task
from bimt.tasks.moons import two_moons_data, two_moons_task

__all__ = [
    "TASKS",
    "DataError",
    "Dataset",
    "Task",
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
