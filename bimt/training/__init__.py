"""Training: the loop (`train`), its event calendar and the lambda schedule.

The loop drives an engine (`bimt.engines`) in stretches between the events of a `Calendar`, relocates
neurons (`bimt.network.relocation`) and reports through a small `Logger` interface; it knows nothing
of files, TensorBoard or Hydra.
"""

from bimt.training.calendar import Calendar
from bimt.training.loop import (
    Logger,
    NullLogger,
    RecordingLogger,
    ReplicaSettings,
    TrainResult,
    TrainSettings,
    evaluate,
    make_optimizer,
    train,
)
from bimt.training.schedule import Schedule
from bimt.training.status import Status

__all__ = ["Calendar", "Logger", "NullLogger", "RecordingLogger", "ReplicaSettings", "Schedule", "Status", "TrainResult",
           "TrainSettings", "evaluate", "make_optimizer", "train"]
