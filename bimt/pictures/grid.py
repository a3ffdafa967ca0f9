"""Pictures of a network whose neurons lie on 2-D grids (Section 3.5, Figure 8).

The layers are drawn as the paper draws them, stacked in depth: each layer's unit square seen in
an oblique projection, the input image at the bottom (upright, its first row at the back), the
output ring on top. Wires are wider with |w| (normalised per layer), blue positive, red negative,
and only those at least 1% of a pixel wide are drawn, at most the 2000 widest of a layer: a 784-input
layer has 78 400 wires, of which a trained BIMT network keeps a few hundred. Input pixels are shaded by how much weight leaves
them, so the pixels the network reads stand out; each output is labelled with the digit it computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from bimt.network.cost import importance
from bimt.network.model import BioMLP
from bimt.pictures.style import BLUE, INVISIBLE_WIDTH, RED

LAYER_GAP = 0.9  # screen height between stacked layers
DEPTH = 0.5  # screen height of a layer's unit square seen obliquely
SHEAR = 0.35  # how far a layer's back edge is drawn to the right of its front edge
MOST_WIRES = 2000  # per layer: an untrained 784-input layer's 78 400 would take seconds to draw, as a grey blur


def project(xy: np.ndarray, layer: int) -> np.ndarray:
    """Screen coordinates (n, 2) of points (n, 2) of neuron layer `layer`: y runs into the page,
    with y = 0 (an image's first row) at the back."""
    depth = 1.0 - xy[:, 1]
    return np.stack([xy[:, 0] + SHEAR * depth, LAYER_GAP * layer + DEPTH * depth], axis=1)


class GridNetworkPicture:
    """A drawing of one grid model's network, built once and redrawn in place for every replica and
    snapshot (only wires, shades and labels change)."""

    def __init__(self, model: BioMLP, output_labels: Sequence[str] | None = None, ax: Axes | None = None) -> None:
        if ax is None:
            figure = Figure(figsize=(4.5, 2.2 + 1.3 * model.depth), dpi=100)
            FigureCanvasAgg(figure)
            ax = figure.add_axes((0.0, 0.0, 1.0, 0.93))
        self.figure = ax.figure
        self.output_labels = output_labels or [str(i) for i in range(model.shape[-1])]
        self.points = [project(model.coordinates(layer).numpy(), layer) for layer in range(model.depth + 1)]
        for layer in range(model.depth + 1):  # each layer's square, for depth cues
            corners = project(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), layer)
            ax.plot(corners[:, 0], corners[:, 1], color="0.85", lw=0.6, zorder=0)
        side = math.isqrt(model.shape[0])
        self.pixels = ax.scatter(*self.points[0].T, s=max(1.0, 900 / side**2), marker="s", c=np.zeros(model.shape[0]),
                                 cmap="Greys", vmin=0.0, vmax=1.0, zorder=1)
        for points in self.points[1:]:
            ax.scatter(*points.T, s=4, color="black", zorder=3)
        self.wires = [ax.add_collection(LineCollection([], zorder=2)) for _ in range(model.depth)]
        self.output_texts = [ax.text(x, y + 0.03, "", ha="center", va="bottom", fontsize=8, zorder=4)
                             for x, y in self.points[-1]]
        ax.set_xlim(-0.05, 1.05 + SHEAR)
        ax.set_ylim(-0.05, LAYER_GAP * model.depth + DEPTH + 0.05)
        ax.axis("off")
        self.title = ax.set_title("", fontsize=9)

    def update(self, model: BioMLP, replica: int = 0, title: str = "") -> Figure:
        """Show replica `replica` of the model as it is now, under `title`."""
        self.title.set_text(title)
        weights, _ = model.layer_views(model.params.detach()[replica : replica + 1].cpu())
        for layer, (weight, wires) in enumerate(zip(weights, self.wires)):
            w = weight[0].numpy()
            w = w / max(np.abs(w).max(), 1e-12)
            widths = np.abs(w) * (0.6 if layer == 0 else 1.0)
            rows, cols = np.nonzero(widths >= INVISIBLE_WIDTH)
            if len(rows) > MOST_WIRES:
                strongest = np.argpartition(widths[rows, cols], -MOST_WIRES)[-MOST_WIRES:]
                rows, cols = rows[strongest], cols[strongest]
            wires.set_segments(np.stack([self.points[layer + 1][rows], self.points[layer][cols]], axis=1))
            wires.set_linewidths(widths[rows, cols])
            wires.set_colors(np.where(w[rows, cols, None] > 0, BLUE, RED))
        outgoing = np.abs(weights[0][0].numpy()).sum(axis=0)
        self.pixels.set_array(outgoing / max(outgoing.max(), 1e-12))
        for text, feature in zip(self.output_texts, model.out_perm[replica].tolist()):
            text.set_text(self.output_labels[feature])
        return self.figure


@torch.no_grad()
def draw_input_weights(model: BioMLP, side: int, replica: int = 0) -> Figure:
    """Every first-hidden-layer neuron's input weights as a side x side image, the most important
    neuron first (its summed |weight| in and out, the score relocation ranks by, written on it):
    the notebook's picture of the top features. Pixels sit where they are in the image."""
    weights = model.weights[0][replica].cpu()
    images = torch.zeros_like(weights).index_copy_(1, model.in_perm[replica].cpu(), weights)  # positions -> pixels
    score = importance(model, 1)[replica].cpu()
    ranked = torch.argsort(score, descending=True, stable=True).tolist()
    columns = math.ceil(math.sqrt(len(ranked)))
    rows = math.ceil(len(ranked) / columns)
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    limit = float(images.abs().max()) or 1.0
    for ax in axes.ravel()[len(ranked):]:
        ax.axis("off")
    for ax, neuron in zip(axes.ravel(), ranked):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("0.8")
        ax.imshow(images[neuron].reshape(side, side).numpy(), cmap="bwr_r", vmin=-limit, vmax=limit)
        ax.text(0.03, 0.97, f"{float(score[neuron]):.2f}", transform=ax.transAxes, ha="left", va="top", fontsize=5,
                color="black")
    figure.suptitle("input weights of hidden layer 1 (blue +, red -), most important first", fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (rows * 0.9 + 0.4), wspace=0.05,
                           hspace=0.05)
    return figure
