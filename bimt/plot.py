"""Pictures of a network and of its predictions. Functions take data and return matplotlib figures.

The network drawing follows the paper's: neurons at their coordinates, one row per neuron layer
(networks on 2-D grids are drawn by `bimt.grid_plot`),
line width proportional to |w| (normalised per layer), blue for positive and red for negative
weights, inputs and outputs labelled by the feature that currently sits at each position. Each
layer's connections are one `LineCollection`, so a drawing takes milliseconds, not seconds.
Figures are built without pyplot: no global figure registry to leak from, no GUI backend needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection, LineCollection
from matplotlib.figure import Figure

from bimt.model import BioMLP
from bimt.tasks.base import Dataset, Task

if TYPE_CHECKING:
    from bimt.grid_plot import GridNetworkPicture

LAYER_GAP = 0.1  # vertical distance between neuron layers in the drawing
INVISIBLE_WIDTH = 0.01  # points: thinner wires cover under 1% of a pixel, and are not drawn at all
BLUE, RED = np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])  # positive, negative weights


def _neuron_positions(model: BioMLP, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every neuron slot of neuron layer `layer` (input folds drawn as stacked rows)."""
    n = model.shape[layer]
    fold = model.in_fold if layer == 0 else model.out_fold if layer == model.depth else 1
    x = model.coordinates(layer).numpy()
    y = np.full(n, LAYER_GAP * layer)
    if fold > 1:
        y = y + 0.02 * np.repeat(np.arange(fold), n // fold) - 0.01
    return x, y


def _label_style(count: int) -> dict:
    """Labels of a row of `count` neurons: upright when few, small and turned when many (S4's 24)."""
    return {"fontsize": 8} if count <= 12 else {"fontsize": 4.5, "rotation": 90}


class NetworkPicture:
    """A drawing of one model's network that is built once and then redrawn in place.

    Neurons, wires and label positions never move on the page; only wire widths and colours and
    the texts change. Keeping the artists (and the canvas, whose renderer caches the labels'
    mathtext layout) makes a drawing several times cheaper than a new figure, so one picture
    serves every replica of a model, and every snapshot.
    """

    def __init__(
        self,
        model: BioMLP,
        input_labels: Sequence[str] | None = None,
        output_labels: Sequence[str] | None = None,
        ax: Axes | None = None,
    ) -> None:
        if ax is None:
            ax = Figure(figsize=(3.5, 3.5), dpi=100).subplots()
            ax.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)  # tight_layout costs 20 ms
            FigureCanvasAgg(ax.figure)
        self.figure = ax.figure
        default = (lambda i: str(i + 1)) if model.embedding is not None else (lambda i: f"$x_{{{i + 1}}}$")
        self.input_labels = input_labels or [default(i) for i in range(model.n_input_positions)]
        self.output_labels = output_labels or [f"$y_{{{i + 1}}}$" for i in range(model.shape[-1])]
        size = 1 / (2 * max(model.shape))
        centres = np.concatenate([np.stack(_neuron_positions(model, layer), axis=1) for layer in range(model.depth + 1)])
        ax.add_collection(EllipseCollection(size, size / 10 * (model.depth + 0.4), 0, units="xy", offsets=centres,
                                            offset_transform=ax.transData, facecolors="black"))
        self.wires = []
        for layer in range(model.depth):
            x_in, y_in = _neuron_positions(model, layer)
            x_out, y_out = _neuron_positions(model, layer + 1)
            rows, cols = np.indices((model.shape[layer + 1], model.shape[layer]))
            segments = np.stack(
                [np.stack([x_out[rows], y_out[rows]], -1), np.stack([x_in[cols], y_in[cols]], -1)], axis=2
            ).reshape(-1, 2, 2)
            self.wires.append(ax.add_collection(LineCollection(segments)))
        x_in, _ = _neuron_positions(model, 0)
        self.input_texts = [ax.text(x, -0.045, "", ha="center", va="top", **_label_style(model.n_input_positions))
                            for x in x_in[: model.n_input_positions]]
        x_out, _ = _neuron_positions(model, model.depth)
        top = LAYER_GAP * model.depth + 0.02
        self.output_texts = [ax.text(x, top, "", ha="center", va="bottom", **_label_style(len(x_out))) for x in x_out]
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.06, LAYER_GAP * model.depth + 0.06)
        ax.axis("off")
        self.title = ax.set_title("", fontsize=9)

    def update(self, model: BioMLP, replica: int = 0, title: str = "") -> Figure:
        """Show replica `replica` of the model as it is now, under `title`: line width proportional to
        |w| (per layer), blue positive, red negative; each input/output label at the position its
        feature occupies."""
        self.title.set_text(title)
        weights, _ = model.layer_views(model.params.detach()[replica : replica + 1].cpu())
        for layer, (weight, wires) in enumerate(zip(weights, self.wires)):
            w = weight.numpy().ravel()
            w = w / max(np.abs(w).max(), 1e-12)
            widths = np.abs(w) * (1.0 if layer == 0 else 0.5)
            wires.set_linewidths(np.where(widths >= INVISIBLE_WIDTH, widths, 0.0))  # Agg skips width 0
            wires.set_colors(np.where(w[:, None] > 0, BLUE, RED))
        for text, feature in zip(self.input_texts, model.in_perm[replica].tolist()):
            text.set_text(self.input_labels[feature])
        for text, feature in zip(self.output_texts, model.out_perm[replica].tolist()):
            text.set_text(self.output_labels[feature])
        return self.figure


def network_picture(
    model: BioMLP,
    input_labels: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> NetworkPicture | GridNetworkPicture:
    """The picture for the model's geometry: neuron rows (`line`) or stacked grids (`grid`, which
    labels its outputs only: its inputs are pixels, drawn where they sit)."""
    if model.geometry == "grid":
        from bimt.grid_plot import GridNetworkPicture

        return GridNetworkPicture(model, output_labels, ax)
    return NetworkPicture(model, input_labels, output_labels, ax)


def draw_network(
    model: BioMLP,
    replica: int = 0,
    input_labels: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Draw replica `replica` of the model (on `ax`, or on a figure of its own); labels are indexed
    by input / output feature."""
    return network_picture(model, input_labels, output_labels, ax).update(model, replica, title)


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


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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
