"""How modular a trained network is: sparsity, pruning, module structure, wire length, interventions.

The paper shows pictures; these functions put numbers on them. A network is pruned (weights below
a threshold set to zero), read as a graph whose edges are the surviving weights, and asked which
inputs still have a path to which outputs. For independence that dependency matrix should show two
separate modules, {x1, x3} -> out1 and {x2, x4} -> out2. Newman's modularity Q of the same graph,
edges weighted by |w|, scores how modular it is in one number (the journal version of the paper
compares train types by it): for the partition that Louvain finds, and for the task's own modules.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import networkx as nx
import numpy as np
import torch

from bimt.network.cost import active_weights
from bimt.network.model import BioMLP
from bimt.network.spatial import SpatialModel
from bimt.tasks.base import Task
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import LOSSES, final_losses


@torch.no_grad()
def prune(model: SpatialModel, threshold: float = 1e-2) -> SpatialModel:
    """A copy of the model with every weight of magnitude below `threshold` set to zero.

    Biases, permutations and coordinates are left exactly as they are.
    """
    pruned = copy.deepcopy(model)
    for weight in pruned.weights:
        weight.mul_(weight.abs() >= threshold)
    return pruned


def network_graph(model: SpatialModel, replica: int = 0) -> nx.DiGraph:
    """The network as a directed graph: nodes (space, position) (for an MLP, (layer, position)), an
    edge for every non-zero weight, with `weight` |w|; the folds of a position are one neuron (their
    |w| add up)."""
    network = model.network
    graph = nx.DiGraph()
    for index, space in enumerate(network.spaces):
        graph.add_nodes_from((index, p) for p in range(space.size))
    for m, weight in zip(network.maps, model.weights):
        w = weight[replica].detach().cpu().abs().double()
        w = w.reshape(m.out_fold, -1, w.shape[1]).sum(dim=0)
        w = w.reshape(w.shape[0], m.in_fold, -1).sum(dim=1)
        rows, cols = torch.nonzero(w).T.tolist() if w.any() else ([], [])
        values = w[rows, cols].tolist()
        graph.add_weighted_edges_from(((m.reads, c), (m.writes, r), v) for r, c, v in zip(rows, cols, values))
    return graph


def weight_graph(model: SpatialModel, replica: int = 0) -> nx.Graph:
    """The network as an undirected graph weighted by |w|, what Newman's modularity reads: the edges
    of `network_graph`, where two maps join the same two neurons (a transformer block reads the
    residual stream and writes it back) one edge with their |w| added."""
    graph = nx.Graph()
    directed = network_graph(model, replica)
    graph.add_nodes_from(directed)
    for u, v, w in directed.edges(data="weight"):
        graph.add_edge(u, v, weight=w + (graph[u][v]["weight"] if graph.has_edge(u, v) else 0.0))
    return graph


def modularity_q(graph: nx.Graph, seed: int = 0) -> float | None:
    """Newman's modularity Q of the weighted graph's best partition that Louvain finds (seeded, so a
    network always gets the same Q); None for a graph without edges, where Q is undefined."""
    if graph.number_of_edges() == 0:
        return None
    communities = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    return float(nx.community.modularity(graph, communities, weight="weight"))


def task_partition(model: SpatialModel, modules: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...],
                   replica: int = 0) -> list[set] | None:
    """The neurons grouped by the task's own modules (`Task.modules`), for the Q of that partition.

    Output neurons go to their output's module and input neurons to the module that declares their
    input. Every other neuron goes to the module it drives most: the sum over its paths to that
    module's outputs of the product of |w| along them. A neuron with no path to an output is a group
    of its own. None where the graph has cycles (a transformer's residual stream), where "downstream"
    means nothing."""
    graph = network_graph(model, replica)
    if not nx.is_directed_acyclic_graph(graph):
        return None
    source, sink = _space_of(model, "in_perm"), _space_of(model, "out_perm")
    module_of_input = {i: k for k, (inputs, _) in enumerate(modules) for i in inputs}
    module_of_output = {o: k for k, (_, outputs) in enumerate(modules) for o in outputs}
    fixed = {(sink, p): module_of_output[feature] for p, feature in enumerate(model.out_perm[replica].tolist())}
    fixed.update({(source, p): module_of_input[feature] for p, feature in enumerate(model.in_perm[replica].tolist())
                  if feature in module_of_input})
    drive: dict[Any, np.ndarray] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        if node[0] == sink:
            drive[node] = np.eye(len(modules))[fixed[node]]
        else:
            drive[node] = sum((w * drive[child] for _, child, w in graph.out_edges(node, data="weight")),
                              np.zeros(len(modules)))
    groups: list[set] = [set() for _ in modules]
    alone = []
    for node, strength in drive.items():
        if node in fixed:
            groups[fixed[node]].add(node)
        elif strength.max() > 0:
            groups[int(strength.argmax())].add(node)
        else:
            alone.append({node})
    return [group for group in groups if group] + alone


def task_modularity_q(model: SpatialModel, modules: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...],
                      replica: int = 0) -> float | None:
    """Newman's Q of the pruned network's weight graph under the task's own partition; None where
    the graph has no edges or no direction (see `task_partition`)."""
    partition = task_partition(model, modules, replica)
    graph = weight_graph(model, replica)
    if partition is None or graph.number_of_edges() == 0:
        return None
    return float(nx.community.modularity(graph, partition, weight="weight"))


def _space_of(model: SpatialModel, permutation: str) -> int:
    """The space the data enter by (`in_perm`) or leave by (`out_perm`)."""
    return next(i for i, space in enumerate(model.network.spaces) if space.permutation == permutation)


def dependency_matrix(model: SpatialModel, replica: int = 0) -> np.ndarray:
    """(inputs, outputs) booleans in feature order: does input feature i have a path to output o?"""
    graph = network_graph(model, replica)
    source, sink = _space_of(model, "in_perm"), _space_of(model, "out_perm")
    in_perm = model.in_perm[replica].tolist()
    out_perm = model.out_perm[replica].tolist()
    matrix = np.zeros((len(in_perm), len(out_perm)), dtype=bool)
    for position, feature in enumerate(in_perm):
        reached = nx.descendants(graph, (source, position))
        for out_position, out_feature in enumerate(out_perm):
            matrix[feature, out_feature] = (sink, out_position) in reached
    return matrix


def output_components(model: SpatialModel, replica: int = 0) -> int:
    """Connected pieces of the network (ignoring edge direction) that contain an output neuron."""
    graph = network_graph(model, replica)
    sink = _space_of(model, "out_perm")
    outputs = {(sink, p) for p in range(model.out_perm.shape[1])}
    return sum(1 for part in nx.weakly_connected_components(graph) if part & outputs)


def wire_length(model: SpatialModel, replica: int = 0) -> list[float]:
    """Per map (for an MLP, per layer), the mean wire length |x_out - x_in| weighted by |w| (0 for a layer with no weight)."""
    lengths = []
    for layer, weight in enumerate(model.weights):
        w = weight[replica].detach().abs()
        total = float(w.sum())
        lengths.append(float((w * model.distance(layer)).sum()) / total if total > 0 else 0.0)
    return lengths


def format_dependencies(matrix: np.ndarray, task: Task) -> str:
    """The dependency matrix as text, one line per output: `out -> inputs it depends on`."""
    lines = []
    for o, label in enumerate(task.output_formulas):
        inputs = [f"x{i + 1}" for i in range(matrix.shape[0]) if matrix[i, o]]
        lines.append(f"{label} <- {{{', '.join(inputs)}}}")
    return "\n".join(lines)


def active_embedding_dims(model: BioMLP, threshold: float = 1e-2, replica: int = 0) -> list[int]:
    """The embedding dimensions (features, 0-based) that still feed the network after pruning: some
    first-layer weight from them, in either operand's fold, is at least `threshold`."""
    weight = model.weights[0][replica].detach().abs()
    outgoing = weight.reshape(weight.shape[0], model.in_fold, -1).amax(dim=(0, 1))  # per position
    features = model.in_perm[replica].tolist()
    return sorted(features[position] for position in torch.nonzero(outgoing >= threshold).flatten().tolist())


def modularity_q_metrics(pruned: SpatialModel, task: Task) -> dict[str, float | None]:
    """`modularity_q`, Newman's Q of the pruned network's weight graph under the partition Louvain
    finds, and, for a task with its own modules, `modularity_q_task` under that partition."""
    metrics = {"modularity_q": modularity_q(weight_graph(pruned))}
    if task.modules is not None:
        metrics["modularity_q_task"] = task_modularity_q(pruned, task.modules)
    return metrics


@torch.no_grad()
def modularity_metrics(model: SpatialModel, data: Dataset, task: Task, threshold: float = 1e-2) -> dict[str, Any]:
    """Everything above for replica 0 of a trained model, as plain values for metrics.json: for a
    classifier its accuracy after pruning, for a model with embeddings the dimensions still in use,
    for a task that declares its module structure whether that structure was found."""
    pruned = prune(model, threshold)
    metrics: dict[str, Any] = {
        "active_weights_1e-2": int(active_weights(model, 1e-2)[0]),
        "active_weights_1e-3": int(active_weights(model, 1e-3)[0]),
        **{key: value[0].item() for key, value in final_losses(pruned, data, LOSSES[task.loss], "pruned_").items()},
    }
    metrics["components"] = output_components(pruned)
    metrics.update(modularity_q_metrics(pruned, task))
    if model.embedding is not None:
        dims = active_embedding_dims(model, threshold)
        metrics.update({"active_embedding_dims": dims, "n_active_embedding_dims": len(dims)})
    if task.dependencies is not None:
        dependencies = dependency_matrix(pruned)
        metrics["dependencies"] = dependencies.astype(int).tolist()
        metrics["expected_structure_found"] = bool(np.array_equal(dependencies, task.dependencies))
    metrics["wire_length"] = wire_length(model)
    return metrics


def modularity_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric part of `modularity_metrics`, flat, for TensorBoard."""
    scalars = {key: float(value) for key, value in metrics.items() if isinstance(value, (bool, int, float))}
    scalars.update({f"wire_length/layer{i}": value for i, value in enumerate(metrics["wire_length"])})
    return scalars


@contextmanager
def intervention(
    model: BioMLP, layer: int, index: tuple[int, ...], value: float, kind: str = "weight", replica: int = 0
) -> Iterator[BioMLP]:
    """Set one weight (index (out, in)) or bias (index (out,)) of linear layer `layer`, then restore it.

    Use as `with intervention(model, 0, (3, 1), 0.0): ...`; the original value is back afterwards,
    even when the body raises.
    """
    if kind not in ("weight", "bias"):
        raise ValueError(f"kind={kind!r} is not allowed; use 'weight' or 'bias'")
    parameter = (model.weights if kind == "weight" else model.biases)[layer]
    position = (replica, *index)
    with torch.no_grad():
        original = parameter[position].clone()
        parameter[position] = value
    try:
        yield model
    finally:
        with torch.no_grad():
            parameter[position] = original


@torch.no_grad()
def intervention_effect(
    model: BioMLP, x: torch.Tensor, layer: int, index: tuple[int, ...], value: float, kind: str = "weight"
) -> torch.Tensor:
    """How the outputs (replica 0, feature order) change when one weight or bias is set to `value`."""
    before = model(x)[0]
    with intervention(model, layer, index, value, kind):
        after = model(x)[0]
    return after - before
