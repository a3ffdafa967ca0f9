"""`python train.py` as a user runs it: per-run outputs, TensorBoard read-back, reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2

from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP

from conftest import read_events, scalars, train_cli

STEPS = 400


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    result = train_cli("task=feature_sharing", "train_type=5", f"steps={STEPS}", "log_every=50",
                       "snapshot_every=100", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert "test MSE" in result.stdout
    dependencies = json.loads((run_dir / "metrics.json").read_text())["dependencies"]
    inputs = [", ".join(f"x{i + 1}" for i, row in enumerate(dependencies) if row[o]) for o in range(3)]
    formulas = ["x1^2", "x1^2+x2^2", "x1^2+x2^2+x3^2"]  # in plain text: the terminal shows no LaTeX
    assert result.stdout.strip().splitlines()[-3:] == [f"{f} <- {{{i}}}" for f, i in zip(formulas, inputs)]
    return run_dir


def test_metrics_json_holds_the_final_numbers(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert (metrics["task"], metrics["train_type"], metrics["seed"], metrics["steps"]) == ("feature_sharing", 5, 4, STEPS)
    assert sorted(metrics["in_perm"]) == [0, 1, 2] and sorted(metrics["out_perm"]) == [0, 1, 2]
    assert 0 < metrics["test_mse"] < 1 and 0 < metrics["train_mse"] < 1
    assert 0 < metrics["n_active_weights"] <= 3 * 20 + 20 * 20 + 20 * 3
    assert metrics["wall_s"] > 0
    assert metrics["active_weights_1e-2"] == metrics["n_active_weights"] <= metrics["active_weights_1e-3"]
    assert metrics["pruned_test_mse"] > 0 and metrics["components"] >= 1
    assert np.array(metrics["dependencies"]).shape == (3, 3) and len(metrics["wire_length"]) == 3
    assert isinstance(metrics["expected_structure_found"], bool)


def test_checkpoint_restores_the_final_network(run_dir):
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == STEPS
    assert checkpoint["config"]["task"]["name"] == "feature_sharing"
    assert checkpoint["optimizer"]["step"] == STEPS
    assert checkpoint["optimizer"]["exp_avg"].abs().sum() > 0, "optimizer moments are saved"
    model = BioMLP(checkpoint["shape"], seeds=[0])
    model.load_state_dict(checkpoint["model"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert model.in_perm[0].tolist() == metrics["in_perm"]
    assert connection_cost(model).item() == pytest.approx(metrics["connection_cost"], rel=1e-6)


def test_figures_are_written(run_dir):
    for name in ("network.png", "pred_vs_true.png"):
        with Image.open(run_dir / name) as image:
            assert image.width > 100 and image.height > 100


def test_tensorboard_has_scalars_images_and_hparams(run_dir):
    # One event file: TensorBoard orders files by name, and a second one named in the same second
    # could be read first, its final metrics then dropped by the first file's purge marker.
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    logged = scalars(run_dir)
    for tag in ("loss/train", "loss/test", "loss/total", "cost/connection", "lambda"):
        assert sorted(logged[tag]) == list(range(0, STEPS, 50)), tag
    lam = logged["lambda"]
    assert lam[0] == pytest.approx(1e-3) and lam[100] == pytest.approx(1e-2) and lam[300] == pytest.approx(1e-3)
    for step, total in logged["loss/total"].items():
        expected = logged["loss/train"][step] + lam[step] * logged["cost/connection"][step]
        assert total == pytest.approx(expected, rel=1e-5)

    events = read_events(run_dir)
    network_steps = [image.step for image in events.Images("network")]
    assert network_steps == [0, 100, 200, 300, STEPS]
    assert [image.step for image in events.Images("pred_vs_true")] == [STEPS]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info.hparams
    assert hparams["train_type"].number_value == 5
    assert hparams["task.name"].string_value == "feature_sharing"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert logged["final/test_mse"][STEPS] == pytest.approx(metrics["test_mse"], rel=1e-6)
    assert logged["modularity/pruned_test_mse"][STEPS] == pytest.approx(metrics["pruned_test_mse"], rel=1e-6)
    assert logged["modularity/components"][STEPS] == metrics["components"]
    assert logged["modularity/wire_length/layer2"][STEPS] == pytest.approx(metrics["wire_length"][2], rel=1e-6)
    assert logged["modularity/modularity_q"][STEPS] == pytest.approx(metrics["modularity_q"], rel=1e-6)
    assert "modularity_q_task" not in metrics  # feature sharing's outputs all read x1: no modules of its own
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    shown = {info.name.tag for info in experiment.metric_infos}
    assert {"final/test_mse", "modularity/modularity_q"} <= shown


def test_same_config_and_seed_give_the_same_numbers(run_dir, tmp_path):
    again = tmp_path / "again"
    result = train_cli("task=feature_sharing", "train_type=5", f"steps={STEPS}", "log_every=50",
                       "snapshot_every=100", f"hydra.run.dir={again}")
    assert result.returncode == 0, result.stderr
    first = json.loads((run_dir / "metrics.json").read_text())
    second = json.loads((again / "metrics.json").read_text())
    first.pop("wall_s"), second.pop("wall_s")
    assert first == second
    assert scalars(run_dir)["loss/test"] == scalars(again)["loss/test"]


def test_a_different_seed_gives_different_numbers(run_dir, tmp_path):
    other = tmp_path / "other"
    result = train_cli("task=feature_sharing", "train_type=5", f"steps={STEPS}", "seed=5", "log_every=50",
                       "snapshot_every=0", f"hydra.run.dir={other}")
    assert result.returncode == 0, result.stderr
    assert json.loads((other / "metrics.json").read_text())["seed"] == 5
    assert scalars(other)["loss/train"][0] != scalars(run_dir)["loss/train"][0]
