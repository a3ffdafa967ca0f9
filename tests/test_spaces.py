"""Networks of neuron spaces, on random states of MLPs, grids and transformers: a swap leaves the
function unchanged, relocation never raises the cost it optimises, and the closed-form swap prices
equal swap-recompute-unswap (the literal search's sums, bit for bit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from bimt.experiment.plan import plan_group
from bimt.experiment.validate import load_config, validate
from bimt.network.cost import connection_cost, positions, wire_factors
from bimt.network.model import BioMLP
from bimt.network.relocation import (
    apply_permutation,
    candidate_costs,
    head_swap_candidates,
    placement_costs,
    relocate,
    swap_candidates,
)
from bimt.network.transformer import BioTransformer
from bimt.reference import literal_transformer_copy
from bimt.training import NullLogger, train

from conftest import REPO

SEEDS = st.integers(0, 2**20)
TRANSFORMERS = [dict(width=8, heads=1, blocks=2, mlp_width=16), dict(width=8, heads=2, blocks=1, mlp_width=12),
                dict(width=12, heads=3, blocks=2, mlp_width=8, layer_norm=True)]


def sparse(model, seed: int):
    """Heavy-tailed, half-zero weights, shuffled permutations and non-trivial LayerNorms: a state
    like a trained BIMT network's, with exact ties among the zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        flat = model.params
        flat.mul_(torch.empty(flat.shape, dtype=flat.dtype).exponential_(generator=generator))
        flat.mul_(torch.rand(flat.shape, generator=generator) > 0.5)
        for r in range(model.replicas):
            model.in_perm[r] = torch.randperm(model.in_perm.shape[1], generator=generator)
            model.out_perm[r] = torch.randperm(model.out_perm.shape[1], generator=generator)
    return model


def models(seed: int) -> list:
    """An MLP with input folds, a grid MLP and the transformers, two replicas each, in random states."""
    built = [BioMLP([6, 8, 5, 4], [seed, seed + 1], in_fold=2),
             BioMLP([16, 9, 9, 4], [seed, seed + 1], l0=0.5, mean_cost=True, geometry="grid")]
    built += [BioTransformer(2, 2, [seed, seed + 1], **shape) for shape in TRANSFORMERS]
    return [sparse(model, seed) for model in built]


def inputs(model, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, BioTransformer):
        return torch.rand(model.replicas, 5, 3, model.inputs, generator=generator, dtype=model.params.dtype)
    return torch.rand(model.replicas, 7, model.shape[0], generator=generator)


@settings(max_examples=10, deadline=None)
@given(SEEDS)
def test_a_swap_in_any_space_leaves_the_function_unchanged(seed):
    for model in models(seed):
        x = inputs(model, seed)
        before = model(x)
        rng = np.random.default_rng(seed)
        for space in range(len(model.network.spaces)):
            n = positions(model, space)
            j = torch.from_numpy(rng.integers(0, n, model.replicas))
            k = torch.from_numpy(rng.integers(0, model.network.spaces[space].head_size, model.replicas))
            apply_permutation(model, space, swap_candidates(model, space, j)[torch.arange(model.replicas), k])
            if model.network.spaces[space].heads > 1:
                block = torch.from_numpy(rng.integers(0, model.network.spaces[space].heads, model.replicas))
                candidates = head_swap_candidates(model, space, block)
                apply_permutation(model, space, candidates[torch.arange(model.replicas), block.flip(0)])
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(SEEDS)
def test_relocation_never_raises_the_cost_it_optimises(seed):
    for model in models(seed):
        locality = 2.0
        before = connection_cost(model, locality)
        relocate(model, top_k=4, locality=locality)
        assert (connection_cost(model, locality) <= before * (1 + 1e-6)).all()


@settings(max_examples=10, deadline=None)
@given(SEEDS)
def test_closed_form_swap_prices_equal_swap_recompute_unswap(seed):
    for model in models(seed):
        weights = [w.detach() for w in model.weights]
        prices = [p.double().numpy() / (p.numel() if model.mean_cost else 1) for p in wire_factors(model, 2.0)]
        rng = np.random.default_rng(seed)
        for space in range(len(model.network.spaces)):
            j = torch.from_numpy(rng.integers(0, positions(model, space), model.replicas))
            literal = candidate_costs(model, space, j, locality=2.0).double().numpy()
            placement = placement_costs(model, weights, prices, space)
            head = model.network.spaces[space].head_size
            for r in range(model.replicas):
                a = int(j[r])
                ks = a // head * head + np.arange(head)
                closed = placement[r, a, ks] + placement[r, ks, a] - placement[r, a, a] - placement[r, ks, ks]
                np.testing.assert_allclose(closed, literal[r] - literal[r, a - ks[0]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", TRANSFORMERS)
@pytest.mark.parametrize("seed", range(3))
def test_transformer_candidate_costs_equal_the_notebooks_swap_recompute_unswap_bit_for_bit(shape, seed):
    model = sparse(BioTransformer(2, 2, [seed, seed + 1], **shape), seed)
    for space in model.network.relocation_order:
        j = torch.randint(positions(model, space), (model.replicas,), generator=torch.Generator().manual_seed(space))
        costs = candidate_costs(model, space, j, locality=2.0)
        head = model.network.spaces[space].head_size
        for r in range(model.replicas):
            literal = literal_transformer_copy(model, r)
            layer = _neuron_layer(literal, model, space)
            expected = []
            for p in range(head):
                k = int(j[r]) // head * head + p
                literal.move(layer, int(j[r]), k)
                expected.append(literal.cost())
                literal.move(layer, int(j[r]), k)
            assert torch.equal(costs[r], torch.stack(expected))


def _neuron_layer(literal, model: BioTransformer, space: int) -> int:
    """The notebook's neuron-layer index of a space: the output, then per block from the top its
    MLP hidden and attention layers, the residual stream (its first layer) and the input."""
    names = {"input": 0, "residual": literal.residual[0], "output": len(literal.layers)}
    for b in range(model.blocks):
        names[f"attention {b + 1}"] = 3 + 6 * b
        names[f"mlp {b + 1} hidden"] = 6 + 6 * b
    return names[model.network.spaces[space].name]


@pytest.mark.parametrize("shape", TRANSFORMERS)
@pytest.mark.parametrize("seed", range(3))
def test_transformer_relocation_makes_the_notebooks_swaps(shape, seed):
    model = sparse(BioTransformer(2, 2, [seed, seed + 1], **shape), seed)
    literals = [literal_transformer_copy(model, r) for r in range(model.replicas)]
    relocate(model, top_k=20, locality=2.0)
    for r, literal in enumerate(literals):
        literal.relocate()
        assert_same_transformer(model, r, literal)


def assert_same_transformer(model: BioTransformer, replica: int, literal) -> None:
    expected = literal_transformer_copy(model, replica)
    for mine, theirs in zip(expected.parameters(), literal.parameters()):
        assert torch.equal(mine, theirs)


def test_transformer_relocation_in_a_trained_network_makes_the_notebooks_swaps():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        config = load_config(compose("config", ["task=incontext", "steps=400", "model.width=8", "model.heads=2",
                                                "model.hidden=[16]", "seed=3", "log_every=400"]))
    plan = plan_group([config], validate(config))
    settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
    train(plan.model, plan.data, plan.replicas, config.schedule, settings, NullLogger())
    literal = literal_transformer_copy(plan.model)
    relocate(plan.model, top_k=20, locality=2.0)
    literal.relocate()
    assert_same_transformer(plan.model, 0, literal)
