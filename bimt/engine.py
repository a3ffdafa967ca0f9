"""The eager engine: one training step's forward and backward written out in torch.

A BIMT network is so small that autograd's graph bookkeeping costs more than the arithmetic. This
engine calls, in the same order, the kernels autograd calls for `mse + lambda * cost` on `nn.Linear`
layers (addmm, SiLU, the transposed mm products, silu_backward, sign), keeps the activations itself
and writes the gradients into the flat parameters' `.grad`; `bimt.optim.AdamW` then steps all of
them at once. For one replica these are the very 2-D kernels, so a single run is bit for bit the
literal algorithm on any CPU (the fidelity tests hold it to that). Several replicas run the batched
`baddbmm`/`bmm` instead, which MKL may round differently on some CPUs: within measured tolerances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bimt.model import BioMLP, linear
from bimt.optim import AdamW
from bimt.tasks import Dataset


def connection_penalties(model: BioMLP, prices: list[torch.Tensor], lam: torch.Tensor) -> dict[bool, torch.Tensor]:
    """The gradient of lam * cost is lam * price * sign(parameter): lam * price for every parameter,
    in the flat (R, P) layout. Keyed by whether biases are in the cost: with them, each bias is
    priced l0; before they join, their entries are 0."""
    penalty = torch.zeros_like(model.params.detach())
    weights, biases = model.layer_views(penalty)
    for weight, price in zip(weights, prices):
        weight.copy_(lam[:, None, None] * price)
    without_biases = penalty.clone()
    for bias in biases:
        bias.copy_((lam[:, None] * model.l0).expand_as(bias))
    return {False: without_biases, True: penalty}


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


@torch.no_grad()
def test_mse(model: BioMLP, x: torch.Tensor, order: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE per replica of inputs already in position order (`order`: `model.output_order()`)."""
    return ((model.forward_positions(x, order) - y) ** 2).mean(dim=(1, 2))


class EagerEngine:
    """Forward, loss, gradients and update of every replica, on inputs kept in position order.

    `prices` are the per-weight wire prices of each layer, shape (R, out, in). Call `relocated()`
    after neurons move: the inputs are rearranged into position order once, not on every step.
    """

    def __init__(self, model: BioMLP, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW):
        self.model, self.data, self.prices, self.optimizer = model, data, prices, optimizer
        model.params.grad = torch.zeros_like(model.params)
        self.flat, self.flat_grad = model.params.detach(), model.params.grad
        self.weights, self.biases = model.layer_views(self.flat)
        self.weight_grads, self.bias_grads = model.layer_views(self.flat_grad)
        samples, outputs = data.train_y.shape[1:]
        self.mean_scale = torch.ones((), device=data.train_y.device) / (samples * outputs)  # as autograd's mean
        self.penalties: dict[bool, torch.Tensor] = {}
        self.relocated()

    def relocated(self) -> None:
        """Re-read the permutations: inputs in position order, where each output feature is computed."""
        model, data = self.model, self.data
        self.train_x, self.test_x = model.to_positions(data.train_x), model.to_positions(data.test_x)
        self.test_order = model.output_order()
        self.train_order = self.test_order[:, None, :].expand(-1, data.train_y.shape[1], -1)
        self.train_feature = model.out_perm[:, None, :].expand(-1, data.train_y.shape[1], -1)

    def set_lambda(self, lam: torch.Tensor) -> None:
        """Per-replica lambda (R,); when every replica's is 0 the cost adds no gradient at all."""
        self.penalties = {} if bool((lam == 0).all()) else connection_penalties(self.model, self.prices, lam)

    def run(self, count: int, penalize_bias: bool) -> tuple[int, torch.Tensor]:
        """Up to `count` steps: the number done, and each step's train MSE, (steps, R). Fewer than
        `count` done means the next step's loss (the last row) was not finite; that step is not applied."""
        losses = []
        for done in range(count):
            losses.append(self.train_mse())
            if not torch.isfinite(losses[-1]).all():
                return done, torch.stack(losses)
            self.update(penalize_bias)
        return count, torch.stack(losses)

    def train_mse(self) -> torch.Tensor:
        """This step's forward pass on the training set, shape (R,); keeps what the backward needs:
        each layer's input and pre-activation."""
        x, self.inputs, self.pre_activations = self.train_x, [], []
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            self.inputs.append(x)
            x = linear(x, weight, bias)
            if i < self.model.depth - 1:
                self.pre_activations.append(x)
                x = F.silu(x)
        self.error = torch.gather(x, 2, self.train_order) - self.data.train_y
        return (self.error**2).mean(dim=(1, 2))

    def test_mse(self) -> torch.Tensor:
        return test_mse(self.model, self.test_x, self.test_order, self.data.test_y)

    def update(self, penalize_bias: bool) -> None:
        """Gradients of the last `train_mse` plus lambda * cost, then one optimizer step."""
        grad = torch.gather(self.error * 2.0 * self.mean_scale, 2, self.train_feature)
        for i in reversed(range(self.model.depth)):
            self.weight_grads[i].copy_(weight_gradient(grad, self.inputs[i]))
            self.bias_grads[i].copy_(grad.sum(dim=1))
            if i > 0:
                grad = torch.ops.aten.silu_backward(input_gradient(grad, self.weights[i]), self.pre_activations[i - 1])
        if self.penalties:
            self.flat_grad.addcmul_(self.penalties[penalize_bias], self.flat.sign())
        self.optimizer.step()
