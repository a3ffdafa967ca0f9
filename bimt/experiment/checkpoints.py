"""Checkpoints: everything needed to continue one replica of a run, written atomically, and read back.

Tensors are selected by name, never by shape, and the file holds plain tensors and dicts only (no
pickled classes of this package), so checkpoints stay loadable when modules move.
"""

from __future__ import annotations

import io
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bimt.experiment.files import atomic_path
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.spatial import SpatialModel

CHECKPOINT = "checkpoint.pt"


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint file that exists but cannot be loaded; the message is one line."""


def save_checkpoint(
    path: Path,
    model: SpatialModel,
    optimizer: AdamW,
    replica: int,
    steps_done: int,
    config: dict[str, Any],
) -> None:
    """Everything needed to continue replica `replica` after `steps_done` steps, written atomically.

    The replica's parameters, permutations and optimizer moments, selected by name (never by shape:
    a group of R jobs may have a layer of width R), the step, the config, and the random-number
    states (training itself draws none; they are kept so that code which does continues exactly
    too). What the config rebuilds (the wire lengths) is not stored; neither is the schedule, whose
    lambda and bias penalty are functions of the step.
    """
    one = slice(replica, replica + 1)
    state = {
        "model": {name: getattr(model, name).detach()[one].clone() for name in REPLICA_STATE},
        "shape": list(model.shape) if isinstance(model, BioMLP) else None,  # an MLP's widths, for a reader
        "maps": [list(model.network.shape(m)) for m in model.network.maps],
        "optimizer": {"step": optimizer.steps, **{name: getattr(optimizer, name)[one].clone() for name in MOMENTS}},
        "step": steps_done,
        "config": config,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: a failing write is then a plain OSError, not torch's
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


REPLICA_STATE = ("params", "in_perm", "out_perm")  # a model's tensors with a leading replica axis
MOMENTS = ("exp_avg", "exp_avg_sq")  # the AdamW state laid out like the parameters


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; raises `UnreadableCheckpoint` naming the file and the reason."""
    try:
        checkpoint = torch.load(path, weights_only=False, map_location="cpu")
        missing = {"model", "optimizer", "step", "config"} - set(checkpoint)
    except Exception as error:  # noqa: BLE001 - whatever torch.load raises, the file is unusable
        raise UnreadableCheckpoint(f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if missing:
        raise UnreadableCheckpoint(f"{path} cannot be read (no {', '.join(sorted(missing))} in it)")
    return checkpoint


def load_checkpoint(checkpoint: dict[str, Any], model: SpatialModel, optimizer: AdamW, replica: int = 0) -> None:
    """Restore a single-replica checkpoint (`read_checkpoint`) into replica `replica` of `model` and `optimizer`."""
    with torch.no_grad():
        for name in REPLICA_STATE:
            getattr(model, name)[replica].copy_(checkpoint["model"][name][0])
        for name in MOMENTS:
            getattr(optimizer, name)[replica].copy_(checkpoint["optimizer"][name][0])
    optimizer.steps = int(checkpoint["optimizer"]["step"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    random.setstate(checkpoint["rng"]["python"])


def saved_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint in a run directory, or None when there is none.

    One that cannot be read is moved aside to `checkpoint.pt.unreadable`, reported in one line, and
    the job trains from step 0: a damaged file must not stop the rest of a sweep."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return read_checkpoint(path)
    except UnreadableCheckpoint as error:
        aside = path.with_name(f"{CHECKPOINT}.unreadable")
        os.replace(path, aside)
        print(f"warning: {error}; moved to {aside.name}, this job trains from step 0", file=sys.stderr)
        return None
