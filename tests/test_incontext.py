"""task=incontext end to end: a training run's files, TensorBoard tags and metrics; its mistakes as one
line; a batched group equal to its single runs; a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from bimt.experiment.plan import plan_group
from bimt.experiment.report import write_report
from bimt.experiment.validate import load_config, validate
from bimt.tasks.incontext import SequenceDraws, regression_data, task_weights
from bimt.training import RecordingLogger, make_optimizer, train

from conftest import REPO, read_events, train_cli

SMALL = ["task=incontext", "model.width=8", "model.hidden=[16]", "steps=60", "log_every=20", "snapshot_every=30"]


def composed(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return load_config(compose("config", list(overrides)))


def test_a_run_writes_its_metrics_figures_and_tensorboard_tags(tmp_path):
    result = train_cli(*SMALL, "relocate.every=20", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    for name in ("network.png", "incontext_predictions.png", "w_neurons.png", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    for key in ("train_mse", "test_mse", "test_last_mse", "probe_w_r2", "connection_cost", "n_active_weights"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["test_last_mse"] and metrics["probe_w_r2"] <= 1
    events = read_events(tmp_path)
    assert [event.step for event in events.Scalars("loss/test_last")] == [0, 20, 40]
    assert "network" in events.Tags()["images"] and "w_neurons" in events.Tags()["images"]
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "test MSE, last position" in report and f"{metrics['test_last_mse']:.2e}" in report
    located = subprocess.run([sys.executable, str(REPO / "scripts" / "w_neurons.py"), str(tmp_path), "--json",
                              str(tmp_path / "w.json")], capture_output=True, text=True, timeout=300)
    assert located.returncode == 0, located.stderr
    (row,) = json.loads((tmp_path / "w.json").read_text())[str(tmp_path)]
    assert row["probe_w_r2"] == metrics["probe_w_r2"] and 1 <= row["neurons_for_90%"] <= 8


@pytest.mark.parametrize("override,named", [
    ("model.heads=3", "model.width=8 does not split into model.heads=3"),
    ("model.heads=0", "model.heads=0 is not allowed"),
    ("model.blocks=0", "model.blocks=0 is not allowed"),
    ("task.pairs=0", "task.pairs=0 is not allowed"),
    ("relocate.every=0", "relocate.every=0 is not allowed"),
    ("engine=native", "engine=native runs MLPs only"),
])
def test_a_mistake_is_one_line_and_exit_2_before_training(override, named, tmp_path):
    result = train_cli(*SMALL, override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and named in lines[0]
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize("task,model,named", [("independence", "transformer", "model.architecture=transformer does not "
                                                 "fit task independence, which trains an MLP; use model=mlp2"),
                                                ("incontext", "mlp2", "model.architecture=mlp does not fit task "
                                                 "incontext, which trains a transformer; use model=transformer")])
def test_a_model_that_does_not_fit_the_task_is_one_line(task, model, named, tmp_path):
    result = train_cli(f"task={task}", f"model={model}", "steps=10", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {named}"


def trained(configs, should_stop=lambda: False):
    plan = plan_group(configs, validate(configs[0]))
    settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
    recorder = RecordingLogger()
    result = train(plan.model, plan.data, plan.replicas, configs[0].schedule, settings, recorder, should_stop=should_stop)
    return plan, recorder, result


def test_each_replica_of_a_batched_group_is_its_single_run_bit_for_bit():
    configs = [composed(*SMALL, f"seed={seed}", "relocate.every=20") for seed in (1, 2)]
    batched, batched_rows, _ = trained(configs)
    for r, config in enumerate(configs):
        alone, alone_rows, _ = trained([config])
        assert torch.equal(batched.model.params.detach()[r], alone.model.params.detach()[0])
        assert {s: {t: v[r] for t, v in row.items()} for s, row in batched_rows.rows.items()} == \
               {s: {t: v[0] for t, v in row.items()} for s, row in alone_rows.rows.items()}


def test_a_resumed_run_draws_the_minibatches_an_uninterrupted_one_draws():
    config = composed(*SMALL)
    whole, _, _ = trained([config])
    first, _, stopped = trained([config], should_stop=lambda: True)  # stops at its first event, step 20
    assert 0 < stopped.steps_done < config.steps
    plan = plan_group([config], validate(config))  # fresh data: the minibatch stream replays to that step
    plan.model.load_state_dict(first.model.state_dict())
    settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
    optimizer = make_optimizer(plan.model, settings)
    optimizer.load_state_dict(stopped.optimizer.state_dict())
    train(plan.model, plan.data, plan.replicas, config.schedule, settings, RecordingLogger(), optimizer,
          stopped.steps_done)
    assert torch.equal(plan.model.params, whole.model.params)


def test_sequence_draws_at_any_step_are_those_of_the_stream_walked_in_order():
    walked = SequenceDraws(100, 0.8, 5, [3, 4])
    steps = [walked.indices(step) for step in range(12)]
    for step in (7, 2, 11, 0):
        assert torch.equal(SequenceDraws(100, 0.8, 5, [3, 4]).indices(step), steps[step])
    assert torch.equal(walked.replica_subset(slice(1, 2)).indices(12), walked.indices(12)[1:])


def test_the_data_are_tokens_of_one_w_per_sequence():
    data = regression_data(seed=5, sequences=50, pairs=3, dim=1, fraction=0.8)
    assert data.train_x.shape == (40, 5, 2) and data.test_x.shape == (10, 5, 2)
    w = task_weights(data.train_x, data.train_y)
    x = data.train_x[:, 0::2, 1]
    torch.testing.assert_close(data.train_y[:, 0::2, 0], w[:, None] * x, rtol=1e-15, atol=1e-15)
    assert torch.equal(data.train_x[:, 1:, :], data.train_y[:, :-1, :])
    assert ((w >= -1) & (w <= 1)).all() and ((x >= 1) & (x <= 3)).all()
