#!/usr/bin/env python
"""Where the in-context transformer keeps w: per run, the probe of w and how local its neurons are.

For every completed `task=incontext` run under each directory given, it loads the final model and fits
the probe of `bimt.tasks.incontext.w_probe` (w read linearly from the residual stream after block 1, at
the last position). It prints the probe's R², the best R² of one residual neuron alone (its squared
correlation with w), the two residual neurons the probe weighs most, how many neurons
carry 90 % of its weight (|beta| * std, the standardised coefficients) and their spread: the weighted mean
distance of those neurons' positions from their weighted centre, on the residual line [0, 1] (a uniform
spread over the stream is about 0.25). Then the mean ± std of each directory. With `--figure`, the
network pictures of one seed from each directory side by side.

    python scripts/w_neurons.py outputs/multirun/no_swaps outputs/multirun/swaps --figure docs/incontext_swaps.png \
        --labels "no swaps (the notebook),relocate.every=1000"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.figure import Figure

from bimt.experiment.plan import plan_group
from bimt.experiment.report import ReportError, find_runs, load_trained
from bimt.tasks.incontext import w_probe


def locality(strength: np.ndarray, positions: np.ndarray, share: float = 0.9) -> tuple[int, float]:
    """How many of the strongest neurons carry `share` of the strength, and their weighted spread."""
    order = np.argsort(-strength, kind="stable")
    cumulative = np.cumsum(strength[order]) / strength.sum()
    count = int(np.searchsorted(cumulative, share) + 1)
    chosen, weights = positions[order[:count]], strength[order[:count]]
    centre = np.average(chosen, weights=weights)
    return count, float(np.average(np.abs(chosen - centre), weights=weights))


@torch.no_grad()
def measure(run_dir: Path) -> dict:
    model, task, config = load_trained(run_dir)
    probe = w_probe(model, plan_group([config], task).data)
    positions = model.network.spaces[model.network.space_index("residual")].coordinates.double().numpy()
    count, spread = locality(probe.strength, positions)
    live = probe.features.std(axis=0) > 0
    best = max(float(np.corrcoef(probe.features[:, i], probe.w)[0, 1] ** 2) for i in np.flatnonzero(live))
    return {"seed": config.run_seed, "probe_w_r2": probe.r2, "neurons": [n + 1 for n in probe.neurons],
            "neurons_for_90%": count, "spread": spread, "best_single_r2": best}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories of task=incontext")
    parser.add_argument("--figure", type=Path, help="write the network pictures of one seed side by side here")
    parser.add_argument("--seed", type=int, default=1, help="the seed whose pictures --figure shows")
    parser.add_argument("--labels", help="comma-separated titles of the directories' pictures (default: their names)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    results = {}
    for root in args.dirs:
        try:
            runs, problems = find_runs(root)
        except ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        rows = [measure(run.path) for run in runs if run.metrics.get("task") == "incontext"]
        results[str(root)] = rows
        print(f"\n{root} ({len(rows)} runs{'; ' + str(len(problems)) + ' not completed' if problems else ''})")
        print(f"{'seed':>5} {'probe R2':>9} {'one neuron R2':>14} {'top neurons':>12} {'neurons for 90%':>16} "
              f"{'spread':>7}")
        for row in sorted(rows, key=lambda r: r["seed"]):
            print(f"{row['seed']:5d} {row['probe_w_r2']:9.4f} {row['best_single_r2']:14.4f} {str(row['neurons']):>12} "
                  f"{row['neurons_for_90%']:16d} {row['spread']:7.3f}")
        if len(rows) > 1:
            for key in ("probe_w_r2", "best_single_r2", "neurons_for_90%", "spread"):
                values = [row[key] for row in rows]
                print(f"  {key}: {statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
    if args.figure:
        pictures = [next(run.path for run in find_runs(root)[0] if run.seed == args.seed) / "network.png"
                    for root in args.dirs]
        labels = args.labels.split(",") if args.labels else [root.name for root in args.dirs]
        figure = Figure(figsize=(4.5 * len(pictures), 7), dpi=100)
        for ax, picture, label in zip(figure.subplots(1, len(pictures), squeeze=False)[0], pictures, labels):
            ax.imshow(matplotlib.image.imread(picture))
            ax.set_title(label, fontsize=9)
            ax.axis("off")
        figure.tight_layout()
        figure.savefig(args.figure)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
