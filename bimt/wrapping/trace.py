"""Reading a user's `nn.Module` as a network of neuron spaces, by tracing it with `torch.fx`.

Each `nn.Linear` is a map: it reads the space its input lies in and writes a new one. Operations that
act on each feature alone (activations, dropout, scaling by a number, a softmax or a LayerNorm over
the features) leave their input's space as it is; an elementwise operation of two tensors (a residual
addition, a gate) joins their spaces into one, since a neuron of one must move with the neuron it is
added to. An attention module the user declares (`Attention`), or an `nn.MultiheadAttention`, is read as
its projections: q, k and v read its input and write one attention space, split in heads; the output
projection reads it.
Anything else that touches a space (a reshape, a concatenation, a convolution) is refused, with the
module and the operation named: relocation would change what the model computes.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn


class WrapError(ValueError):
    """A model, or a declaration, that `bimt.wrap` cannot read as neuron spaces; one line naming where."""


@dataclass(frozen=True)
class Attention:
    """How an attention module is built: its heads, and the names of its `nn.Linear` children.

    Either `q`, `k` and `v` (three maps) or `qkv` (one map whose rows are the q, k and v features in
    that order) read the module's input; `out` reads the heads' outputs. Heads are contiguous blocks of
    features (the usual `view(batch, tokens, heads, head_size)`), and q, k and v share their positions:
    a neuron of the attention space is the same feature of q, k and v.
    """

    heads: int
    q: str = "q"
    k: str = "k"
    v: str = "v"
    out: str = "o"
    qkv: str | None = None

    def projections(self) -> tuple[str, ...]:
        return (self.qkv,) if self.qkv is not None else (self.q, self.k, self.v)


ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
    nn.Mish, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink, nn.Dropout, nn.AlphaDropout,
    nn.Identity,
)
ELEMENTWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.silu, F.gelu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.leaky_relu, F.elu,
    F.selu, F.celu, F.softplus, F.mish, F.hardtanh, F.hardswish, F.hardsigmoid, F.dropout, torch.sin, torch.cos,
    torch.exp, torch.abs, torch.neg, torch.square, torch.sqrt, torch.erf, operator.neg, operator.pos,
}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "sin", "cos", "square", "sqrt", "erf",
                       "contiguous", "clone", "float", "double", "pow"}
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                    torch.div, operator.pow, torch.pow}
BINARY_METHODS = {"add", "sub", "mul", "div"}
FEATURE_WISE = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}  # fine over the last axis only
NORMS = tuple(cls for cls in (nn.LayerNorm, getattr(nn, "RMSNorm", None)) if cls is not None)


@dataclass
class TracedMap:
    """A linear map found in the model: the module path of its weight (and bias), its spaces, its fold."""

    name: str
    weight: str
    bias: str | None
    reads: int
    writes: int
    out_fold: int = 1


@dataclass
class TracedSpace:
    name: str
    heads: int = 1


@dataclass
class Trace:
    """What tracing found, before spaces are numbered: spaces are ids joined by `join`."""

    spaces: list[TracedSpace] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    maps: list[TracedMap] = field(default_factory=list)
    vectors: list[tuple[str, int, float]] = field(default_factory=list)  # parameter path, space, initial value
    input_space: int = 0
    output_space: int = 0
    input_flatten: int | None = None  # the input's trailing axes from this one are flattened into features
    pairs: set = field(default_factory=set)  # nodes whose value is nn.MultiheadAttention's (output, weights)

    def new_space(self, name: str, heads: int = 1) -> int:
        self.spaces.append(TracedSpace(name, heads))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            space = self.parent[space]
        return space

    def join(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            first, second = min(a, b), max(a, b)
            self.parent[second] = first
            self.spaces[first].heads = max(self.spaces[first].heads, self.spaces[second].heads)
            return first
        return a


class _Tracer(fx.Tracer):
    """fx's tracer, stopping at the modules the wrapper reads as a whole."""

    def __init__(self, attention: Mapping[str, Attention]) -> None:
        super().__init__()
        self.attention = attention

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return name in self.attention or isinstance(module, (nn.Linear, *NORMS, *ELEMENTWISE_MODULES)) or \
            super().is_leaf_module(module, name)


def declared_attention(model: nn.Module, attention: Mapping[str | type, Attention] | None) -> dict[str, Attention]:
    """The declaration by module path, each key a path or a class (every module of that class)."""
    found: dict[str, Attention] = {}
    modules = dict(model.named_modules())
    for key, spec in (attention or {}).items():
        if not isinstance(spec, Attention):
            raise WrapError(f"attention[{key!r}]={spec!r} is not allowed; it must be a bimt.Attention(heads=...)")
        if isinstance(key, type):
            paths = [path for path, module in modules.items() if isinstance(module, key)]
            if not paths:
                raise WrapError(f"attention names the class {key.__name__}, but the model has no module of that class")
        elif key in modules:
            paths = [key]
        else:
            raise WrapError(f"attention names the module {key!r}, which the model does not have; "
                            f"its modules: {', '.join(p for p in modules if p) or 'none'}")
        for path in paths:
            _check_attention(modules, path, spec)
            found[path] = spec
    return found


def _check_attention(modules: dict[str, nn.Module], path: str, spec: Attention) -> None:
    if isinstance(spec.heads, bool) or not isinstance(spec.heads, int) or spec.heads < 1:
        raise WrapError(f"attention {path!r}: heads={spec.heads!r} is not allowed; it must be an integer >= 1")
    for part in (*spec.projections(), spec.out):
        child = modules.get(f"{path}.{part}" if path else part)
        if not isinstance(child, nn.Linear):
            raise WrapError(f"attention {path!r}: {part!r} is not an nn.Linear child of it "
                            f"(say which children are q, k, v and out: bimt.Attention(heads, q=..., k=..., v=..., out=...))")


def trace_model(model: nn.Module, attention: Mapping[str, Attention]) -> Trace:
    """The model's maps and spaces, from a symbolic trace of its forward pass."""
    try:
        graph = _Tracer(attention).trace(model)
    except Exception as error:  # fx raises many kinds; all mean the forward pass cannot be traced symbolically
        raise WrapError(f"torch.fx cannot trace {type(model).__name__}.forward: {str(error).splitlines()[0]}") from None
    modules = dict(model.named_modules())
    trace = Trace()
    where: dict[fx.Node, int] = {}  # the space each node's value lies in
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise WrapError(f"{type(model).__name__}.forward takes {len(placeholders)} inputs; bimt.wrap reads models "
                        "of one input tensor")
    for node in graph.nodes:
        if node.op == "placeholder":
            where[node] = trace.input_space = trace.new_space("input")
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or result not in where:
                raise WrapError(f"{type(model).__name__}.forward returns {result!r}, not one tensor of features")
            trace.output_space = where[result]
        elif node.op == "get_attr":
            continue
        else:
            space = _step(trace, node, where, modules, attention)
            if space is not None:
                where[node] = space
    return trace


def _spaces_of(node: fx.Node, where: dict[fx.Node, int]) -> list[int]:
    """The spaces of the node's tensor arguments (lists of them included) that lie in one."""
    return [where[a] for a in node.all_input_nodes if a in where]


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(modules[node.target]).__name__})"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"operation {target!r} ({node.op.replace('_', ' ')}, node {node.name})"


def _step(trace: Trace, node: fx.Node, where: dict[fx.Node, int], modules: dict[str, nn.Module],
          attention: Mapping[str, Attention]) -> int | None:
    """The space of one node's value (None for values that are not features: shapes, masks, numbers)."""
    inputs = _spaces_of(node, where)
    if not inputs or _reads_shape(node):
        return None
    if node.op == "call_module":
        module = modules[node.target]
        if node.target in attention:
            return _attention(trace, node, inputs, modules, attention[node.target])
        if isinstance(module, nn.MultiheadAttention):
            trace.pairs.add(node)
            return _multihead(trace, node, inputs, module)
        if isinstance(module, nn.Linear):
            return _linear(trace, node.target, module, inputs[0])
        if isinstance(module, NORMS):
            for part, initial in (("weight", 1.0), ("bias", 0.0)):
                if getattr(module, part, None) is not None:
                    trace.vectors.append((f"{node.target}.{part}", inputs[0], initial))
            return inputs[0]
        if isinstance(module, ELEMENTWISE_MODULES):
            return inputs[0]
        if isinstance(module, nn.Flatten) and _flattens_input(trace, inputs[0], module.start_dim):
            return inputs[0]
    elif node.op == "call_function":
        if node.target is operator.getitem and node.args[0] in trace.pairs:
            return inputs[0] if node.args[1] == 0 else None  # the output, not the attention weights
        if node.target in ELEMENTWISE_FUNCTIONS or (node.target in BINARY_FUNCTIONS and len(inputs) == 1):
            return inputs[0]
        if node.target in BINARY_FUNCTIONS:
            return trace.join(*inputs)
        if node.target in FEATURE_WISE and _argument(node, 1, "dim") == -1:
            return inputs[0]
        if node.target is torch.flatten and _flattens_input(trace, inputs[0], _argument(node, 1, "start_dim", 0)):
            return inputs[0]
    elif node.op == "call_method":
        if node.target in ELEMENTWISE_METHODS and len(inputs) == 1:
            return inputs[0]
        if node.target in BINARY_METHODS:
            return trace.join(*inputs) if len(inputs) == 2 else inputs[0]
        if node.target in ("softmax", "log_softmax") and _argument(node, 1, "dim") == -1:
            return inputs[0]
        if node.target == "flatten" and _flattens_input(trace, inputs[0], _argument(node, 1, "start_dim", 0)):
            return inputs[0]
    raise WrapError(f"bimt.wrap cannot follow the neuron spaces through {_describe(node, modules)}: only nn.Linear "
                    "maps, elementwise operations, residual additions, LayerNorms, nn.MultiheadAttention and "
                    "declared attention (bimt.Attention) keep each feature at a neuron that relocation can move")


def _argument(node: fx.Node, position: int, name: str, default: object = None) -> object:
    """A call's argument, given by position or by keyword."""
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def _flattens_input(trace: Trace, space: int, start: int) -> bool:
    """Whether a flatten is the input's, which the wrapper's hook undoes (recorded); any other is refused."""
    if space != trace.input_space or trace.input_flatten is not None:
        return False
    trace.input_flatten = start
    return True


def _reads_shape(node: fx.Node) -> bool:
    """`x.shape`, `x.size()`, `x.dim()`: the value is not features, and nothing moves."""
    return (node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "dtype", "device")) or \
        (node.op == "call_method" and node.target in ("size", "dim"))


def _linear(trace: Trace, path: str, module: nn.Linear, reads: int, writes: int | None = None, fold: int = 1) -> int:
    writes = trace.new_space(path) if writes is None else writes
    trace.maps.append(TracedMap(path, f"{path}.weight", None if module.bias is None else f"{path}.bias",
                                reads, writes, fold))
    return writes


def _multihead(trace: Trace, node: fx.Node, inputs: list[int], module: nn.MultiheadAttention) -> int:
    """nn.MultiheadAttention as its fused in-projection (q, k, v rows, heads in blocks) and its out_proj."""
    query, key, value = (_argument(node, i, name) for i, name in enumerate(("query", "key", "value")))
    if len(set(inputs)) > 1 or not (query is key is value):
        raise WrapError(f"module {node.target!r} (MultiheadAttention) is not self-attention (query, key and value "
                        "are not one tensor); bimt.wrap reads self-attention only")
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        raise WrapError(f"module {node.target!r} (MultiheadAttention) has kdim/vdim, add_bias_kv or add_zero_attn; "
                        "bimt.wrap reads its plain form (one in_proj_weight) only")
    space = trace.new_space(node.target, module.num_heads)
    trace.maps.append(TracedMap(f"{node.target}.in_proj", f"{node.target}.in_proj_weight",
                                None if module.in_proj_bias is None else f"{node.target}.in_proj_bias",
                                inputs[0], space, 3))
    path = f"{node.target}.out_proj"
    return _linear(trace, path, module.out_proj, space)


def _attention(trace: Trace, node: fx.Node, inputs: list[int], modules: dict[str, nn.Module], spec: Attention) -> int:
    """The declared attention module's maps: projections into an attention space with heads, then out."""
    if len(set(inputs)) > 1:
        raise WrapError(f"attention {node.target!r} reads features of two different spaces (cross-attention); "
                        "bimt.wrap reads self-attention only")
    space = trace.new_space(node.target, spec.heads)
    for part in spec.projections():
        path = f"{node.target}.{part}"
        _linear(trace, path, modules[path], inputs[0], space, 3 if spec.qkv is not None else 1)
    path = f"{node.target}.{spec.out}"
    return _linear(trace, path, modules[path], space)
