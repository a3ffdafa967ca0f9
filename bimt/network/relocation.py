"""Greedy neuron relocation: move each important neuron to the position that minimises the cost.

Relocation visits the spaces of the model's network (`bimt.network.spaces`) in its order: an MLP's
layers from the input to the output, a transformer's from the output to the input, its residual
stream as one space whose every map moves at once. In a space with several heads, whole heads move
first: each head, in order of mean importance, swaps with the head block that gives the lowest cost.
Then neurons move within their heads: the positions to move are listed once, before any swap (the
`top_k` most connected, or for the transformer every neuron of the first `top_k` heads, its
notebook's slice), and each listed position j is in turn swapped with the position k of its head
(j itself included) whose swap gives the lowest connection cost; ties go to the first k, as
`torch.argmin` resolves them. Swaps are applied one after another, so a later entry of the list may
name a position that an earlier swap refilled (the reference's behaviour).

Candidates are scored with the full connection cost with biases, at the locality weight
`locality` (the notebook's `get_cc()` default: 1 in Sections 3.1-3.2, 2 in 3.3-3.5), whatever the
train type (the reference's behaviour). The cost change of every candidate is computed in closed
form, for all replicas at once; near-ties are settled by `candidate_costs`, which sums each
candidate's full cost exactly as the literal swap-recompute-unswap search does, so the choice is
always the literal search's (`bimt.reference` holds that search as the oracle). Head moves are
few and always summed literally.

With `inputs=False` the input neurons stay where they are (the MNIST notebook keeps each pixel at its
place in the image); the other spaces relocate as before.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from bimt.network.cost import embedding_term, importance, positions, priced_cost, term, wire_factors
from bimt.network.jit import jit
from bimt.network.optim import AdamW
from bimt.network.spatial import SpatialModel


def swap_candidates(model: SpatialModel, space: int, j: torch.Tensor) -> torch.Tensor:
    """Position maps of swapping position j[r] with every position k of its head, shape (R, K, n),
    K the head's size: entry [r, k, p] is the position whose neuron position p receives."""
    size, head = positions(model, space), model.network.spaces[space].head_size
    slot = torch.arange(size, device=j.device)
    jr = j[:, None, None]
    k = (j // head * head)[:, None, None] + torch.arange(head, device=j.device)[None, :, None]
    return torch.where(slot == jr, k, torch.where(slot == k, jr, slot))


def head_swap_candidates(model: SpatialModel, space: int, j: torch.Tensor) -> torch.Tensor:
    """Position maps of swapping head block j[r] with every head block k, shape (R, heads, n)."""
    spaces = model.network.spaces[space]
    slot = torch.arange(spaces.size, device=j.device)
    block, within = slot // spaces.head_size, slot % spaces.head_size
    k = torch.arange(spaces.heads, device=j.device)[None, :, None]
    jr = j[:, None, None]
    source = torch.where(block == jr, k, torch.where(block == k, jr, block))
    return source * spaces.head_size + within


def _folded(index: torch.Tensor | np.ndarray, fold: int) -> torch.Tensor | np.ndarray:
    """A position map (..., n) over the rows (or columns) of a map with `fold` rows per position: (..., fold * n)."""
    n = index.shape[-1]
    parts = [index + f * n for f in range(fold)]
    return torch.cat(parts, dim=-1) if isinstance(index, torch.Tensor) else np.concatenate(parts, axis=-1)


def _rearranged(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Replica tensor (R, ...) with its slots along `dim` rearranged by each of K maps (R, K, n).

    Returns (R, K, ...): entry [r, k] is replica r's tensor after map k.
    """
    replicas, candidates, slots = index.shape
    expanded = tensor[:, None].expand(replicas, candidates, *tensor.shape[1:])
    view = [replicas, candidates] + [1] * (tensor.dim() - 1)
    view[dim + 1] = slots
    return torch.gather(expanded, dim + 1, index.reshape(view).expand(expanded.shape))


def candidate_costs(model: SpatialModel, space: int, j: torch.Tensor, locality: float = 1.0) -> torch.Tensor:
    """Full connection cost (locality `locality`, biases in) after swapping j[r] with each k of its head, (R, K)."""
    weights, biases = model.layer_views(model.params.detach())
    prices = wire_factors(model, locality)
    terms = [_cost_term(model, *layer_parts) for layer_parts in zip(weights, biases, prices)]
    return _candidate_costs(model, weights, biases, prices, terms, embedding_term(model), space,
                            swap_candidates(model, space, j))


def _cost_term(model: SpatialModel, weight: torch.Tensor, bias: torch.Tensor, price: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A map's weight and bias cost, (R, 1) each, summed as the literal search sums them."""
    return term(model, weight.abs() * price)[:, None], term(model, bias.abs() * model.l0)[:, None]


def _candidate_costs(
    model: SpatialModel,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    prices: list[torch.Tensor],
    terms: list[tuple[torch.Tensor, torch.Tensor] | None],
    embedding: torch.Tensor,
    space: int,
    index: torch.Tensor,
) -> torch.Tensor:
    """The full cost after each candidate position map `index` (R, K, n) of space `space`, (R, K),
    given the map views, prices and each other map's `_cost_term`.

    Only the maps that read or write the space change; the others' terms are taken as they are. The
    terms are accumulated in the literal search's order: map by map, weights before biases, the
    embedding's (which no swap changes) last, in the model's dtype.
    """
    cost = torch.zeros(len(index), 1, dtype=weights[0].dtype, device=index.device)
    for i, (m, weight, bias, price) in enumerate(zip(model.network.maps, weights, biases, prices)):
        if m.writes == space:  # rows move, with their biases
            rows = _folded(index, m.out_fold)
            weight_term = _candidate_term(model, _rearranged(weight, rows, 1).abs() * price)
            bias_term = _candidate_term(model, _rearranged(bias, rows, 1).abs() * model.l0)
        elif m.reads == space:  # columns move
            weight_term = _candidate_term(model, _rearranged(weight, _folded(index, m.in_fold), 2).abs() * price)
            bias_term = terms[i][1] if terms[i] is not None else term(model, bias.abs() * model.l0)[:, None]
        else:
            weight_term, bias_term = terms[i]
        cost = cost + weight_term
        cost = cost + bias_term
    return cost + embedding[:, None]


def _candidate_term(model: SpatialModel, priced: torch.Tensor) -> torch.Tensor:
    """`term` of every candidate: priced entries (R, K, ...) to (R, K)."""
    replicas, candidates = priced.shape[:2]
    return term(model, priced.reshape(replicas * candidates, *priced.shape[2:])).reshape(replicas, candidates)


@torch.no_grad()
def apply_permutation(
    model: SpatialModel, space: int, index: torch.Tensor | np.ndarray, moments: Sequence[torch.Tensor] = ()
) -> None:
    """Move neurons of space `space`: position p of replica r receives the neuron at position index[r, p].

    The rows (and biases) of every map writing the space, the columns of every map reading it, its
    vectors and its input/output permutation move together, so the function is unchanged; so do
    `moments`, flat tensors laid out like the parameters (Adam's moment estimates). The model must
    be on the CPU: the rearrangement is done in numpy, on the tensors' own memory.
    """
    index = np.asarray(index)
    network = model.network
    for flat in [model.params.detach(), *moments]:
        for i in network.writers(space):
            rows = _folded(index, network.maps[i].out_fold)
            weight, bias = network.weight(flat, i).numpy(), network.bias(flat, i).numpy()
            weight[...] = np.take_along_axis(weight, rows[:, :, None], axis=1)
            bias[...] = np.take_along_axis(bias, rows, axis=1)
        for i in network.readers(space):
            weight = network.weight(flat, i).numpy()
            weight[...] = np.take_along_axis(weight, _folded(index, network.maps[i].in_fold)[:, None, :], axis=2)
        for i in network.vectors_on(space):
            vector = network.vector(flat, i).numpy()
            vector[...] = np.take_along_axis(vector, index, axis=1)
    permutation = network.spaces[space].permutation
    if permutation is not None:
        order = getattr(model, permutation).numpy()
        order[...] = np.take_along_axis(order, index, axis=1)


# Relative to the total cost: rounding of the literal sums, in the model's dtype, stays far below it.
TIE_MARGIN = {torch.float32: 1e-5, torch.float64: 1e-13}


def placement_costs(model: SpatialModel, weights: list[torch.Tensor], prices64: list[np.ndarray], space: int) -> np.ndarray:
    """M[r, a, b]: the price of the weights touching the neuron at position a, were it at position b.

    Shape (R, n, n), float64. Only a neuron's own weights change price when it moves (biases cost
    l0 * |b| anywhere), and no map reads and writes the same space, so swapping positions j and k
    changes the cost by M[j, k] + M[k, j] - M[j, j] - M[k, k] (moving several, by the sum of such
    terms), and afterwards M is M with rows j and k exchanged. Per writing map, weights (fold * n, c)
    give |W| @ F^T over their folds; per reading map, weights (m, fold * n) give |W|^T @ F.
    """
    network = model.network
    n = positions(model, space)
    placement = 0.0
    for i in network.writers(space):
        w = weights[i].abs().double().cpu().numpy()
        replicas, rows, columns = w.shape
        fold = rows // n
        w = w.reshape(replicas, fold, n, columns).transpose(0, 2, 1, 3).reshape(replicas, n, fold * columns)
        price = prices64[i].reshape(fold, n, columns).transpose(1, 0, 2).reshape(n, fold * columns)
        placement = placement + w @ price.T
    for i in network.readers(space):
        w = weights[i].abs().double().cpu().numpy()
        replicas, m, columns = w.shape
        fold = columns // n
        placement = placement + np.swapaxes(w.reshape(replicas, m * fold, n), 1, 2) @ prices64[i].reshape(m * fold, n)
    return placement


@torch.no_grad()
def relocate(
    model: SpatialModel,
    top_k: int = 5,
    enabled: torch.Tensor | None = None,
    optimizer: AdamW | None = None,
    locality: float = 1.0,
    inputs: bool = True,
    moments: Sequence[torch.Tensor] = (),
) -> None:
    """Relocate the neurons of every space (the input space only with `inputs`), in replicas where
    `enabled` (R,) is true. `moments` are more flat tensors laid out like the parameters that move
    with them (a user's optimizer state, in `bimt.wrap`).

    Each candidate swap is scored by its exact cost change, from `placement_costs`, all candidates
    at once. When the best two candidates of a replica are closer than rounding of the literal
    search's sums could separate, that choice is made by `candidate_costs`, which sums the
    costs exactly as the literal search does; so the swaps are always the literal search's. Pass
    `optimizer` to permute its moment estimates with the weights (the reference does not).

    The search runs on the CPU; a model elsewhere is relocated through a CPU copy.
    """
    moments = [*(optimizer.moments() if optimizer is not None else []), *moments]
    if model.params.device.type != "cpu":
        host = copy.deepcopy(model).cpu()
        host_moments = [moment.cpu() for moment in moments]
        _relocate(host, top_k, None if enabled is None else enabled.cpu(), host_moments, locality, inputs)
        model.load_state_dict(host.state_dict())
        for moment, host_moment in zip(moments, host_moments):
            moment.copy_(host_moment)
        return
    _relocate(model, top_k, enabled, moments, locality, inputs)


class _Search:
    """What one relocation reads of the model, computed once: the map views, prices and cost terms."""

    def __init__(self, model: SpatialModel, moments: list[torch.Tensor], locality: float, keep: np.ndarray) -> None:
        self.model, self.moments, self.keep = model, moments, keep
        self.weights, self.biases = model.layer_views(model.params.detach())
        self.prices = wire_factors(model, locality)
        total = priced_cost(model, self.prices, penalize_bias=True).double()
        self.margin = (TIE_MARGIN[model.params.dtype] * total).numpy()
        self.prices64 = [price.double().numpy() / (price.numel() if model.mean_cost else 1) for price in self.prices]
        self.embedding = embedding_term(model)
        self.terms: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * model.depth  # computed when needed

    def literal_costs(self, space: int, rows: np.ndarray, index: torch.Tensor) -> torch.Tensor:
        """The literal sums of candidate maps `index` (len(rows), K, n) of the given replicas."""
        model, network = self.model, self.model.network
        moved = set(network.writers(space)) | set(network.readers(space))
        for i in set(range(model.depth)) - moved:
            self.terms[i] = self.terms[i] or _cost_term(model, self.weights[i], self.biases[i], self.prices[i])
        ties = torch.from_numpy(rows)
        return _candidate_costs(model, [w[ties] for w in self.weights], [b[ties] for b in self.biases], self.prices,
                                [part and (part[0][ties], part[1][ties]) for part in self.terms],
                                self.embedding[ties], space, index)

    def moved(self, space: int, order: np.ndarray) -> None:
        """Apply a space's accumulated swaps (`order`, (R, n)); the cost terms of its maps go stale."""
        apply_permutation(self.model, space, order, self.moments)
        network = self.model.network
        for i in set(network.writers(space)) | set(network.readers(space)):
            self.terms[i] = None


def _relocate(model: SpatialModel, top_k: int, enabled: torch.Tensor | None, moments: list[torch.Tensor],
              locality: float, inputs: bool) -> None:
    keep = np.zeros(model.replicas, dtype=np.bool_) if enabled is None else ~enabled.numpy()
    search = _Search(model, moments, locality, keep)
    network = model.network
    for space in network.relocation_order:
        if not inputs and network.spaces[space].permutation == "in_perm":
            continue
        if network.spaces[space].heads > 1:
            _move_heads(search, space, top_k)
        _move_neurons(search, space, top_k)


def _move_heads(search: _Search, space: int, top_k: int) -> None:
    """Each head, in order of mean importance (listed once), swaps with the head block of lowest cost."""
    model, spaces = search.model, search.model.network.spaces[space]
    score = importance(model, space, search.weights).reshape(model.replicas, spaces.heads, spaces.head_size).mean(dim=2)
    top = torch.flip(torch.argsort(score, dim=1), [1])[:, :top_k]
    everyone = np.arange(model.replicas)
    for t in range(top.shape[1]):
        j = top[:, t].contiguous()
        candidates = head_swap_candidates(model, space, j)
        best = search.literal_costs(space, everyone, candidates).argmin(dim=1)
        chosen = candidates[torch.arange(model.replicas), best].numpy()
        identity = np.arange(spaces.size)
        search.moved(space, np.where(search.keep[:, None], identity, chosen))


def _move_neurons(search: _Search, space: int, top_k: int) -> None:
    """The greedy swaps of the listed positions of a space, each within its head."""
    model, network = search.model, search.model.network
    spaces = network.spaces[space]
    n, head = spaces.size, spaces.head_size
    score = importance(model, space, search.weights)
    if network.top_k_of == "heads":  # every neuron of the first top_k heads, each head's by importance
        within = torch.flip(torch.argsort(score.reshape(model.replicas, spaces.heads, head), dim=2), [2])[:, :top_k]
        top = (within + torch.arange(within.shape[1])[None, :, None] * head).reshape(model.replicas, -1)
    else:
        top = torch.flip(torch.argsort(score, dim=1), [1])[:, :top_k]
    top = top.contiguous().numpy()
    placement = placement_costs(model, search.weights, search.prices64, space)
    order = np.tile(np.arange(n), (model.replicas, 1))  # order[r, p]: the position whose neuron is now at p
    best, tied = np.empty(model.replicas, dtype=np.int64), np.empty(model.replicas, dtype=np.bool_)
    t = _greedy_swaps(placement, order, top, head, search.margin, search.keep, 0, best, tied)
    while t < top.shape[1]:  # column t has a near-tie: settle it with the literal sums, then go on
        search.moved(space, order)
        order[:] = np.arange(n)
        rows = np.flatnonzero(tied)  # only these replicas need the literal sums
        j = torch.from_numpy(top[rows, t])
        exact = search.literal_costs(space, rows, swap_candidates(model, space, j))
        best[rows] = top[rows, t] // head * head + exact.argmin(dim=1).numpy()
        _apply_swaps(placement, order, top[:, t], best, search.keep)
        t = _greedy_swaps(placement, order, top, head, search.margin, search.keep, t + 1, best, tied)
    search.moved(space, order)


@jit()
def _greedy_swaps(placement, order, top, head, margin, keep, start, best, tied):
    """Make the swaps of columns start, start + 1, ... of `top` (R, K) in turn, in `placement` and `order`.

    For column t, replica r swaps position top[r, t] with the position of its head (blocks of `head`
    positions) whose swap lowers the cost most (the first one on exact ties, as argmin), unless
    keep[r]. Stops before applying a column in which some replica's best two candidates are within
    margin[r]: returns that t, with best[r] and tied[r] filled in; returns K when all columns are done.
    """
    replicas = order.shape[0]
    for t in range(start, top.shape[1]):
        any_tied = False
        for r in range(replicas):
            j = top[r, t]
            first, second, choice = np.inf, np.inf, -1
            low = j // head * head
            for k in range(low, low + head):
                delta = placement[r, j, k] + placement[r, k, j] - placement[r, j, j] - placement[r, k, k]
                if delta < first:
                    first, second, choice = delta, first, k
                elif delta < second:
                    second = delta
            best[r] = choice
            tied[r] = second - first <= margin[r]
            any_tied = any_tied or tied[r]
        if any_tied:
            return t
        _apply_swaps(placement, order, top[:, t], best, keep)
    return top.shape[1]


@jit()
def _apply_swaps(placement, order, j, k, keep):
    """Swap positions j[r] and k[r] of each replica r (not kept): rows of placement[r], entries of order[r]."""
    for r in range(order.shape[0]):
        if keep[r] or j[r] == k[r]:
            continue
        a, b = j[r], k[r]
        for column in range(placement.shape[2]):
            placement[r, a, column], placement[r, b, column] = placement[r, b, column], placement[r, a, column]
        order[r, a], order[r, b] = order[r, b], order[r, a]
