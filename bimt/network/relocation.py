"""Greedy neuron relocation: move each important neuron to the position that minimises the cost.

For every neuron layer (input, hidden..., output) the `top_k` positions with the largest summed
|weight| are listed once, before any swap. Each listed position j is then, in turn, swapped with the
position k (any position, j itself included) whose swap gives the lowest connection cost; ties go
to the first k, as `torch.argmin` resolves them. Swaps are applied one after another, so a later
entry of the list may name a position that an earlier swap refilled (the reference's behaviour).

Candidates are scored with the full connection cost with biases, at the locality weight
`locality` (the notebook's `get_cc()` default: 1 in Sections 3.1-3.2, 2 in 3.3), whatever the
train type (the reference's behaviour). The cost change of every candidate is computed in closed
form, for all replicas at once; near-ties are settled by `candidate_costs`, which sums each
candidate's full cost exactly as the literal swap-recompute-unswap search does, so the choice is
always the literal search's (tests/reference.py holds that search as the oracle).

With `inputs=False` the input neurons stay where they are (the MNIST notebook keeps each pixel at its
place in the image); the other layers relocate as before.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from bimt.network.cost import embedding_term, importance, positions, priced_cost, term, wire_factors
from bimt.network.jit import jit
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW


def swap_candidates(model: BioMLP, layer: int, j: torch.Tensor) -> torch.Tensor:
    """Index maps of swapping position j[r] with every position k, shape (R, K, neurons).

    Entry [r, k] maps each neuron slot of the layer to the slot whose contents it receives; input
    folds are swapped together.
    """
    n = positions(model, layer)
    device = j.device
    slot = torch.arange(n, device=device)
    k = slot[:, None]
    jr = j[:, None, None]
    index = torch.where(slot == jr, k, torch.where(slot == k, jr, slot))
    fold = model.in_fold if layer == 0 else 1
    return torch.cat([index + f * n for f in range(fold)], dim=2)


def _rearranged(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Replica tensor (R, ...) with its slots along `dim` rearranged by each of K maps (R, K, n).

    Returns (R, K, ...): entry [r, k] is replica r's tensor after map k.
    """
    replicas, candidates, slots = index.shape
    expanded = tensor[:, None].expand(replicas, candidates, *tensor.shape[1:])
    view = [replicas, candidates] + [1] * (tensor.dim() - 1)
    view[dim + 1] = slots
    return torch.gather(expanded, dim + 1, index.reshape(view).expand(expanded.shape))


def candidate_costs(model: BioMLP, layer: int, j: torch.Tensor, locality: float = 1.0) -> torch.Tensor:
    """Full connection cost (locality `locality`, biases in) after swapping j[r] with each k, (R, K)."""
    weights, biases = model.layer_views(model.params.detach())
    prices = wire_factors(model, locality)
    terms = [_cost_term(model, *layer_parts) for layer_parts in zip(weights, biases, prices)]
    return _candidate_costs(model, weights, biases, prices, terms, embedding_term(model), layer, j)


def _cost_term(model: BioMLP, weight: torch.Tensor, bias: torch.Tensor, price: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's weight and bias cost, (R, 1) each, summed as the literal search sums them."""
    return term(model, weight.abs() * price)[:, None], term(model, bias.abs() * model.l0)[:, None]


def _candidate_costs(
    model: BioMLP,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    prices: list[torch.Tensor],
    terms: list[tuple[torch.Tensor, torch.Tensor] | None],
    embedding: torch.Tensor,
    layer: int,
    j: torch.Tensor,
) -> torch.Tensor:
    """`candidate_costs` given the layer views, prices and each other layer's `_cost_term`.

    Only the layers on either side of neuron layer `layer` change with the swap; the others' terms
    are taken as they are. The terms are accumulated in the literal search's order: layer by layer,
    weights before biases, the embedding's (which no swap changes) last, in the model's dtype.
    """
    index = swap_candidates(model, layer, j)
    cost = torch.zeros(len(j), 1, dtype=weights[0].dtype, device=j.device)
    for i, (weight, bias, price) in enumerate(zip(weights, biases, prices)):
        if i == layer - 1:  # the layer's incoming weights: rows move, with their biases
            weight_term = _candidate_term(model, _rearranged(weight, index, 1).abs() * price)
            bias_term = _candidate_term(model, _rearranged(bias, index, 1).abs() * model.l0)
        elif i == layer:  # its outgoing weights: columns move
            weight_term = _candidate_term(model, _rearranged(weight, index, 2).abs() * price)
            bias_term = term(model, bias.abs() * model.l0)[:, None]
        else:
            weight_term, bias_term = terms[i]
        cost = cost + weight_term
        cost = cost + bias_term
    return cost + embedding[:, None]


def _candidate_term(model: BioMLP, priced: torch.Tensor) -> torch.Tensor:
    """`term` of every candidate: priced entries (R, K, ...) to (R, K)."""
    replicas, candidates = priced.shape[:2]
    return term(model, priced.reshape(replicas * candidates, *priced.shape[2:])).reshape(replicas, candidates)


@torch.no_grad()
def apply_permutation(
    model: BioMLP, layer: int, index: torch.Tensor | np.ndarray, moments: Sequence[torch.Tensor] = ()
) -> None:
    """Move neurons of `layer`: slot p of replica r receives the neuron at slot index[r, p].

    Weights, biases and the input/output permutation move together, so the function is unchanged;
    so do `moments`, flat tensors laid out like the parameters (Adam's moment estimates). The
    model must be on the CPU: the rearrangement is done in numpy, on the tensors' own memory.
    """
    index = np.asarray(index)
    for flat in [model.params.detach(), *moments]:
        if layer > 0:
            weight, bias = (t.numpy() for t in model.layer_view(flat, layer - 1))
            weight[...] = np.take_along_axis(weight, index[:, :, None], axis=1)
            bias[...] = np.take_along_axis(bias, index, axis=1)
        if layer < model.depth:
            weight = model.layer_view(flat, layer)[0].numpy()
            weight[...] = np.take_along_axis(weight, index[:, None, :], axis=2)
    if layer == 0:
        in_perm = model.in_perm.numpy()
        in_perm[...] = np.take_along_axis(in_perm, index[:, : model.n_input_positions], axis=1)
    if layer == model.depth:
        out_perm = model.out_perm.numpy()
        out_perm[...] = np.take_along_axis(out_perm, index, axis=1)


# Relative to the total cost: rounding of the literal sums, in the model's dtype, stays far below it.
TIE_MARGIN = {torch.float32: 1e-5, torch.float64: 1e-13}


def placement_costs(model: BioMLP, weights: list[torch.Tensor], prices64: list[np.ndarray], layer: int) -> np.ndarray:
    """M[r, a, b]: the price of the weights touching the neuron at position a, were it at position b.

    Shape (R, n, n), float64. Only a neuron's own weights change price when it moves (biases cost
    l0 * |b| anywhere), so swapping positions j and k changes the cost by
    M[j, k] + M[k, j] - M[j, j] - M[k, k], and afterwards M is M with rows j and k exchanged.
    Incoming weights W (n, c) give |W| @ F^T; outgoing weights (m, fold * n) give |W|^T @ F, summed
    over the input folds, which move together.
    """
    placement = 0.0
    if layer > 0:
        w_in = weights[layer - 1].abs().double().cpu().numpy()
        placement = placement + w_in @ prices64[layer - 1].T
    if layer < model.depth:
        w_out = weights[layer].abs().double().cpu().numpy()
        replicas, m, columns = w_out.shape
        fold = model.in_fold if layer == 0 else 1
        n = columns // fold
        placement = placement + np.swapaxes(w_out.reshape(replicas, m * fold, n), 1, 2) @ prices64[layer].reshape(m * fold, n)
    return placement


@torch.no_grad()
def relocate(
    model: BioMLP,
    top_k: int = 5,
    enabled: torch.Tensor | None = None,
    optimizer: AdamW | None = None,
    locality: float = 1.0,
    inputs: bool = True,
) -> None:
    """Relocate the top_k most connected neurons of every layer (the input layer only with `inputs`),
    in replicas where `enabled` (R,) is true.

    Each candidate swap is scored by its exact cost change, from `placement_costs`, all candidates
    at once. When the best two candidates of a replica are closer than rounding of the literal
    search's sums could separate, that choice is made by `candidate_costs`, which sums the
    costs exactly as the literal search does; so the swaps are always the literal search's. Pass
    `optimizer` to permute its moment estimates with the weights (the reference does not).

    The search runs on the CPU; a model elsewhere is relocated through a CPU copy.
    """
    moments = optimizer.moments() if optimizer is not None else []
    if model.params.device.type != "cpu":
        host = copy.deepcopy(model).cpu()
        host_moments = [moment.cpu() for moment in moments]
        _relocate(host, top_k, None if enabled is None else enabled.cpu(), host_moments, locality, inputs)
        model.load_state_dict(host.state_dict())
        for moment, host_moment in zip(moments, host_moments):
            moment.copy_(host_moment)
        return
    _relocate(model, top_k, enabled, moments, locality, inputs)


def _relocate(model: BioMLP, top_k: int, enabled: torch.Tensor | None, moments: list[torch.Tensor],
              locality: float, inputs: bool) -> None:
    keep = np.zeros(model.replicas, dtype=np.bool_) if enabled is None else ~enabled.numpy()
    weights, biases = model.layer_views(model.params.detach())
    prices = wire_factors(model, locality)
    margin = (TIE_MARGIN[model.params.dtype] * priced_cost(model, prices, penalize_bias=True).double()).numpy()
    prices64 = [price.double().numpy() / (price.numel() if model.mean_cost else 1) for price in prices]
    embedding = embedding_term(model)
    terms = [None] * model.depth  # each layer's cost, computed when a near-tie first needs it
    for layer in range(0 if inputs else 1, model.depth + 1):
        n = positions(model, layer)
        top = torch.flip(torch.argsort(importance(model, layer, weights), dim=1), [1])[:, :top_k].contiguous().numpy()
        placement = placement_costs(model, weights, prices64, layer)
        order = np.tile(np.arange(n), (model.replicas, 1))  # order[r, p]: the slot now at position p
        best, tied = np.empty(model.replicas, dtype=np.int64), np.empty(model.replicas, dtype=np.bool_)
        t = _greedy_swaps(placement, order, top, margin, keep, 0, best, tied)
        while t < top.shape[1]:  # column t has a near-tie: settle it with the literal sums, then go on
            _move(model, layer, order, moments)
            order[:] = np.arange(n)
            for i in set(range(model.depth)) - {layer - 1, layer}:
                terms[i] = terms[i] or _cost_term(model, weights[i], biases[i], prices[i])
            rows = np.flatnonzero(tied)  # only these replicas need the literal sums
            ties = torch.from_numpy(rows)
            exact = _candidate_costs(model, [weight[ties] for weight in weights], [bias[ties] for bias in biases],
                                     prices, [part and (part[0][ties], part[1][ties]) for part in terms],
                                     embedding[ties], layer, torch.from_numpy(top[rows, t]))
            best[rows] = exact.argmin(dim=1).numpy()
            _apply_swaps(placement, order, top[:, t], best, keep)
            t = _greedy_swaps(placement, order, top, margin, keep, t + 1, best, tied)
        _move(model, layer, order, moments)
        for moved in {layer - 1, layer} & set(range(model.depth)):
            terms[moved] = None


@jit()
def _greedy_swaps(placement, order, top, margin, keep, start, best, tied):
    """Make the swaps of columns start, start + 1, ... of `top` (R, K) in turn, in `placement` and `order`.

    For column t, replica r swaps position top[r, t] with the position whose swap lowers the cost
    most (the first one on exact ties, as argmin), unless keep[r]. Stops before applying a column in
    which some replica's best two candidates are within margin[r]: returns that t, with best[r] and
    tied[r] filled in; returns K when all columns are done.
    """
    replicas, n = order.shape
    for t in range(start, top.shape[1]):
        any_tied = False
        for r in range(replicas):
            j = top[r, t]
            first, second, choice = np.inf, np.inf, -1
            for k in range(n):
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


def _move(model: BioMLP, layer: int, order: np.ndarray, moments: list[torch.Tensor]) -> None:
    """Apply the layer's accumulated swaps (`order`) to the model's tensors in one step."""
    fold = model.in_fold if layer == 0 else 1
    apply_permutation(model, layer, np.concatenate([order + f * order.shape[1] for f in range(fold)], axis=1), moments)
