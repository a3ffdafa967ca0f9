"""`scripts/profile_run.py`: the README's breakdowns of where a run's time goes come from it, so its
parts must account for the whole wall time and find the run's own work where it happens."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_profile_of_a_short_run_adds_up_to_its_wall_time(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "profile_run.py"), "steps=2000",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()  # the run itself happened, with its outputs
    wall = float(re.search(r": ([\d.]+) s wall", result.stdout).group(1))
    parts = {label.strip(): float(seconds) for label, seconds in
             re.findall(r"^  (\S.*?)\s+([\d.]+) s\s+[\d.]+ %$", result.stdout, re.MULTILINE)}
    assert abs(sum(parts.values()) - wall) <= 0.01 * len(parts)  # each printed to 0.01 s
    for part in ("imports", "Hydra: composing configs", "native engine: compiled training steps",
                 "network snapshots (draw, PNG, TensorBoard)",
                 "finishing each job: metrics, figures, final TensorBoard entries"):
        assert parts.get(part, 0) > 0, part
