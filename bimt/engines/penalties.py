"""The connection cost's gradient, which every engine adds to the loss's: lambda * price * sign(parameter)."""

from __future__ import annotations

import torch

from bimt.network.spatial import SpatialModel


def connection_penalties(model: SpatialModel, prices: list[torch.Tensor], lam: torch.Tensor) -> dict[bool, torch.Tensor]:
    """The gradient of lam * cost is lam * price * sign(parameter): lam * price for every parameter,
    in the flat (R, P) layout (lam / count * price where the cost averages a term over its count
    entries, as autograd's mean divides). Keyed by whether biases are in the cost: with them, each
    bias is priced l0; before they join, their entries are 0. An embedding is priced l0 in both;
    vectors (LayerNorms) are not priced."""
    penalty = torch.zeros_like(model.params.detach())
    weights, biases = model.layer_views(penalty)

    def scaled(part: torch.Tensor) -> torch.Tensor:
        """lam per replica, over the entries of `part` (R, ...) when the cost averages them."""
        share = lam / part[0].numel() if model.mean_cost else lam
        return share.reshape(-1, *[1] * (part.dim() - 1))

    for weight, price in zip(weights, prices):
        weight.copy_(scaled(weight) * price)
    if model.embedding is not None and model.embedding_cost:
        table = model.embedding_view(penalty)
        table.copy_((scaled(table) * model.l0).expand_as(table))
    without_biases = penalty.clone()
    for bias in biases:
        bias.copy_((scaled(bias) * model.l0).expand_as(bias))
    return {False: without_biases, True: penalty}
