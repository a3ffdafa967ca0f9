"""The picture of a transformer (Section 3.4, Figure 7), drawn as its notebook draws it.

One row per neuron space as the forward pass meets it, bottom to top: the input channels, the
residual stream after the embedding, then per block the attention neurons, the residual stream, the
MLP's hidden neurons and the residual stream again, and the output channels. Each map's wires join
two rows, wider with |w| (normalised per map, saturating at a tenth of its largest weight, as the
notebook's `min(10 |w|, 1)`), blue positive and red negative. Of the fused q/k/v map only the v rows
are drawn, as the notebook does; unlike the notebook, whose colours there come from the q rows, each
wire shows its own sign. The residual positions are numbered, so a neuron can be followed from row to row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection, LineCollection
from matplotlib.figure import Figure

from bimt.network.transformer import BioTransformer
from bimt.pictures.style import show_features, show_weights

ROW_GAP = 0.1  # vertical distance between rows in the drawing


def row_names(blocks: int) -> list[str]:
    """The rows' labels, bottom to top: input, Embed, then per block Atn, Res, MLP hidden, Res; output."""
    names = ["input", "Embed"]
    for b in range(1, blocks + 1):
        names += [f"Atn{b}", f"Res{2 * b - 1}", f"MLP{b} hidden", f"Res{2 * b}"]
    return [*names, "output"]


class TransformerPicture:
    """A drawing of one transformer that is built once and redrawn in place (see `NetworkPicture`)."""

    def __init__(
        self,
        model: BioTransformer,
        input_labels: Sequence[str] | None = None,
        output_labels: Sequence[str] | None = None,
        ax: Axes | None = None,
    ) -> None:
        if ax is None:
            ax = Figure(figsize=(4.5, 7), dpi=100).subplots()
            ax.figure.subplots_adjust(left=0.02, right=0.84, bottom=0.03, top=0.95)
            FigureCanvasAgg(ax.figure)
        self.figure = ax.figure
        network = model.network
        self.input_labels = input_labels or [str(i) for i in range(model.inputs)]
        self.output_labels = output_labels or [str(i) for i in range(model.outputs)]
        self.rows = [network.maps[0].reads] + [m.writes for m in network.maps]  # a space per row
        x = [network.spaces[space].coordinates.numpy() for space in self.rows]
        size = 1 / (2 * max(len(points) for points in x))
        centres = np.concatenate([np.stack([points, np.full(len(points), ROW_GAP * row)], 1) for row, points in enumerate(x)])
        ax.add_collection(EllipseCollection(size, size / 8, 0, units="xy", offsets=centres,
                                            offset_transform=ax.transData, facecolors="black"))
        self.wires = []
        for i in range(len(network.maps)):
            x_in, x_out = x[i], x[i + 1]
            rows, cols = np.indices((len(x_out), len(x_in)))
            segments = np.stack([np.stack([x_out[rows], np.full(rows.shape, ROW_GAP * (i + 1))], -1),
                                 np.stack([x_in[cols], np.full(cols.shape, ROW_GAP * i)], -1)], axis=2).reshape(-1, 2, 2)
            self.wires.append(ax.add_collection(LineCollection(segments)))
        for row, name in enumerate(row_names(model.blocks)):
            ax.text(1.04, ROW_GAP * row, name, fontsize=7, va="center")
            if name.startswith(("Embed", "Res")):
                for p, point in enumerate(x[row]):
                    ax.text(point, ROW_GAP * row + 0.012, str(p + 1), fontsize=3.5, ha="center", va="bottom", rotation=90)
        self.input_texts = [ax.text(p, -0.025, "", ha="center", va="top", fontsize=8) for p in x[0]]
        top = ROW_GAP * (len(self.rows) - 1)
        self.output_texts = [ax.text(p, top + 0.02, "", ha="center", va="bottom", fontsize=8) for p in x[-1]]
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.05, top + 0.05)
        ax.axis("off")
        self.title = ax.set_title("", fontsize=9)

    def update(self, model: BioTransformer, replica: int = 0, title: str = "") -> Figure:
        """Show replica `replica` of the model as it is now, under `title`."""
        self.title.set_text(title)
        flat = model.params.detach()[replica : replica + 1].cpu()
        weights, _ = model.layer_views(flat)
        gains = self._gains(model, flat)
        for i, (m, weight, wires) in enumerate(zip(model.network.maps, weights, self.wires)):
            w = weight[0].numpy()
            if m.out_fold == 3:  # the fused q/k/v map: the v rows
                w = w[2 * (len(w) // 3) :]
            if i in gains:
                w = w * gains[i][None, :]
            w = w.ravel() / max(np.abs(w).max(), 1e-12)
            widths = np.minimum(10 * np.abs(w), 1.0)
            show_weights(wires, w, widths)
        show_features(self.input_texts, self.input_labels, model.in_perm[replica].tolist())
        show_features(self.output_texts, self.output_labels, model.out_perm[replica].tolist())
        return self.figure

    @staticmethod
    def _gains(model: BioTransformer, flat) -> dict[int, np.ndarray]:
        """The LayerNorm gains that scale the columns of the maps after them, where they are applied."""
        if not model.layer_norm:
            return {}
        vectors = [v.numpy()[0] for v in model.vectors(flat)]
        gains = {}
        for b in range(model.blocks):
            gains[1 + 4 * b] = vectors[4 * b]  # ln 1 before the q/k/v map
            gains[3 + 4 * b] = vectors[4 * b + 2]  # ln 2 before the MLP
        gains[model.depth - 1] = vectors[-2]  # ln f before the output map
        return gains
