"""The connection cost: L1 on weights scaled by wire length, plus a constant l0 per unit of weight.

cost = sum_l sum |W_l| * (locality * |x_out - x_in| + l0)  [+ l0 * sum |b_l| when biases are penalised]

Layers are accumulated in order, weights before biases, as the reference notebook does; the float32
sum is then bit-for-bit the notebook's, which matters because relocation compares such sums.
"""

from __future__ import annotations

import torch

from bimt.model import BioMLP


def wire_factor(model: BioMLP, layer: int, locality: torch.Tensor | float) -> torch.Tensor:
    """Per-weight price `locality * distance + l0`; shape (R, out, in) or (out, in) for a float."""
    if isinstance(locality, torch.Tensor):
        locality = locality[:, None, None]
    return locality * model.distance(layer) + model.l0


def connection_cost(
    model: BioMLP,
    locality: torch.Tensor | float = 1.0,
    penalize_bias: bool = True,
    no_penalize_last: bool = False,
) -> torch.Tensor:
    """Cost of every replica, shape (R,). `locality` is a float or a per-replica (R,) tensor.

    `no_penalize_last` zeroes the locality weight of the last layer (its l0 term stays), the
    notebook's option of the same name.
    """
    last = model.depth - 1
    factors = [wire_factor(model, i, 0.0 if (i == last and no_penalize_last) else locality) for i in range(model.depth)]
    return priced_cost(model, factors, penalize_bias)


def priced_cost(model: BioMLP, factors: list[torch.Tensor], penalize_bias: bool) -> torch.Tensor:
    """The cost with each layer's per-weight prices given (training computes them once per run)."""
    cost = torch.zeros(model.replicas, device=model.in_perm.device)
    for weight, bias, factor in zip(model.weights, model.biases, factors):
        cost = cost + (weight.abs() * factor).sum(dim=(1, 2))
        if penalize_bias:
            cost = cost + (bias.abs() * model.l0).sum(dim=1)
    return cost


def active_weights(model: BioMLP, threshold: float = 1e-2) -> torch.Tensor:
    """Number of weight entries (biases excluded) with |w| > threshold, per replica, shape (R,)."""
    return sum((weight.abs() > threshold).sum(dim=(1, 2)) for weight in model.weights)
