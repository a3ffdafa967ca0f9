"""The eager engine: one training step's forward and backward written out in torch.

A BIMT network is so small that autograd's graph bookkeeping costs more than the arithmetic. This
engine calls, in the same order, the kernels autograd calls for `loss + lambda * cost` on `nn.Linear`
layers (the loss's own, addmm, SiLU, the transposed mm products, silu_backward, sign), keeps the
activations itself and writes the gradients into the flat parameters' `.grad`;
`bimt.network.optim.AdamW` then steps all of them at once. What that is bit for bit is part of the
engines' contract (`bimt.engines`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bimt.engines.penalties import connection_penalties
from bimt.network.model import BioMLP, linear
from bimt.network.optim import AdamW
from bimt.network.spatial import SpatialModel
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import Loss, logged_metrics


def weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(R, out, in) gradient of a `linear` layer's weights from its output gradient (R, n, out) and
    input (R, n, in): for one replica `grad^T mm x`, what autograd computes for `nn.Linear`."""
    if x.shape[0] == 1:
        return grad[0].t().mm(x[0])[None]
    return torch.bmm(grad.transpose(1, 2), x)


def input_gradient(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(R, n, in) gradient of a `linear` layer's input: for one replica `grad mm weight`, as autograd."""
    if grad.shape[0] == 1:
        return grad[0].mm(weight[0])[None]
    return torch.bmm(grad, weight)


class EagerEngine:
    """Forward, loss, gradients and update of every replica, on inputs kept in position order.

    `prices` are the per-weight wire prices of each layer, shape (R, out, in). Call `relocated()`
    after neurons move: numeric inputs are rearranged into position order once, not on every step.
    A model with a token embedding looks its inputs up on every step, and the embedding's gradient
    is accumulated as autograd's index backward does, sample by sample.
    """

    def __init__(self, model: BioMLP, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW, loss: Loss):
        self.model, self.data, self.prices, self.optimizer, self.loss = model, data, prices, optimizer, loss
        model.params.grad = torch.zeros_like(model.params)
        self.flat, self.flat_grad = model.params.detach(), model.params.grad
        self.weights, self.biases = model.layer_views(self.flat)
        self.weight_grads, self.bias_grads = model.layer_views(self.flat_grad)
        self.embedded = model.embedding_shape is not None
        if self.embedded:
            self.table_grad = model.embedding_view(self.flat_grad)
            self.rows = self.embedding_rows(data.train_x)
        self.samples = torch.arange(model.replicas, device=data.train_x.device)[:, None]
        self.penalties: dict[bool, torch.Tensor] = {}
        self.relocated()

    def embedding_rows(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per operand, the rows of the flattened (R * tokens, dim) embedding table that the token
        ids (R, n, operands) look up."""
        offsets = torch.arange(self.model.replicas, device=tokens.device)[:, None] * self.model.embedding_shape[0]
        return [(offsets + tokens[:, :, fold]).reshape(-1) for fold in range(tokens.shape[2])]

    def relocated(self) -> None:
        """Re-read the permutations: inputs in position order (embedded ones: where each input position's
        gradient goes back to), where each output feature is computed. Training on the full set,
        the inputs are rearranged here, once; minibatches are rearranged as they are drawn."""
        model, data = self.model, self.data
        if self.embedded:
            self.feature_of_position = model.to_positions(
                torch.arange(model.shape[0], device=data.train_x.device).expand(model.replicas, 1, -1))
        elif data.batches is None:
            self.train_x = model.to_positions(data.train_x)
        self.order = model.output_order()[:, None, :]
        self.feature = model.out_perm[:, None, :]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step `step`'s first-layer inputs in position order (R, n, in) and its targets."""
        data, model = self.data, self.model
        if data.batches is None:
            x, y = (data.train_x if self.embedded else self.train_x), data.train_y
        else:
            index = data.batches.indices(step).to(data.train_x.device)
            x, y = data.train_x[self.samples, index], data.train_y[self.samples, index]
            if self.embedded:
                self.rows = self.embedding_rows(x)
            else:
                x = model.to_positions(x)
        return (model.to_positions(model.features(x)) if self.embedded else x), y

    def set_lambda(self, lam: torch.Tensor) -> None:
        """Per-replica lambda (R,); when every replica's is 0 the cost adds no gradient at all."""
        self.penalties = {} if bool((lam == 0).all()) else connection_penalties(self.model, self.prices, lam)

    @torch.no_grad()
    def run(self, step: int, count: int, penalize_bias: bool) -> tuple[int, torch.Tensor]:
        """Up to `count` steps from step `step` on: the number done, and each step's training loss,
        (steps, R). Fewer than `count` done means the next step's loss (the last row) was not
        finite; that step is not applied."""
        losses = []
        for done in range(count):
            losses.append(self.train_loss(step + done))
            if not torch.isfinite(losses[-1]).all():
                return done, torch.stack(losses)
            self.update(penalize_bias)
        return count, torch.stack(losses)

    def train_loss(self, step: int) -> torch.Tensor:
        """Step `step`'s forward pass on its training samples, shape (R,); keeps what the backward
        needs: each layer's input and pre-activation, and what the loss kept."""
        model = self.model
        x, y = self.batch(step)
        self.inputs, self.pre_activations = [], []
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            self.inputs.append(x)
            x = linear(x, weight, bias)
            if i < model.depth - 1:
                self.pre_activations.append(x)
                x = F.silu(x)
        losses, self.saved = self.loss.forward(torch.gather(x, 2, self.order.expand(-1, x.shape[1], -1)), y)
        return losses

    def test_metrics(self) -> dict[str, torch.Tensor]:
        return logged_metrics(self.model, self.data, self.loss)

    def update(self, penalize_bias: bool) -> None:
        """Gradients of the last `train_loss` plus lambda * cost, then one optimizer step."""
        grad = self.loss.backward(self.saved)
        grad = torch.gather(grad, 2, self.feature.expand(-1, grad.shape[1], -1))
        for i in reversed(range(self.model.depth)):
            self.weight_grads[i].copy_(weight_gradient(grad, self.inputs[i]))
            self.bias_grads[i].copy_(grad.sum(dim=1))
            if i > 0 or self.embedded:
                grad = input_gradient(grad, self.weights[i])
            if i > 0:
                grad = torch.ops.aten.silu_backward(grad, self.pre_activations[i - 1])
        if self.embedded:
            self.table_grad.zero_()
        if self.penalties:
            self.flat_grad.addcmul_(self.penalties[penalize_bias], torch.sgn(self.flat))
        if self.embedded:
            self.embedding_gradient(grad)
        self.optimizer.step()

    def embedding_gradient(self, grad: torch.Tensor) -> None:
        """Add the loss's gradient to the embedding's, given the first layer's input gradient in
        position order (R, n, in). As autograd does for `cat([E[a], E[b]])`: each operand's rows are
        accumulated sample by sample into a table of zeros, and the tables are added to the cost's
        gradient, the last operand's first."""
        dim = self.model.embedding_shape[1]
        features = torch.zeros_like(grad).scatter_(2, self.feature_of_position.expand(-1, grad.shape[1], -1), grad)
        for fold in reversed(range(len(self.rows))):
            part = torch.zeros_like(self.table_grad).view(-1, dim)
            part.index_put_((self.rows[fold],), features[:, :, fold * dim : (fold + 1) * dim].reshape(-1, dim),
                            accumulate=True)
            self.table_grad.add_(part.view_as(self.table_grad))


class ReplicaByReplicaEngine:
    """The eager engine of a batched group that computes what each replica computes alone, to the bit.

    One engine per replica (`EagerEngine`, or the model's own), each on views of that replica's parameters, moments, data and
    prices (R = 1), steps the replicas in lockstep: every tensor operation then sees the shapes of a
    single run, so it runs the same kernels on the same elements in the same order (a batched
    `baddbmm`, or an elementwise kernel whose vector loop ends elsewhere, would round some elements
    otherwise). Logged test metrics are the model's own, computed replica by replica already.
    """

    def __init__(self, model: SpatialModel, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW, loss: Loss,
                 engine: type = EagerEngine):
        self.model, self.data, self.optimizer, self.loss = model, data, optimizer, loss
        self.replicas = []
        for r in range(model.replicas):
            alone = model.replica_view(r)
            self.replicas.append(engine(alone, data.replica_subset(slice(r, r + 1)),
                                             [price[r : r + 1] if price.dim() == 3 else price for price in prices],
                                             optimizer.replica_view(alone.params, r), loss))

    def set_lambda(self, lam: torch.Tensor) -> None:
        for r, engine in enumerate(self.replicas):
            engine.set_lambda(lam[r : r + 1])

    def relocated(self) -> None:
        for engine in self.replicas:
            engine.relocated()

    run = EagerEngine.run  # a step is applied to every replica or, when one's loss is not finite, to none

    def train_loss(self, step: int) -> torch.Tensor:
        return torch.cat([engine.train_loss(step) for engine in self.replicas])

    def update(self, penalize_bias: bool) -> None:
        for engine in self.replicas:
            engine.update(penalize_bias)
        self.optimizer.steps += 1  # the group's count, which checkpoints save

    def test_metrics(self) -> dict[str, torch.Tensor]:
        return logged_metrics(self.model, self.data, self.loss)
