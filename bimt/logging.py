"""Where a run's numbers and pictures go: TensorBoard events, metrics.json, figures, checkpoint.

One run directory per replica: replica r of a batched model writes exactly what a single run
writes. The trainer talks to `TensorBoardLogger` through the small `Logger` interface only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from bimt.model import BioMLP
from bimt.plot import draw_network, draw_predictions, figure_to_array
from bimt.tasks import Task


class TensorBoardLogger:
    """Scalars and network snapshots of every replica, each into its own run directory."""

    def __init__(self, run_dirs: Sequence[Path], task: Task) -> None:
        self.task = task
        self.writers = [SummaryWriter(log_dir=str(run_dir)) for run_dir in run_dirs]

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        columns = {tag: value.tolist() for tag, value in values.items()}
        for replica, writer in enumerate(self.writers):
            for tag, column in columns.items():
                writer.add_scalar(tag, column[replica], step)

    def snapshot(self, step: int, model: BioMLP) -> None:
        for replica, writer in enumerate(self.writers):
            figure = draw_network(model, replica, self.task.input_labels, self.task.output_labels)
            writer.add_image("network", figure_to_array(figure), step, dataformats="HWC")

    def finish(
        self, replica: int, step: int, hparams: dict[str, Any], metrics: dict[str, float], figures: dict
    ) -> None:
        """Final images at `step` and the hparams summary (written into the run's own directory)."""
        writer = self.writers[replica]
        for tag, figure in figures.items():
            writer.add_image(tag, figure_to_array(figure), step, dataformats="HWC")
        final = {f"final/{key}": value for key, value in metrics.items()}
        writer.add_hparams(hparams, final, run_name=".", global_step=step)
        writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into dotted keys with values TensorBoard's hparams accept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def replica_state(state: dict[str, torch.Tensor], replica: int, replicas: int) -> dict[str, torch.Tensor]:
    """Keep replica `replica` of every tensor that carries the replica axis (a leading R)."""
    return {
        name: tensor[replica : replica + 1].clone()
        if isinstance(tensor, torch.Tensor) and tensor.dim() > 0 and tensor.shape[0] == replicas
        else tensor
        for name, tensor in state.items()
    }


def save_checkpoint(
    path: Path,
    model: BioMLP,
    optimizer: torch.optim.Optimizer,
    replica: int,
    step: int,
    config: dict[str, Any],
) -> None:
    """Weights, permutations, optimizer moments, the step reached and the config of one replica."""
    replicas = model.replicas
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = {
        key: replica_state(value, replica, replicas) for key, value in optimizer_state["state"].items()
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "model": replica_state(model.state_dict(), replica, replicas),
            "shape": list(model.shape),
            "optimizer": optimizer_state,
            "step": step,
            "config": config,
        },
        temporary,
    )
    os.replace(temporary, path)


def save_figures(run_dir: Path, model: BioMLP, replica: int, task: Task, predicted: torch.Tensor,
                 true: torch.Tensor, test_mse: float, title: str) -> dict:
    """Write network.png and pred_vs_true.png; return the figures for TensorBoard."""
    figures = {
        "network": draw_network(model, replica, task.input_labels, task.output_labels, title),
        "pred_vs_true": draw_predictions(true, predicted, f"{task.name}\ntest MSE = {test_mse:.2e}"),
    }
    for name, figure in figures.items():
        figure.savefig(run_dir / f"{name}.png", bbox_inches="tight")
    return figures
