"""Pictures: a network drawn as the paper draws it, a task's own figures, a video of the snapshots.

Drawing reads a network (and a task's labels and data) and returns a matplotlib figure; it never
changes the network and knows nothing of training. Figures are built without pyplot: no global
figure registry to leak from, no GUI backend needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bimt.network.spatial import SpatialModel
from bimt.network.transformer import BioTransformer
from bimt.pictures.figures import FIGURES, task_figures
from bimt.pictures.grid import GridNetworkPicture
from bimt.pictures.network import NetworkPicture
from bimt.pictures.style import figure_to_array
from bimt.pictures.transformer import TransformerPicture


def network_picture(
    model: SpatialModel,
    input_labels: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> NetworkPicture | GridNetworkPicture | TransformerPicture:
    """The picture for the model: a transformer's rows of spaces, or for an MLP's geometry neuron rows
    (`line`) or stacked grids (`grid`, which labels its outputs only: its inputs are pixels, drawn
    where they sit)."""
    if isinstance(model, BioTransformer):
        return TransformerPicture(model, input_labels, output_labels, ax)
    if model.geometry == "grid":
        return GridNetworkPicture(model, output_labels, ax)
    return NetworkPicture(model, input_labels, output_labels, ax)


def draw_network(
    model: SpatialModel,
    replica: int = 0,
    input_labels: Sequence[str] | None = None,
    output_labels: Sequence[str] | None = None,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Draw replica `replica` of the model (on `ax`, or on a figure of its own); labels are indexed
    by input / output feature."""
    return network_picture(model, input_labels, output_labels, ax).update(model, replica, title)


__all__ = ["FIGURES", "GridNetworkPicture", "NetworkPicture", "TransformerPicture", "draw_network", "figure_to_array", "network_picture",
           "task_figures"]
