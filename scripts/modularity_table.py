#!/usr/bin/env python
"""Newman's modularity Q by task and train type, mean ± std over seeds, from sweep directories.

    python train.py -m hydra/launcher=batched task=two_moons train_type=1,2,3,4,5 'seed=range(10)'
    python scripts/modularity_table.py outputs/multirun/<date>_<time> [more directories ...]

Prints two markdown tables (`modularity_q`, the Louvain partition's; `modularity_q_task`, the task's own
modules', for the tasks that have them), a row per task and a column per train type, the highest mean
of each row in bold. Runs are read as `scripts/report.py` reads them (runs saved before Q was measured
get it from their checkpoints).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bimt.experiment.report import ReportError, find_runs

TRAIN_TYPES = (1, 2, 3, 4, 5)


def table(runs: list, key: str) -> str:
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.metrics.get(key) is not None:
            values[run.task][run.settings["train_type"]].append(float(run.metrics[key]))
    lines = ["| task | seeds | " + " | ".join(f"train type {t}" for t in TRAIN_TYPES) + " | highest |",
             "|---|---|" + "---|" * (len(TRAIN_TYPES) + 1)]
    for task in sorted(values):
        means = {t: np.mean(v) for t, v in values[task].items()}
        best = max(means, key=means.get)
        cells = []
        for t in TRAIN_TYPES:
            v = values[task].get(t)
            text = "–" if not v else f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"
            cells.append(f"**{text}**" if t == best else text)
        seeds = "/".join(sorted({str(len(v)) for v in values[task].values()}))
        lines.append(f"| {task} | {seeds} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+")
    args = parser.parse_args()
    runs = []
    for directory in args.directories:
        try:
            found, _ = find_runs(directory)
        except ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        runs += found
    for key in ("modularity_q", "modularity_q_task"):
        print(f"{key}:\n\n{table(runs, key)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
