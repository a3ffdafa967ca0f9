"""Summarise every run under a directory: `python -m bimt.report DIR` (or `scripts/report.py DIR`).

Writes into DIR `report.md` and `report.csv` (per task and train_type, mean ± std over seeds of the
final and modularity metrics) and `networks.png` (the final networks, tasks by train types). Any
directory with a `.hydra/`, `checkpoint.pt` or `metrics.json` counts as a run, whatever launcher made
it; only runs whose metrics.json says `completed` are counted as results. The others, and the task x
train_type x seed combinations the sweep has no completed run for, are listed as missing.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from bimt.config import load_config, resolve_task
from bimt.logging import CHECKPOINT, METRICS, save_figure_atomic
from bimt.model import BioMLP
from bimt.plot import draw_network

COLUMNS = [  # (metrics.json key, column title, number format)
    ("test_mse", "test MSE", ".2e"),
    ("pruned_test_mse", "test MSE pruned", ".2e"),
    ("connection_cost", "connection cost", ".2f"),
    ("n_active_weights", "active weights", ".1f"),
    ("components", "components", ".2f"),
    ("expected_structure_found", "structure found", ".2f"),
]


class ReportError(ValueError):
    """A directory that cannot be reported on; the message is one line."""


@dataclass(frozen=True)
class Run:
    path: Path
    metrics: dict[str, Any]

    @property
    def key(self) -> tuple[str, int, int]:
        return self.metrics["task"], self.metrics["train_type"], self.metrics["seed"]


def find_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Completed runs under `root`, and one line for each run directory that is not a result."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    markers = [*root.rglob(".hydra"), *root.rglob(CHECKPOINT), *root.rglob(METRICS)]
    run_dirs = sorted({marker.parent for marker in markers})
    if not run_dirs:
        raise ReportError(f"no runs under {root}: a run directory holds .hydra/, {CHECKPOINT} or {METRICS}")
    completed, problems = [], []
    for run_dir in run_dirs:
        path = run_dir / METRICS
        if not path.is_file():
            problems.append(f"{run_dir.relative_to(root)}: no {METRICS} (still running, or killed)")
            continue
        metrics = json.loads(path.read_text())
        if metrics.get("status") != "completed":
            problems.append(f"{run_dir.relative_to(root)}: status {metrics.get('status')!r}, not completed")
        else:
            completed.append(Run(run_dir, metrics))
    return completed, problems


def missing_combinations(runs: list[Run]) -> list[tuple[str, int, int]]:
    """task x train_type x seed combinations of the sweep that have no completed run."""
    present = {run.key for run in runs}
    tasks, types, seeds = (sorted({key[i] for key in present}) for i in range(3))
    return [key for key in itertools.product(tasks, types, seeds) if key not in present]


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (task, train_type): seed count and mean/std of every column's metric."""
    rows = []
    groups = itertools.groupby(sorted(runs, key=lambda r: r.key), key=lambda r: r.key[:2])
    for (task, train_type), group in groups:
        members = list(group)
        row: dict[str, Any] = {"task": task, "train_type": train_type, "seeds": len(members)}
        for key, _, _ in COLUMNS:
            values = np.array([float(run.metrics[key]) for run in members if key in run.metrics])
            row[f"{key}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], problems: list[str], missing: list[tuple[str, int, int]]) -> str:
    header = ["task", "train_type", "seeds", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"], str(row["train_type"]), str(row["seeds"])]
        cells += [f"{row[f'{k}_mean']:{fmt}} ± {row[f'{k}_std']:{fmt}}" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    text = ["# BIMT sweep report", "", "Mean ± standard deviation over seeds of completed runs. "
            "*Pruned*: weights with |w| < 0.01 set to zero. *Components*: connected parts of the pruned "
            "network that reach an output. *Structure found*: fraction of seeds whose pruned network "
            "has exactly the task's input-to-output dependencies.", "", *lines, ""]
    if problems or missing:
        text += ["## Missing", ""]
        text += [f"- {line}" for line in problems]
        text += [f"- no completed run for task={t} train_type={tt} seed={s}" for t, tt, s in missing]
        text.append("")
    return "\n".join(text)


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def load_trained(run_dir: Path) -> tuple[BioMLP, Any, Any]:
    """The final model of a completed run, with its task and config, from its checkpoint."""
    checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=False, map_location="cpu")
    config = load_config(OmegaConf.create(checkpoint["config"]))
    model = BioMLP(checkpoint["shape"], [0], config.model.in_fold, config.model.out_fold, config.model.l0)
    model.load_state_dict(checkpoint["model"])
    return model, resolve_task(config.task), config


def networks_figure(runs: list[Run], seed: int | None) -> Figure:
    """Final networks, one row per task and one column per train_type, for one seed."""
    tasks = sorted({run.key[0] for run in runs})
    types = sorted({run.key[1] for run in runs})
    seed = min(run.key[2] for run in runs) if seed is None else seed
    by_key = {run.key: run for run in runs}
    figure = Figure(figsize=(3 * len(types), 3.2 * len(tasks)), dpi=100)
    axes = np.atleast_2d(figure.subplots(len(tasks), len(types), squeeze=False))
    for (i, task), (j, train_type) in itertools.product(enumerate(tasks), enumerate(types)):
        ax = axes[i, j]
        run = by_key.get((task, train_type, seed))
        if run is None or not (run.path / CHECKPOINT).is_file():
            ax.axis("off")
            ax.set_title(f"{task}, train_type {train_type}\n(no run with seed {seed})", fontsize=8)
            continue
        model, spec, _ = load_trained(run.path)
        draw_network(model, 0, spec.input_labels, spec.output_labels, f"{task}, train_type {train_type}", ax=ax)
    figure.suptitle(f"final networks, seed {seed}")
    figure.tight_layout()
    return figure


def write_report(root: Path, seed: int | None = None) -> list[str]:
    """Write report.md, report.csv and networks.png into `root`; returns the lines about missing runs."""
    runs, problems = find_runs(root)
    if not runs:
        raise ReportError(f"no completed runs under {root}; {len(problems)} incomplete: {problems[0]}")
    rows = summarise(runs)
    missing = missing_combinations(runs)
    (root / "report.md").write_text(markdown(rows, problems, missing))
    (root / "report.csv").write_text(csv_text(rows))
    save_figure_atomic(root / "networks.png", networks_figure(runs, seed))
    return problems + [f"no completed run for task={t} train_type={tt} seed={s}" for t, tt, s in missing]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or sweep directory (e.g. outputs/multirun/...)")
    parser.add_argument("--seed", type=int, default=None, help="seed whose networks are drawn (default: smallest)")
    args = parser.parse_args(argv)
    try:
        missing = write_report(args.directory, args.seed)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in missing:
        print(f"missing: {line}", file=sys.stderr)
    print(f"wrote {args.directory / 'report.md'}, report.csv and networks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
