"""Shared helpers: run `train.py` as a user would, read TensorBoard event files back, record what
the trainer logs, and the switches of a train type."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bimt.training import ReplicaSettings

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def train_cli(*overrides: str) -> subprocess.CompletedProcess:
    """`python train.py OVERRIDES...` in a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def train_cli_with_file_size_limit(limit: int, *overrides: str) -> subprocess.CompletedProcess:
    """`train_cli` in a process that may write no file past `limit` bytes (RLIMIT_FSIZE): the system
    refuses such a write (EFBIG) as it refuses one on a full disk (ENOSPC)."""

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=600, preexec_fn=limit_file_size)


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a multirun, in order."""
    return sorted(d for d in sweep.iterdir() if d.is_dir())


def metrics_without_timing(run_dir: Path) -> dict:
    """A run's metrics.json without its wall time, which no two runs share."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("wall_s")
    return metrics


def read_events(run_dir: Path) -> EventAccumulator:
    """All events of one run directory (every event file in it), fully loaded."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in a run directory."""
    events = read_events(run_dir)
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests compute in one thread, as runs do by default, so numbers are the runs' numbers."""
    torch.set_num_threads(1)


def switches(train_type: int) -> ReplicaSettings:
    return ReplicaSettings(
        l1=torch.tensor([train_type > 1]),
        locality=torch.tensor([1.0 if train_type in (3, 5) else 0.0]),
        swap=torch.tensor([train_type >= 4]),
    )
