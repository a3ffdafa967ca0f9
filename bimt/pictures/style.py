"""What every picture shares: the wires' colours and widths, the features' labels, and rendering a figure to pixels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.text import Text

INVISIBLE_WIDTH = 0.01  # points: thinner wires cover under 1% of a pixel, and are not drawn at all
BLUE, RED = np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])  # positive, negative weights


def show_weights(wires: LineCollection, w: np.ndarray, widths: np.ndarray) -> None:
    """Draw a map's wires as its weights `w` (flat, signs kept): blue positive, red negative, each
    `widths` wide, and wires too thin to see not at all (Agg skips width 0)."""
    wires.set_linewidths(np.where(widths >= INVISIBLE_WIDTH, widths, 0.0))
    wires.set_colors(np.where(w[:, None] > 0, BLUE, RED))


def show_features(texts: Sequence[Text], labels: Sequence[str], order: Sequence[int]) -> None:
    """Label each position's text with the feature `order[p]` that sits there."""
    for text, feature in zip(texts, order):
        text.set_text(labels[feature])


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
