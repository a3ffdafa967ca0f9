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

import math

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


class LiteralLinear(nn.Module):
    """An `nn.Linear` whose rows and columns sit on a line, folds repeating the positions (Section 3.4)."""

    def __init__(self, n_in: int, n_out: int, in_fold: int = 1, out_fold: int = 1, in_head: int = 1,
                 out_head: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.in_fold, self.out_fold, self.in_head, self.out_head = in_fold, out_fold, in_head, out_head

        def line(n: int, fold: int) -> torch.Tensor:
            per = n // fold
            return torch.tensor(list(np.linspace(1 / (2 * per), 1 - 1 / (2 * per), num=per)) * fold, dtype=torch.float)

        self.in_coordinates, self.out_coordinates = line(n_in, in_fold), line(n_out, out_fold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def literal_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class LiteralBlock(nn.Module):
    """Causal attention with fused q/k/v rows, then a GELU MLP, each added to the residual stream;
    the LayerNorms exist but are applied only with `layer_norm` (the notebook never applies them)."""

    def __init__(self, width: int, heads: int, mlp_width: int, layer_norm: bool) -> None:
        super().__init__()
        self.width, self.heads, self.layer_norm = width, heads, layer_norm
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = LiteralLinear(width, 3 * width, out_fold=3, out_head=heads)
        self.proj = LiteralLinear(width, width, in_head=heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp_in, self.mlp_out = LiteralLinear(width, mlp_width), LiteralLinear(mlp_width, width)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        samples, tokens, width = x.shape
        head = width // self.heads
        x = self.qkv(x)
        q, k, v = (x[:, :, i * width : (i + 1) * width].reshape(samples, tokens, self.heads, head) for i in range(3))
        scores = torch.einsum("ijhl,ikhl->ijkh", q, k) / np.sqrt(head)
        mask = torch.tril(torch.ones(tokens, tokens) * float("-inf"), diagonal=-1).permute(1, 0)
        weights = nn.Softmax(dim=2)(scores + mask.unsqueeze(dim=0).unsqueeze(dim=3))
        return self.proj(torch.einsum("ijkl,iklh->ijlh", weights, v).reshape(samples, tokens, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x) if self.layer_norm else x)
        return x + self.mlp_out(literal_gelu(self.mlp_in(self.ln_2(x) if self.layer_norm else x)))


class LiteralTransformer(nn.Module):
    """The transformer of Section 3.4 as its notebook computes it, one network, float64 by default.

    `layers` lists its maps and LayerNorms in the notebook's order (`get_linear_layers`): the embedding,
    per block ln_1, qkv, proj, ln_2, mlp in, mlp out, then ln_f and the output map. Neuron layer i sits
    between layers i - 1 and i; which neuron layers relocation moves, and how, follows from that list:
    the residual stream's five neuron layers move as one, the LayerNorm outputs never."""

    def __init__(self, inputs: int = 2, outputs: int = 2, width: int = 32, heads: int = 1, blocks: int = 2,
                 mlp_width: int = 128, layer_norm: bool = False, top_k: int = 20) -> None:
        super().__init__()
        self.embed = LiteralLinear(inputs, width)
        self.blocks = nn.ModuleList(LiteralBlock(width, heads, mlp_width, layer_norm) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(width)
        self.unembed = LiteralLinear(width, outputs)
        self.layer_norm, self.top_k, self.l0 = layer_norm, top_k, 0.5
        self.in_perm = nn.Parameter(torch.arange(inputs, dtype=torch.float))
        self.out_perm = nn.Parameter(torch.arange(outputs, dtype=torch.float))
        self.layers = [self.embed]
        for block in self.blocks:
            self.layers += [block.ln_1, block.qkv, block.proj, block.ln_2, block.mlp_in, block.mlp_out]
        self.layers += [self.ln_f, self.unembed]
        self.residual = [3 * b + 1 for b in range(2 * blocks + 1)]
        self.skipped = [3 * b + 2 for b in range(2 * blocks + 1)]
        self.normal = [3 * b for b in range(2 * blocks + 2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x[:, :, self.in_perm.long()])
        for block in self.blocks:
            x = block(x)
        y = self.unembed(self.ln_f(x) if self.layer_norm else x)
        inverse = torch.zeros(len(self.out_perm), dtype=torch.long)
        inverse[self.out_perm.long()] = torch.arange(len(self.out_perm))
        return y[:, :, inverse]

    def residual_after(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """The residual stream after the first `blocks` blocks (in position order)."""
        x = self.embed(x[:, :, self.in_perm.long()])
        for block in self.blocks[:blocks]:
            x = block(x)
        return x

    def maps(self) -> list[LiteralLinear]:
        return [layer for layer in self.layers if isinstance(layer, LiteralLinear)]

    def cost(self, weight_factor: float = 2.0) -> torch.Tensor:
        """The mean-per-map cost, biases in, LayerNorms out (the notebook's `get_cc()`)."""
        total = 0
        for layer in self.maps():
            distance = torch.abs(layer.out_coordinates.unsqueeze(dim=1) - layer.in_coordinates.unsqueeze(dim=0))
            total += torch.mean(torch.abs(layer.linear.weight) * (weight_factor * distance + self.l0))
            total += torch.mean(torch.abs(layer.linear.bias) * self.l0)
        return total

    @torch.no_grad()
    def swap(self, i: int, j, k) -> None:
        """Swap positions j and k (ints or equal-length index arrays) of neuron layer i."""

        def rows(t: torch.Tensor, a, b) -> None:
            saved = t[a].clone()
            t[a] = t[b].clone()
            t[b] = saved

        def columns(t: torch.Tensor, a, b) -> None:
            saved = t[:, a].clone()
            t[:, a] = t[:, b].clone()
            t[:, b] = saved

        left = self.layers[i - 1] if i > 0 else None
        right = self.layers[i] if i < len(self.layers) else None
        if i == 0:
            rows(self.in_perm, j, k)
        if i == len(self.layers):
            rows(self.out_perm, j, k)
        if left is not None:
            per = left.linear.weight.shape[0] // left.out_fold
            for f in range(left.out_fold):
                rows(left.linear.weight, j + per * f, k + per * f)
                rows(left.linear.bias, j + per * f, k + per * f)
        if right is not None and i in self.normal:
            per = right.linear.weight.shape[1] // right.in_fold
            for f in range(right.in_fold):
                columns(right.linear.weight, j + per * f, k + per * f)
        if right is not None and i in self.residual:
            after = self.layers[i + 1]
            per = after.linear.weight.shape[1] // after.in_fold
            for f in range(after.in_fold):
                rows(right.weight, j + per * f, k + per * f)
                rows(right.bias, j + per * f, k + per * f)
                columns(after.linear.weight, j + per * f, k + per * f)

    def score(self, i: int) -> torch.Tensor:
        """Summed |weight| per position of neuron layer i: the fold mean of its rows plus of its columns."""
        left = self.layers[i - 1] if i > 0 else None
        right = self.layers[i] if i < len(self.layers) else None
        if isinstance(right, nn.LayerNorm):
            right = self.layers[i + 1]
        total = 0.0
        if left is not None:
            weight = left.linear.weight
            total += torch.mean(torch.sum(torch.abs(weight), dim=1).reshape(left.out_fold, -1), dim=0)
        if right is not None:
            weight = right.linear.weight
            total += torch.mean(torch.sum(torch.abs(weight), dim=0).reshape(right.in_fold, -1), dim=0)
        return total

    def layer_score(self, i: int) -> torch.Tensor:
        if i != self.residual[0]:
            return self.score(i)
        total = 0.0
        for p in self.residual:
            total += self.score(p)
        return total

    def heads(self, i: int) -> int:
        return self.layers[0].in_head if i == 0 else self.layers[i - 1].out_head

    def neurons(self, i: int) -> int:
        if i == len(self.layers):
            return self.layers[i - 1].linear.weight.shape[0]
        layer = self.layers[i + 1] if isinstance(self.layers[i], nn.LayerNorm) else self.layers[i]
        return layer.linear.weight.shape[1] // layer.in_fold

    def move(self, i: int, j, k) -> None:
        """Swap j and k in neuron layer i; in the residual stream, in all its neuron layers."""
        for p in self.residual if i == self.residual[0] else [i]:
            self.swap(p, j, k)

    @torch.no_grad()
    def relocate(self, weight_factor: float = 2.0) -> None:
        """From the output to the input: head blocks first, then every neuron of the first top_k heads."""
        for i in reversed(range(len(self.layers) + 1)):
            if i in self.skipped or (i in self.residual and i != self.residual[0]):
                continue
            heads = self.heads(i)
            head = self.neurons(i) // heads
            by_head = torch.mean(self.layer_score(i).reshape(heads, head), dim=1)
            for j in torch.flip(torch.argsort(by_head), [0])[: self.top_k]:
                block = head * int(j) + np.arange(head)
                costs = []
                for k in range(heads):
                    if i != self.residual[0]:
                        self.swap(i, block, head * int(k) + np.arange(head))
                    costs.append(self.cost(weight_factor))
                    if i != self.residual[0]:
                        self.swap(i, block, head * int(k) + np.arange(head))
                k = torch.argmin(torch.stack(costs))
                if i != self.residual[0]:
                    self.swap(i, block, head * int(k) + np.arange(head))
            tail = torch.flip(torch.argsort(self.layer_score(i).reshape(heads, head), dim=1), [1])[: self.top_k]
            for j in range(tail.shape[0]):
                for k in tail[j]:
                    costs = []
                    for p in range(head):
                        self.move(i, j * head + k, j * head + p)
                        costs.append(self.cost(weight_factor))
                        self.move(i, j * head + k, j * head + p)
                    self.move(i, j * head + k, j * head + int(torch.argmin(torch.stack(costs))))


def literal_transformer(seed: int, prelude=None, **shape) -> LiteralTransformer:
    """The notebook's model as it builds it: float64 as the default dtype, `manual_seed(seed)`, then
    `prelude()` (its data draws), then the layers."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        if prelude is not None:
            prelude()
        return LiteralTransformer(**shape)
    finally:
        torch.set_default_dtype(previous)


def literal_regression_data(seed: int, sequences: int = 10000, pairs: int = 2, dim: int = 1):
    """The notebook's in-context regression data: w ~ U(-1, 1), x ~ U(1, 3), y = w . x, tokens (0, x)
    and (y, 0); inputs all tokens but the last, labels all but the first; an 80/20 split drawn by
    numpy, the test ids in Python's set order. Seeds numpy and torch as the notebook does."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        np.random.seed(seed)
        torch.manual_seed(seed)
        w = torch.rand(sequences, dim) * 2 - 1
        x = torch.rand(sequences, pairs, dim) * 2 + 1
        y = torch.einsum("ik,ijk->ij", w, x)
        y_ = torch.cat([y, torch.zeros([sequences, pairs * dim])], dim=1).reshape(sequences, dim + 1, pairs).permute(0, 2, 1)
        x_ = torch.cat([torch.zeros([sequences, pairs, 1]), x], dim=2)
        data = torch.cat([x_, y_], dim=2).reshape(sequences, -1)
        inputs = data[:, : (2 * pairs - 1) * (dim + 1)].reshape(sequences, 2 * pairs - 1, dim + 1)
        labels = data[:, dim + 1 :].reshape(sequences, 2 * pairs - 1, dim + 1)
        train_num = int(sequences * 0.8)
        train_id = np.random.choice(sequences, train_num, replace=False)
        test_id = np.array(list(set(np.arange(sequences)) - set(train_id)))
        return LiteralData(inputs[train_id], labels[train_id], inputs[test_id], labels[test_id]), w
    finally:
        torch.set_default_dtype(previous)


def literal_incontext_train(model: LiteralTransformer, data: LiteralData, steps: int, log_every: int,
                            swap_every: int | None, lamb: float = 1e-3, batch: int = 64) -> dict[int, tuple]:
    """The notebook's loop: each step draws 64 training and 64 test sequences with replacement (numpy's
    global stream, in that order), the MSE on the y positions plus lambda * cost, AdamW lr 1e-3,
    lambda x10 at a quarter and at three quarters of the steps; relocation after every `swap_every`-th
    step (never with None, the published run). Logs {step: (train loss, test loss, test last, cost)}
    floats at every `log_every`-th step, measured in the step's forward pass: the test losses on the
    whole test split, where the notebook prints its test batch's (whose forward pass it runs on every
    step, as here)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    inputs_train, inputs_test = data.train_x.clone().requires_grad_(True), data.test_x.clone().requires_grad_(True)
    rows = {}
    with torch.autograd.set_grad_enabled(True):
        for step in range(steps):
            if step == int(steps * 1 / 4):
                lamb *= 10
            if step == int(steps * 3 / 4):
                lamb *= 10
            optimizer.zero_grad()
            train_choice = np.random.choice(len(inputs_train), batch, replace=True)
            test_choice = np.random.choice(len(data.test_x), batch, replace=True)
            diff = model(inputs_train[train_choice])[:, ::2, 0] - data.train_y[train_choice][:, ::2, 0]
            loss = torch.mean(diff**2)
            model(inputs_test[test_choice])  # the notebook's test batch: printed there, changes nothing
            cc = model.cost()
            (loss + lamb * cc).backward()
            if step % log_every == 0:  # before the update, as the step's training loss
                with torch.no_grad():
                    test = model(data.test_x)[:, ::2, 0] - data.test_y[:, ::2, 0]
                rows[step] = (loss.item(), torch.mean(test**2).item(), torch.mean(test[:, -1] ** 2).item(), cc.item())
            optimizer.step()
            if swap_every is not None and (step + 1) % swap_every == 0:
                model.relocate()
    return rows


def literal_transformer_copy(model, replica: int = 0) -> LiteralTransformer:
    """Replica `replica` of a project BioTransformer as a literal network, LayerNorms and permutations included."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(model.params.dtype)
    try:
        literal = LiteralTransformer(model.inputs, model.outputs, model.width, model.heads, model.blocks,
                                     model.mlp_width, model.layer_norm)
    finally:
        torch.set_default_dtype(previous)
    norms = [(block.ln_1, block.ln_2) for block in literal.blocks]
    norms = [norm for pair in norms for norm in pair] + [literal.ln_f]
    vectors = model.vectors(model.params.detach())
    with torch.no_grad():
        for layer, weight, bias in zip(literal.maps(), model.weights, model.biases):
            layer.linear.weight.copy_(weight[replica])
            layer.linear.bias.copy_(bias[replica])
        for i, norm in enumerate(norms):
            norm.weight.copy_(vectors[2 * i][replica])
            norm.bias.copy_(vectors[2 * i + 1][replica])
        literal.in_perm.copy_(model.in_perm[replica].float())
        literal.out_perm.copy_(model.out_perm[replica].float())
    return literal
