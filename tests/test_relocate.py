"""Relocation picks exactly the swaps of the literal swap-recompute-unswap search, and never costs more."""

from __future__ import annotations

import pytest
import torch

from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.relocation import candidate_costs, positions, relocate
from bimt.reference import LiteralMLP, literal_copy
from bimt.tasks import TASKS, make_dataset
from bimt.tasks.dataset import stack_datasets
from bimt.training.loop import NullLogger, ReplicaSettings, TrainSettings, train
from bimt.training.schedule import Schedule

SHAPES = [([4, 20, 20, 2], 1), ([3, 20, 20, 3], 1), ([4, 20, 20, 20, 20, 1], 1), ([6, 8, 5, 4], 2)]


GRID_SHAPES = [[16, 9, 9, 4], [64, 25, 16, 10]]  # square layers, outputs on a ring


def random_state(shape, in_fold, seed, replicas=3, geometry="line") -> BioMLP:
    """Sparse, heavy-tailed weights like a trained BIMT network's, and shuffled permutations (on
    grids: the MNIST notebook's l0 and averaged costs)."""
    if geometry == "grid":
        model = BioMLP(shape, seeds=range(seed, seed + replicas), l0=0.5, mean_cost=True, geometry="grid")
    else:
        model = BioMLP(shape, seeds=range(seed, seed + replicas), in_fold=in_fold)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*model.weights, *model.biases]:
            scale = torch.empty(p.shape).exponential_(generator=generator)
            keep = torch.rand(p.shape, generator=generator) > 0.5
            p.mul_(scale * keep)
        for r in range(replicas):
            model.in_perm[r] = torch.randperm(model.n_input_positions, generator=generator)
            model.out_perm[r] = torch.randperm(shape[-1], generator=generator)
    return model


def assert_same_network(model: BioMLP, replica: int, literal: LiteralMLP) -> None:
    for linear, weight, bias in zip(literal.linears, model.weights, model.biases):
        assert torch.equal(linear.weight, weight[replica])
        assert torch.equal(linear.bias, bias[replica])
    assert model.in_perm[replica].tolist() == literal.in_perm.long().tolist()
    assert model.out_perm[replica].tolist() == literal.out_perm.long().tolist()


@pytest.mark.parametrize("shape,in_fold", SHAPES)
@pytest.mark.parametrize("seed", range(5))
def test_candidate_costs_equal_swap_recompute_unswap_bit_for_bit(shape, in_fold, seed):
    model = random_state(shape, in_fold, seed)
    for layer in range(model.depth + 1):
        j = torch.randint(positions(model, layer), (model.replicas,), generator=torch.Generator().manual_seed(layer))
        costs = candidate_costs(model, layer, j)
        for r in range(model.replicas):
            assert torch.equal(costs[r], literal_copy(model, r).candidate_costs(layer, int(j[r])))


@pytest.mark.parametrize("shape,in_fold", SHAPES)
@pytest.mark.parametrize("seed", range(10))
def test_relocation_makes_the_literal_searchs_swaps(shape, in_fold, seed):
    model = random_state(shape, in_fold, seed)
    literals = [literal_copy(model, r) for r in range(model.replicas)]
    relocate(model, top_k=5)
    for r, literal in enumerate(literals):
        literal.relocate(top_k=5)
        assert_same_network(model, r, literal)


@pytest.mark.parametrize("shape", GRID_SHAPES)
@pytest.mark.parametrize("seed", range(5))
def test_on_grids_candidate_costs_equal_the_notebooks_swap_recompute_unswap(shape, seed):
    """The MNIST notebook's literal search (L1 wire lengths, outputs on a ring, weight factor 2) for
    every layer whose neurons move: the input layer's stay (its swap is a no-op)."""
    model = random_state(shape, 1, seed, geometry="grid")
    for layer in range(1, model.depth + 1):
        j = torch.randint(positions(model, layer), (model.replicas,), generator=torch.Generator().manual_seed(layer))
        costs = candidate_costs(model, layer, j, locality=2.0)
        for r in range(model.replicas):
            assert torch.equal(costs[r], literal_copy(model, r).candidate_costs(layer, int(j[r])))


@pytest.mark.parametrize("shape", GRID_SHAPES)
@pytest.mark.parametrize("seed", range(10))
def test_on_grids_relocation_makes_the_notebooks_swaps_and_keeps_the_pixels(shape, seed):
    model = random_state(shape, 1, seed, geometry="grid")
    in_perm = model.in_perm.clone()
    literals = [literal_copy(model, r) for r in range(model.replicas)]
    relocate(model, top_k=30, locality=2.0, inputs=False)
    assert torch.equal(model.in_perm, in_perm)
    for r, literal in enumerate(literals):
        literal.relocate(top_k=30)
        assert_same_network(model, r, literal)


@pytest.mark.parametrize("shape,in_fold", SHAPES)
def test_exact_ties_between_dead_neurons_resolve_as_the_literal_search_does(shape, in_fold):
    """Dead neurons (no weights) swap at no cost: ties that only exact float32 sums can break."""
    model = random_state(shape, in_fold, seed=7)
    with torch.no_grad():
        for layer in range(1, model.depth):
            dead = torch.arange(model.shape[layer]) % 3 != 0
            model.weights[layer - 1][:, dead] = 0
            model.weights[layer][:, :, dead] = 0
    literals = [literal_copy(model, r) for r in range(model.replicas)]
    relocate(model, top_k=5)
    for r, literal in enumerate(literals):
        literal.relocate(top_k=5)
        assert_same_network(model, r, literal)


def test_relocation_in_a_trained_network_makes_the_literal_searchs_swaps():
    task = TASKS["independence"]
    seeds = [0, 1, 2, 3]
    data = stack_datasets([make_dataset(task, s) for s in seeds], torch.device("cpu"))
    model = BioMLP([4, 20, 20, 2], seeds)
    off = torch.zeros(4, dtype=torch.bool)
    replicas = ReplicaSettings(l1=~off, locality=torch.ones(4), swap=off)

    for _ in range(5):
        train(model, data, replicas, Schedule(), TrainSettings(300, "eager", progress=False), NullLogger())
        literals = [literal_copy(model, r) for r in range(4)]
        relocate(model)
        for r, literal in enumerate(literals):
            literal.relocate()
            assert_same_network(model, r, literal)


@pytest.mark.parametrize("shape,in_fold", SHAPES)
def test_relocation_never_raises_the_cost_it_optimises(shape, in_fold):
    for seed in range(10):
        model = random_state(shape, in_fold, seed)
        before = connection_cost(model, 1.0, penalize_bias=True)
        relocate(model)
        assert torch.all(connection_cost(model, 1.0, penalize_bias=True) <= before)


def test_replicas_with_swap_off_are_left_alone():
    model = random_state([4, 20, 20, 2], 1, seed=0)
    before = [w.detach().clone() for w in model.weights]
    relocate(model, enabled=torch.tensor([True, False, True]))
    assert torch.equal(model.weights[1][1], before[1][1])
    assert not torch.equal(model.weights[1][0], before[1][0])


def test_optimizer_moments_follow_their_weights_when_asked():
    model = random_state([4, 20, 20, 2], 1, seed=1, replicas=1)
    optimizer = AdamW(model.params, lr=0.002)
    with torch.no_grad():  # tag each moment with its own weight, to follow it
        optimizer.exp_avg.copy_(model.params)
        optimizer.exp_avg_sq.copy_(-model.params)
    before = model.params.detach().clone()
    relocate(model, optimizer=optimizer)
    assert not torch.equal(model.params, before)
    assert torch.equal(optimizer.exp_avg, model.params)
    assert torch.equal(optimizer.exp_avg_sq, -model.params)
