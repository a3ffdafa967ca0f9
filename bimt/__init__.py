"""bimt: Brain-Inspired Modular Training (Liu, Gan, Tegmark 2023) as a small experiment runner.

Library use, without Hydra::

    from bimt import BioMLP, BioTransformer, connection_cost, relocate, train

The whole method in one plain file, as the notebooks write it, is `bimt.reference`.
"""

from bimt.network import AdamW, BioMLP, BioTransformer, connection_cost, relocate
from bimt.pictures import draw_network
from bimt.tasks import TASKS, Dataset, Minibatches, make_dataset
from bimt.tasks.dataset import stack_datasets
from bimt.training import NullLogger, RecordingLogger, ReplicaSettings, Schedule, TrainSettings, evaluate, train

__all__ = [
    "TASKS",
    "AdamW",
    "BioMLP",
    "BioTransformer",
    "Dataset",
    "Minibatches",
    "NullLogger",
    "RecordingLogger",
    "ReplicaSettings",
    "Schedule",
    "TrainSettings",
    "connection_cost",
    "draw_network",
    "evaluate",
    "make_dataset",
    "relocate",
    "stack_datasets",
    "train",
]
