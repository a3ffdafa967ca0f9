"""Configs: every task x train type composes and validates; every listed mistake is one line, exit 2."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from bimt.experiment.validate import load_config
from bimt.tasks import TASKS

from conftest import REPO, train_cli

TASK_NAMES = sorted([*TASKS, "two_moons", "modular_addition", "permutation_s4"])


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("train_type", [1, 2, 3, 4, 5])
def test_every_task_and_train_type_composes_and_validates(task, train_type):
    config = load_config(composed(f"task={task}", f"train_type={train_type}"))
    assert config.task.name == task
    assert config.train_type == train_type
    switches = config.switches
    assert switches.l1 == (train_type > 1)
    assert switches.local == (train_type in (3, 5))
    assert switches.swap == (train_type >= 4)


def test_tasks_pick_the_papers_seed_model_and_schedule():
    independence = load_config(composed("task=independence"))
    assert (independence.run_seed, independence.model.hidden) == (0, [20, 20])
    assert (independence.schedule.boost, independence.schedule.rescale) == (10.0, 0.1)
    assert load_config(composed("task=feature_sharing")).run_seed == 4
    compositionality = load_config(composed("task=compositionality"))
    assert (compositionality.run_seed, compositionality.model.hidden) == (3, [20, 20, 20, 20])
    assert (compositionality.schedule.boost, compositionality.schedule.rescale) == (3.0, 1.0)


def test_classifier_tasks_carry_their_notebooks_settings():
    moons = load_config(composed("task=two_moons"))
    assert (moons.run_seed, moons.task.data_seed, moons.steps, moons.model.l0, moons.relocate.top_k) == (2, 1, 10001, 0.2, 10)
    assert (moons.schedule.lam(4999, 10001), moons.schedule.lam(5000, 10001), moons.schedule.bias_from) == (1e-3, 1e-2, 0.0)
    addition = load_config(composed("task=modular_addition"))
    assert (addition.run_seed, addition.task.p, addition.task.train_fraction, addition.optim.lr) == (4, 59, 0.8, 0.001)
    assert (addition.model.dtype, addition.model.mean_cost, addition.model.embedding_dim, addition.model.l0) == (
        "float64", True, 32, 0.5)
    assert (addition.model.locality, addition.relocate.locality, addition.relocate.top_k) == (2.0, 2.0, 30)
    s4 = load_config(composed("task=permutation_s4"))
    assert (s4.run_seed, s4.optim.lr, s4.model.locality, s4.relocate.locality) == (1, 0.002, 1.0, 2.0)
    assert {s4.schedule.lam(step, 20000) for step in (0, 5000, 15000)} == {1.0}


def test_command_line_values_win_over_task_choices():
    config = load_config(composed("task=compositionality", "model=mlp2", "seed=11", "model.hidden=[8,8]"))
    assert config.model.hidden == [8, 8]
    assert config.run_seed == 11


@pytest.mark.parametrize("overrides,interval", [((), 1000), (("steps=400",), 20), (("steps=7",), 1),
                                                 (("steps=400", "snapshot_every=30"), 30)])
def test_a_run_has_21_snapshots_unless_told_otherwise(overrides, interval):
    """TensorBoard keeps 10 images per tag unless told more (the README's command says 100)."""
    assert load_config(composed(*overrides)).snapshot_interval == interval


def test_defaults_are_the_papers():
    config = load_config(composed())
    assert (config.steps, config.log_every, config.threads, config.device) == (20000, 200, 1, "cpu")
    assert (config.optim.lr, config.optim.weight_decay) == (0.002, 0.0)
    assert (config.relocate.every, config.relocate.top_k, config.relocate.permute_optimizer_state) == (200, 5, False)
    assert config.schedule.lambda0 == 1e-3


BAD_INPUTS = [
    ("task=nope", "task=nope"),
    ("train_type=6", "train_type=6"),
    ("train_type=0", "train_type=0"),
    ("steps=0", "steps=0"),
    ("steps=-5", "steps=-5"),
    ("steps=abc", "steps"),
    ("log_every=0", "log_every=0"),
    ("model.hidden=[20,0]", "model.hidden=[20, 0]"),
    ("model.hidden=[-3]", "model.hidden=[-3]"),
    ("model.in_fold=3", "model.in_fold=3"),
    pytest.param("device=cuda", "device=cuda", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU, so device=cuda is valid here")),
    ("device=tpu", "device='tpu'"),
    ("engine=turbo", "engine='turbo'"),
    ("optim.lr=0", "optim.lr=0.0"),
    ("optim.lr=-0.1", "optim.lr=-0.1"),
    ("hydra.run.dir=/proc/no/such/dir", "/proc/no/such/dir"),
    ("snapshot_every=-1", "snapshot_every=-1"),
    ("checkpoint_every=0", "checkpoint_every=0"),
    ("threads=0", "threads=0"),
    ("relocate.every=0", "relocate.every=0"),
    ("relocate.top_k=0", "relocate.top_k=0"),
    ("model.hidden=[]", "model.hidden=[]"),
    ("model.l0=-0.1", "model.l0=-0.1"),
    ("schedule.lambda0=-1", "schedule.lambda0=-1.0"),
    ("schedule.boost_at=0.9", "schedule.boost_at=0.9 is after schedule.rescale_at=0.75"),
    ("schedule.bias_from=1.5", "schedule.bias_from=1.5"),
    ("task.n_test=0", "task.n_test=0"),
    ("task.noise=-1", "task.noise=-1.0"),
    ("task.high=-2", "task.high=-2.0 changes the inputs of the paper task independence"),
    ("task.low=0", "task.low=0.0 changes the inputs of the paper task independence (drawn from [-1.0, 1.0)); for other inputs use task=custom"),
    ("task.outputs=[x1]", "task.outputs cannot be used with the paper task independence"),
    ("model.hidden=[100000,100000]", "model.hidden=[100000, 100000] needs about"),
    ("schedule.boost=nan", "schedule.boost=nan is not allowed; it must be a finite number >= 0"),
    ("schedule.rescale=inf", "schedule.rescale=inf"),
    ("schedule.lambda0=nan", "schedule.lambda0=nan"),
    ("task.inputs=3", "task.inputs=3 is only for custom tasks"),
    ("seed=-2", "seed=-2"),
    ("seed=99999999999999999999", "seed=99999999999999999999 is not allowed; use an integer from 0 to 4294967295"),
    ("task.seed=4294967296", "task.seed=4294967296 is not allowed"),
    ("model.l0=inf", "model.l0=inf is not allowed; it must be a finite number >= 0"),
    ("model.locality=nan", "model.locality=nan is not allowed"),
    ("optim.lr=inf", "optim.lr=inf is not allowed; it must be a finite number > 0"),
    ("schedule.decay=0.5", "schedule.decay is now schedule.rescale"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1.0"),
    ("+foo=1", "foo"),
    ("train_type=1,2", "train_type=1,2 lists several values; add -m (--multirun)"),
]


@pytest.mark.parametrize("override,named", BAD_INPUTS)
def test_bad_input_is_one_line_with_exit_code_2_and_no_run_left(tmp_path, override, named):
    run_dir = tmp_path / "run"
    result = train_cli(f"hydra.run.dir={run_dir}", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and named in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not run_dir.exists()


def test_bad_value_in_a_multirun_is_reported_before_any_job(tmp_path):
    result = train_cli("-m", "train_type=1,7", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train_type=7 is not allowed; use one of 1, 2, 3, 4, 5"
    assert not list(tmp_path.rglob("metrics.json"))


def test_the_library_defaults_are_the_yaml_defaults():
    """`TrainSettings` and `Schedule` keep defaults for use without Hydra; they must be conf/'s values
    (the engine has none: the library makes its user choose one)."""
    from omegaconf import OmegaConf

    from bimt.training.loop import TrainSettings
    from bimt.training.schedule import Schedule

    conf = OmegaConf.load(REPO / "conf" / "config.yaml")
    settings = TrainSettings(steps=1, engine="eager")
    assert (settings.lr, settings.weight_decay) == (conf.optim.lr, conf.optim.weight_decay)
    assert (settings.relocate_every, settings.top_k) == (conf.relocate.every, conf.relocate.top_k)
    assert settings.relocate_locality == conf.relocate.locality
    assert settings.permute_optimizer_state == conf.relocate.permute_optimizer_state
    assert settings.log_every == conf.log_every
    assert settings.exact_batches == conf.exact_batches
    assert Schedule() == Schedule(**OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "schedule" / "paper.yaml")))


def test_the_models_defaults_are_the_default_models_yaml():
    import inspect

    from omegaconf import OmegaConf

    from bimt.network.model import BioMLP

    model = OmegaConf.load(REPO / "conf" / "model" / "mlp2.yaml")
    defaults = {name: p.default for name, p in inspect.signature(BioMLP).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key in ("in_fold", "out_fold", "l0", "mean_cost", "embedding_cost", "geometry"):
        assert defaults[key] == model[key], key
    assert str(defaults["dtype"]).removeprefix("torch.") == model.dtype
