#!/usr/bin/env python
"""Time a lambda search through each launcher, with Optuna's `n_jobs` trials at a time.

    python scripts/search_bench.py --task independence --trials 16 --steps 20000

Two searches: the preset (`+search=lambda`: lambda, l0 and top_k), whose trials differ in more than
a lockstep group may, and lambda alone, whose trials the batched launcher trains as one model, as
many at a time as Optuna hands it. Each setting runs the same seeded search in a fresh directory, as
a user runs it (`train.py` in a subprocess, the whole process timed); the table gives its wall time
and the time per trial. `--keep` leaves the directories for `scripts/report.py`.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SEARCHES = {  # what is searched: its overrides
    "lambda, l0, top_k": ["+search=lambda"],
    "lambda alone": ["schedule.lambda0=tag(log, interval(1e-5, 1e-1))", "train_type=5", "snapshot_every=0",
                     "hydra.sweeper.sampler.seed=0"],
}
LAUNCHERS = [  # (how the trials run, the overrides)
    ("basic launcher, 1 trial at a time", []),
    ("batched launcher, 8 trials at a time, 1 process", ["hydra/launcher=batched", "hydra.sweeper.n_jobs=8"]),
    ("batched launcher, 8 trials at a time, 2 processes",
     ["hydra/launcher=batched", "hydra.sweeper.n_jobs=8", "hydra.launcher.n_jobs=2"]),
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
    print("| search | launcher | wall s | s per trial |\n|---|---|---|---|")
    for n, ((search, searched), (launcher, overrides)) in enumerate(itertools.product(SEARCHES.items(), LAUNCHERS)):
        sweep_dir = root / f"setting{n}"
        command = [sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=optuna", *searched,
                   f"task={args.task}", f"steps={args.steps}", f"hydra.sweeper.n_trials={args.trials}",
                   f"hydra.sweep.dir={sweep_dir}", *overrides]
        began = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if result.returncode != 0:
            print(f"error: {search}, {launcher}: {result.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        print(f"| {search} | {launcher} | {wall:.1f} | {wall / args.trials:.2f} |", flush=True)
    if args.keep is None:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
