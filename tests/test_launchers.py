"""Every launcher reports a failing job with its error and completes the others' outputs."""

from __future__ import annotations

import json

import pytest

from conftest import train_cli


def job_dirs(sweep):
    return sorted(d for d in sweep.iterdir() if d.is_dir())


# 8 jobs: feature_sharing with in_fold=2 is invalid (2 jobs); lambda jumps past float32's range at step
# 100, so every train_type 5 job diverges (3) and every train_type 1 job, without L1, completes (3).
FAILING = ["task=independence,feature_sharing", "model.in_fold=1,2", "train_type=1,5", "schedule.lambda0=1e36",
           "schedule.boost=1e3", "schedule.boost_at=0.5", "steps=200", "snapshot_every=0"]


@pytest.mark.parametrize("launcher,options", [("basic", []), ("batched", []), ("batched", ["hydra.launcher.n_jobs=2"]),
                                              ("joblib", []), ("submitit_local", [])])
def test_a_failing_job_is_reported_and_the_others_complete(tmp_path, launcher, options):
    """(The batched launcher with n_jobs=2 prepares and trains the jobs in its worker processes.)"""
    sweep = tmp_path / "sweep"
    result = train_cli("-m", f"hydra/launcher={launcher}", *options, *FAILING, f"hydra.sweep.dir={sweep}")
    assert result.returncode != 0
    statuses = {}
    for run_dir in job_dirs(sweep):
        metrics = run_dir / "metrics.json"
        statuses[run_dir.name] = json.loads(metrics.read_text())["status"] if metrics.exists() else "no run"
        if statuses[run_dir.name] == "completed":
            assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "network.png").is_file()
    assert sorted(statuses.values()).count("completed") == 3, statuses
    assert sorted(statuses.values()).count("diverged") == 3, statuses
    assert all(("train_type=1" in name) == (status == "completed") for name, status in statuses.items()
               if status != "no run")
    if launcher in ("basic", "batched"):  # the others report in their workers' logs
        assert result.stderr.count("model.in_fold=2 does not fit task feature_sharing") >= 2
        assert result.stderr.count("training diverged at step 100") >= 3


def test_worker_processes_train_every_task_as_one_process_does(tmp_path, task="two_moons"):
    """The batched launcher's workers build each group's task themselves (a task holds functions that
    do not pickle): two processes give every job the numbers of one."""
    metrics = {}
    for n_jobs in (1, 2):
        sweep = tmp_path / f"n_jobs{n_jobs}"
        result = train_cli("-m", "hydra/launcher=batched", f"hydra.launcher.n_jobs={n_jobs}", f"task={task}",
                           "seed=0,1", "steps=60", "snapshot_every=0", "log_every=30", f"hydra.sweep.dir={sweep}")
        assert result.returncode == 0, result.stderr
        metrics[n_jobs] = [{k: v for k, v in json.loads((d / "metrics.json").read_text()).items() if k != "wall_s"}
                           for d in job_dirs(sweep)]
    assert len(metrics[1]) == 2 and metrics[1] == metrics[2]
