"""The connection cost: L1 on weights scaled by wire length, plus a constant l0 per unit of weight.

cost = sum_l sum |W_l| * (locality * |x_out - x_in| + l0)  [+ l0 * sum |b_l| when biases are penalised]
                                                         [+ l0 * sum |E| for a token embedding E]

A model with `mean_cost` averages each term over its entries instead of summing it (the notebooks of
Section 3.3). Terms are accumulated in order, layer by layer, weights before biases, the embedding
last, as the notebooks do; the sum is then bit-for-bit theirs, which matters because relocation
compares such sums.
"""

from __future__ import annotations

import torch

from bimt.network.spatial import SpatialModel


def wire_factor(model: SpatialModel, layer: int, locality: torch.Tensor | float) -> torch.Tensor:
    """Per-weight price `locality * distance + l0`; shape (R, out, in) or (out, in) for a float."""
    if isinstance(locality, torch.Tensor):
        locality = locality[:, None, None]
    return locality * model.distance(layer) + model.l0


def wire_factors(model: SpatialModel, locality: torch.Tensor | float, local_output_layer: bool = True) -> list[torch.Tensor]:
    """Every layer's `wire_factor`. Without `local_output_layer` the last layer's wires cost l0 whatever their
    length (its locality weight is 0: the notebooks' `no_penalize_last=True`)."""
    last = model.depth - 1
    return [wire_factor(model, i, locality if i < last or local_output_layer else locality * 0) for i in range(model.depth)]


def connection_cost(
    model: SpatialModel,
    locality: torch.Tensor | float = 1.0,
    penalize_bias: bool = True,
    local_output_layer: bool = True,
) -> torch.Tensor:
    """Cost of every replica, shape (R,). `locality` is a float or a per-replica (R,) tensor."""
    return priced_cost(model, wire_factors(model, locality, local_output_layer), penalize_bias)


def priced_cost(model: SpatialModel, factors: list[torch.Tensor], penalize_bias: bool,
                weights: list[torch.Tensor] | None = None, biases: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The cost with each layer's per-weight prices given (training computes them once per run).

    `weights` and `biases` (R, out, in) and (R, out) per map price other tensors laid out as the
    model's (a wrapped model's own parameters, whose gradients autograd then follows)."""
    weights = model.weights if weights is None else weights
    biases = model.biases if biases is None else biases
    cost = torch.zeros(len(weights[0]), dtype=weights[0].dtype, device=weights[0].device)
    for weight, bias, factor in zip(weights, biases, factors):
        cost = cost + term(model, weight.abs() * factor)
        if penalize_bias:
            cost = cost + term(model, bias.abs() * model.l0)
    return cost if model.embedding is None else cost + embedding_term(model)


def term(model: SpatialModel, priced: torch.Tensor) -> torch.Tensor:
    """One part of the cost from its priced entries (R, ...): their sum, or their mean for a model
    with `mean_cost` (as `torch.mean`: the sum divided by the count), shape (R,)."""
    total = priced.sum(dim=tuple(range(1, priced.dim())))
    return total / priced[0].numel() if model.mean_cost else total


def embedding_term(model: SpatialModel) -> torch.Tensor:
    """The embedding's part of the cost, l0 * |E| (R,); zeros without one or when it is not priced
    (adding them changes no sum)."""
    if model.embedding is None or not model.embedding_cost:
        return torch.zeros(model.replicas, dtype=model.params.dtype, device=model.in_perm.device)
    return term(model, model.embedding.abs() * model.l0)


def active_weights(model: SpatialModel, threshold: float = 1e-2) -> torch.Tensor:
    """Number of weight entries (biases excluded) with |w| > threshold, per replica, shape (R,)."""
    return sum((weight.abs() > threshold).sum(dim=(1, 2)) for weight in model.weights)


def positions(model: SpatialModel, space: int) -> int:
    """Number of positions in neuron space `space` (for an MLP, neuron layer `space`: 0 = input)."""
    return model.network.spaces[space].size


def _fold_reduced(sums: torch.Tensor, fold: int, how: str) -> torch.Tensor:
    """Per-position sums (R, fold * n) reduced over the folds that share each position: (R, n)."""
    if fold == 1:
        return sums
    folded = sums.reshape(sums.shape[0], fold, -1)
    return folded.sum(dim=1) if how == "sum" else folded.mean(dim=1)


def importance(model: SpatialModel, space: int, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Summed |weight| touching each position of space `space`, shape (R, positions): over the
    space's neuron layers in order, each the rows of the map writing it plus the columns of the map
    reading it (each reduced over its folds), accumulated as the notebooks accumulate them."""
    weights = model.weights if weights is None else weights
    network = model.network
    score = 0
    for writer, reader in network.spaces[space].layers:
        part = 0
        if reader is not None:
            part = part + _fold_reduced(weights[reader].abs().sum(dim=1), network.maps[reader].in_fold, network.fold_score)
        if writer is not None:
            part = part + _fold_reduced(weights[writer].abs().sum(dim=2), network.maps[writer].out_fold, network.fold_score)
        score = score + part
    return score
