#!/usr/bin/env python
"""Reproduce the paper's three symbolic-formula experiments and compare their test MSE.

Runs `python train.py -m task=independence,feature_sharing,compositionality` (train_type 5, the paper's
seeds and schedule) into one sweep directory, then prints each task's final test MSE beside the
reference notebook's figure for it and the paper's, and writes them to DIR/reproduce.json.

    python scripts/reproduce.py                     # the full 20000 steps, about half a minute
    python scripts/reproduce.py --engine eager      # torch ops: the notebook's numbers to the last bit
    python scripts/reproduce.py --steps 2000 --out outputs/reproduce_short
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Final test MSE after 20000 steps: the reference notebook's code as recorded for the project's first
# issue, and the figure printed in the paper's plots.
REFERENCE = {"independence": (7.36e-3, 7.4e-3), "feature_sharing": (8.56e-5, 8.5e-5),
             "compositionality": (1.41e-3, 1.3e-3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--engine", choices=["native", "eager"], default="native", help="the training engine")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / f"reproduce_{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    args = parser.parse_args()
    command = [sys.executable, str(REPO / "train.py"), "-m", f"task={','.join(REFERENCE)}",
               f"steps={args.steps}", f"engine={args.engine}", f"hydra.sweep.dir={args.out}"]
    if subprocess.run(command, cwd=REPO).returncode != 0:
        print("error: a training run failed; see its output above", file=sys.stderr)
        return 1

    results = {}
    print(f"\n{'task':18} {'test MSE':>10} {'notebook':>10} {'paper':>10} {'vs notebook':>12}")
    for task, (notebook, paper) in REFERENCE.items():
        metrics = json.loads(next(args.out.glob(f"*task={task}*/metrics.json")).read_text())
        results[task] = {"test_mse": metrics["test_mse"], "notebook": notebook, "paper": paper,
                         "steps": metrics["steps"], "wall_s": metrics["wall_s"]}
        print(f"{task:18} {metrics['test_mse']:10.3e} {notebook:10.2e} {paper:10.1e} "
              f"{metrics['test_mse'] / notebook - 1:+11.1%}")
    (args.out / "reproduce.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
