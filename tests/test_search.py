"""Lambda search with Hydra's Optuna sweeper, run as a user runs it: `train.py -m hydra/sweeper=optuna`
in a subprocess, the study read back with Optuna, the trials' metrics and the report's files."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import optuna
import pytest
from omegaconf import OmegaConf

from bimt.experiment.objective import objective_value
from bimt.experiment.trained import load_trained
from bimt.tasks.metrics import modularity_q_metrics, prune

from conftest import REPO, train_cli

SHORT = ["steps=300", "snapshot_every=0", "log_every=100"]


def search(sweep_dir, *overrides: str) -> subprocess.CompletedProcess:
    """A short lambda search (the preset, 300-step trials) into `sweep_dir`; the preset keeps its study there."""
    return train_cli("-m", "hydra/sweeper=optuna", "+search=lambda", *SHORT, f"hydra.sweep.dir={sweep_dir}", *overrides)


def trials(sweep_dir) -> list[dict]:
    """Every trial's metrics.json, in the order the sweeper launched them."""
    runs = [(OmegaConf.load(p.parent / ".hydra/hydra.yaml").hydra.job.num, json.loads(p.read_text()))
            for p in sweep_dir.glob("*/metrics.json")]
    return [metrics for _, metrics in sorted(runs, key=lambda run: run[0])]


def study(sweep_dir, name: str | None = "lambda_independence") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("search") / "single"
    result = search(sweep_dir, "task=independence", "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr
    return sweep_dir


def test_each_trial_returns_its_test_loss_and_optuna_keeps_the_best(single):
    runs = trials(single)
    assert len(runs) == 4 and all(run["status"] == "completed" for run in runs)
    recorded = study(single)
    assert [t.value for t in recorded.trials] == [pytest.approx(run["test_mse"], rel=1e-12) for run in runs]
    assert [t.params["schedule.lambda0"] for t in recorded.trials] == [run["config"]["schedule"]["lambda0"]
                                                                      for run in runs]
    best = OmegaConf.load(single / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(run["test_mse"] for run in runs), rel=1e-12)
    assert all(1e-5 <= run["config"]["schedule"]["lambda0"] <= 1e-1 for run in runs)
    assert all(1 <= run["config"]["relocate"]["top_k"] <= 10 for run in runs)
    assert all(run["config"]["train_type"] == 5 and run["seed"] == 0 for run in runs)


def test_every_trial_records_the_modularity_q_of_its_final_network(single):
    run_dir = next(p.parent for p in single.glob("*/metrics.json"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model, task, _ = load_trained(run_dir)
    measured = modularity_q_metrics(prune(model), task)
    assert metrics["modularity_q"] == pytest.approx(measured["modularity_q"], abs=1e-12)
    assert metrics["modularity_q_task"] == pytest.approx(measured["modularity_q_task"], abs=1e-12)
    assert -0.5 <= metrics["modularity_q_task"] <= metrics["modularity_q"] <= 1.0


def test_the_same_command_repeats_the_search_and_continues_its_study(single, tmp_path):
    again = tmp_path / "again"
    result = search(again, "task=independence", "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr
    assert [t.params for t in study(again).trials] == [t.params for t in study(single).trials]
    assert [t.value for t in study(again).trials] == [t.value for t in study(single).trials]
    result = search(again, "task=independence", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr
    continued = study(again).trials
    assert len(continued) == 6 and len(trials(again)) == 6
    assert [t.params for t in continued[:4]] == [t.params for t in study(single).trials]


def test_a_trial_left_running_by_ctrl_c_runs_again_first_when_the_search_continues(single, tmp_path):
    """After Ctrl-C the study holds the interrupted trial as running (never told): continuing marks it
    failed and asks for its values again, so that its run directory continues from its checkpoint."""
    shutil.copytree(single, tmp_path / "stopped")
    stopped = tmp_path / "stopped"
    recorded = study(stopped)
    left = recorded.ask({"schedule.lambda0": optuna.distributions.LogUniformDistribution(1e-5, 1e-1)})
    result = search(stopped, "task=independence", "hydra.sweeper.n_trials=1")
    assert result.returncode == 0, result.stderr
    assert ("continuing study lambda_independence: 5 trials so far; 1 interrupted trial(s) run again first"
            in result.stderr)
    trials_now = study(stopped).trials
    assert [t.state.name for t in trials_now] == ["COMPLETE"] * 4 + ["FAIL", "COMPLETE"]
    assert trials_now[5].params["schedule.lambda0"] == left.params["schedule.lambda0"]


def test_the_report_draws_the_trials_of_a_search(single):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), str(single)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "search.png" in result.stdout
    table = (single / "search.md").read_text()
    best = OmegaConf.load(single / "optimization_results.yaml")
    assert f"→ test_loss {best.best_value:.4g}" in table
    assert table.count("| completed |") == 4
    assert (single / "search.png").stat().st_size > 10_000
    assert not (single / "pareto.png").exists()


def test_two_objectives_give_a_pareto_front_drawn_with_its_networks(tmp_path):
    """Batched launcher, two trials asked for at once (Optuna's n_jobs), two objectives; the front
    the report draws is the one Optuna computes."""
    sweep_dir = tmp_path / "pareto"
    result = search(sweep_dir, "task=independence", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                    "hydra/launcher=batched", "objective=[test_loss,active_weights]")
    assert result.returncode == 0, result.stderr
    runs = trials(sweep_dir)
    recorded = study(sweep_dir)
    assert [t.values for t in recorded.trials] == [[pytest.approx(r["test_mse"], rel=1e-12), r["n_active_weights"]]
                                                  for r in runs]
    report = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), str(sweep_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert (sweep_dir / "pareto.png").stat().st_size > 10_000
    front = (sweep_dir / "search.md").read_text().split("## Pareto front")[1]
    assert sorted(int(line.split()[2].rstrip(":")) for line in front.splitlines() if line.startswith("- trial")) == \
        sorted(t.number for t in recorded.best_trials)


def test_a_diverging_trial_counts_as_the_worst_and_the_study_goes_on(tmp_path):
    """A learning rate of 1e30 makes the loss inf at once: that trial returns inf (the worst test
    loss), the other trials complete, and the search ends normally. With two objectives the same
    trial is a failed trial, which the samplers leave out."""
    sweep_dir = tmp_path / "diverge"
    result = train_cli("-m", "hydra/sweeper=optuna", "task=independence", *SHORT, "hydra/sweeper/sampler=grid",
                       "optim.lr=choice(0.002, 1e30)", "schedule.lambda0=choice(0.001, 0.01)",
                       f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage=sqlite:///{sweep_dir}/optuna.db")
    assert result.returncode == 0, result.stderr
    assert "2 trial(s) failed or diverged" in result.stderr
    recorded = study(sweep_dir, name=None).trials  # (no study name: Optuna names it)
    assert len(recorded) == 4
    assert sorted(t.value for t in recorded)[2:] == [math.inf, math.inf]
    assert all(math.isfinite(t.value) == (t.params["optim.lr"] == 0.002) for t in recorded)
    statuses = sorted(run["status"] for run in trials(sweep_dir))
    assert statuses == ["completed", "completed", "diverged", "diverged"]

    several = tmp_path / "diverge2"  # (the grid sampler would stop the study on its last trial, failed or not)
    result = train_cli("-m", "hydra/sweeper=optuna", "task=independence", *SHORT, "hydra/sweeper/sampler=random",
                       "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=3", "optim.lr=choice(0.002, 1e30)",
                       "objective=[test_loss,modularity_q]",
                       f"hydra.sweep.dir={several}", "hydra.sweeper.study_name=lambda_independence",
                       f"hydra.sweeper.storage=sqlite:///{several}/optuna.db")
    assert result.returncode == 0, result.stderr
    recorded = study(several).trials
    assert {t.state.name for t in recorded} == {"COMPLETE", "FAIL"}
    assert all((t.state.name == "FAIL") == (t.params["optim.lr"] == 1e30) for t in recorded)


def test_objective_value_reads_the_named_metrics():
    metrics = {"test_mse": 0.25, "n_active_weights": 40, "modularity_q": None, "test_acc": 0.9}
    assert objective_value(metrics, "test_loss") == 0.25
    assert objective_value(metrics, ["test_loss", "active_weights"]) == [0.25, 40.0]
    assert objective_value(metrics, "modularity_q") == -math.inf  # undefined (no weight left): the worst
    assert objective_value({"test_loss": 0.5, "test_mse": 0.1}, "test_loss") == 0.5


def no_optuna_plugin(*argv: str) -> subprocess.CompletedProcess:
    """train.py in a Python that cannot import the Optuna sweeper plugin, as where the extra is missing."""
    code = ("import runpy, sys; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None; "
            f"sys.argv = ['train.py', *{list(argv)!r}]; runpy.run_path('train.py', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv, message", [
    (["-m", "hydra/sweeper=optuna", "+search=lambda", "objective=test_acc"],
     "objective=test_acc: task independence is a regression and has no test_acc; it produces test_loss, "
     "modularity_q, active_weights"),
    (["-m", "hydra/sweeper=optuna", "+search=lambda", "objective=[test_loss,wires]"],
     "objective=[test_loss,wires]: 'wires' is unknown; allowed: test_loss, test_acc, modularity_q, active_weights"),
    (["-m", "hydra/sweeper=optuna", "schedule.lambda0=tag(log, interval(0.1, 0.001))"],
     "schedule.lambda0=tag(log, interval(0.1, 0.001)) is an empty range; an interval needs its start below its end"),
    (["-m", "+search=lambda"], "+search=lambda is a search with Optuna's sweeper; add hydra/sweeper=optuna"),
    (["-m", "hydra/sweeper=optuna", "+search=width"], "search=width is not allowed; choose one of: lambda"),
    (["-m", "hydra/sweeper=optuna", "+search=lambda", "hydra/sweeper/sampler=bayes"],
     "hydra/sweeper/sampler=bayes is not allowed; choose one of: tpe, random, cmaes, nsgaii, motpe, grid"),
    (["-m", "hydra/sweeper=optuna", "+search=lambda", "hydra.sweeper.n_trials=0"],
     "hydra.sweeper.n_trials=0 is not allowed; it must be an integer >= 1"),
    (["-m", "hydra/sweeper=optuna", "objective=modularity_q", "hydra.sweeper.direction=minimize"],
     "hydra.sweeper.direction=minimize disagrees with objective=modularity_q, which is ['maximize']; leave the "
     "direction out: the objective sets it"),
])
def test_bad_searches_are_one_line_and_write_nothing(tmp_path, argv, message):
    sweep_dir = tmp_path / "sweep"
    result = train_cli(*argv, "task=independence", *SHORT, f"hydra.sweep.dir={sweep_dir}",
                       f"hydra.sweeper.storage=sqlite:///{sweep_dir}/optuna.db")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert lines[0] == f"error: {message}"
    assert not sweep_dir.exists()


def test_an_empty_range_in_the_presets_space_is_one_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = search(sweep_dir, "task=independence", "hydra.sweeper.params={schedule.lambda0: 'range(5,5)'}")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: schedule.lambda0=range(5,5) is an empty range; it holds no value"
    assert not sweep_dir.exists()


def test_the_optuna_sweeper_without_its_extra_names_the_extra():
    for argv in (["-m", "hydra/sweeper=optuna", "+search=lambda"], ["-m", "hydra/sweeper=optuna"]):
        result = no_optuna_plugin(*argv, "task=independence")
        assert result.returncode == 2
        assert result.stderr.strip() == (f"error: {argv[1]} needs Hydra's Optuna sweeper plugin, which is not "
                                         "installed: pip install -e \".[search]\"")
