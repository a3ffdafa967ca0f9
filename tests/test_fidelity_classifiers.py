"""Fidelity for Sections 3.2-3.3: two moons, modular addition and S4 compute what their notebooks compute.

The literal loops of the notebooks (`reference.py`: nn.Linear layers, autograd, nn.CrossEntropyLoss,
the embedding looked up on every step, swap-recompute-unswap relocation), with the notebooks'
settings written out here, are matched bit for bit by a single eager run of the task's config: every
logged loss, accuracy and cost, the final parameters and the permutations. Both sides call the same
kernels in the same order, so this holds on any CPU. The notebooks hard-code their lambda steps for
their full length; over these shorter runs both sides place them at the same fractions of training.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir

from bimt.experiment.plan import plan_group
from bimt.experiment.validate import load_config, validate
from bimt.reference import literal_classifier_train, notebook
from bimt.training import RecordingLogger, train

from conftest import REPO

STEPS = 1000  # relocations after steps 199, 399, ..., 999; lambda changes at 250 / 500 / 750


def composed(task: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return load_config(compose("config", [f"task={task}", f"steps={STEPS}", "engine=eager"]))


@pytest.mark.parametrize("task_name", ["two_moons", "modular_addition", "permutation_s4"])
def test_eager_run_equals_the_notebook_loop_bit_for_bit(task_name):
    literal, literal_data, lr, lambdas, weight_factor, top_k = notebook(task_name, STEPS)
    expected = literal_classifier_train(literal, literal_data, STEPS, lr, lambdas, weight_factor, top_k, log_every=10)

    config = composed(task_name)
    plan, recorder = plan_group([config], validate(config)), RecordingLogger()
    model = plan.model
    settings = replace(plan.settings, log_every=10, snapshot_every=0, checkpoint_every=0, progress=False)
    train(model, plan.data, plan.replicas, config.schedule, settings, recorder)

    tags = ("loss/train", "loss/test", "acc/train", "acc/test", "cost/connection")
    logged = {step: tuple(row[tag][0] for tag in tags) for step, row in recorder.rows.items()}
    assert logged == expected
    literal_params = torch.cat([p.detach().flatten() for p in literal.linears.parameters()]
                               + ([] if literal.embedding is None else [literal.embedding.detach().flatten()]))
    assert torch.equal(model.params.detach()[0], literal_params)
    assert model.in_perm[0].tolist() == literal.in_perm.long().tolist()
    assert model.out_perm[0].tolist() == literal.out_perm.long().tolist()
