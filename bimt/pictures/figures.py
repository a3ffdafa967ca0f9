"""A task's own figures, by the name a task declares them with (`Task.figures`): each is drawn from
replica 0 of a trained model and its data, and saved as NAME.png beside the network's picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from bimt.network.model import BioMLP
from bimt.network.spatial import SpatialModel
from bimt.network.transformer import BioTransformer
from bimt.pictures.grid import draw_input_weights
from bimt.tasks.base import Task
from bimt.tasks.dataset import Dataset
from bimt.tasks.incontext import w_probe


def draw_predictions(true: torch.Tensor, predicted: torch.Tensor, title: str) -> Figure:
    """Scatter of predicted against true test values, with the identity line."""
    true_np = true.detach().cpu().numpy().ravel()
    pred_np = predicted.detach().cpu().numpy().ravel()
    low = float(min(true_np.min(), pred_np.min()))
    high = float(max(true_np.max(), pred_np.max()))
    margin = 0.05 * (high - low + 1e-12)
    fig = Figure(figsize=(3, 3), dpi=100)
    fig.subplots_adjust(left=0.2, right=0.95, bottom=0.15, top=0.86)  # tight_layout costs 30 ms
    ax = fig.subplots()
    ax.plot([low - margin, high + margin], [low - margin, high + margin], ls="--", color="red", alpha=0.3)
    ax.scatter(true_np, pred_np, s=5)
    ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=9)
    return fig




@torch.no_grad()
def draw_decision_boundary(model: BioMLP, data: Dataset, resolution: int = 30) -> Figure:
    """Replica 0's two-class decision on a grid around the training points (green: class 1, orange:
    class 2, where output 2 exceeds output 1), with the points coloured by their class: the
    notebook's view (Figure 4)."""
    points, labels = data.train_x[0].cpu().numpy(), data.train_y[0].cpu().numpy()
    low, high = points.min(axis=0) - 0.1, points.max(axis=0) + 0.1
    grid_x, grid_y = np.meshgrid(*(np.linspace(low[i], high[i], resolution) for i in range(2)))
    grid = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=data.train_x.dtype,
                        device=data.train_x.device)
    output = model(grid[None])[0]
    margin = (output[:, 1] - output[:, 0]).cpu().numpy().reshape(grid_x.shape)
    fig = Figure(figsize=(3.5, 3), dpi=100)
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.1, top=0.9)
    ax = fig.subplots()
    ax.contourf(grid_x, grid_y, margin, [-np.inf, 0.0, np.inf], colors=["green", "orange"], alpha=0.2)
    ax.scatter(points[:, 0], points[:, 1], s=6, c=np.where(labels[:, None] == 1, [[1.0, 0.55, 0.0]], [[0.0, 0.5, 0.0]]))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("decision boundary", fontsize=9)
    return fig


@torch.no_grad()
def draw_embeddings(model: BioMLP, task: Task, panels: int = 3) -> Figure:
    """Replica 0's token embeddings, each token labelled: first projected onto their two leading
    principal directions, then, as the notebook shows them (Figures 5-6), onto pairs of the embedding
    dimensions that carry most first-layer weight, the pairs in order of position, so that neighbours
    in the network are drawn together."""
    table = model.embedding[0].detach().double().cpu().numpy()
    weight = model.weights[0][0].detach().abs().cpu().numpy()
    by_position = weight.reshape(weight.shape[0], model.in_fold, -1).sum(axis=(0, 1))
    features = model.in_perm[0].cpu().numpy()
    ranked = np.argsort(-by_position, kind="stable")[: 2 * panels]
    pairs = np.sort(ranked)[: 2 * (len(ranked) // 2)].reshape(-1, 2)
    fig = Figure(figsize=(3.2 * (1 + len(pairs)), 3.4), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, 1 + len(pairs)))
    centred = table - table.mean(axis=0)
    directions = np.linalg.svd(centred, full_matrices=False)[2][:2]
    views = [(centred @ directions.T, "two leading principal directions")]
    views += [(table[:, features[pair]], f"dimensions {features[pair[0]] + 1} and {features[pair[1]] + 1}")
              for pair in pairs]
    labels = task.output_labels
    for ax, (xy, title) in zip(axes, views):
        ax.scatter(xy[:, 0], xy[:, 1], s=12, color="blue", alpha=0.5)
        for token, (x, y) in enumerate(xy):
            ax.annotate(labels[token], (x, y), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{task.name}: token embeddings", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.85, wspace=0.1)
    return fig


@torch.no_grad()
def _predictions(model: BioMLP, data: Dataset, task: Task) -> Figure:
    """Predicted against true test values of replica 0, with its test MSE."""
    predicted = model(data.test_x[:1])[0]
    error = float(((predicted - data.test_y[0]) ** 2).mean())
    return draw_predictions(data.test_y[0], predicted, f"{task.name}\ntest MSE = {error:.2e}")


@torch.no_grad()
def _incontext_predictions(model: BioTransformer, data: Dataset, task: Task) -> Figure:
    """Predicted against true y at the last position of every test sequence (the in-context
    prediction), replica 0, with its MSE."""
    predicted = model.replica_view(0)(data.test_x[:1])[0, :, -1, 0]
    true = data.test_y[0, :, -1, 0]
    error = float(((predicted - true) ** 2).mean())
    return draw_predictions(true, predicted, f"last position: test MSE = {error:.2e}")


def _w_neurons(model: BioTransformer, data: Dataset, task: Task) -> Figure:
    """The two residual neurons after block 1 that best encode w (by the probe's standardised
    coefficients), at the last position of every test sequence, coloured by w (Figure 7)."""
    probe = w_probe(model, data)
    first, second = probe.neurons
    fig = Figure(figsize=(3.8, 3.2), dpi=100)
    fig.subplots_adjust(left=0.18, right=0.95, bottom=0.15, top=0.88)
    ax = fig.subplots()
    points = ax.scatter(probe.features[:, first], probe.features[:, second], c=probe.w, s=3, cmap="coolwarm")
    fig.colorbar(points, ax=ax, label="w")
    ax.set_xlabel(f"Res2 neuron {first + 1}")
    ax.set_ylabel(f"Res2 neuron {second + 1}")
    ax.set_title(f"w in the residual stream: probe $R^2$ = {probe.r2:.3f}", fontsize=9)
    return fig


def _input_weights(model: BioMLP, data: Dataset, task: Task) -> Figure:
    """The first hidden layer's input weights as images of the task's square input."""
    return draw_input_weights(model, math.isqrt(task.inputs))


FIGURES: dict[str, Callable[[SpatialModel, Dataset, Task], Figure]] = {
    "pred_vs_true": _predictions,
    "decision_boundary": lambda model, data, task: draw_decision_boundary(model, data),
    "embeddings": lambda model, data, task: draw_embeddings(model, task),
    "input_weights": _input_weights,
    "incontext_predictions": _incontext_predictions,
    "w_neurons": _w_neurons,
}


def task_figures(model: SpatialModel, data: Dataset, task: Task) -> dict[str, Figure]:
    """The figures `task` declares, drawn from replica 0 of `model` (name -> figure)."""
    return {name: FIGURES[name](model, data, task) for name in task.figures}
