"""A run directory (and a sweep directory) belongs to one process: a second one started there stops
with one line, and leaves the first's files as they were."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, train_cli

LONG = ["task=independence", "steps=100000000", "snapshot_every=0", "log_every=100000"]  # stopped long before its end


def start(*overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *overrides], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(directory: Path, pattern: str, process: subprocess.Popen, seconds: float = 120) -> Path:
    """The first file under `directory` matching `pattern`, once the process has written it."""
    deadline = time.monotonic() + seconds
    while not list(directory.glob(pattern)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{directory / pattern} never appeared"
        time.sleep(0.1)
    return next(directory.glob(pattern))


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_a_second_process_in_the_same_directory_stops_with_one_line(tmp_path, mode):
    directory = tmp_path / mode
    option = f"hydra.{mode}.dir={directory}"
    sweep = ["-m", "seed=0"] if mode == "sweep" else []
    first = start(*sweep, *LONG, option)
    try:
        config = wait_for(directory, ("*/" if mode == "sweep" else "") + ".hydra/config.yaml", first)
        second = train_cli(*sweep, "task=feature_sharing", "steps=10", option)
        assert first.poll() is None, "the first run must still be writing"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(directory) in lines[0] and "in use" in lines[0]
    assert "name: independence" in config.read_text()  # the first run's record, not overwritten
    assert not list(directory.rglob("*feature_sharing*"))


def test_a_directory_is_free_again_once_its_run_ended(tmp_path):
    """The lock is the process's: nothing stale is left when a run ends, however it ends."""
    option = f"hydra.run.dir={tmp_path / 'run'}"
    first = start(*LONG, option)
    wait_for(tmp_path / "run", ".hydra/config.yaml", first)
    first.kill()
    first.communicate(timeout=60)
    again = train_cli("task=feature_sharing", "steps=10", option)
    assert "in use" not in again.stderr
    assert not [p for p in (tmp_path / "run").iterdir() if "lock" in p.name]
