"""A completed run's final model, read back from its checkpoint, for reports and pictures."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from bimt.experiment.checkpoints import CHECKPOINT, read_checkpoint
from bimt.experiment.plan import build_model
from bimt.experiment.schema import RunConfig, saved_config
from bimt.experiment.validate import load_config, validate
from bimt.network.spatial import SpatialModel
from bimt.tasks import Task


def load_trained(run_dir: Path) -> tuple[SpatialModel, Task, RunConfig]:
    """The final model of a completed run, with its task and config, from its checkpoint."""
    checkpoint = read_checkpoint(run_dir / CHECKPOINT)
    config = load_config(OmegaConf.create(saved_config(checkpoint["config"])))
    task = validate(config)
    model = build_model(config, task, [0])
    model.load_state_dict(checkpoint["model"])
    return model, task, config
