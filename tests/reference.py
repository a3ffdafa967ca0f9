"""The literal BIMT algorithm, one network at a time, as the reference notebook computes it: the oracle.

Written from the notebook's description, deliberately naive: `nn.Linear` layers, permutations kept
as float tensors and gathered on every forward pass, and relocation by swap-recompute-unswap of
the whole connection cost for every candidate. The tests hold the project's batched code to it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LiteralMLP(nn.Module):
    def __init__(self, shape: list[int], in_fold: int = 1, l0: float = 0.1) -> None:
        super().__init__()
        self.shape = shape
        self.in_fold = in_fold
        self.l0 = l0
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(shape[:-1], shape[1:]))
        self.coords = []
        for i, (a, b) in enumerate(zip(shape[:-1], shape[1:])):
            fold = in_fold if i == 0 else 1
            per = a // fold
            x_in = torch.tensor(list(np.linspace(1 / (2 * per), 1 - 1 / (2 * per), num=per)) * fold, dtype=torch.float)
            x_out = torch.tensor(list(np.linspace(1 / (2 * b), 1 - 1 / (2 * b), num=b)), dtype=torch.float)
            self.coords.append((x_in, x_out))
        self.in_perm = torch.arange(shape[0] // in_fold, dtype=torch.float)
        self.out_perm = torch.arange(shape[-1], dtype=torch.float)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(n, self.in_fold, -1)[:, :, self.in_perm.long()].reshape(n, -1)
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1:
                x = nn.functional.silu(x)
        inverse = torch.zeros(self.shape[-1], dtype=torch.long)
        inverse[self.out_perm.long()] = torch.arange(self.shape[-1])
        return x[:, inverse]

    def cost(self, locality: float = 1.0, penalize_bias: bool = True) -> torch.Tensor:
        total = 0
        for linear, (x_in, x_out) in zip(self.linears, self.coords):
            distance = torch.abs(x_out.unsqueeze(1) - x_in.unsqueeze(0))
            total += torch.sum(torch.abs(linear.weight) * (locality * distance + self.l0))
            if penalize_bias:
                total += torch.sum(torch.abs(linear.bias) * self.l0)
        return total

    @torch.no_grad()
    def swap(self, layer: int, j: int, k: int) -> None:
        def swap_rows(t: torch.Tensor, a: int, b: int) -> None:
            t[[a, b]] = t[[b, a]].clone()

        def swap_columns(t: torch.Tensor, a: int, b: int) -> None:
            t[:, [a, b]] = t[:, [b, a]].clone()

        last = len(self.linears)
        if layer == 0:
            per = self.shape[0] // self.in_fold
            for f in range(self.in_fold):
                swap_columns(self.linears[0].weight, j + f * per, k + f * per)
            swap_rows(self.in_perm, j, k)
            return
        swap_rows(self.linears[layer - 1].weight, j, k)
        swap_rows(self.linears[layer - 1].bias, j, k)
        if layer == last:
            swap_rows(self.out_perm, j, k)
        else:
            swap_columns(self.linears[layer].weight, j, k)

    def importance(self, layer: int) -> torch.Tensor:
        last = len(self.linears)
        if layer == 0:
            score = torch.sum(torch.abs(self.linears[0].weight), dim=0)
            return torch.sum(score.reshape(self.in_fold, -1), dim=0)
        score = torch.sum(torch.abs(self.linears[layer - 1].weight), dim=1)
        if layer < last:
            score = torch.sum(torch.abs(self.linears[layer].weight), dim=0) + score
        return score

    @torch.no_grad()
    def candidate_costs(self, layer: int, j: int) -> torch.Tensor:
        n = self.shape[0] // self.in_fold if layer == 0 else self.shape[layer]
        costs = []
        for k in range(n):
            self.swap(layer, j, k)
            costs.append(self.cost())
            self.swap(layer, j, k)
        return torch.stack(costs)

    @torch.no_grad()
    def relocate(self, top_k: int = 5) -> None:
        for layer in range(len(self.linears) + 1):
            top = torch.flip(torch.argsort(self.importance(layer)), [0])[:top_k]
            for j in top.tolist():
                k = int(torch.argmin(self.candidate_costs(layer, j)))
                self.swap(layer, j, k)


# The paper's setting per task: seed, hidden widths, lambda boost and decay factors.
PAPER = {"independence": (0, [20, 20], 10.0, 0.1), "feature_sharing": (4, [20, 20], 10.0, 0.1),
         "compositionality": (3, [20, 20, 20, 20], 3.0, 1.0)}


def literal_copy(model, replica: int = 0) -> LiteralMLP:
    """Replica `replica` of a project BioMLP as a literal network, weights and permutations included."""
    literal = LiteralMLP(list(model.shape), model.in_fold, model.l0)
    with torch.no_grad():
        for linear, weight, bias in zip(literal.linears, model.weights, model.biases):
            linear.weight.copy_(weight[replica])
            linear.bias.copy_(bias[replica])
    literal.in_perm = model.in_perm[replica].float().clone()
    literal.out_perm = model.out_perm[replica].float().clone()
    return literal


def literal_model(shape: list[int], seed: int, in_fold: int = 1) -> LiteralMLP:
    torch.manual_seed(seed)
    return LiteralMLP(shape, in_fold)


def literal_train(
    model: LiteralMLP, data, train_type: int, steps: int, log_every: int, boost: float = 10, decay: float = 0.1
) -> dict[int, tuple]:
    """The notebook's loop (boost/decay: its lambda factors); returns {step: (train, test, reg)} floats."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.0)
    lam = 0 if train_type == 1 else 0.001
    locality = 1.0 if train_type in (3, 5) else 0.0
    rows = {}
    for step in range(steps):
        if step == int(steps / 4):
            lam *= boost
        if step == int(3 * steps / 4):
            lam *= decay
        optimizer.zero_grad()
        loss = torch.mean((model(data.train_x) - data.train_y) ** 2)
        test = torch.mean((model(data.test_x) - data.test_y) ** 2)
        reg = model.cost(locality, penalize_bias=step >= int(3 * steps / 4))
        (loss + lam * reg).backward()
        optimizer.step()
        if step % log_every == 0:
            rows[step] = (loss.item(), test.item(), reg.item())
        if train_type >= 4 and (step + 1) % 200 == 0:
            model.relocate()
    return rows
