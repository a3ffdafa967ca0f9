"""BioTransformer: the causal transformer of Section 3.4 (notebook incontext_3.4), as a network of neuron spaces.

Tokens of `inputs` channels are embedded into a residual stream of `width` neurons; each of `blocks`
blocks adds causal softmax attention (a fused q/k/v map whose three rows of a dimension share one
position, `out_fold=3`; heads are blocks of positions) and an MLP with the tanh form of GELU, written
out as the notebook writes it; a last map reads `outputs` channels off the stream. There is no
positional encoding: the causal mask is the only source of position. LayerNorms exist on the
residual stream (before each attention and MLP, and at the end) but, as in the notebook, are applied
only with `layer_norm=True`, which makes this the usual pre-norm transformer.

The spaces (`bimt.network.spaces`): the input channels, the residual stream (one space, written by
the embedding and every block and read by every block and the output map, so relocation moves a
residual neuron in all of them at once), per block an attention space (with the heads) and an MLP
hidden space, and the output channels. Relocation visits them from the output to the input, as the
notebook does. Parameters and coordinates follow the notebook: the model's dtype (float64 there),
float32 coordinates, and the cost a mean per map.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from bimt.network.geometry import line_coordinates
from bimt.network.model import linear
from bimt.network.spaces import Map, Network, Space, Vector
from bimt.network.spatial import SpatialModel


def transformer_network(inputs: int, outputs: int, width: int, heads: int, blocks: int, mlp_width: int) -> Network:
    """The spaces and maps of a BioTransformer, maps in the notebook's order (its cost's and init's)."""
    input_space, residual = 0, 1
    output_space = 2 + 2 * blocks
    maps = [Map("embed", input_space, residual)]
    residual_layers = []
    block_spaces = []
    for b in range(blocks):
        attention, hidden = 2 + 2 * b, 3 + 2 * b
        first = len(maps)
        maps += [Map(f"block {b + 1} qkv", residual, attention, out_fold=3), Map(f"block {b + 1} proj", attention, residual),
                 Map(f"block {b + 1} mlp in", residual, hidden), Map(f"block {b + 1} mlp out", hidden, residual)]
        residual_layers += [(first - 1, first), (first + 1, first + 2)]  # read after the last write
        block_spaces += [Space(f"attention {b + 1}", line_coordinates(width), heads, ((first, first + 1),)),
                         Space(f"mlp {b + 1} hidden", line_coordinates(mlp_width), 1, ((first + 2, first + 3),))]
    maps.append(Map("unembed", residual, output_space))
    residual_layers.append((len(maps) - 2, len(maps) - 1))
    spaces = [Space("input", line_coordinates(inputs), 1, ((None, 0),), "in_perm"),
              Space("residual", line_coordinates(width), 1, tuple(residual_layers)),
              *block_spaces,
              Space("output", line_coordinates(outputs), 1, ((len(maps) - 1, None),), "out_perm")]
    vectors = []
    for b in range(blocks):
        for norm in ("ln 1", "ln 2"):
            vectors += [Vector(f"block {b + 1} {norm} gain", residual, 1.0), Vector(f"block {b + 1} {norm} bias", residual)]
    vectors += [Vector("ln f gain", residual, 1.0), Vector("ln f bias", residual)]
    order = (output_space, *[s for b in reversed(range(blocks)) for s in (3 + 2 * b, 2 + 2 * b)], residual, input_space)
    return Network(tuple(spaces), tuple(maps), tuple(vectors), order, fold_score="mean", top_k_of="heads")


class BioTransformer(SpatialModel):
    """The notebook's `BioTransformer` with R replicas: inputs (R, B, T, inputs) in feature order to
    outputs (R, B, T, outputs), token by token.

    `seeds` gives each replica's initial weights: `torch.manual_seed(seed)`, then `prelude()` (the
    notebook draws its data from the same generator first), then `nn.Linear`'s default init of the
    maps in order; LayerNorm gains start at 1 and biases at 0.
    """

    def __init__(
        self,
        inputs: int,
        outputs: int,
        seeds: Sequence[int],
        width: int = 32,
        heads: int = 1,
        blocks: int = 2,
        mlp_width: int = 128,
        layer_norm: bool = False,
        l0: float = 0.5,
        dtype: torch.dtype = torch.float64,
        prelude: Callable[[], object] | None = None,
    ) -> None:
        if width % heads:
            raise ValueError(f"a width of {width} does not split into {heads} heads")
        network = transformer_network(inputs, outputs, width, heads, blocks, mlp_width)
        params = torch.stack([_default_init(network, seed, dtype, prelude) for seed in seeds])
        super().__init__(network, params, l0, True, "line")
        self.inputs, self.outputs, self.width, self.heads, self.blocks = inputs, outputs, width, heads, blocks
        self.mlp_width, self.layer_norm = mlp_width, layer_norm

    @property
    def applies_vectors(self) -> bool:
        """The LayerNorms are read only where they are applied (not in the notebook's model)."""
        return self.layer_norm

    def vectors(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Every LayerNorm gain and bias (R, width), views into `flat`: per block ln 1 and ln 2, then ln f."""
        return [self.network.vector(flat, i) for i in range(len(self.network.vectors))]

    def to_positions(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (R, B, T, inputs) in feature order, channels rearranged so position p holds in_perm[p]."""
        index = self.in_perm[:, None, None, :].expand(*x.shape[:3], -1)
        return torch.gather(x, 3, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (R, B, T, outputs) in feature order of tokens (R, B, T, inputs) in feature order."""
        return self._forward(x, None)

    def residual(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """The residual stream (R, B, T, width), in position order, after the first `blocks` blocks."""
        return self._forward(x, blocks)

    def _forward(self, x: torch.Tensor, stop_after: int | None) -> torch.Tensor:
        weights, biases, vectors = self.weights, self.biases, self.vectors(self.params)
        if self.replicas == 1:  # one replica runs the single-network kernels
            return self.forward_with([w[0] for w in weights], [b[0] for b in biases], [v[0] for v in vectors], x[0],
                                     stop_after)[None]
        return self.forward_with(weights, biases, vectors, x, stop_after)

    def forward_with(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                     vectors: Sequence[torch.Tensor], x: torch.Tensor, stop_after: int | None = None) -> torch.Tensor:
        """The forward pass with the given parameters (the model's, or leaves that autograd
        differentiates); with `stop_after`, the residual stream after that many blocks instead.

        With one replica's parameters without the replica axis (weights (out, in)), x is that
        replica's (B, T, inputs), and every operation is the literal model's, on its shapes: 2-D
        `addmm`, its einsums, its GELU written out. With (R, ...) parameters, x is (R, B, T, inputs)
        and the replicas run together: batched products, torch's fused attention and tanh GELU, the
        same function rounded differently (the engines' `exact_batches=false`)."""
        single = weights[0].dim() == 2
        samples, tokens = x.shape[-3], x.shape[-2]
        if single:
            tokens_in = x if self.is_identity("in_perm") else x[:, :, self.in_perm[0]]
            h = self._linear(tokens_in.reshape(samples * tokens, -1), weights[0], biases[0])
        else:
            h = self._linear(self.to_positions(x).reshape(len(x), samples * tokens, -1), weights[0], biases[0])
        for b in range(self.blocks if stop_after is None else stop_after):
            first = 1 + 4 * b
            norm = vectors[4 * b : 4 * b + 4]
            a = self._norm(h, norm[0], norm[1])
            h = h + self._attention(self._linear(a, weights[first], biases[first]), samples, tokens,
                                    weights[first + 1], biases[first + 1])
            a = self._norm(h, norm[2], norm[3])
            hidden = self._linear(a, weights[first + 2], biases[first + 2])
            hidden = gelu(hidden) if single else torch.nn.functional.gelu(hidden, approximate="tanh")
            h = h + self._linear(hidden, weights[first + 3], biases[first + 3])
        if stop_after is not None:
            return h.reshape(*h.shape[:-2], samples, tokens, -1)
        h = self._norm(h, vectors[-2], vectors[-1])
        y = self._linear(h, weights[-1], biases[-1]).reshape(*h.shape[:-2], samples, tokens, -1)
        if single:
            return y if self.is_identity("out_perm") else y[:, :, self.output_order()[0]]
        return torch.gather(y, 3, self.output_order()[:, None, None, :].expand(*y.shape[:3], -1))

    def is_identity(self, permutation: str) -> bool:
        """Whether every replica's `in_perm` / `out_perm` is the identity (rearranging is then a copy)."""
        order = getattr(self, permutation)
        return bool((order == torch.arange(order.shape[1], device=order.device)).all())

    @staticmethod
    def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """`x @ weight^T + bias`: one 2-D `addmm` for one replica (as `nn.Linear`), else batched."""
        if weight.dim() == 2:
            return torch.addmm(bias, x, weight.t())
        return linear(x, weight, bias)

    def _norm(self, h: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """LayerNorm over the residual stream ((R,) n, width) when the model applies it; else h itself."""
        if not self.layer_norm:
            return h
        if h.dim() == 2:
            return torch.nn.functional.layer_norm(h, (self.width,), gain, bias)
        normed = torch.nn.functional.layer_norm(h, (self.width,))
        return torch.addcmul(bias[:, None, :], normed, gain[:, None, :])

    def _attention(self, qkv: torch.Tensor, samples: int, tokens: int, weight: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
        """Causal softmax attention of fused q/k/v rows ((R,) B * T, 3 * width), then the output map."""
        return self._linear(self.attention_mix(qkv, samples, tokens), weight, bias)

    def attention_mix(self, qkv: torch.Tensor, samples: int, tokens: int) -> torch.Tensor:
        """The values mixed by causal softmax attention, ((R,) B * T, width), from fused q/k/v rows:
        for one replica with the notebook's einsums, mask and softmax, on its very tensor shapes; for
        R replicas with torch's fused attention (the same function, rounded differently)."""
        width, heads = self.width, self.heads
        head = width // heads
        lead = qkv.shape[:-2]
        qkv = qkv.reshape(*lead, samples, tokens, 3 * width)
        q, k, v = (qkv[..., i * width : (i + 1) * width].reshape(*lead, samples, tokens, heads, head) for i in range(3))
        mask = causal_mask(tokens, qkv.dtype, qkv.device)
        if not lead:
            scores = torch.einsum("ijhl,ikhl->ijkh", q, k) / np.sqrt(head)
            weights = torch.softmax(scores + mask, dim=2)
            return torch.einsum("ijkl,iklh->ijlh", weights, v).reshape(samples * tokens, width)
        q, k, v = (t.reshape(-1, tokens, heads, head).transpose(1, 2) for t in (q, k, v))  # (R * B, heads, T, head)
        mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return mixed.transpose(1, 2).reshape(*lead, samples * tokens, width)


@functools.cache
def causal_mask(tokens: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, T, T, 1): -inf where the key comes after the query, else 0, built as the notebook builds it."""
    return torch.tril(torch.ones(tokens, tokens, dtype=dtype, device=device) * float("-inf"),
                      diagonal=-1).permute(1, 0)[None, :, :, None]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU in its tanh form, as the notebook writes it out (not `F.gelu`: other rounding)."""
    return gelu_parts(x)[0]


def gelu_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The notebook's `0.5 * x * (1.0 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`, operation by
    operation, with what its backward reads: (output, 0.5 * x, the tanh, 1 + the tanh)."""
    half = 0.5 * x
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
    tanh = torch.tanh(inner)
    one_plus = 1.0 + tanh
    return half * one_plus, half, tanh, one_plus


def gelu_backward(grad: torch.Tensor, x: torch.Tensor, half: torch.Tensor, tanh: torch.Tensor,
                  one_plus: torch.Tensor) -> torch.Tensor:
    """d gelu / d x times `grad`, with the kernels autograd runs for `gelu_parts`' operations, and
    x's three gradients added in the order autograd adds them (the sum's, the cube's, the half's)."""
    inner = torch.ops.aten.tanh_backward(grad * half, tanh) * math.sqrt(2.0 / math.pi)
    cube = inner * 0.044715 * (3.0 * x.pow(2.0))
    return inner + cube + (grad * one_plus) * 0.5


def _default_init(network: Network, seed: int, dtype: torch.dtype, prelude: Callable[[], object] | None) -> torch.Tensor:
    """One replica's flat parameters: after `manual_seed(seed)` and `prelude()`, `nn.Linear` layers
    built in map order (weight, then bias); then the vectors' initial values. The global RNG is
    saved and restored, so building a model does not disturb the caller's stream."""
    parts = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if prelude is not None:
            prelude()
        for m in network.maps:
            rows, columns = network.shape(m)
            layer = nn.Linear(columns, rows, dtype=dtype)
            parts += [layer.weight.detach().flatten(), layer.bias.detach()]
    for v in network.vectors:
        parts.append(torch.full((network.spaces[v.space].size,), v.initial, dtype=dtype))
    return torch.cat(parts)
