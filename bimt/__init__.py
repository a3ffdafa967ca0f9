"""bimt: Brain-Inspired Modular Training (Liu, Gan, Tegmark 2023) as a small experiment runner.

Your own model, with your own optimizer::

    net = bimt.wrap(model)
    loss = task_loss + lam * net.connection_cost()

The runner from a notebook, with train.py's configs: `bimt.fit(task="independence", steps=2000)`.
Library use of the runner's parts, without Hydra::

    from bimt import BioMLP, BioTransformer, connection_cost, relocate, train

The whole method in one plain file, as the notebooks write it, is `bimt.reference`.
"""

from bimt.experiment.fit import FitResult, fit
from bimt.network import AdamW, BioMLP, BioTransformer, connection_cost, relocate
from bimt.pictures import draw_network
from bimt.tasks import TASKS, Dataset, Minibatches, make_dataset
from bimt.tasks.dataset import stack_datasets
from bimt.training import NullLogger, RecordingLogger, ReplicaSettings, Schedule, TrainSettings, evaluate, train
from bimt.wrapping import Attention, WrapError, WrappedModel, wrap

__all__ = [
    "TASKS",
    "AdamW",
    "Attention",
    "BioMLP",
    "BioTransformer",
    "Dataset",
    "FitResult",
    "Minibatches",
    "NullLogger",
    "RecordingLogger",
    "ReplicaSettings",
    "Schedule",
    "TrainSettings",
    "WrapError",
    "WrappedModel",
    "connection_cost",
    "draw_network",
    "evaluate",
    "fit",
    "make_dataset",
    "relocate",
    "stack_datasets",
    "train",
    "wrap",
]
