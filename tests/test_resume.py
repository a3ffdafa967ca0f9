"""Never lose a run: killed, interrupted and resumed runs end with the uninterrupted run's numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, metrics_without_timing, read_events, train_cli

STEPS = 20000  # long enough (a second or two) to be stopped between two checkpoints
RUN = ["task=feature_sharing", f"steps={STEPS}", "checkpoint_every=300", "log_every=100", "snapshot_every=1000"]



def scalar_steps_and_values(run_dir, tag="loss/test"):
    """Every point TensorBoard shows for `tag`, in order: duplicates and gaps stay visible."""
    return [(event.step, event.value) for event in read_events(run_dir).Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = train_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def start(run_dir):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *RUN, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process, run_dir, past_step=600):
    """Wait until the running job has saved a checkpoint beyond `past_step`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        checkpoint = run_dir / "checkpoint.pt"
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["step"] > past_step:
            return
        assert process.poll() is None, "the run ended before it could be stopped"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_the_same_command_resumes_to_identical_results(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(process, run_dir)
    time.sleep(0.3)  # kill between checkpoints, with scalars logged past the last one
    process.kill()
    process.wait()
    assert not (run_dir / "metrics.json").exists()
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 600 < killed_at < STEPS

    result = train_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert metrics_without_timing(run_dir) == metrics_without_timing(uninterrupted)
    assert scalar_steps_and_values(run_dir) == scalar_steps_and_values(uninterrupted)
    assert scalar_steps_and_values(run_dir, "cost/connection") == scalar_steps_and_values(uninterrupted, "cost/connection")
    assert [image.step for image in read_events(run_dir).Images("network")] == list(range(0, STEPS + 1, 1000))


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_identically(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    status = json.loads((run_dir / "metrics.json").read_text())
    assert status["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == status["step"]
    assert f"resume={run_dir}" in stderr

    result = train_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr
    assert metrics_without_timing(run_dir) == metrics_without_timing(uninterrupted)
    assert scalar_steps_and_values(run_dir) == scalar_steps_and_values(uninterrupted)


DIVERGING = ["schedule.lambda0=1e36", "schedule.boost=1e3", "schedule.boost_at=0.5", "steps=200",
             "checkpoint_every=20"]  # lambda jumps past float32's range at step 100


def test_divergence_stops_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = train_cli(*DIVERGING, f"hydra.run.dir={run_dir}")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"error: training diverged at step 100: the loss is NaN or inf (last good checkpoint: {run_dir / 'checkpoint.pt'})"
    ]
    status = json.loads((run_dir / "metrics.json").read_text())
    assert (status["status"], status["step"]) == ("diverged", 100)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 100
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    assert not (run_dir / "network.png").exists()


def test_a_diverging_job_fails_the_sweep_but_not_the_other_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    result = train_cli("-m", "schedule.lambda0=1e36,1e-3", "schedule.boost=1e3", "schedule.boost_at=0.5",
                       "steps=200", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    statuses = {d.name: json.loads((d / "metrics.json").read_text())["status"] for d in sweep.iterdir() if d.is_dir()}
    assert sorted(statuses.values()) == ["completed", "diverged"]
    assert "Traceback" not in result.stderr
    (diverged,) = [sweep / name for name, status in statuses.items() if status == "diverged"]
    assert result.stderr.strip().splitlines()[-2:] == [
        f"error: {diverged}: training diverged at step 100: the loss is NaN or inf (last good checkpoint: none)",
        "error: 1 of 2 jobs did not complete (see above)"]


def test_rerunning_a_completed_run_changes_nothing(uninterrupted):
    before = (uninterrupted / "metrics.json").read_text()
    result = train_cli(*RUN, f"hydra.run.dir={uninterrupted}")
    assert result.returncode == 0
    assert "already holds a completed run" in result.stdout
    assert (uninterrupted / "metrics.json").read_text() == before


def test_a_different_config_in_an_existing_run_dir_is_refused(uninterrupted):
    before = (uninterrupted / "metrics.json").read_text()
    result = train_cli(*RUN, "optim.lr=0.01", f"hydra.run.dir={uninterrupted}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {uninterrupted} holds a run with another config (optim.lr=0.002 there, 0.01 now); "
        f"choose another hydra.run.dir, or continue it with python train.py resume={uninterrupted}"
    ]
    assert (uninterrupted / "metrics.json").read_text() == before


def test_resume_of_a_directory_without_checkpoint_is_one_line(tmp_path):
    result = train_cli(f"resume={tmp_path / 'nothing'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: resume={tmp_path / 'nothing'}: there is no checkpoint.pt in that directory to continue from"
    )
    assert not (tmp_path / "nothing").exists()
