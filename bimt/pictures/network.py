"""The picture of a network whose neurons sit on lines (Sections 3.1-3.3).

The drawing follows the paper's: neurons at their coordinates, one row per neuron layer
(networks on 2-D grids are drawn by `bimt.pictures.grid`),
line width proportional to |w| (normalised per layer), blue for positive and red for negative
weights, inputs and outputs labelled by the feature that currently sits at each position. Each
layer's connections are one `LineCollection`, so a drawing takes milliseconds, not seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection, LineCollection
from matplotlib.figure import Figure

from bimt.network.model import BioMLP
from bimt.pictures.style import show_features, show_weights

LAYER_GAP = 0.1  # vertical distance between neuron layers in the drawing


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
            show_weights(wires, w, widths)
        show_features(self.input_texts, self.input_labels, model.in_perm[replica].tolist())
        show_features(self.output_texts, self.output_labels, model.out_perm[replica].tolist())
        return self.figure
