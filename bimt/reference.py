"""BIMT in one file: the literal algorithm, one network at a time, as the paper's notebooks compute it.

Read this first. It is deliberately naive, so that it reads as the method itself:

- `LiteralMLP`: `nn.Linear` layers whose neurons sit on lines, with input and output permutations
  kept as float tensors and gathered on every forward pass;
- `LiteralMLP.cost`: the connection cost, sum |w| * (locality * |x_out - x_in| + l0) (+ l0 * |b|, + l0 * |E|);
- `LiteralMLP.relocate`: for each neuron layer, the top-k neurons by summed |weight|, each swapped with the
  position that gives the lowest cost, found by swap-recompute-unswap over every candidate;
- `literal_train` (Section 3.1), `literal_classifier_train` (3.2-3.3), `literal_grid_train` (3.5):
  the notebooks' loops, autograd and `torch.optim.AdamW`, with their lambda schedules.

The rest of the package computes the same numbers fast (batched replicas, closed-form swap prices,
compiled loops); the tests hold it to this file, bit for bit where both call the same kernels
(see `bimt.engines` for the contract).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LiteralMLP(nn.Module):
    """`reduce`: torch.sum (Sections 3.1-3.2) or torch.mean (3.3) of each cost term; `weight_factor`:
    the locality weight `cost()` uses by default, and so relocation; `embedding`: (tokens, dim) of a
    token table drawn after the layers, priced l0 in the cost."""

    def __init__(self, shape: list[int], in_fold: int = 1, l0: float = 0.1, reduce=torch.sum,
                 weight_factor: float = 1.0, embedding: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.shape = shape
        self.in_fold = in_fold
        self.l0 = l0
        self.reduce, self.weight_factor = reduce, weight_factor
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(shape[:-1], shape[1:]))
        self.embedding = None if embedding is None else nn.Parameter(torch.normal(0, 1, size=embedding))
        self.coords = []
        for i, (a, b) in enumerate(zip(shape[:-1], shape[1:])):
            fold = in_fold if i == 0 else 1
            per = a // fold
            x_in = torch.tensor(list(np.linspace(1 / (2 * per), 1 - 1 / (2 * per), num=per)) * fold, dtype=torch.float)
            x_out = torch.tensor(list(np.linspace(1 / (2 * b), 1 - 1 / (2 * b), num=b)), dtype=torch.float)
            self.coords.append((x_in, x_out))
        self.in_perm = torch.arange(shape[0] // in_fold, dtype=torch.float)
        self.out_perm = torch.arange(shape[-1], dtype=torch.float)
        self.moves = 0

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

    def cost(self, locality: float | None = None, penalize_bias: bool = True) -> torch.Tensor:
        locality = self.weight_factor if locality is None else locality
        total = 0
        for linear, (x_in, x_out) in zip(self.linears, self.coords):
            distance = torch.abs(x_out.unsqueeze(1) - x_in.unsqueeze(0))
            total += self.reduce(torch.abs(linear.weight) * (locality * distance + self.l0))
            if penalize_bias:
                total += self.reduce(torch.abs(linear.bias) * self.l0)
        if self.embedding is not None:
            total += self.reduce(torch.abs(self.embedding) * self.l0)
        return total

    def embed(self, pairs: torch.Tensor) -> torch.Tensor:
        """The notebooks' `get_data`: the two operands' embeddings, concatenated."""
        return torch.cat([self.embedding[pairs[:, 0]], self.embedding[pairs[:, 1]]], dim=1)

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
        """Swap each top neuron to its best position; `moves` counts the swaps with another position
        in layers whose neurons move."""
        for layer in range(len(self.linears) + 1):
            top = torch.flip(torch.argsort(self.importance(layer)), [0])[:top_k]
            for j in top.tolist():
                k = int(torch.argmin(self.candidate_costs(layer, j)))
                self.swap(layer, j, k)
                self.moves += k != j and self.moves_neurons(layer)

    def moves_neurons(self, layer: int) -> bool:
        """Whether a swap in neuron layer `layer` moves anything (every layer's does here)."""
        return True


# The paper's setting per task: seed, hidden widths, lambda boost and decay factors.
PAPER = {"independence": (0, [20, 20], 10.0, 0.1), "feature_sharing": (4, [20, 20], 10.0, 0.1),
         "compositionality": (3, [20, 20, 20, 20], 3.0, 1.0)}


def literal_copy(model, replica: int = 0) -> LiteralMLP:
    """Replica `replica` of a project BioMLP as a literal network, weights and permutations included
    (a grid model as the MNIST notebook's network, whose l0 and averaged costs it must share)."""
    if model.geometry == "grid":
        literal = LiteralGridMLP(list(model.shape))
    else:
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


def literal_classifier(shape: list[int], seed: int, in_fold: int, l0: float, reduce, weight_factor: float,
                       embedding: tuple[int, int] | None, dtype: torch.dtype) -> LiteralMLP:
    """A notebook's classifier as it builds it: seed, then the layers (and the table) in `dtype`
    as the default dtype (the notebooks of Section 3.3 set float64 globally)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        return LiteralMLP(shape, in_fold, l0, reduce, weight_factor, embedding)
    finally:
        torch.set_default_dtype(previous)


def literal_classifier_train(model: LiteralMLP, data, steps: int, lr: float, lambdas, train_weight_factor: float,
                             top_k: int, log_every: int) -> dict[int, tuple]:
    """The loop of the notebooks of Sections 3.2-3.3: cross-entropy plus lambda(step) * cost (biases
    always in, the embedding too), AdamW, relocation after every 200th step. `data` holds (n, 2)
    points or token pairs and (n,) labels. Returns {step: (train loss, test loss, train acc, test acc,
    cost)} floats."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    rows = {}
    with torch.autograd.set_grad_enabled(True):
        for step in range(steps):
            optimizer.zero_grad()
            x = model.embed(data.train_x) if model.embedding is not None else data.train_x
            pred = model(x)
            loss = criterion(pred, data.train_y)
            acc = torch.mean((torch.argmax(pred, dim=1) == data.train_y).float())
            x_test = model.embed(data.test_x) if model.embedding is not None else data.test_x
            pred_test = model(x_test)
            loss_test = criterion(pred_test, data.test_y)
            acc_test = torch.mean((torch.argmax(pred_test, dim=1) == data.test_y).float())
            cc = model.cost(train_weight_factor)
            (loss + lambdas(step) * cc).backward()
            optimizer.step()
            if step % log_every == 0:
                rows[step] = (loss.item(), loss_test.item(), acc.item(), acc_test.item(), cc.item())
            if (step + 1) % 200 == 0:
                model.relocate(top_k)
    return rows


class LiteralData:
    """A notebook's data as it builds it: inputs (points, or token pairs) and labels, train and test."""

    def __init__(self, train_x, train_y, test_x, test_y) -> None:
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y


def literal_two_moons_data() -> LiteralData:
    from sklearn.datasets import make_moons

    np.random.seed(1)
    x, y = make_moons(n_samples=200, noise=0.1)
    x_test, y_test = make_moons(n_samples=200, noise=0.1)
    return LiteralData(torch.tensor(x, dtype=torch.float), torch.tensor(y, dtype=torch.long),
                       torch.tensor(x_test, dtype=torch.float), torch.tensor(y_test, dtype=torch.long))


def literal_group_data(task: str, seed: int) -> LiteralData:
    """Modular addition mod 59 or S4, as the notebooks list the pairs and split them."""
    if task == "modular_addition":
        p = 59
        xx, yy = np.meshgrid(np.arange(p), np.arange(p))
        data_id = np.transpose([xx.reshape(-1), yy.reshape(-1)])
        labels = (data_id[:, 0] + data_id[:, 1]) % p
    else:
        import itertools

        perms = [list(perm) for perm in itertools.permutations(range(4))]
        perm2id = {str(perm): i for i, perm in enumerate(perms)}
        p = len(perms)
        labels = []
        for i in range(p):
            for j in range(p):
                labels.append(perm2id[str([int(v) for v in np.array(perms[j])[np.array(perms[i])]])])
        labels = np.array(labels)
        xx, yy = np.meshgrid(np.arange(p), np.arange(p))
        data_id = np.transpose([xx.reshape(-1), yy.reshape(-1)])
    np.random.seed(seed)
    train_id = np.random.choice(p**2, int(p**2 * 0.8), replace=False)
    test_id = np.array(list(set(np.arange(p**2)) - set(train_id)))
    labels = torch.tensor(labels, dtype=torch.long)
    return LiteralData(torch.tensor(data_id[train_id]), labels[train_id], torch.tensor(data_id[test_id]), labels[test_id])


def notebook(task: str, steps: int):
    """Each notebook of Sections 3.2-3.3 as its code sets it up, for a run of `steps`: the literal model
    and data, the learning rate, lambda(step), the training cost's locality weight and top_k. The
    notebooks hard-code their lambda steps for their full length; here they sit at the same fractions
    of `steps` (two moons: 5000 of 10001)."""
    if task == "two_moons":
        model = literal_classifier([2, 20, 20, 2], 2, 1, 0.2, torch.sum, 1.0, None, torch.float32)
        return model, literal_two_moons_data(), 0.002, lambda step: 0.01 if step >= steps // 2 else 0.001, 1.0, 10
    if task == "modular_addition":
        model = literal_classifier([64, 50, 50, 59], 4, 2, 0.5, torch.mean, 2.0, (59, 32), torch.float64)

        def lambdas(step):
            lam = 0.1
            if step >= int(steps * 1 / 4):
                lam *= 10
            if step >= int(steps * 3 / 4):
                lam *= 0.1
            return lam

        return model, literal_group_data(task, 4), 0.001, lambdas, 2.0, 30
    model = literal_classifier([64, 50, 50, 24], 1, 2, 0.5, torch.mean, 2.0, (24, 32), torch.float64)
    return model, literal_group_data(task, 1), 0.002, lambda step: 1, 1.0, 30


class LiteralGridMLP(LiteralMLP):
    """The MNIST notebook's network (Section 3.5): neurons on square grids, the outputs on a ring of
    radius 1/4, L1 wire lengths, averaged cost terms, l0 = 0.5, and input neurons that never move
    (its `swap` returns at once for them; relocation still scores their candidates)."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__(shape, 1, 0.5, torch.mean, 2.0)

        def square(n):
            side = int(np.sqrt(n))
            x = np.linspace(1 / (2 * side), 1 - 1 / (2 * side), num=side)
            xx, yy = np.meshgrid(x, x)
            return torch.tensor(np.transpose(np.array([xx.reshape(-1,), yy.reshape(-1,)])), dtype=torch.float)

        n = shape[-1]
        thetas = np.linspace(1 / (2 * n) * 2 * np.pi, (1 - 1 / (2 * n)) * 2 * np.pi, num=n)
        ring = 0.5 + torch.tensor(np.transpose(np.array([np.cos(thetas), np.sin(thetas)])) / 4, dtype=torch.float)
        self.coords = [(square(a), ring if i == len(shape) - 2 else square(b))
                       for i, (a, b) in enumerate(zip(shape[:-1], shape[1:]))]

    def cost(self, locality: float | None = None, penalize_bias: bool = True, no_penalize_last: bool = False) -> torch.Tensor:
        locality = self.weight_factor if locality is None else locality
        total = 0
        for i, (linear, (x_in, x_out)) in enumerate(zip(self.linears, self.coords)):
            if i == len(self.linears) - 1 and no_penalize_last:
                locality = 0.0
            distance = torch.sum(torch.abs(x_out.unsqueeze(dim=1) - x_in.unsqueeze(dim=0)), dim=2)
            total += torch.mean(torch.abs(linear.weight) * (locality * distance + self.l0))
            if penalize_bias:
                total += torch.mean(torch.abs(linear.bias) * self.l0)
        return total

    def moves_neurons(self, layer: int) -> bool:
        return layer > 0

    @torch.no_grad()
    def swap(self, layer: int, j: int, k: int) -> None:
        if self.moves_neurons(layer):
            super().swap(layer, j, k)


def literal_grid_train(model: LiteralGridMLP, data, batches: list[torch.Tensor], steps: int, log_every: int,
                       eval_size: int) -> dict[int, tuple]:
    """The MNIST notebook's loop on given minibatches (training-sample indices, one tensor per step):
    nn.MSELoss to one-hot rows plus lambda * cost(2.0, no_penalize_last), lambda 0.01, x10 at a
    quarter and at half of `steps`; AdamW lr 1e-3; relocation (top 30) after every 500th step.
    Logs {step: (minibatch loss, accuracy on the first `eval_size` test samples, cost)} floats, the
    accuracy measured before the step's update, where bimt measures every task's (the notebook measures
    its random 2000 samples after it)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss_fn = nn.MSELoss()
    one_hots = torch.eye(10, 10)
    lamb = 0.01
    rows = {}
    with torch.autograd.set_grad_enabled(True):
        for step in range(steps):
            if step == int(steps / 4):
                lamb *= 10
            elif step == int(steps / 2):
                lamb *= 10
            x, label = data.train_x[batches[step]], data.train_y[batches[step]]
            if step % log_every == 0:
                with torch.no_grad():
                    test = torch.argmax(model(data.test_x[:eval_size]), dim=1) == data.test_y[:eval_size]
            optimizer.zero_grad()
            loss_train = loss_fn(model(x), one_hots[label])
            cc = model.cost(2.0, no_penalize_last=True)
            (loss_train + lamb * cc).backward()
            optimizer.step()
            if step % log_every == 0:
                rows[step] = (loss_train.item(), torch.mean(test.float()).item(), cc.item())
            if (step + 1) % 500 == 0:
                model.relocate(30)
    return rows
