"""The autograd engine: the eager engine of models whose backward pass is not written out (the transformer).

Each step runs the model's forward pass on leaves that are views of the flat parameters, lets
autograd differentiate the loss, copies the gradients into the flat layout, adds the connection
cost's gradient (lambda * price * sign, as the eager engine does) and takes one flat AdamW step.
A single run calls the kernels the literal model calls for its `nn.Linear` layers and its loss (2-D
`addmm`, the same einsums, softmax and GELU), in the same order, so it is that model's numbers bit
for bit; the cost's gradient is autograd's for the mean-per-map cost.
"""

from __future__ import annotations

import torch

from bimt.engines.eager import EagerEngine
from bimt.network.optim import AdamW
from bimt.network.spatial import SpatialModel
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import Loss, logged_metrics


class AutogradEngine:
    """Forward, loss and update of every replica of a model with a `forward_with(weights, biases,
    vectors, x)` pass, on minibatches of (R, n, ...) sequence data; see the module's docstring."""

    def __init__(self, model: SpatialModel, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW, loss: Loss):
        self.model, self.data, self.prices, self.optimizer, self.loss = model, data, prices, optimizer, loss
        model.params.grad = torch.zeros_like(model.params)
        self.flat, self.flat_grad = model.params.detach(), model.params.grad
        network = model.network
        views = [network.weight, network.bias, network.vector]
        counts = [model.depth, model.depth, len(network.vectors)]
        self.single = model.replicas == 1  # one replica runs the literal model's 2-D kernels, on its own shapes
        self.leaves = [view(self.flat, i) for view, count in zip(views, counts) for i in range(count)]
        self.grads = [view(self.flat_grad, i) for view, count in zip(views, counts) for i in range(count)]
        if self.single:
            self.leaves, self.grads = [leaf[0] for leaf in self.leaves], [grad[0] for grad in self.grads]
        for leaf in self.leaves:
            leaf.requires_grad_(True)
        used = len(self.leaves) if model.applies_vectors else 2 * model.depth  # unused vectors keep a 0 gradient
        self.wrt, self.wrt_grads = self.leaves[:used], self.grads[:used]
        self.samples = torch.arange(model.replicas, device=data.train_x.device)[:, None]
        self.penalties: dict[bool, torch.Tensor] = {}

    def relocated(self) -> None:
        """Nothing to re-read: the forward pass gathers through the permutations on every step."""

    set_lambda = EagerEngine.set_lambda  # the cost's gradient, as the eager engine keeps it
    run = EagerEngine.run  # a step is applied only when every replica's loss is finite

    def train_loss(self, step: int) -> torch.Tensor:
        """Step `step`'s forward pass on its minibatch and the loss's gradient (into the flat `.grad`); (R,).

        The gradient is taken here, not in `update`: replicas stepped one by one share the flat
        tensor's version counter, so a graph must not outlive another replica's update."""
        data, depth = self.data, self.model.depth
        index = data.batches.indices(step).to(data.train_x.device) if data.batches is not None else None
        x, y = (data.train_x, data.train_y) if index is None else (data.train_x[self.samples, index],
                                                                  data.train_y[self.samples, index])
        with torch.enable_grad():
            output = self.model.forward_with(self.leaves[:depth], self.leaves[depth : 2 * depth],
                                             self.leaves[2 * depth :], x[0] if self.single else x)
            losses = self.loss.forward(output[None] if self.single else output, y)[0]
            grads = torch.autograd.grad(losses.sum(), self.wrt)
        torch._foreach_copy_(self.wrt_grads, grads)
        return losses.detach()

    def update(self, penalize_bias: bool) -> None:
        """The last `train_loss`'s gradients plus lambda * cost's, then one optimizer step."""
        if self.penalties:
            self.flat_grad.addcmul_(self.penalties[penalize_bias], torch.sgn(self.flat))
        self.optimizer.step()

    def test_metrics(self) -> dict[str, torch.Tensor]:
        return logged_metrics(self.model, self.data, self.loss)
