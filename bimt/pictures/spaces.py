"""The picture of any network of neuron spaces (a model read by `bimt.wrap`), drawn as the paper draws MLPs.

One row per neuron layer, bottom to top in the order the forward pass meets them: the input, then each
map's output. A map reads the latest row of its input space, so a residual stream appears once per
write and its readers take their wires from the row before them; maps that write the same space from
the same row (an attention's q, k and v) share one row. Wires are as wide as |w| (normalised per map),
blue positive, red negative; inputs and outputs are labelled by the feature that sits at each
position. Spaces on grids are drawn flattened into their row: x across, y within the row's band (a grid
of pixels unlabelled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection, LineCollection
from matplotlib.figure import Figure

from bimt.network.spaces import Network
from bimt.network.spatial import SpatialModel
from bimt.pictures.style import show_features, show_weights

ROW_GAP = 0.1  # vertical distance between rows in the drawing
BAND = 0.6  # share of the gap that a grid's height takes


def forward_rows(network: Network) -> tuple[list[int], list[tuple[int, int]]]:
    """The space of each row, and each map's (source row, target row)."""
    input_space = next(i for i, space in enumerate(network.spaces) if space.permutation == "in_perm")
    rows, latest, wires = [input_space], {input_space: 0}, []
    for m in network.maps:
        source = latest[m.reads]
        if wires and rows[wires[-1][1]] == m.writes and wires[-1][0] == source:
            target = wires[-1][1]
        else:
            rows.append(m.writes)
            target = len(rows) - 1
        latest[m.writes] = target
        wires.append((source, target))
    return rows, wires


def _points(coordinates: np.ndarray, row: int) -> np.ndarray:
    """(n, 2) drawing positions of a row's neurons."""
    if coordinates.ndim == 1:
        return np.stack([coordinates, np.full(len(coordinates), ROW_GAP * row)], axis=1)
    return np.stack([coordinates[:, 0], ROW_GAP * row + BAND * ROW_GAP * (coordinates[:, 1] - 0.5)], axis=1)


class SpacesPicture:
    """A drawing of one model's network of spaces, built once and redrawn in place (see `NetworkPicture`)."""

    def __init__(self, model: SpatialModel, input_labels: Sequence[str] | None = None,
                 output_labels: Sequence[str] | None = None, ax: Axes | None = None) -> None:
        network = model.network
        self.rows, self.map_rows = forward_rows(network)
        flat = all(network.spaces[space].coordinates.dim() == 1 for space in self.rows)
        if ax is None:
            ax = Figure(figsize=(4, 1.2 + (0.5 if flat else 1.0) * len(self.rows)), dpi=100).subplots()
            ax.figure.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.92)
            FigureCanvasAgg(ax.figure)
        self.figure = ax.figure
        points = [_points(network.spaces[space].coordinates.numpy(), row) for row, space in enumerate(self.rows)]
        across = [len(p) if network.spaces[space].coordinates.dim() == 1 else math.isqrt(len(p))
                  for p, space in zip(points, self.rows)]  # neurons side by side in a row
        size = 1 / (2 * max(across)) * (1 if flat else 0.4)
        x_span, y_span = 1.27, ROW_GAP * (len(self.rows) - 1) + 0.12  # the limits set below
        width, height = ax.figure.get_size_inches()
        round_ = size * y_span / x_span * width / height  # a circle's height in data units
        if not flat:  # a grid's rows are squeezed into its band: no taller than their spacing there
            round_ = min(round_, BAND * ROW_GAP / (3 * max(across)))
        ax.add_collection(EllipseCollection(size, round_, 0, units="xy", offsets=np.concatenate(points),
                                            offset_transform=ax.transData, facecolors="black"))
        self.wires = []
        for m, (source, target) in zip(network.maps, self.map_rows):
            into, out = points[source], points[target]
            rows, cols = np.indices((len(out) * m.out_fold, len(into) * m.in_fold))
            rows, cols = rows % len(out), cols % len(into)
            segments = np.stack([out[rows], into[cols]], axis=2).reshape(-1, 2, 2)
            self.wires.append(ax.add_collection(LineCollection(segments)))
        n_in, n_out = model.in_perm.shape[1], model.out_perm.shape[1]
        self.input_labels = input_labels or [f"$x_{{{i + 1}}}$" for i in range(n_in)]
        self.output_labels = output_labels or [f"$y_{{{i + 1}}}$" for i in range(n_out)]
        style = {"fontsize": 8} if max(n_in, n_out) <= 12 else {"fontsize": 4.5, "rotation": 90}
        labelled = [network.spaces[self.rows[row]].coordinates.dim() == 1 or network.spaces[self.rows[row]].size <= 16
                    for row in (0, -1)]  # a grid of pixels goes unlabelled, a ring of outputs is labelled
        self.input_texts = ([ax.text(x, y - 0.025, "", ha="center", va="top", **style) for x, y in points[0]]
                            if labelled[0] and len(points[0]) <= 64 else [])
        self.output_texts = ([ax.text(x, y + 0.02, "", ha="center", va="bottom", **style) for x, y in points[-1]]
                             if labelled[1] and len(points[-1]) <= 64 else [])
        for row, space in enumerate(self.rows):
            ax.text(1.03, ROW_GAP * row, network.spaces[space].name, fontsize=6, va="center")
        ax.set_xlim(-0.02, -0.02 + x_span)
        ax.set_ylim(-0.06, -0.06 + y_span)
        ax.axis("off")
        self.title = ax.set_title("", fontsize=9)

    def update(self, model: SpatialModel, replica: int = 0, title: str = "") -> Figure:
        """Show replica `replica` of the model as it is now, under `title`."""
        self.title.set_text(title)
        weights, _ = model.layer_views(model.params.detach()[replica : replica + 1].cpu())
        for weight, wires in zip(weights, self.wires):
            w = weight.numpy().ravel()
            w = w / max(np.abs(w).max(), 1e-12)
            widths = np.abs(w)
            show_weights(wires, w, widths)
        show_features(self.input_texts, self.input_labels, model.in_perm[replica].tolist())
        show_features(self.output_texts, self.output_labels, model.out_perm[replica].tolist())
        return self.figure
