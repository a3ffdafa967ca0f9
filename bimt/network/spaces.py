"""Networks of neuron spaces: what the connection cost and relocation read of a model.

A *space* is a set of neuron positions (on a line or a grid, `bimt.network.geometry`), grouped in
heads of equal size. A *map* is a linear layer (weight and bias) that reads one space and writes
another; with folds, several rows (or columns) share one position, as the q, k and v rows of a
fused attention map do (`out_fold=3`), or an MLP's embedded operands (`in_fold=2`). A space may be
read and written by many maps: a transformer's residual stream is written by the embedding and every
block and read by the next ones. *Vectors* are per-position parameters on a space (a LayerNorm's
gain and bias), unpriced, moved with it.

A space appears in the forward pass as one or more *neuron layers*, each between the map that writes
it there and the map that reads it next (`Space.layers`). A neuron's importance is its summed |weight|
over those layers, accumulated layer by layer as the notebooks accumulate it.

A BioMLP is the chain case: space i is neuron layer i, map i reads space i and writes space i + 1.
All of a model's parameters live in one flat (R, P) tensor: each map's weights then its biases, in
map order, then the vectors, then anything the model adds (an embedding table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bimt.network.geometry import wire_lengths


@dataclass(frozen=True)
class Space:
    """Neuron positions: `coordinates` has one row per position, float32 ((n,) on a line, (n, 2) on grids).

    `layers` lists the neuron layers it is, as (writing map, reading map) indices into the network's
    maps (None at the input or the output); `permutation` names the model's buffer that records which
    feature sits at each position (`in_perm`, `out_perm`), for the spaces the data enter and leave by.
    """

    name: str
    coordinates: torch.Tensor
    heads: int = 1
    layers: tuple[tuple[int | None, int | None], ...] = ()
    permutation: str | None = None

    @property
    def size(self) -> int:
        return len(self.coordinates)

    @property
    def head_size(self) -> int:
        return self.size // self.heads


@dataclass(frozen=True)
class Map:
    """A linear map from space `reads` to space `writes` (indices): weight (out, in) with
    out = writes.size * out_fold and in = reads.size * in_fold; row `f * n + p` is fold f of position p."""

    name: str
    reads: int
    writes: int
    in_fold: int = 1
    out_fold: int = 1


@dataclass(frozen=True)
class Vector:
    """A parameter vector with one entry per position of space `space` (a LayerNorm's gain or bias)."""

    name: str
    space: int
    initial: float = 0.0


@dataclass(frozen=True)
class Network:
    """The spaces and maps of a model, and how relocation walks them.

    `relocation_order` lists the spaces relocation visits, in order. `fold_score` is how a neuron's
    importance reduces over its folds: "sum" (the MLP notebooks) or "mean" (the transformer's).
    `top_k_of` says what relocation's `top_k` counts: the most important "neurons" of a space (the MLP
    notebooks), or "heads", every neuron of the top_k heads (the transformer notebook's slice).
    """

    spaces: tuple[Space, ...]
    maps: tuple[Map, ...]
    vectors: tuple[Vector, ...] = ()
    relocation_order: tuple[int, ...] = ()
    fold_score: str = "sum"
    top_k_of: str = "neurons"
    offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for m in self.maps:
            if m.reads == m.writes:
                raise ValueError(f"map {m.name} reads and writes the same space; relocation prices one space at a time")
        starts, start = [], 0
        for m in self.maps:
            starts.append(start)
            rows, columns = self.shape(m)
            start += rows * columns + rows
        for v in self.vectors:
            starts.append(start)
            start += self.spaces[v.space].size
        starts.append(start)
        object.__setattr__(self, "offsets", tuple(starts))

    @property
    def parameters(self) -> int:
        """Entries of the maps and vectors in the flat layout (a model may add its own after them)."""
        return self.offsets[-1]

    def shape(self, m: Map) -> tuple[int, int]:
        """(out, in) of map `m`'s weight."""
        return self.spaces[m.writes].size * m.out_fold, self.spaces[m.reads].size * m.in_fold

    def weight(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Map i's weights (R, out, in), a view into the flat (R, P) tensor."""
        rows, columns = self.shape(self.maps[i])
        start = self.offsets[i]
        return flat[:, start : start + rows * columns].view(-1, rows, columns)

    def bias(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Map i's biases (R, out), a view into the flat (R, P) tensor."""
        rows, columns = self.shape(self.maps[i])
        start = self.offsets[i] + rows * columns
        return flat[:, start : start + rows]

    def vector(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Vector i (R, n), a view into the flat (R, P) tensor."""
        start = self.offsets[len(self.maps) + i]
        return flat[:, start : start + self.spaces[self.vectors[i].space].size]

    def distance(self, i: int) -> torch.Tensor:
        """Map i's wire lengths (out, in), float32: its spaces' coordinates repeated over its folds."""
        m = self.maps[i]
        out = self.spaces[m.writes].coordinates
        into = self.spaces[m.reads].coordinates
        return wire_lengths(torch.cat([out] * m.out_fold), torch.cat([into] * m.in_fold))

    def writers(self, space: int) -> list[int]:
        """The maps that write space `space` (its rows move with its neurons)."""
        return [i for i, m in enumerate(self.maps) if m.writes == space]

    def readers(self, space: int) -> list[int]:
        """The maps that read space `space` (their columns move with its neurons)."""
        return [i for i, m in enumerate(self.maps) if m.reads == space]

    def vectors_on(self, space: int) -> list[int]:
        return [i for i, v in enumerate(self.vectors) if v.space == space]

    def space_index(self, name: str) -> int:
        return next(i for i, space in enumerate(self.spaces) if space.name == name)


def chain(coordinates: Sequence[torch.Tensor], in_fold: int = 1) -> Network:
    """The network of an MLP: space i holds neuron layer i, map i reads space i and writes space i + 1.

    The input space has one position per input feature, its folds read together (`in_fold`); relocation
    walks the spaces from the input to the output, as the MLP notebooks do."""
    depth = len(coordinates) - 1
    spaces = []
    for i, points in enumerate(coordinates):
        if i == 0:
            points = points[: len(points) // in_fold]
        spaces.append(Space(f"layer {i}", points, 1, ((i - 1 if i > 0 else None, i if i < depth else None),),
                            "in_perm" if i == 0 else "out_perm" if i == depth else None))
    maps = tuple(Map(f"linear {i}", i, i + 1, in_fold if i == 0 else 1) for i in range(depth))
    return Network(tuple(spaces), maps, relocation_order=tuple(range(depth + 1)))
