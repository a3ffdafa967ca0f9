"""bimt: Brain-Inspired Modular Training (Liu, Gan, Tegmark 2023) as a small experiment runner.

Library use, without Hydra::

    from bimt import BioMLP, connection_cost, relocate, train
"""

from bimt.batches import Minibatches
from bimt.cost import connection_cost
from bimt.model import BioMLP
from bimt.relocate import relocate
from bimt.schedule import Schedule
from bimt.tasks import TASKS, Dataset, make_dataset
from bimt.trainer import NullLogger, ReplicaSettings, TrainSettings, evaluate, train

__all__ = [
    "TASKS",
    "BioMLP",
    "Dataset",
    "Minibatches",
    "NullLogger",
    "ReplicaSettings",
    "Schedule",
    "TrainSettings",
    "connection_cost",
    "evaluate",
    "make_dataset",
    "relocate",
    "train",
]
