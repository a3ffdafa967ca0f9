"""The flat AdamW performs torch.optim.AdamW's arithmetic exactly."""

from __future__ import annotations

import pytest
import torch

from bimt.network.optim import AdamW


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("foreach", [True, False])
def test_flat_adamw_equals_torch_adamw_bit_for_bit(weight_decay, foreach):
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 20, 4), (3, 20), (3, 2, 20), (3, 2)]
    reference = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(3, -1) for p in reference], dim=1))
    torch_adamw = torch.optim.AdamW(reference, lr=0.002, weight_decay=weight_decay, foreach=foreach)
    ours = AdamW(flat, lr=0.002, weight_decay=weight_decay)
    for _ in range(300):
        grads = [torch.randn(shape, generator=generator) * 10 ** torch.randint(-6, 2, (), generator=generator)
                 for shape in shapes]
        for p, g in zip(reference, grads):
            p.grad = g
        flat.grad = torch.cat([g.reshape(3, -1) for g in grads], dim=1)
        torch_adamw.step()
        ours.step()
    assert torch.equal(flat.detach(), torch.cat([p.detach().reshape(3, -1) for p in reference], dim=1))
    assert ours.steps == 300


def test_state_round_trips_through_state_dict():
    flat = torch.nn.Parameter(torch.randn(2, 30))
    optimizer = AdamW(flat, lr=0.01, weight_decay=0.0)
    for _ in range(5):
        flat.grad = torch.randn(2, 30)
        optimizer.step()
    restored = AdamW(torch.nn.Parameter(flat.detach().clone()), lr=0.01, weight_decay=0.0)
    restored.load_state_dict({key: value.clone() if torch.is_tensor(value) else value
                              for key, value in optimizer.state_dict().items()})
    grad = torch.randn(2, 30)
    flat.grad, restored.params.grad = grad, grad.clone()
    optimizer.step()
    restored.step()
    assert torch.equal(flat, restored.params)
