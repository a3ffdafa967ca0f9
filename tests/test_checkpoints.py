"""Batched checkpoints load back, whatever the group size.

A group of R jobs trains as one model with a replica axis of length R; a checkpoint must hold one
job's tensors whatever R is, also when R equals a layer's width (the hidden layers' 20 neurons).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from bimt.cost import connection_cost
from bimt.logging import load_checkpoint, read_checkpoint
from bimt.model import BioMLP
from bimt.optim import AdamW

from conftest import REPO, job_dirs, metrics_without_timing, train_cli

TASKS = ("independence", "feature_sharing", "compositionality")
GROUP_SIZES = (1, 2, 3, 4, 20, 25)
SHORT = ["steps=30", "checkpoint_every=10", "log_every=10", "snapshot_every=0"]




@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """For each group size R: every task with seeds 0..R-1, batched (one group of R per task)."""
    root = tmp_path_factory.mktemp("groups")
    for size in GROUP_SIZES:
        result = train_cli("-m", "hydra/launcher=batched", "hydra/sweeper=batched", f"task={','.join(TASKS)}",
                           f"seed=range({size})", *SHORT, f"hydra.sweep.dir={root / str(size)}")
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


@pytest.mark.parametrize("size", GROUP_SIZES)
def test_resume_continues_a_job_of_any_group_size(sweeps, size):
    """A job killed after its last checkpoint, before its metrics.json, is finished by `resume=<job dir>`
    with the numbers the group computed."""
    run_dirs = [[d for d in job_dirs(sweeps / str(size)) if d.name.endswith(f"task={task}")][-1] for task in TASKS]
    expected = [metrics_without_timing(run_dir) for run_dir in run_dirs]
    for run_dir in run_dirs:
        (run_dir / "metrics.json").unlink()
    resumes = [subprocess.Popen([sys.executable, str(REPO / "train.py"), f"resume={run_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for run_dir in run_dirs]
    for process in resumes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert [metrics_without_timing(run_dir) for run_dir in run_dirs] == expected
