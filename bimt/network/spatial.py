"""What every BIMT model shares: a `Network` of neuron spaces, one flat (R, P) parameter tensor, R replicas.

Parameters have a leading replica axis, so R independent networks (seeds, train types) train in
lockstep; a single run is R = 1. `in_perm[r, p]` is the input feature shown at input position p and
`out_perm[r, p]` the output feature computed at output position p: relocation moves neurons by
permuting weights, so a model's function never changes. The connection cost and relocation
(`bimt.network.cost`, `bimt.network.relocation`) read a model only through what is defined here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from bimt.network.spaces import Network


class SpatialModel(nn.Module):
    """A model whose neurons sit in the spaces of `network`.

    `l0` is the price of a unit of weight whatever its length, `mean_cost` whether each map's cost
    is averaged over its entries (the notebooks of Sections 3.3 to 3.5) rather than summed, and
    `geometry` ("line" or "grid") where the neurons sit. Subclasses define the forward pass.
    """

    embedding_shape: tuple[int, int] | None = None
    embedding_cost: bool = False

    def __init__(self, network: Network, params: torch.Tensor, l0: float, mean_cost: bool, geometry: str) -> None:
        super().__init__()
        self.network, self.l0, self.mean_cost, self.geometry = network, l0, mean_cost, geometry
        self.params = nn.Parameter(params)
        replicas = len(params)
        in_space = next(s for s in network.spaces if s.permutation == "in_perm")
        # A model whose output is its input's space (x + f(x)) has one: relocation moves in_perm, and the
        # model keeps out_perm equal to it.
        out_space = next((s for s in network.spaces if s.permutation == "out_perm"), in_space)
        self.register_buffer("in_perm", torch.arange(in_space.size).repeat(replicas, 1))
        self.register_buffer("out_perm", torch.arange(out_space.size).repeat(replicas, 1))
        for i in range(len(network.maps)):
            self.register_buffer(f"distance_{i}", network.distance(i), persistent=False)  # rebuilt, never saved

    @property
    def depth(self) -> int:
        """Number of maps (linear layers)."""
        return len(self.network.maps)

    @property
    def replicas(self) -> int:
        return self.in_perm.shape[0]

    def distance(self, layer: int) -> torch.Tensor:
        """Wire lengths of map `layer`, shape (out, in)."""
        return getattr(self, f"distance_{layer}")

    def layer_view(self, flat: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights (R, out, in) and biases (R, out) of map `layer`, views into `flat` (R, P)."""
        return self.network.weight(flat, layer), self.network.bias(flat, layer)

    def layer_views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weights and biases of every map, as views into a flat (R, P) tensor.

        Parameters, gradients and Adam's moments share this layout, so that the optimizer updates
        them in a handful of operations; this gives the per-map views of any of them."""
        views = [self.layer_view(flat, i) for i in range(self.depth)]
        return [weight for weight, _ in views], [bias for _, bias in views]

    @property
    def weights(self) -> list[torch.Tensor]:
        """Each map's weights, (R, out, in) views into `params`."""
        return self.layer_views(self.params)[0]

    @property
    def biases(self) -> list[torch.Tensor]:
        """Each map's biases, (R, out) views into `params`."""
        return self.layer_views(self.params)[1]

    @property
    def applies_vectors(self) -> bool:
        """Whether the forward pass reads the network's vectors (a transformer's LayerNorms may be unused)."""
        return True

    @property
    def embedding(self) -> torch.Tensor | None:
        """A token embedding table (R, tokens, dim) priced at l0, or None."""
        return None

    def _replica_tensors(self) -> tuple[str, ...]:
        """Names of the buffers with a leading replica axis (besides `params`)."""
        return ("in_perm", "out_perm")

    def replica_view(self, replica: int) -> SpatialModel:
        """Replica `replica` alone (R = 1), sharing this model's memory: parameters and permutations
        are views, so training or relocating the view changes that replica of this model."""
        view = copy.copy(self)
        view._parameters, view._buffers, view._modules = dict(self._parameters), dict(self._buffers), dict(self._modules)
        view.params = nn.Parameter(self.params.detach()[replica : replica + 1])
        for name in self._replica_tensors():
            setattr(view, name, getattr(self, name)[replica : replica + 1])
        return view

    def replica_subset(self, replicas: Sequence[int]) -> SpatialModel:
        """A copy holding only the given replicas (parameters and permutations), in that order.

        The replica-indexed tensors are left out of the deep copy (the memo hands back the originals,
        then they are replaced), so a subset costs its own size, not the whole batch's."""
        names = self._replica_tensors()
        subset = copy.deepcopy(self, memo={id(t): t for t in (self.params, *(getattr(self, n) for n in names))})
        index = torch.as_tensor(list(replicas), device=self.params.device)
        subset.params = nn.Parameter(self.params.detach()[index].clone())
        for name in names:
            setattr(subset, name, getattr(self, name)[index].clone())
        return subset

    def replica_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each replica's outputs (1, n, ...) on its own inputs x[r] (x: (R, n, ...)), computed alone,
        with a single run's kernels: a job's numbers do not depend on the group it trains in."""
        return [self.replica_view(r)(x[r : r + 1]) for r in range(self.replicas)]

    def output_order(self) -> torch.Tensor:
        """(R, out): the position that computes each output feature."""
        return torch.argsort(self.out_perm, dim=1)
