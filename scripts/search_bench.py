#!/usr/bin/env python
"""Time a lambda search (`+search=lambda`) through each launcher, with Optuna's `n_jobs` trials at a time.

    python scripts/search_bench.py --task independence --trials 12 --steps 5000

Each setting runs the same seeded search in a fresh directory, as a user runs it (`train.py` in a
subprocess, the whole process timed), and the table gives its wall time and the time per trial. The
trials are the same in every setting (same sampler seed, same values), so the times compare like
with like; `--keep` leaves the directories for `scripts/report.py`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SETTINGS = [  # (what it is, its overrides)
    ("basic launcher, 1 trial at a time", []),
    ("batched launcher, 4 trials at a time, 1 process", ["hydra/launcher=batched", "hydra.sweeper.n_jobs=4"]),
    ("batched launcher, 4 trials at a time, 2 processes",
     ["hydra/launcher=batched", "hydra.sweeper.n_jobs=4", "hydra.launcher.n_jobs=2"]),
    ("joblib launcher, 2 trials at a time, 2 processes",
     ["hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="independence")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--keep", type=Path, default=None, help="write the searches under this directory")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="search_bench_"))
    print("| launcher | wall s | s per trial |\n|---|---|---|")
    for n, (name, overrides) in enumerate(SETTINGS):
        sweep_dir = root / f"setting{n}"
        command = [sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=optuna", "+search=lambda",
                   f"task={args.task}", f"steps={args.steps}", f"hydra.sweeper.n_trials={args.trials}",
                   f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage=sqlite:///{sweep_dir}/optuna.db",
                   *overrides]
        began = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if result.returncode != 0:
            print(f"error: {name}: {result.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        print(f"| {name} | {wall:.1f} | {wall / args.trials:.2f} |", flush=True)
    if args.keep is None:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
