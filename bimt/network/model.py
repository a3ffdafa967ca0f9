"""BioMLP: an MLP whose neurons sit at coordinates in space, batched over a leading replica axis.

Weights have shape (R, out, in) and biases (R, out), so R independent networks (different seeds or
train types) train in lockstep; a single run is R = 1. Neuron layer 0 is the input, layer L the
output; linear layer l maps neuron layer l to l + 1. Where neurons sit is the model's `geometry`
(`bimt.network.geometry`: on a line, or on 2-D grids with the outputs on a ring).

A model may embed tokens: with `embedding=(tokens, dim)` its inputs are token ids, one per input
fold, and each is looked up in a learned (tokens, dim) table; the lookups, concatenated, feed the
first layer (the notebooks of Section 3.3, with `in_fold=2` for the two operands).

Neurons are identified by *positions*. Relocation moves neurons between positions by permuting
weights; `in_perm[r, p]` is the input feature shown at input position p and `out_perm[r, p]` the
output feature computed at output position p, so the network's function never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bimt.network.geometry import layer_coordinates
from bimt.network.spaces import chain
from bimt.network.spatial import SpatialModel


class BioMLP(SpatialModel):
    """A SiLU MLP with neuron coordinates, input/output permutations and R replicas: the chain of
    neuron spaces (`bimt.network.spaces.chain`).

    `l0`, `mean_cost` and `embedding_cost` say how `bimt.network.cost` prices it (the notebooks differ);
    `geometry` ("line" or "grid") where its neurons sit, which sets the wire lengths.

    `seeds` gives each replica's initial weights: `torch.manual_seed(seed)` followed by the default
    initialisation of `nn.Linear` layers created first layer first, the reference notebook's order.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        in_fold: int = 1,
        out_fold: int = 1,
        l0: float = 0.1,
        embedding: tuple[int, int] | None = None,
        dtype: torch.dtype = torch.float32,
        mean_cost: bool = False,
        embedding_cost: bool = True,
        geometry: str = "line",
    ) -> None:
        if geometry != "line" and (in_fold, out_fold) != (1, 1):
            raise ValueError(f"folds (in_fold={in_fold}, out_fold={out_fold}) are for the line geometry only")
        shape = tuple(int(n) for n in shape)
        folds = [in_fold] + [1] * (len(shape) - 2) + [out_fold]
        network = chain([layer_coordinates(geometry, shape, i, fold) for i, fold in enumerate(folds)], in_fold)
        embedding_shape = None if embedding is None else (int(embedding[0]), int(embedding[1]))
        per_replica = [_default_init(shape, seed, embedding_shape, dtype) for seed in seeds]
        params = torch.stack([torch.cat([part.flatten() for part in parts]) for parts in per_replica])
        super().__init__(network, params, l0, mean_cost, geometry)
        self.embedding_cost = embedding_cost  # l0 * |embedding| joins the cost (when there is one)
        self.shape = shape
        self.in_fold = in_fold
        self.out_fold = out_fold
        self.embedding_shape = embedding_shape

    def coordinates(self, layer: int) -> torch.Tensor:
        """Where the positions of neuron layer `layer` sit: (n,) on a line (input folds repeat the
        positions), (n, 2) on grids."""
        points = self.network.spaces[layer].coordinates
        return torch.cat([points] * self.in_fold) if layer == 0 else points

    def layer_offsets(self) -> list[int]:
        """Where each linear layer's weights start in the flat layout (its biases follow them)."""
        return list(self.network.offsets[: self.depth])

    def embedding_view(self, flat: torch.Tensor) -> torch.Tensor:
        """The (R, tokens, dim) token embeddings, a view into `flat` (R, P), after the last layer."""
        return flat[:, self.network.parameters :].view(-1, *self.embedding_shape)

    @property
    def embedding(self) -> torch.Tensor | None:
        """The token embeddings (R, tokens, dim), or None for a model that takes numbers."""
        return None if self.embedding_shape is None else self.embedding_view(self.params)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's inputs in feature order, (R, B, in), from the data's inputs (R, B, ...):
        the numbers themselves, or the embeddings of the token ids, one fold per operand."""
        if self.embedding_shape is None:
            return x
        table = self.embedding
        return torch.cat([_lookup(table, x[:, :, fold]) for fold in range(x.shape[2])], dim=2)

    @property
    def n_input_positions(self) -> int:
        """Input neurons that relocation moves: one per input feature, all folds moving together."""
        return self.shape[0] // self.in_fold

    def to_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (R, B, in) or (B, in) in feature order, rearranged so position p holds in_perm[p]."""
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        offsets = torch.arange(self.in_fold, device=x.device) * self.n_input_positions
        index = (offsets[None, :, None] + self.in_perm[:, None, :]).reshape(self.replicas, 1, -1)
        return torch.gather(x, 2, index.expand(-1, x.shape[1], -1))

    def forward_positions(self, x: torch.Tensor, output_order: torch.Tensor, replica: int | None = None) -> torch.Tensor:
        """The network on inputs already in position order (`to_positions`); outputs in feature order.

        Training calls this with inputs and `output_order` rearranged once per relocation, instead
        of rearranging on every step; the numbers are the same. With `replica`, only that replica
        runs (x and output_order then hold it alone, R = 1), with the kernels of a single run.
        """
        weights, biases = self.weights, self.biases
        if replica is not None:
            weights, biases = [w[replica : replica + 1] for w in weights], [b[replica : replica + 1] for b in biases]
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            x = linear(x, weight, bias)
            if i < self.depth - 1:
                x = F.silu(x)
        return torch.gather(x, 2, output_order[:, None, :].expand(-1, x.shape[1], -1))

    def replica_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each replica's outputs (1, n, out) on its inputs x[r], alone, with a single run's kernels."""
        inputs, order = self.to_positions(self.features(x)), self.output_order()
        return [self.forward_positions(inputs[r : r + 1], order[r : r + 1], r) for r in range(self.replicas)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs (R, B, in) or (B, in), in feature order (token ids for an embedding model), to
        outputs (R, B, out) in feature order."""
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        return self.forward_positions(self.to_positions(self.features(x)), self.output_order())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`x @ weight^T + bias` for every replica: x (R, n, in), weight (R, out, in), bias (R, out).

    One replica runs the 2-D `addmm` that `nn.Linear` runs, so a single run computes the reference
    notebook's bits on any CPU. Several run one `baddbmm`: MKL picks its kernels per CPU, and they
    may round differently from `addmm` (the engines' contract, `bimt.engines`, says where it matters).
    """
    if x.shape[0] == 1:
        return torch.addmm(bias[0], x[0], weight[0].t())[None]
    return torch.baddbmm(bias[:, None, :], x, weight.transpose(1, 2))


def _lookup(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Rows `tokens` (R, B) of each replica's table (R, tokens, dim): (R, B, dim)."""
    return torch.gather(table, 1, tokens[:, :, None].expand(-1, -1, table.shape[2]))


def _default_init(shape: Sequence[int], seed: int, embedding: tuple[int, int] | None,
                  dtype: torch.dtype) -> list[torch.Tensor]:
    """Each layer's weights and biases, then the embedding table, drawn as the notebooks draw them:
    `nn.Linear` layers built in order right after `torch.manual_seed(seed)`, then a standard normal
    table, all in `dtype` (float64 draws other numbers than float32, as the notebooks' default dtype).

    The global RNG is saved and restored, so building a model does not disturb the caller's stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Linear(n_in, n_out, dtype=dtype) for n_in, n_out in zip(shape[:-1], shape[1:])]
        table = [] if embedding is None else [torch.normal(0, 1, size=embedding, dtype=dtype)]
    return [part.detach().clone() for layer in layers for part in (layer.weight, layer.bias)] + table
