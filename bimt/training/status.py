"""How a job ended: the one list of statuses, from the training loop up to `metrics.json`."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A job's status, as `metrics.json` records it (`invalid` never reaches a file: nothing trained)."""

    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    FAILED = "failed"  # a write failed (a full disk, a quota)
    INVALID = "invalid"  # the config, the data or the machine refused it before training
