"""An experiment is resolved once: one task resolution (and one validation) per job, in a single run and
in every job of a batched sweep; and a seed means what the notebook's seed means."""

from __future__ import annotations

import runpy
import sys

import pytest
from hydra import compose, initialize_config_dir

import bimt.experiment.validate
from bimt.tasks import build_task

from conftest import REPO, job_dirs


def run_train_py_here(monkeypatch, *overrides: str) -> list[str]:
    """`python train.py OVERRIDES...` in this process; returns the task names resolved, in order."""
    resolved: list[str] = []

    def counting(settings):
        resolved.append(settings.name)
        return build_task(settings)

    monkeypatch.setattr(bimt.experiment.validate, "build_task", counting)
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), *overrides])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    return resolved


def test_a_single_run_resolves_its_task_once(monkeypatch, tmp_path):
    resolved = run_train_py_here(monkeypatch, "task=two_moons", "steps=20", "log_every=10",
                                 f"hydra.run.dir={tmp_path / 'run'}")
    assert resolved == ["two_moons"]
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_each_job_of_a_batched_sweep_resolves_its_task_once_and_each_group_once(monkeypatch, tmp_path):
    """Once when the job is prepared (its checks), and once for its group in the process that trains it:
    a task holds functions that do not travel between processes."""
    resolved = run_train_py_here(monkeypatch, "-m", "hydra/launcher=batched", "task=independence", "train_type=1,5",
                                 "seed=0,1", "steps=20", "log_every=10", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert resolved == ["independence"] * 5
    assert all((job / "metrics.json").is_file() for job in job_dirs(tmp_path / "sweep"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return bimt.experiment.validate.load_config(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.parametrize("task,paper_data_seed", [("two_moons", 1), ("digits", 0)])
def test_a_seed_draws_the_data_as_the_notebooks_seed_does(task, paper_data_seed):
    assert composed(f"task={task}").data_seed == paper_data_seed  # the paper's run: the notebook's data
    assert composed(f"task={task}", "seed=7").data_seed == 7  # a seed of a sweep draws the data too
    assert composed(f"task={task}", "seed=7", "task.fixed_data=true").data_seed == paper_data_seed


@pytest.mark.parametrize("task", ["independence", "permutation_s4", "modular_addition"])
def test_tasks_with_one_seed_draw_data_and_weights_from_it(task):
    paper = composed(f"task={task}")
    assert paper.data_seed == paper.run_seed
    assert composed(f"task={task}", "seed=7", "task.fixed_data=true").data_seed == 7
