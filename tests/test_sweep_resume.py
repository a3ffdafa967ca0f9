"""An interrupted batched sweep, run again with the same command, continues where it stopped.

The native engine computes every replica in the same compiled code whatever its group holds, so a
job's numbers do not depend on which group it trained in: continuing a sweep (in other groups than
the first time) gives exactly the uninterrupted sweep's numbers, by construction.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from bimt.experiment.checkpoints import read_checkpoint

from conftest import REPO, job_dirs, metrics_without_timing, read_events, train_cli

SWEEP = ["-m", "hydra/launcher=batched", "task=independence,feature_sharing", "train_type=2,5", "seed=0,1",
         "steps=20000", "checkpoint_every=500", "log_every=500", "snapshot_every=5000"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("uninterrupted") / "sweep"
    result = train_cli(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    return sweep


def start_and_wait_for_a_checkpoint(sweep):
    """The sweep, running, once one of its jobs has a checkpoint past step 1000."""
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SWEEP, f"hydra.sweep.dir={sweep}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(read_checkpoint_step(path) >= 1000 for path in sweep.glob("*/checkpoint.pt")):
        assert process.poll() is None, "the sweep ended before it could be stopped"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    return process


def assert_same_results(sweep, uninterrupted):
    assert [d.name for d in job_dirs(sweep)] == [d.name for d in job_dirs(uninterrupted)]
    for continued, reference in zip(job_dirs(sweep), job_dirs(uninterrupted)):
        assert metrics_without_timing(continued) == metrics_without_timing(reference), continued.name
        steps_and_values = [[(e.step, e.value) for e in read_events(d).Scalars("loss/test")] for d in (continued, reference)]
        assert steps_and_values[0] == steps_and_values[1], continued.name
        final = [torch.load(d / "checkpoint.pt", weights_only=False)["model"]["params"] for d in (continued, reference)]
        assert torch.equal(*final)


def test_a_killed_batched_sweep_run_again_continues_to_the_uninterrupted_numbers(uninterrupted, tmp_path):
    sweep = tmp_path / "sweep"
    process = start_and_wait_for_a_checkpoint(sweep)
    process.kill()
    process.wait()
    unfinished = [d for d in job_dirs(sweep) if (d / "checkpoint.pt").exists() and not (d / "metrics.json").exists()]
    assert unfinished, "every started job had finished"
    damaged = unfinished[-1]
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")

    result = train_cli(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1 and str(damaged / "checkpoint.pt") in warnings[0] and "step 0" in warnings[0]
    assert (damaged / "checkpoint.pt.unreadable").read_bytes() == b"not a checkpoint"
    assert_same_results(sweep, uninterrupted)


def test_ctrl_c_stops_a_batched_sweep_after_its_group_and_the_same_command_continues_it(uninterrupted, tmp_path):
    sweep = tmp_path / "sweep"
    process = start_and_wait_for_a_checkpoint(sweep)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    lines = stderr.strip().splitlines()
    interrupted = [line for line in lines if "interrupted after step" in line]
    assert len(interrupted) == 4, stderr  # the group in training: independence, two train types x two seeds
    assert any("4 more job(s) not started; run the same command again" in line for line in lines), stderr
    assert lines[-1] == "error: 4 of 8 jobs did not complete (see above)" and "Traceback" not in stderr
    assert sum((d / "metrics.json").exists() for d in job_dirs(sweep)) == 4

    result = train_cli(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    assert_same_results(sweep, uninterrupted)


def read_checkpoint_step(path):
    try:
        return read_checkpoint(path)["step"]
    except Exception:  # noqa: BLE001 - a checkpoint being renamed into place
        return 0
