"""Fidelity for Section 3.4: a single eager run of `task=incontext` computes what the notebook's loop computes.

The literal loop (`bimt.reference`: nn.Linear layers, autograd, the notebook's cost and its
swap-recompute-unswap relocation, its numpy stream of minibatch draws) is matched bit for bit by a
single eager run of the task's config: every logged loss and cost, the final parameters and the
permutations, over 1000 steps, with the notebook's setting (no swaps) at full width and with swaps
every 250 steps on a narrower network (the literal relocation of the full one takes 20 s a call).
Both sides call the same kernels in the same order, so this holds on any CPU.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir

from bimt.experiment.plan import plan_group
from bimt.experiment.validate import load_config, validate
from bimt.reference import literal_incontext_train, literal_regression_data, literal_transformer
from bimt.tasks.incontext import draw_tasks
from bimt.training import RecordingLogger, train

from conftest import REPO

STEPS = 1000  # lambda x10 at 250 and again at 750


def composed(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return load_config(compose("config", ["task=incontext", f"steps={STEPS}", *overrides]))


@pytest.mark.parametrize("width,swap_every", [(32, None), (8, 250)])
def test_eager_run_equals_the_notebook_loop_bit_for_bit(width, swap_every):
    overrides = [f"model.width={width}", f"model.hidden=[{4 * width}]"]
    if swap_every is not None:
        overrides.append(f"relocate.every={swap_every}")
    config = composed(*overrides)
    plan, recorder = plan_group([config], validate(config)), RecordingLogger()
    settings = replace(plan.settings, log_every=50, snapshot_every=0, checkpoint_every=0, progress=False)
    train(plan.model, plan.data, plan.replicas, config.schedule, settings, recorder)

    data, _ = literal_regression_data(seed=1)
    literal = literal_transformer(1, prelude=lambda: draw_tasks(10000, 2, 1), width=width, mlp_width=4 * width)
    expected = literal_incontext_train(literal, data, STEPS, log_every=50, swap_every=swap_every)

    tags = ("loss/train", "loss/test", "loss/test_last", "cost/connection")
    assert {step: tuple(row[tag][0] for tag in tags) for step, row in recorder.rows.items()} == expected
    model = plan.model
    for layer, weight, bias in zip(literal.maps(), model.weights, model.biases):
        assert torch.equal(layer.linear.weight, weight[0])
        assert torch.equal(layer.linear.bias, bias[0])
    assert model.in_perm[0].tolist() == literal.in_perm.long().tolist()
    assert model.out_perm[0].tolist() == literal.out_perm.long().tolist()
    if swap_every is not None:  # the swaps moved something, or this would test nothing of relocation
        fresh = literal_transformer(1, prelude=lambda: draw_tasks(10000, 2, 1), width=width, mlp_width=4 * width)
        trained_without = literal_incontext_train(fresh, data, STEPS, log_every=50, swap_every=None)
        assert trained_without != expected
