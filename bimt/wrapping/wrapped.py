"""`bimt.wrap`: BIMT on a user's own PyTorch model, trained with the user's optimizer and autograd.

The wrapper reads the model as a network of neuron spaces (`bimt.wrapping.trace`), places every space's
neurons on a line (or a grid), and gives the model's connection cost (a differentiable scalar of its
own parameters), relocation and picture. The model stays the user's: its parameters are priced and
moved in place, and two buffers it gains (`bimt_in_perm`, `bimt_out_perm`, saved in its state_dict)
record which input feature sits at each input neuron and which output feature each output neuron
computes. Forward hooks rearrange the inputs and outputs by them, so `model(x)` takes and returns the
features in the user's order before and after any relocation.

Relocation runs the project's search (`bimt.network.relocation`) on a CPU copy of the parameters laid
out flat, then writes the moved parameters back: the swaps are those the runner makes for the same
weights and geometry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import zip_longest

import torch
from matplotlib.figure import Figure
from torch import nn

from bimt.network.cost import priced_cost, wire_factors
from bimt.network.geometry import GEOMETRIES, grid_coordinates, is_square, line_coordinates, ring_coordinates
from bimt.network.relocation import relocate
from bimt.network.spaces import Map, Network, Space, Vector
from bimt.network.spatial import SpatialModel
from bimt.pictures.spaces import SpacesPicture
from bimt.wrapping.trace import Attention, Trace, WrapError, declared_attention, trace_model

IN_PERM, OUT_PERM = "bimt_in_perm", "bimt_out_perm"


class Layout(SpatialModel):
    """A wrapped model's parameters as one flat (1, P) tensor on the CPU, for relocation and drawing."""


def wrap(
    model: nn.Module,
    geometry: str | Mapping[str, str] = "line",
    attention: Mapping[str | type, Attention] | None = None,
    l0: float = 0.1,
    mean_cost: bool = False,
) -> WrappedModel:
    """Make `model` a BIMT network: trace it into neuron spaces and hook its inputs and outputs.

    `geometry` places every space's neurons on a "line" (in (0, 1), as the paper does) or on "grid"s
    (each a square, the output space on a ring, as the MNIST notebook does); a mapping from space names
    (see `WrappedModel.spaces`) to geometries places each space its own way, the others on a line.
    `attention` declares attention modules, by module path or class (`bimt.Attention`). `l0` is the
    cost of a unit of weight whatever its length; `mean_cost` averages each map's cost over its
    entries instead of summing them. Wrap before building the optimizer or after: the model's
    parameters stay the same tensors.
    """
    if hasattr(model, IN_PERM):
        raise WrapError(f"{type(model).__name__} is wrapped already; wrap a model once")
    if not isinstance(model, nn.Module):
        raise WrapError(f"bimt.wrap takes an nn.Module, not {type(model).__name__}")
    trace = trace_model(model, declared_attention(model, attention))
    return WrappedModel(model, trace, geometry, l0, mean_cost)


class WrappedModel:
    """A user's model read as BIMT's network: `connection_cost()`, `relocate()`, `draw()`.

    `network` holds its spaces and maps (`bimt.network.spaces`), in the order the forward pass
    meets them; `model` is the user's module, which keeps training as before.
    """

    def __init__(self, model: nn.Module, trace: Trace, geometry: str | Mapping[str, str], l0: float,
                 mean_cost: bool) -> None:
        self.model = model
        parameters = dict(model.named_parameters())
        self.network = _network(trace, parameters, geometry)
        self.input_flatten = trace.input_flatten
        self.shared_permutation = trace.find(trace.input_space) == trace.find(trace.output_space)
        self._weights = [parameters[m.weight] for m in trace.maps]  # the network's maps are the trace's, in order
        self._biases = [None if m.bias is None else parameters[m.bias] for m in trace.maps]
        self._vector_parameters = [parameters[path] for path, _, _ in trace.vectors]
        dtype = self._weights[0].dtype
        flat = torch.zeros(1, self.network.parameters, dtype=dtype)
        self.layout = Layout(self.network, flat, l0, mean_cost, "grid" if geometry == "grid" else "line")
        device = self._weights[0].device
        model.register_buffer(IN_PERM, self.layout.in_perm[0].clone().to(device))
        model.register_buffer(OUT_PERM, self.layout.out_perm[0].clone().to(device))
        self._hooks = [model.register_forward_pre_hook(self._enter), model.register_forward_hook(self._leave)]
        self._prices: dict[tuple, list[torch.Tensor]] = {}

    @property
    def spaces(self) -> list[str]:
        """The spaces' names, as `geometry` takes them: "input", each hidden space named after the module
        that first writes it, and "output"."""
        return [space.name for space in self.network.spaces]

    @property
    def in_perm(self) -> torch.Tensor:
        """(inputs,): the input feature at each input neuron (position)."""
        return getattr(self.model, IN_PERM)

    @property
    def out_perm(self) -> torch.Tensor:
        """(outputs,): the output feature that each output neuron computes."""
        return getattr(self.model, OUT_PERM)

    def __repr__(self) -> str:
        spaces = ", ".join(f"{s.name} ({s.size}{f', {s.heads} heads' if s.heads > 1 else ''})" for s in self.network.spaces)
        maps = ", ".join(f"{m.name}: {self.network.spaces[m.reads].name} -> {self.network.spaces[m.writes].name}"
                         for m in self.network.maps)
        return f"WrappedModel(spaces: {spaces}; maps: {maps})"

    def _enter(self, module: nn.Module, args: tuple) -> tuple:
        """Before the forward pass: input feature in_perm[p] goes to input neuron p."""
        x, rest = args[0], args[1:]
        if self.input_flatten is None:
            return (x.index_select(-1, self.in_perm), *rest)
        start = self.input_flatten % x.dim()
        return (x.flatten(start).index_select(-1, self.in_perm).reshape(x.shape), *rest)

    def _leave(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """After it: output feature f is read off the neuron that computes it."""
        return output.index_select(-1, torch.argsort(self.out_perm))

    def unwrap(self) -> None:
        """Remove the hooks (the model then takes and returns features in neuron order)."""
        for hook in self._hooks:
            hook.remove()

    def _live(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The model's weights (1, out, in) and biases (1, out) per map, zeros where a map has none."""
        weights = [w[None] for w in self._weights]
        biases = [torch.zeros(1, len(w), dtype=w.dtype, device=w.device) if b is None else b[None]
                  for w, b in zip(self._weights, self._biases)]
        return weights, biases

    def connection_cost(self, locality: float = 1.0, penalize_bias: bool = True) -> torch.Tensor:
        """The connection cost of the model's weights as they are: sum over maps of
        |W| * (locality * wire length + l0), plus l0 * |b| with `penalize_bias`. A scalar that autograd
        differentiates; `locality=0` is plain L1 (every weight costs l0 * |w|)."""
        weights, biases = self._live()
        key = (float(locality), weights[0].device)
        if key not in self._prices:
            self._prices[key] = [factor.to(weights[0].device) for factor in wire_factors(self.layout, float(locality))]
        return priced_cost(self.layout, self._prices[key], penalize_bias, weights, biases)[0]

    def _pairs(self, flat: torch.Tensor, of=lambda parameter: parameter) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(view into the flat (1, P) layout, `of(parameter)`) for every parameter it holds: each map's
        weight and bias (a map without bias has zeros there), then the vectors."""
        for i, (weight, bias) in enumerate(zip(self._weights, self._biases)):
            yield self.network.weight(flat, i)[0], of(weight)
            if bias is not None:
                yield self.network.bias(flat, i)[0], of(bias)
        for i, vector in enumerate(self._vector_parameters):
            yield self.network.vector(flat, i)[0], of(vector)

    def _flat_state(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """The optimizer's per-parameter state tensors (Adam's moments, SGD's momentum) laid out flat."""
        names: set[str] = set()
        for parameter in self._weights:
            state = optimizer.state.get(parameter, {})
            names |= {name for name, value in state.items() if torch.is_tensor(value) and value.shape == parameter.shape}
        flats = {name: torch.zeros_like(self.layout.params.detach()) for name in sorted(names)}
        for name, flat in flats.items():
            for view, tensor in self._pairs(flat, lambda parameter: optimizer.state[parameter][name]):
                view.copy_(tensor)
        return flats

    @torch.no_grad()
    def relocate(self, top_k: int = 5, locality: float = 1.0, inputs: bool = True,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """Swap neurons, space by space, where a swap lowers the connection cost (scored at `locality`,
        biases in), leaving `model(x)` unchanged: the `top_k` most connected neurons of each space
        each move to their best place (whole heads first in a space with heads). `inputs=False` keeps
        the input neurons where they are. With `optimizer`, its state (Adam's moments) moves with the
        neurons; without, it stays where it is, as the paper's notebooks leave it."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r} is not allowed; it must be an integer >= 1")
        if not (isinstance(locality, (int, float)) and 0 <= locality < float("inf")):
            raise ValueError(f"locality={locality!r} is not allowed; it must be a finite number >= 0")
        self._to_layout()
        state = self._flat_state(optimizer) if optimizer is not None else {}
        relocate(self.layout, top_k, None, None, locality, inputs, moments=list(state.values()))
        for view, parameter in self._pairs(self.layout.params.detach()):
            parameter.copy_(view)
        self.in_perm.copy_(self.layout.in_perm[0])
        self.out_perm.copy_(self.layout.in_perm[0] if self.shared_permutation else self.layout.out_perm[0])
        for name, flat in state.items():
            for view, tensor in self._pairs(flat, lambda parameter: optimizer.state[parameter][name]):
                tensor.copy_(view)

    @torch.no_grad()
    def _to_layout(self) -> None:
        """Copy the model's parameters and permutations into the flat CPU layout."""
        for view, parameter in self._pairs(self.layout.params.detach()):
            view.copy_(parameter)
        self.layout.in_perm[0].copy_(self.in_perm)
        self.layout.out_perm[0].copy_(self.out_perm)

    def draw(self, title: str = "", input_labels: Sequence[str] | None = None,
             output_labels: Sequence[str] | None = None) -> Figure:
        """The network as it stands: a row per neuron layer of the forward pass, wires as wide as |w|
        (per map), blue positive, red negative, the features labelled where they sit."""
        self._to_layout()
        return SpacesPicture(self.layout, input_labels, output_labels).update(self.layout, 0, title)


def _network(trace: Trace, parameters: dict[str, torch.Tensor],
             geometry: str | Mapping[str, str]) -> Network:
    """The traced spaces numbered in the order the forward pass meets them, their sizes read off the
    maps' weights (and checked), and their coordinates."""
    roots = sorted({trace.find(i) for i in range(len(trace.spaces))})
    used = {trace.find(m.reads) for m in trace.maps} | {trace.find(m.writes) for m in trace.maps}
    roots = [r for r in roots if r in used or r == trace.find(trace.input_space)]
    index = {root: i for i, root in enumerate(roots)}
    sizes: dict[int, tuple[int, str]] = {}

    def size(space: int, n: int, where: str) -> None:
        known = sizes.setdefault(space, (n, where))
        if known[0] != n:
            raise WrapError(f"{where} has {n} features where {known[1]} has {known[0]} in the same neuron space; "
                            "spaces joined by an elementwise operation must have the same size")

    maps = []
    for m in trace.maps:
        reads, writes = index[trace.find(m.reads)], index[trace.find(m.writes)]
        if reads == writes:
            raise WrapError(f"module {m.name!r} reads and writes the same neuron space (a residual around a single "
                            "linear layer); relocation needs a space between the two")
        rows, columns = parameters[m.weight].shape
        if rows % m.out_fold:
            raise WrapError(f"module {m.name!r} has {rows} outputs, not a multiple of 3 (its q, k and v)")
        size(reads, columns, f"the input of module {m.name!r}")
        size(writes, rows // m.out_fold, f"the output of module {m.name!r}")
        maps.append(Map(m.name, reads, writes, out_fold=m.out_fold))
    input_space, output_space = index[trace.find(trace.input_space)], index[trace.find(trace.output_space)]
    if input_space not in sizes:
        raise WrapError("the model's input reaches no nn.Linear; bimt.wrap needs at least one linear layer")
    vectors = []
    for path, space, initial in trace.vectors:
        n = parameters[path].numel()
        size(index[trace.find(space)], n, f"parameter {path!r}")
        vectors.append(Vector(path, index[trace.find(space)], initial))
    spaces = []
    for i, root in enumerate(roots):
        n, _ = sizes[i]
        heads = trace.spaces[root].heads
        name = "output" if i == output_space != input_space else trace.spaces[root].name
        if n % heads:
            raise WrapError(f"space {name!r} has {n} neurons, not divisible by its {heads} heads")
        writers = [j for j, m in enumerate(maps) if m.writes == i]
        readers = [j for j, m in enumerate(maps) if m.reads == i]
        layers = tuple(zip_longest(writers, readers)) or ((None, None),)
        permutation = "in_perm" if i == input_space else "out_perm" if i == output_space else None
        where = geometry if isinstance(geometry, str) else geometry.get(name, "line")
        spaces.append(Space(name, _coordinates(name, n, where, i == output_space), heads, layers, permutation))
    if not isinstance(geometry, str):
        unknown = sorted(set(geometry) - {s.name for s in spaces})
        if unknown:
            raise WrapError(f"geometry names the space {unknown[0]!r}, which the model does not have; "
                            f"its spaces: {', '.join(s.name for s in spaces)}")
    for m in maps:
        into, out = spaces[m.reads], spaces[m.writes]
        if into.coordinates.dim() != out.coordinates.dim():
            raise WrapError(f"module {m.name!r} joins space {into.name!r} and space {out.name!r}, one on a line and "
                            "one on a grid; a map's two spaces must share a geometry")
    return Network(tuple(spaces), tuple(maps), tuple(vectors), relocation_order=tuple(range(len(spaces))))


def _coordinates(name: str, n: int, geometry: str, output: bool) -> torch.Tensor:
    if geometry not in GEOMETRIES:
        raise WrapError(f"geometry={geometry!r} for space {name!r} is not allowed; allowed: {', '.join(GEOMETRIES)}")
    if geometry == "line":
        return line_coordinates(n)
    if output:
        return ring_coordinates(n)
    if not is_square(n):
        raise WrapError(f"space {name!r} has {n} neurons, not a square number, so it cannot lie on a grid")
    return grid_coordinates(n)
