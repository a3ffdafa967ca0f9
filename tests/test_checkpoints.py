"""Batched checkpoints load back, whatever the group size.

A group of R jobs trains as one model with a replica axis of length R; a checkpoint must hold one
job's tensors whatever R is, also when R equals a layer's width (the hidden layers' 20 neurons).
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys

import pytest
import torch

from bimt.experiment.checkpoints import load_checkpoint, read_checkpoint
from bimt.experiment.report import load_trained, write_report
from bimt.experiment.schema import ADDED_KEYS, RENAMED_KEYS
from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW

from conftest import REPO, job_dirs, metrics_without_timing, train_cli, train_cli_with_file_size_limit

TASKS = ("independence", "feature_sharing", "compositionality")
GROUP_SIZES = (1, 2, 3, 4, 20, 25)
SHORT = ["steps=30", "checkpoint_every=10", "log_every=10", "snapshot_every=0"]


def sweep(size, sweep_dir, file_size_limit=None):
    """Every task with seeds 0..size-1, batched: one group of `size` jobs per task."""
    overrides = ["-m", "hydra/launcher=batched", "hydra/sweeper=batched", f"task={','.join(TASKS)}",
                 f"seed=range({size})", *SHORT, f"hydra.sweep.dir={sweep_dir}"]
    return train_cli(*overrides) if file_size_limit is None else train_cli_with_file_size_limit(file_size_limit,
                                                                                                 *overrides)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """For each group size R: every task with seeds 0..R-1, batched (one group of R per task)."""
    root = tmp_path_factory.mktemp("groups")
    for size in GROUP_SIZES:
        result = sweep(size, root / str(size))
        assert result.returncode == 0, result.stderr
        assert result.stdout.count(f"Training {size} job(s) as one batched model") + result.stderr.count(
            f"Training {size} job(s) as one batched model") == len(TASKS)
    return root


@pytest.mark.parametrize("size", GROUP_SIZES)
def test_every_checkpoint_of_a_group_loads_into_a_single_model(sweeps, size):
    for run_dir in job_dirs(sweeps / str(size)):
        checkpoint = read_checkpoint(run_dir / "checkpoint.pt")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        model = BioMLP(checkpoint["shape"], [0])
        optimizer = AdamW(model.params)
        load_checkpoint(checkpoint, model, optimizer)
        assert optimizer.steps == checkpoint["step"] == 30
        assert model.in_perm[0].tolist() == metrics["in_perm"] and model.out_perm[0].tolist() == metrics["out_perm"]
        assert connection_cost(model).item() == pytest.approx(metrics["connection_cost"], rel=1e-6)
        assert not any(name.startswith("distance") for name in checkpoint["model"])


@pytest.mark.parametrize("size", GROUP_SIZES)
def test_the_report_reads_every_group_size(sweeps, size):
    sweep = sweeps / str(size)
    result = subprocess.run([sys.executable, "scripts/report.py", str(sweep)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert sorted(row["task"] for row in rows) == sorted(TASKS)
    assert all(int(row["seeds"]) == size for row in rows)


@pytest.fixture(scope="module")
def stopped_sweeps(sweeps, tmp_path_factory):
    """The same sweeps, stopped by a write that fails after the last checkpoint before the end (the
    final network figure, under a file-size limit between a checkpoint's size and the figure's)."""
    sizes = {name: [path.stat().st_size for path in sweeps.glob(f"*/*/{name}")] for name in ("checkpoint.pt", "network.png")}
    assert max(sizes["checkpoint.pt"]) < min(sizes["network.png"]), "the limit must let checkpoints through"
    limit = (max(sizes["checkpoint.pt"]) + min(sizes["network.png"])) // 2
    root = tmp_path_factory.mktemp("stopped")
    for size in GROUP_SIZES:
        result = sweep(size, root / str(size), file_size_limit=limit)
        assert result.returncode == 1 and "network.png: File too large" in result.stderr, result.stderr
    return root


@pytest.mark.parametrize("size", GROUP_SIZES)
def test_resume_continues_a_job_of_any_group_size_to_the_groups_numbers(sweeps, stopped_sweeps, size):
    """`resume=<job dir>` continues one job of each task's group, alone, from its checkpoint at step
    20 of 30, and ends with the numbers the uninterrupted group computed for it."""
    run_dirs = [[d for d in job_dirs(stopped_sweeps / str(size)) if d.name.endswith(f"task={task}")][-1] for task in TASKS]
    for run_dir in run_dirs:
        status = json.loads((run_dir / "metrics.json").read_text())
        assert (status["status"], status["step"], read_checkpoint(run_dir / "checkpoint.pt")["step"]) == ("failed", 20, 20)
    resumes = [subprocess.Popen([sys.executable, str(REPO / "train.py"), f"resume={run_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for run_dir in run_dirs]
    for process in resumes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    for run_dir in run_dirs:
        assert metrics_without_timing(run_dir) == metrics_without_timing(sweeps / str(size) / run_dir.name)


def without_added_keys(config: dict) -> dict:
    """A config as a run saved it before `ADDED_KEYS` (and `task.fixed_data`) existed, and before
    `RENAMED_KEYS` were renamed."""
    old = copy.deepcopy(config)
    for path in ADDED_KEYS:
        node = old
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    del old["task"]["fixed_data"]
    for (section, was), (_, now) in RENAMED_KEYS.items():
        if now in old[section]:
            old[section][was] = old[section].pop(now)
    return old


def test_runs_saved_before_later_config_keys_still_load_resume_and_report(tmp_path):
    run_dir = tmp_path / "old" / "run"
    result = train_cli("steps=40", "log_every=10", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    model, _, _ = load_trained(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    checkpoint["config"] = without_added_keys(checkpoint["config"])
    assert checkpoint["config"]["schedule"]["decay"] == 0.1 and "rescale" not in checkpoint["config"]["schedule"]
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["config"] = without_added_keys(metrics["config"])
    q_old = metrics.pop("modularity_q"), metrics.pop("modularity_q_task")  # measured since
    (run_dir / "metrics.json").write_text(json.dumps(metrics))

    old_model, _, config = load_trained(run_dir)
    assert (config.model.geometry, config.batch_size, config.relocate.inputs) == ("line", None, True)
    assert (config.schedule.rescale, config.model.locality, config.task.fixed_data) == (0.1, 1.0, False)
    assert torch.equal(old_model.params, model.params)
    again = train_cli("steps=40", "log_every=10", f"hydra.run.dir={run_dir}")
    assert again.returncode == 0 and "already holds a completed run" in again.stdout, again.stderr
    new = train_cli("steps=40", "log_every=10", "seed=1", f"hydra.run.dir={tmp_path / 'old' / 'new'}")
    assert new.returncode == 0, new.stderr
    assert write_report(tmp_path / "old") == []
    rows = list(csv.DictReader((tmp_path / "old" / "report.csv").open()))
    assert len(rows) == 1 and rows[0]["seeds"] == "2", "the old run and the new one are the same experiment"
    q_new = json.loads((tmp_path / "old" / "new" / "metrics.json").read_text())
    for key, old_q in zip(("modularity_q", "modularity_q_task"), q_old):  # the old run's, from its checkpoint
        assert float(rows[0][f"{key}_mean"]) == pytest.approx((old_q + q_new[key]) / 2, abs=1e-9)
