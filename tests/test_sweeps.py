"""Sweeps: the batched launcher (outputs and equality with single runs, group size), the ablation preset."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO, job_dirs, metrics_without_timing, scalars, train_cli

GRID = ["task=independence", "train_type=1,2,3,4,5", "seed=0,1,2"]
EQUALITY_STEPS = ["steps=1000", "log_every=50", "snapshot_every=0"]


@pytest.fixture(scope="module")
def batched_and_alone(tmp_path_factory):
    """The same 15 jobs (all five train types x three seeds), batched and one by one."""
    root = tmp_path_factory.mktemp("sweeps")
    for name, launcher in (("batched", ["hydra/launcher=batched"]), ("alone", [])):
        result = train_cli("-m", *launcher, *GRID, *EQUALITY_STEPS, f"hydra.sweep.dir={root / name}")
        assert result.returncode == 0, result.stderr
    return root / "batched", root / "alone"



def test_every_job_of_a_batched_group_gets_the_outputs_of_a_single_run(batched_and_alone):
    batched, alone = batched_and_alone
    assert [d.name for d in job_dirs(batched)] == [d.name for d in job_dirs(alone)]
    assert len(job_dirs(batched)) == 15
    for run_dir in job_dirs(batched):
        names = {path.name for path in run_dir.iterdir()}
        assert {".hydra", "metrics.json", "checkpoint.pt", "network.png", "pred_vs_true.png"} <= names
        assert any(name.startswith("events.out.tfevents") for name in names)
        assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("train_type=") == 1


def test_job_r_of_a_batched_group_equals_the_same_job_run_alone(batched_and_alone):
    """Bit for bit with the default native engine: each replica runs in the same compiled code whatever
    its group holds, and final metrics are computed replica by replica (see test_engines)."""
    batched, alone = batched_and_alone
    for together, single in zip(job_dirs(batched), job_dirs(alone)):
        logged, expected = scalars(together), scalars(single)
        assert sorted(logged) == sorted(expected)
        assert logged["loss/train"][0] == expected["loss/train"][0], "the same data and initial weights"
        for tag, series in expected.items():
            assert sorted(logged[tag]) == sorted(series), tag
            for step, value in series.items():
                assert logged[tag][step] == value, (together.name, tag, step)
        assert metrics_without_timing(together) == metrics_without_timing(single)
        checkpoint, alone_checkpoint = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (together, single))
        assert checkpoint["config"] == alone_checkpoint["config"]
        assert torch.equal(checkpoint["model"]["params"], alone_checkpoint["model"]["params"])


def test_max_group_caps_the_group_size(tmp_path):
    sweep = tmp_path / "sweep"
    result = train_cli("-m", "hydra/launcher=batched", "hydra.launcher.max_group=2", "train_type=1,2,3,4,5",
                       "steps=50", "snapshot_every=0", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("Training 2 job(s) as one batched model") == 2
    assert output.count("Training 1 job(s) as one batched model") == 1
    assert len(job_dirs(sweep)) == 5


def test_the_ablation_preset_is_every_task_train_type_and_ten_seeds_batched():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = compose(config_name="config", overrides=["+sweep=ablation"], return_hydra_config=True)
    params = config.hydra.sweeper.params
    assert params.task.split(",") == ["independence", "feature_sharing", "compositionality"]
    assert params.train_type.split(",") == ["1", "2", "3", "4", "5"] and params.seed == "range(10)"
    assert config.hydra.mode.name == "MULTIRUN"
    assert config.hydra.launcher._target_.endswith("BatchedLauncher")
    assert config.hydra.sweeper.compose_every_job_first is False


def test_the_ablation_preset_runs_as_typed(tmp_path):
    sweep = tmp_path / "ablation"
    result = train_cli("+sweep=ablation", "hydra.sweeper.params.seed=0", "hydra.sweeper.params.task=independence",
                       "steps=50", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    names = [d.name for d in job_dirs(sweep)]
    assert names == [f"seed=0,steps=50,task=independence,train_type={t}" for t in range(1, 6)]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_single_run_and_batched_group_match_the_cpu(tmp_path):
    common = ["engine=eager", "train_type=2,5", "seed=0,1", "steps=300", "log_every=50", "snapshot_every=0"]
    for name, extra in (("cpu", ["device=cpu"]), ("cuda", ["device=cuda"]),
                        ("cuda_batched", ["device=cuda", "hydra/launcher=batched"])):
        result = train_cli("-m", *common, *extra, f"hydra.sweep.dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr
    for cpu_dir in job_dirs(tmp_path / "cpu"):
        expected = scalars(cpu_dir)["loss/train"]
        for name in ("cuda", "cuda_batched"):
            logged = scalars(tmp_path / name / cpu_dir.name)["loss/train"]
            for step in (0, 50):  # before the lambda boost, where float rounding has not yet grown
                assert logged[step] == pytest.approx(expected[step], rel=1e-4)


@pytest.mark.parametrize("option", ["hydra.launcher.max_group=0", "hydra.launcher.n_jobs=-1"])
def test_a_bad_batched_launcher_option_is_one_line(tmp_path, option):
    result = train_cli("-m", "hydra/launcher=batched", option, "train_type=1,2", f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {option} is not allowed; it must be an integer >= 1"]
    assert not (tmp_path / "s").exists()


def test_a_renamed_option_names_its_new_name(tmp_path):
    result = train_cli("-m", "hydra/launcher=batched", "hydra.launcher.max_batch=2", "train_type=1,2",
                       f"hydra.sweep.dir={tmp_path / 's'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra.launcher.max_batch is now hydra.launcher.max_group; use hydra.launcher.max_group=2"]


@pytest.mark.parametrize("engine", ["native", "eager"])
def test_jobs_that_differ_in_lambda_train_in_one_group_to_their_single_runs_numbers(tmp_path, engine):
    """lambda0 is a replica's own (a search's trials differ in it): one batched model, and each job's
    logged values, metrics and final parameters are its run's alone, to the bit."""
    sweep = ["task=independence", "schedule.lambda0=1e-3,1e-2", "seed=0,1", "steps=600", "log_every=50",
             "snapshot_every=0", f"engine={engine}"]
    batched = train_cli("-m", "hydra/launcher=batched", *sweep, f"hydra.sweep.dir={tmp_path / 'batched'}")
    assert batched.returncode == 0, batched.stderr
    assert "Training 4 job(s) as one batched model" in batched.stderr + batched.stdout
    alone = train_cli("-m", *sweep, f"hydra.sweep.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr
    for together, single in zip(job_dirs(tmp_path / "batched"), job_dirs(tmp_path / "alone"), strict=True):
        assert together.name == single.name
        assert scalars(together) == scalars(single)
        assert metrics_without_timing(together) == metrics_without_timing(single)
        checkpoint, alone_checkpoint = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (together, single))
        assert torch.equal(checkpoint["model"]["params"], alone_checkpoint["model"]["params"])
    lambdas = {d.name: scalars(d)["lambda"][0] for d in job_dirs(tmp_path / "batched")}
    assert sorted(lambdas.values()) == [pytest.approx(value) for value in (1e-3, 1e-3, 1e-2, 1e-2)]
