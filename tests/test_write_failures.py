"""A write that fails (a full disk) ends the run in one line, leaves no temporary file and keeps the
last intact checkpoint, from which the run continues once there is room again.

The failure is real: the run's process gets a file-size limit (RLIMIT_FSIZE), so the operating
system refuses a write past it (EFBIG) as it refuses one on a full disk (ENOSPC). The limits are
set from the sizes a normal run's files have, so that the checkpoint, the TensorBoard event file or
the network figure is the first file to reach them.
"""

from __future__ import annotations

import json

import pytest

from bimt.experiment.checkpoints import read_checkpoint

from conftest import train_cli, train_cli_with_file_size_limit

RUN = ["steps=400", "checkpoint_every=100", "log_every=50", "snapshot_every=0"]
WRITE_FAILED = 4


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    """File sizes of a normal run (which also leaves numba's compiled code cached)."""
    run_dir = tmp_path_factory.mktemp("normal") / "run"
    result = train_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return {path.name: path.stat().st_size for path in run_dir.iterdir() if path.is_file()}


def assert_one_line_and_nothing_half_written(result, run_dir, what):
    assert result.returncode == WRITE_FAILED, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: could not write {run_dir / what}: ")
    assert not [path.name for path in run_dir.rglob("*.tmp")]
    status = json.loads((run_dir / "metrics.json").read_text())
    assert status["status"] == "failed" and status["error"] == line.removeprefix("error: ")
    return line, status


def test_a_checkpoint_that_cannot_be_written(sizes, tmp_path):
    run_dir = tmp_path / "run"
    result = train_cli_with_file_size_limit(sizes["checkpoint.pt"] // 2, *RUN, f"hydra.run.dir={run_dir}")
    line, status = assert_one_line_and_nothing_half_written(result, run_dir, "checkpoint.pt")
    assert line.endswith("no checkpoint was written yet; free space, then run it again")
    assert status["step"] == 0 and not (run_dir / "checkpoint.pt").exists()


def test_an_event_file_that_cannot_be_written(sizes, tmp_path):
    run_dir = tmp_path / "run"
    frequent_snapshots = ["steps=400", "checkpoint_every=1000", "log_every=50", "snapshot_every=50"]
    result = train_cli_with_file_size_limit(sizes["checkpoint.pt"] * 3 // 2, *frequent_snapshots, f"hydra.run.dir={run_dir}")
    assert_one_line_and_nothing_half_written(result, run_dir, "events.out.tfevents.*")
    assert "Traceback" not in result.stderr


def test_a_figure_that_cannot_be_written_keeps_the_checkpoint_to_continue_from(sizes, tmp_path):
    assert sizes["checkpoint.pt"] < sizes["network.png"], "the limit must let checkpoints through"
    run_dir = tmp_path / "run"
    limit = (sizes["checkpoint.pt"] + sizes["network.png"]) // 2
    result = train_cli_with_file_size_limit(limit, *RUN, f"hydra.run.dir={run_dir}")
    line, status = assert_one_line_and_nothing_half_written(result, run_dir, "network.png")
    step = read_checkpoint(run_dir / "checkpoint.pt")["step"]
    assert step == status["step"] == 300
    assert line.endswith(f"the last intact checkpoint is step 300 ({run_dir / 'checkpoint.pt'}); free space, then "
                         f"continue with: python train.py resume={run_dir}")

    resumed = train_cli(f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert (run_dir / "network.png").stat().st_size == sizes["network.png"]
