"""Where neurons sit, and how far apart: the only thing the cost and relocation read of space.

`line` (Sections 3.1-3.3): each layer's neurons evenly spaced in (0, 1), wire length |x_out - x_in|.
`grid` (Section 3.5, the MNIST notebook): a layer of n = s * s neurons on an s x s grid in the unit
square, the output layer on a ring of radius 1/4 around the centre, wire length the L1 distance
|dx| + |dy|. Coordinates are float32 built from float64 values and distances are computed in
float32, as the notebooks do, so the prices (and the relocations they decide) are theirs bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

GEOMETRIES = ("line", "grid")


def line_coordinates(n: int, fold: int = 1) -> torch.Tensor:
    """Evenly spaced positions in (0, 1) for n neurons, repeated `fold` times (as the paper places them)."""
    per_fold = n // fold
    grid = np.linspace(1 / (2 * per_fold), 1 - 1 / (2 * per_fold), num=per_fold)
    return torch.tensor(np.tile(grid, fold), dtype=torch.float32)


def is_square(n: int) -> bool:
    return n >= 1 and math.isqrt(n) ** 2 == n


def grid_coordinates(n: int) -> torch.Tensor:
    """(n, 2) points of an s x s grid, s = sqrt(n), row-major: neuron i at column i % s, row i // s.

    An image flattened row by row thus puts pixel (row, column) at (x, y) = (column, row) in grid units."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"a grid layer needs a square number of neurons, not {n}")
    ticks = np.linspace(1 / (2 * side), 1 - 1 / (2 * side), num=side)
    x, y = np.meshgrid(ticks, ticks)
    return torch.tensor(np.stack([x.ravel(), y.ravel()], axis=1), dtype=torch.float32)


def ring_coordinates(n: int) -> torch.Tensor:
    """(n, 2) points on the circle of radius 1/4 around (1/2, 1/2), at angles (k + 1/2) / n of a turn."""
    angles = np.linspace(1 / (2 * n) * 2 * np.pi, (1 - 1 / (2 * n)) * 2 * np.pi, num=n)
    return 0.5 + torch.tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1) / 4, dtype=torch.float32)


def layer_coordinates(geometry: str, shape: tuple[int, ...], layer: int, fold: int = 1) -> torch.Tensor:
    """Coordinates of neuron layer `layer` of a network of widths `shape`: (n,) on a line, (n, 2) on a grid."""
    n = shape[layer]
    if geometry == "line":
        return line_coordinates(n, fold)
    if geometry == "grid":
        return ring_coordinates(n) if layer == len(shape) - 1 else grid_coordinates(n)
    raise ValueError(f"unknown geometry {geometry!r}; allowed: {', '.join(GEOMETRIES)}")


def wire_lengths(out_coordinates: torch.Tensor, in_coordinates: torch.Tensor) -> torch.Tensor:
    """(out, in) distances: |x_out - x_in| on a line, |dx| + |dy| (L1, the notebook's) on a grid."""
    difference = (out_coordinates[:, None] - in_coordinates[None, :]).abs()
    return difference if difference.dim() == 2 else difference.sum(dim=2)


def grid_problem(shape: tuple[int, ...]) -> str | None:
    """Why a network of widths `shape` cannot lie on grids (None when it can): every layer but the
    output ring must have a square number of neurons."""
    for layer, n in enumerate(shape[:-1]):
        if not is_square(n):
            what = "its input layer" if layer == 0 else f"hidden layer {layer}"
            return f"{what} has {n} neurons, not a square number (e.g. {math.isqrt(n) ** 2 or 1} or {(math.isqrt(n) + 1) ** 2})"
    return None
