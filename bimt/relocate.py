"""Greedy neuron relocation: move each important neuron to the position that minimises the cost.

For every neuron layer (input, hidden..., output) the `top_k` positions with the largest summed
|weight| are listed once, before any swap. Each listed position j is then, in turn, swapped with the
position k (any position, j itself included) whose swap gives the lowest connection cost; ties go
to the first k, as `torch.argmin` resolves them. Swaps are applied one after another, so a later
entry of the list may name a position that an earlier swap refilled (the reference's behaviour).

Candidates are scored with the full connection cost at locality weight 1 with biases, whatever the
train type (the reference's behaviour). The cost change of every candidate is computed in closed
form, for all replicas at once; near-ties are settled by `candidate_costs`, which sums each
candidate's full cost exactly as the literal swap-recompute-unswap search does, so the choice is
always the literal search's (tests/reference.py holds that search as the oracle).
"""

from __future__ import annotations

import numpy as np
import torch

from bimt.cost import connection_cost, wire_factor
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


TIE_MARGIN = 1e-5  # relative to the total cost; float32 rounding of the literal sums stays far below it


def _cost_changes(
    w_in: np.ndarray | None,
    f_in: np.ndarray | None,
    w_out: np.ndarray | None,
    f_out: np.ndarray | None,
    j: np.ndarray,
    fold: int,
) -> np.ndarray:
    """Exact cost change of swapping position j[r] with every position k, shape (R, n), in float64.

    Only the weights touching j and k change price: incoming row a moved to position b costs
    sum_c |W[a, c]| * F[b, c]. Biases cost l0 * |b| wherever they are, so they never change.
    `w_in` (R, n, c) and `w_out` (R, m, fold * n) hold |W|; `f_in`, `f_out` the prices per weight.
    """
    replicas = np.arange(len(j))
    delta = 0.0
    if w_in is not None:
        wj, fj = w_in[replicas, j], f_in[j]  # (R, c)
        delta = delta + ((wj[:, None, :] - w_in) * (f_in[None] - fj[:, None, :])).sum(axis=2)
    if w_out is not None:
        r, m, columns = w_out.shape
        wo, fo = w_out.reshape(r, m, fold, columns // fold), f_out.reshape(m, fold, columns // fold)
        wj, fj = wo[replicas, :, :, j], np.moveaxis(fo[:, :, j], 2, 0)  # (R, m, fold)
        delta = delta + ((wj[..., None] - wo) * (fo[None] - fj[..., None])).sum(axis=(1, 2))
    return delta


def _swap(array: np.ndarray, axis: int, j: np.ndarray, k: np.ndarray, n: int) -> None:
    """Swap positions j[r] and k[r] (in every fold of size n) along `axis` of each replica's slice."""
    replicas = np.arange(len(j))
    for f in range(array.shape[axis] // n):
        a, b = j + f * n, k + f * n
        index_a = (replicas, *([slice(None)] * (axis - 1)), a)
        index_b = (replicas, *([slice(None)] * (axis - 1)), b)
        array[index_a], array[index_b] = array[index_b].copy(), array[index_a].copy()


@torch.no_grad()
def relocate(
    model: BioMLP,
    top_k: int = 5,
    enabled: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Relocate the top_k most connected neurons of every layer, in replicas where `enabled` (R,) is true.

    Each candidate swap is scored by its exact cost change (`_cost_changes`, all candidates at once).
    When the best two candidates of a replica are closer than float32 rounding of the literal search's
    sums could separate, that choice is made by `candidate_costs`, which sums the costs exactly as
    the literal search does; so the swaps are always the literal search's. Pass `optimizer` to permute
    its moment estimates with the weights (the reference does not).
    """
    margin = (TIE_MARGIN * connection_cost(model).double()).cpu().numpy()
    keep = None if enabled is None else ~enabled.cpu().numpy()
    for layer in range(model.depth + 1):
        n, fold = positions(model, layer), (model.in_fold if layer == 0 else 1)
        top = torch.flip(torch.argsort(importance(model, layer), dim=1), [1])[:, :top_k].cpu().numpy()
        w_in = f_in = w_out = f_out = None
        if layer > 0:
            w_in = model.weights[layer - 1].abs().double().cpu().numpy()
            f_in = wire_factor(model, layer - 1, 1.0).double().cpu().numpy()
        if layer < model.depth:
            w_out = model.weights[layer].abs().double().cpu().numpy()
            f_out = wire_factor(model, layer, 1.0).double().cpu().numpy()
        order = np.tile(np.arange(n), (model.replicas, 1))  # order[r, p]: the slot now at position p
        for j in top.T:
            delta = _cost_changes(w_in, f_in, w_out, f_out, j, fold)
            best = delta.argmin(axis=1)
            runner_up = np.partition(delta, 1, axis=1)[:, 1] if n > 1 else np.full(len(j), np.inf)
            tied = runner_up - delta[np.arange(len(j)), best] <= margin
            if tied.any():
                _move(model, layer, order, optimizer)
                order = np.tile(np.arange(n), (model.replicas, 1))
                exact = candidate_costs(model, layer, torch.as_tensor(j, device=model.in_perm.device))
                best = np.where(tied, exact.argmin(dim=1).cpu().numpy(), best)
            if keep is not None:
                best = np.where(keep, j, best)
            _swap(order, 1, j, best, n)
            if w_in is not None:
                _swap(w_in, 1, j, best, n)
            if w_out is not None:
                _swap(w_out, 2, j, best, n)
        _move(model, layer, order, optimizer)


def _move(model: BioMLP, layer: int, order: np.ndarray, optimizer: torch.optim.Optimizer | None) -> None:
    """Apply the layer's accumulated swaps (`order`) to the model's tensors in one step."""
    n = order.shape[1]
    fold = model.in_fold if layer == 0 else 1
    index = torch.as_tensor(np.concatenate([order + f * n for f in range(fold)], axis=1), device=model.in_perm.device)
    apply_permutation(model, layer, index, optimizer)
