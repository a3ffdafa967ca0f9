"""Greedy neuron relocation: move each important neuron to the position that minimises the cost.

For every neuron layer (input, hidden..., output) the `top_k` positions with the largest summed
|weight| are listed once, before any swap. Each listed position j is then, in turn, swapped with the
position k (any position, j itself included) whose swap gives the lowest connection cost; ties go
to the first k, as `torch.argmin` resolves them. Swaps are applied one after another, so a later
entry of the list may name a position that an earlier swap refilled (the reference's behaviour).

Candidates are scored with the full connection cost at locality weight 1 with biases, whatever the
train type (the reference's behaviour). All candidates of all replicas are scored in one batch: each
layer's cost is summed exactly as `connection_cost` sums it, so the choice is the one the literal
swap-recompute-unswap search makes.
"""

from __future__ import annotations

import torch

from bimt.cost import wire_factor
from bimt.model import BioMLP


def positions(model: BioMLP, layer: int) -> int:
    """Number of positions in neuron layer `layer` (0 = input, model.depth = output)."""
    return model.n_input_positions if layer == 0 else model.shape[layer]


def importance(model: BioMLP, layer: int) -> torch.Tensor:
    """Summed |weight| touching each position of neuron layer `layer`, shape (R, positions)."""
    score = 0
    if layer < model.depth:
        outgoing = model.weights[layer].abs().sum(dim=1)
        if layer == 0:
            outgoing = outgoing.reshape(model.replicas, model.in_fold, -1).sum(dim=1)
        score = score + outgoing
    if layer > 0:
        score = score + model.weights[layer - 1].abs().sum(dim=2)
    return score


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


def candidate_costs(model: BioMLP, layer: int, j: torch.Tensor) -> torch.Tensor:
    """Full connection cost (locality 1, biases in) after swapping j[r] with each k, shape (R, K)."""
    index = swap_candidates(model, layer, j)
    cost = torch.zeros(model.replicas, 1, device=j.device)
    for i, (weight, bias) in enumerate(zip(model.weights, model.biases)):
        if i == layer - 1:  # the layer's incoming weights: rows move, with their biases
            weight, bias = _rearranged(weight, index, 1), _rearranged(bias, index, 1)
        elif i == layer:  # its outgoing weights: columns move
            weight, bias = _rearranged(weight, index, 2), bias[:, None]
        else:
            weight, bias = weight[:, None], bias[:, None]
        cost = cost + (weight.abs() * wire_factor(model, i, 1.0)).sum(dim=(2, 3))
        cost = cost + (bias.abs() * model.l0).sum(dim=2)
    return cost


@torch.no_grad()
def apply_permutation(
    model: BioMLP,
    layer: int,
    index: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Move neurons of `layer`: slot p of replica r receives the neuron at slot index[r, p].

    Weights, biases and the input/output permutation move together, so the function is unchanged.
    With an optimizer, its per-parameter state tensors (e.g. Adam moments) move with the weights.
    """

    def move(tensor: torch.Tensor, dim: int) -> None:
        tensor.copy_(_rearranged(tensor, index[:, None], dim)[:, 0])

    def move_parameter(parameter: torch.Tensor, dim: int) -> None:
        move(parameter.data, dim)
        if optimizer is not None:
            for value in optimizer.state.get(parameter, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == parameter.shape:
                    move(value, dim)

    if layer > 0:
        move_parameter(model.weights[layer - 1], 1)
        move_parameter(model.biases[layer - 1], 1)
    if layer < model.depth:
        move_parameter(model.weights[layer], 2)
    if layer == 0:
        model.in_perm.copy_(torch.gather(model.in_perm, 1, index[:, : model.n_input_positions]))
    if layer == model.depth:
        model.out_perm.copy_(torch.gather(model.out_perm, 1, index))


@torch.no_grad()
def relocate(
    model: BioMLP,
    top_k: int = 5,
    enabled: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Relocate the top_k most connected neurons of every layer, in replicas where `enabled` (R,) is true.

    Pass `optimizer` to permute its moment estimates with the weights (the reference does not).
    """
    replicas = torch.arange(model.replicas, device=model.in_perm.device)
    for layer in range(model.depth + 1):
        top = torch.flip(torch.argsort(importance(model, layer), dim=1), [1])[:, :top_k]
        for j in top.unbind(dim=1):
            best = torch.argmin(candidate_costs(model, layer, j), dim=1)
            if enabled is not None:
                best = torch.where(enabled, best, j)
            index = swap_candidates(model, layer, j)[replicas, best]
            apply_permutation(model, layer, index, optimizer)
