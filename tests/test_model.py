"""BioMLP: initialisation, forward pass, and swaps that must not change what the network computes."""

from __future__ import annotations

import pytest
import torch

from bimt.network.model import BioMLP
from bimt.network.relocation import apply_permutation, positions, swap_candidates
from bimt.reference import literal_model

SHAPES = [([4, 20, 20, 2], 1), ([3, 20, 20, 3], 1), ([4, 20, 20, 20, 20, 1], 1), ([6, 8, 5, 4], 2)]


@pytest.mark.parametrize("shape,in_fold", SHAPES)
def test_initial_weights_are_nn_linear_defaults_after_manual_seed(shape, in_fold):
    reference = literal_model(shape, seed=7, in_fold=in_fold)
    model = BioMLP(shape, seeds=[7], in_fold=in_fold)
    for linear, weight, bias in zip(reference.linears, model.weights, model.biases):
        assert torch.equal(linear.weight, weight[0])
        assert torch.equal(linear.bias, bias[0])


@pytest.mark.parametrize("shape,in_fold", SHAPES)
def test_forward_matches_literal_network_with_permutations(shape, in_fold):
    reference = literal_model(shape, seed=3, in_fold=in_fold)
    model = BioMLP(shape, seeds=[3], in_fold=in_fold)
    generator = torch.Generator().manual_seed(0)
    reference.in_perm = torch.randperm(shape[0] // in_fold, generator=generator).float()
    reference.out_perm = torch.randperm(shape[-1], generator=generator).float()
    model.in_perm[0] = reference.in_perm.long()
    model.out_perm[0] = reference.out_perm.long()
    x = torch.rand(50, shape[0], generator=generator) * 2 - 1
    assert torch.equal(reference(x), model(x)[0])


def test_replicas_compute_what_single_networks_compute():
    shape = [4, 20, 20, 2]
    batched = BioMLP(shape, seeds=[0, 1, 2])
    x = torch.rand(3, 30, 4) * 2 - 1
    out = batched(x)
    for r, seed in enumerate([0, 1, 2]):
        single = BioMLP(shape, seeds=[seed])
        torch.testing.assert_close(out[r], single(x[r : r + 1])[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,in_fold", SHAPES)
def test_any_swap_in_any_layer_leaves_the_function_unchanged(shape, in_fold):
    model = BioMLP(shape, seeds=[0, 1], in_fold=in_fold)
    x = torch.rand(40, shape[0]) * 2 - 1
    before_out = model(x)
    before_weights = [w.detach().clone() for w in model.weights]
    for layer in range(model.depth + 1):
        n = positions(model, layer)
        first_with_last = swap_candidates(model, layer, torch.tensor([0, n - 1]))[:, n - 1]
        apply_permutation(model, layer, first_with_last)
    assert all(not torch.equal(w, b) for w, b in zip(model.weights, before_weights))
    assert model.in_perm[0, 0] == model.n_input_positions - 1
    assert model.out_perm[0, 0] == shape[-1] - 1
    torch.testing.assert_close(model(x), before_out, rtol=1e-5, atol=1e-6)
