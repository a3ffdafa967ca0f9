"""Modularity metrics, pruning, interventions: checked on networks whose answers are known by hand."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from bimt.network.model import BioMLP
from bimt.tasks import TASKS, digits_task, make_dataset, mnist_task, two_moons_task
from bimt.tasks.dataset import stack_datasets
from bimt.tasks.metrics import (
    dependency_matrix,
    intervention,
    intervention_effect,
    modularity_metrics,
    modularity_q,
    output_components,
    prune,
    task_modularity_q,
    weight_graph,
    wire_length,
)


def two_module_network() -> BioMLP:
    """4 inputs -> 4 hidden -> 2 outputs wired as {x1, x3} -> y1 and {x2, x4} -> y2, with tiny noise."""
    model = BioMLP([4, 4, 2], seeds=[0])
    with torch.no_grad():
        w0 = torch.full((4, 4), 1e-4)
        w0[0, 0] = w0[1, 2] = 1.0  # hidden 0, 1 read x1, x3
        w0[2, 1] = w0[3, 3] = -1.0  # hidden 2, 3 read x2, x4
        w1 = torch.full((2, 4), 1e-4)
        w1[0, 0] = w1[0, 1] = 0.5
        w1[1, 2] = w1[1, 3] = 0.5
        model.weights[0][0] = w0
        model.weights[1][0] = w1
    return model


def test_prune_zeroes_small_weights_and_nothing_else():
    model = two_module_network()
    model.in_perm[0] = torch.tensor([2, 0, 3, 1])
    pruned = prune(model, 1e-2)
    assert int((pruned.weights[0] != 0).sum()) == 4 and int((pruned.weights[1] != 0).sum()) == 4
    for original, kept in zip([*model.biases, model.in_perm, model.out_perm], [*pruned.biases, pruned.in_perm, pruned.out_perm]):
        assert torch.equal(original, kept)
    assert model.weights[0][0, 0, 1].item() == pytest.approx(1e-4), "the original model is untouched"


def test_dependency_matrix_and_components_find_the_two_modules():
    pruned = prune(two_module_network())
    expected = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)
    assert np.array_equal(dependency_matrix(pruned), expected)
    assert output_components(pruned) == 2
    assert np.array_equal(dependency_matrix(two_module_network()), np.ones((4, 2), dtype=bool))
    assert output_components(two_module_network()) == 1


def test_dependency_matrix_is_in_feature_order_whatever_the_positions():
    model = two_module_network()
    model.in_perm[0] = torch.tensor([1, 0, 3, 2])  # position p shows feature in_perm[p]
    # positions 0 and 2, wired to output position 0 (y1), now hold x2 and x4
    crossed = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=bool)
    assert np.array_equal(dependency_matrix(prune(model)), crossed)
    model.out_perm[0] = torch.tensor([1, 0])  # and output position 0 now computes y2
    assert np.array_equal(dependency_matrix(prune(model)), ~crossed)


def test_wire_length_is_the_weight_weighted_mean_distance():
    model = BioMLP([2, 2, 1], seeds=[0])
    with torch.no_grad():
        model.weights[0][0] = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # both straight up: length 0
        model.weights[1][0] = torch.tensor([[1.0, 1.0]])  # from x = 0.25 and 0.75 to 0.5
    assert wire_length(model) == pytest.approx([0.0, 0.25])


def test_trained_independence_network_reports_consistent_metrics():
    from bimt.training.loop import NullLogger, ReplicaSettings, TrainSettings, train
    from bimt.training.schedule import Schedule

    task = TASKS["independence"]
    data = stack_datasets([make_dataset(task, 0)], torch.device("cpu"))
    model = BioMLP([4, 20, 20, 2], seeds=[0])
    switches = ReplicaSettings(torch.tensor([True]), torch.tensor([1.0]), torch.tensor([True]))
    train(model, data, switches, Schedule(), TrainSettings(400, "eager", progress=False), NullLogger())
    metrics = modularity_metrics(model, data, task)
    assert metrics["active_weights_1e-3"] >= metrics["active_weights_1e-2"] > 0
    assert metrics["components"] >= 1
    assert len(metrics["wire_length"]) == 3
    assert metrics["expected_structure_found"] == (metrics["dependencies"] == task.dependencies.astype(int).tolist())


def test_intervention_changes_outputs_as_computed_and_restores_exactly():
    model = two_module_network()
    x = torch.rand(8, 4) * 2 - 1
    before = model(x)[0].clone()
    original = model.weights[1][0, 1, 2].item()
    with intervention(model, 1, (1, 2), 0.0):
        assert model.weights[1][0, 1, 2].item() == 0.0
        changed = model(x)[0]
    assert torch.equal(model(x)[0], before)
    assert model.weights[1][0, 1, 2].item() == original
    hidden = torch.nn.functional.silu(x @ model.weights[0][0].T + model.biases[0][0])
    effect = intervention_effect(model, x, 1, (1, 2), 0.0)
    torch.testing.assert_close(effect[:, 1], -original * hidden[:, 2])
    assert torch.equal(effect[:, 0], torch.zeros(8))
    torch.testing.assert_close(changed - before, effect)


def test_bias_intervention_is_restored_even_when_the_body_fails():
    model = two_module_network()
    original = model.biases[0].clone()
    with pytest.raises(RuntimeError):
        with intervention(model, 0, (3,), 5.0, kind="bias"):
            assert model.biases[0][0, 3].item() == 5.0
            raise RuntimeError("inside")
    assert torch.equal(model.biases[0], original)
    with pytest.raises(ValueError, match="kind='gain'"):
        with intervention(model, 0, (3,), 5.0, kind="gain"):
            pass


def test_modularity_q_of_two_disconnected_cliques_is_one_half():
    """Two equal cliques and no edge between them: Newman's Q is 1 - 2 (1/2)^2 = 1/2, and no split of
    a clique does better. Complete graphs (and complete bipartite layers) have no modules: Q = 0."""
    for clique in (nx.complete_graph(5), nx.complete_bipartite_graph(3, 3)):
        assert modularity_q(nx.disjoint_union(clique, clique)) == pytest.approx(0.5, abs=1e-12)
    assert modularity_q(nx.complete_graph(6)) == pytest.approx(0.0, abs=1e-12)
    assert modularity_q(nx.complete_bipartite_graph(4, 4)) == pytest.approx(0.0, abs=1e-12)
    assert modularity_q(nx.empty_graph(4)) is None


def test_modularity_q_of_a_ring_is_near_its_optimum_and_the_same_every_time():
    """A ring of 16 nodes cut into c arcs of 16/c has Q = 1 - c/16 - 1/c, at best 1/2 (4 arcs of 4).
    Louvain (a heuristic) stops at a partition close to it; with its seed fixed, always the same."""
    ring = nx.cycle_graph(16)
    four_arcs = [set(range(i, i + 4)) for i in range(0, 16, 4)]
    assert nx.community.modularity(ring, four_arcs) == pytest.approx(1 - 4 / 16 - 1 / 4)
    q = modularity_q(ring)
    assert 0.48 <= q <= 0.5
    assert {modularity_q(ring) for _ in range(3)} == {q}
    weighted = nx.cycle_graph(16)
    nx.set_edge_attributes(weighted, 3.0, "weight")  # |w| scales every edge alike: Q is unchanged
    assert modularity_q(weighted) == pytest.approx(q)


def test_a_run_measures_q_on_its_pruned_weight_graph_and_under_the_tasks_modules():
    """The two-module network after pruning is two trees, one per output: the task's own partition
    ({x1, x3, their hidden neurons, y1} and the rest) has Q = 1/2 exactly (no weight crosses, each
    half holds half the |w|); Louvain may cut the trees further, never below that."""
    model = two_module_network()
    task = TASKS["independence"]
    pruned = prune(model)
    graph = weight_graph(pruned)
    assert graph.number_of_edges() == 8
    assert graph.size(weight="weight") == pytest.approx(6.0)  # four |w| = 1 and four 0.5
    metrics = modularity_metrics(model, stack_datasets([make_dataset(task, 0)], torch.device("cpu")), task)
    assert metrics["modularity_q"] == modularity_q(graph)
    assert metrics["modularity_q"] >= 0.5
    assert metrics["modularity_q_task"] == pytest.approx(0.5)
    assert task.modules == (((0, 2), (0,)), ((1, 3), (1,)))
    crossed = two_module_network()
    with torch.no_grad():
        crossed.out_perm[0] = torch.tensor([1, 0])  # the outputs swap places: each tree now ends in the other's output
    assert task_modularity_q(prune(crossed), task.modules) < 0.1


def test_tasks_declare_modules_only_where_their_outputs_split():
    assert TASKS["independence"].modules is not None
    assert TASKS["feature_sharing"].modules is None  # every output reads x1
    assert TASKS["compositionality"].modules is None
    assert digits_task().modules == tuple(((), (c,)) for c in range(10))
    assert mnist_task().modules == digits_task().modules
    assert two_moons_task().modules is None
