"""The transformer's eager engine: one training step's forward and backward written out in torch.

As `bimt.engines.eager` does for the MLP, this engine calls the kernels autograd calls for the literal
transformer (2-D `addmm`, the transposed `mm` products, the GELU's elementwise operations and their
backward formulas, in autograd's order), keeps the activations itself, and writes the gradients into
the flat parameters' `.grad`; only the attention core (slices, einsums, mask, softmax) is left to
autograd, on a small graph of its own. Skipping autograd's bookkeeping for the rest makes a step about
a third cheaper, and the numbers stay the literal model's, bit for bit. It runs one replica without
LayerNorms (the notebook's model); `AutogradEngine` runs the others.
"""

from __future__ import annotations

import torch

from bimt.engines.autograd import AutogradEngine
from bimt.network.transformer import BioTransformer, gelu_backward, gelu_parts


class TransformerEngine(AutogradEngine):
    """`AutogradEngine` with the gradient of a single replica of a BioTransformer written out."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model = self.model
        if not isinstance(model, BioTransformer) or model.replicas != 1 or model.layer_norm:
            raise ValueError("TransformerEngine runs one replica of a BioTransformer without LayerNorms")
        depth = model.depth
        self.weights = [w.detach() for w in self.leaves[:depth]]
        self.biases = [b.detach() for b in self.leaves[depth : 2 * depth]]
        self.weight_grads, self.bias_grads = self.grads[:depth], self.grads[depth : 2 * depth]
        self.relocated()

    def relocated(self) -> None:
        """Re-read the permutations: an identity one is skipped (rearranging by it is a copy)."""
        model = self.model
        self.in_order = None if model.is_identity("in_perm") else model.in_perm[0]
        self.out_order = None if model.is_identity("out_perm") else model.output_order()[0]

    @torch.no_grad()
    def train_loss(self, step: int) -> torch.Tensor:
        """Step `step`'s forward pass on its minibatch, and the loss's gradient into the flat `.grad`; (1,)."""
        model, data = self.model, self.data
        x, y = data.train_x[0], data.train_y
        if data.batches is not None:
            index = data.batches.indices(step)[0].to(x.device)
            x, y = x.index_select(0, index), y[0].index_select(0, index)[None]
        samples, tokens = x.shape[0], x.shape[1]
        weights, biases = self.weights, self.biases
        tokens_in = x if self.in_order is None else x[:, :, self.in_order]
        inputs = [tokens_in.reshape(samples * tokens, -1)]  # each map's input, in map order
        h = torch.addmm(biases[0], inputs[0], weights[0].t())
        saved = []
        for b in range(model.blocks):
            first = 1 + 4 * b
            inputs.append(h)
            qkv = torch.addmm(biases[first], h, weights[first].t()).requires_grad_(True)
            with torch.enable_grad():
                mixed_graph = model.attention_mix(qkv, samples, tokens)
            mixed = mixed_graph.detach()
            inputs.append(mixed)
            h = h + torch.addmm(biases[first + 1], mixed, weights[first + 1].t())
            inputs.append(h)
            u = torch.addmm(biases[first + 2], h, weights[first + 2].t())
            g, half, tanh, one_plus = gelu_parts(u)
            inputs.append(g)
            h = h + torch.addmm(biases[first + 3], g, weights[first + 3].t())
            saved.append((qkv, mixed_graph, u, half, tanh, one_plus))
        inputs.append(h)
        output = torch.addmm(biases[-1], h, weights[-1].t()).reshape(1, samples, tokens, -1)
        if self.out_order is not None:
            output = output[:, :, :, self.out_order]
        losses, kept = self.loss.forward(output, y)
        grad = self.loss.backward(kept)
        if self.out_order is not None:  # the gather's backward: each position's gradient from its feature's
            grad = grad[:, :, :, model.out_perm[0]]
        grad = grad.reshape(samples * tokens, -1)
        grad = self._linear_backward(grad, model.depth - 1, inputs[-1], weights)
        for b in reversed(range(model.blocks)):
            first = 1 + 4 * b
            qkv, mixed_graph, u, half, tanh, one_plus = saved[b]
            residual = grad
            grad_g = self._linear_backward(grad, first + 3, inputs[first + 3], weights)
            grad_u = gelu_backward(grad_g, u, half, tanh, one_plus)
            grad = residual + self._linear_backward(grad_u, first + 2, inputs[first + 2], weights)
            residual = grad
            grad_mixed = self._linear_backward(grad, first + 1, inputs[first + 1], weights)
            with torch.enable_grad():
                (grad_qkv,) = torch.autograd.grad(mixed_graph, qkv, grad_mixed)
            grad = residual + self._linear_backward(grad_qkv, first, inputs[first], weights)
        self._linear_backward(grad, 0, inputs[0], weights, need_input=False)
        return losses

    def _linear_backward(self, grad: torch.Tensor, i: int, x: torch.Tensor, weights: list[torch.Tensor],
                         need_input: bool = True) -> torch.Tensor | None:
        """Map i's weight and bias gradients from its output gradient (n, out) and input (n, in), as
        autograd's `addmm` backward computes them; returns the input's gradient."""
        self.weight_grads[i].copy_(grad.t().mm(x))
        self.bias_grads[i].copy_(grad.sum(0))
        return grad.mm(weights[i]) if need_input else None

