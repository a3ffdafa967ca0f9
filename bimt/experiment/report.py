"""Summarise every run under a directory: `python -m bimt.experiment.report DIR` (or `scripts/report.py DIR`).

Writes into DIR `report.md` and `report.csv` (mean ± std over seeds of the final and modularity
metrics, one row per task, train_type and swept values) and `networks.png` (the final networks,
tasks by train types and swept values). Runs are grouped by every config value that differs between
them except the seed, so unlike runs (two lambdas, say) are never averaged. Any directory with a
`.hydra/`, `checkpoint.pt` or `metrics.json` counts as a run, whatever launcher made it; only runs
whose metrics.json says `completed` are counted as results. The others, runs whose files cannot be
read (with the reason), and the seeds a row lacks are listed as missing; none of them stops the report.
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
from matplotlib.figure import Figure

from bimt.experiment.checkpoints import CHECKPOINT, UnreadableCheckpoint
from bimt.experiment.files import save_figure_atomic
from bimt.experiment.rundir import METRICS
from bimt.experiment.schema import row_identity, saved_config
from bimt.experiment.search_report import is_search, write_search_report
from bimt.experiment.trained import load_trained
from bimt.pictures import draw_network
from bimt.tasks.metrics import modularity_q_metrics, prune
from bimt.training import Status

COLUMNS = [  # (metrics.json key, column title, number format); a report shows those its runs have
    ("test_mse", "test MSE", ".2e"),
    ("pruned_test_mse", "test MSE pruned", ".2e"),
    ("test_last_mse", "test MSE, last position", ".2e"),
    ("probe_w_r2", "probe R² of w", ".3f"),
    ("test_loss", "test loss", ".2e"),
    ("test_acc", "test acc", ".3f"),
    ("pruned_test_acc", "test acc pruned", ".3f"),
    ("connection_cost", "connection cost", ".2f"),
    ("n_active_weights", "active weights", ".1f"),
    ("n_active_embedding_dims", "embedding dims used", ".1f"),
    ("components", "components", ".2f"),
    ("modularity_q", "modularity Q", ".3f"),
    ("modularity_q_task", "Q of the task's modules", ".3f"),
    ("expected_structure_found", "structure found", ".2f"),
]


class ReportError(ValueError):
    """A directory that cannot be reported on; the message is one line."""


@dataclass(frozen=True)
class Run:
    path: Path
    metrics: dict[str, Any]
    settings: dict[str, Any]  # the run's config as dotted keys (`row_identity`), with its task name and train type
    seed: int

    @property
    def task(self) -> str:
        return self.settings["task.name"]


def read_run(run_dir: Path, metrics: dict[str, Any]) -> Run:
    """A completed run from its metrics.json, which holds its whole config; KeyError if a key is missing."""
    config = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
              for key, value in row_identity(saved_config(metrics.get("config") or {})).items()}
    settings = {**config, "task.name": metrics["task"], "train_type": metrics["train_type"]}
    return Run(run_dir, with_modularity_q(run_dir, metrics), settings, metrics["seed"])


def with_modularity_q(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics of a run saved before its modularity Q was measured, with the Q computed from its
    final checkpoint (as the run would have measured it); other runs' metrics as they are."""
    if "modularity_q" in metrics or not (run_dir / CHECKPOINT).is_file():
        return metrics
    try:
        model, task, _ = load_trained(run_dir)
    except (OSError, UnreadableCheckpoint, ValueError, KeyError, RuntimeError):
        return metrics
    return {**metrics, **modularity_q_metrics(prune(model), task)}


def find_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Completed runs under `root`, and one line for each run directory that is not a result
    (unfinished, or with files that cannot be read, and why)."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    markers = [*root.rglob(".hydra"), *root.rglob(CHECKPOINT), *root.rglob(METRICS)]
    run_dirs = sorted({marker.parent for marker in markers})
    if not run_dirs:
        raise ReportError(f"no runs under {root}: a run directory holds .hydra/, {CHECKPOINT} or {METRICS}")
    completed, problems = [], []
    for run_dir in run_dirs:
        name, path = run_dir.relative_to(root), run_dir / METRICS
        if not path.is_file():
            problems.append(f"{name}: no {METRICS} (still running, or killed)")
            continue
        try:
            metrics = json.loads(path.read_text())
            status = metrics.get("status")
            run = read_run(run_dir, metrics) if status == Status.COMPLETED else None
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as error:
            problems.append(f"{name}: unreadable {METRICS} ({type(error).__name__}: {error})")
            continue
        if status != Status.COMPLETED:
            problems.append(f"{name}: status {status!r}, not completed")
        else:
            completed.append(run)
    return completed, problems


def compared_keys(runs: list[Run]) -> dict[str, list[str]]:
    """Per task, the config keys whose values differ between its runs (seeds aside): what was swept.

    Keys that differ only between tasks (each task's model and schedule) do not split rows."""
    keys: dict[str, list[str]] = {}
    for task in sorted({run.task for run in runs}):
        settings = [run.settings for run in runs if run.task == task]
        names = sorted(set().union(*settings) - {"task.name", "train_type"})
        keys[task] = [key for key in names if len({repr(s.get(key)) for s in settings}) > 1]
    return keys


def group_label(task: str, train_type: int, swept: tuple[tuple[str, Any], ...]) -> str:
    """How a row names its runs: `task=... train_type=...` and every swept value."""
    return " ".join([f"task={task}", f"train_type={train_type}", *(f"{key}={value}" for key, value in swept)])


def groups(runs: list[Run]) -> dict[tuple[str, int, tuple[tuple[str, Any], ...]], list[Run]]:
    """Runs of the same task, train type and swept values (everything but the seed), in order."""
    keys = compared_keys(runs)
    grouped: dict[tuple[str, int, tuple[tuple[str, Any], ...]], list[Run]] = {}
    for run in runs:
        settings = run.settings
        swept = tuple((key, settings.get(key)) for key in keys[run.task])
        grouped.setdefault((run.task, settings["train_type"], swept), []).append(run)
    return dict(sorted(grouped.items(), key=lambda item: repr(item[0])))


def missing_seeds(grouped: dict[tuple, list[Run]]) -> list[str]:
    """For each row, the seeds that other rows of its task have and it has no completed run for."""
    seeds_of_task: dict[str, set[int]] = {}
    for (task, _, _), members in grouped.items():
        seeds_of_task.setdefault(task, set()).update(run.seed for run in members)
    missing = []
    for (task, train_type, swept), members in grouped.items():
        for seed in sorted(seeds_of_task[task] - {run.seed for run in members}):
            missing.append(f"no completed run for {group_label(task, train_type, swept)} seed={seed}")
    return missing


def summarise(grouped: dict[tuple, list[Run]]) -> list[dict[str, Any]]:
    """One row per group: its swept values, seed count and mean/std of every column's metric."""
    rows = []
    for (task, train_type, swept), members in grouped.items():
        row: dict[str, Any] = {"task": task, "train_type": train_type, "swept": " ".join(f"{k}={v}" for k, v in swept),
                               "seeds": len(members)}
        for key, _, _ in COLUMNS:
            values = np.array([float(run.metrics[key]) for run in members if run.metrics.get(key) is not None])
            row[f"{key}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], problems: list[str], missing: list[str]) -> str:
    shown = [column for column in COLUMNS if any(np.isfinite(row[f"{column[0]}_mean"]) for row in rows)]
    header = ["task", "train_type", "swept", "seeds", *(title for _, title, _ in shown)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"], str(row["train_type"]), row["swept"] or "–", str(row["seeds"])]
        cells += [f"{row[f'{k}_mean']:{fmt}} ± {row[f'{k}_std']:{fmt}}" if np.isfinite(row[f"{k}_mean"]) else "–"
                  for k, _, fmt in shown]
        lines.append("| " + " | ".join(cells) + " |")
    text = ["# BIMT sweep report", "", "Mean ± standard deviation over seeds of completed runs; a row holds the "
            "runs whose configs differ in the seed alone (*swept*: the values that set it apart). "
            "*Pruned*: weights with |w| < 0.01 set to zero. *Embedding dims used*: embedding dimensions "
            "with a first-layer weight of at least 0.01. *Components*: connected parts of the pruned "
            "network that reach an output. *Modularity Q*: Newman's modularity of the pruned network's "
            "graph (edges weighted by |w|) under the communities Louvain finds; *Q of the task's modules*: "
            "under the task's own partition (docs/modularity.md). *Structure found*: fraction of seeds whose "
            "pruned network has exactly the task's input-to-output dependencies.", "", *lines, ""]
    if problems or missing:
        text += ["## Missing or unreadable", ""]
        text += [f"- {line}" for line in [*problems, *missing]]
        text.append("")
    return "\n".join(text)


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def networks_figure(grouped: dict[tuple, list[Run]], seed: int | None) -> Figure:
    """Final networks for one seed: one row per task, one column per train type and swept values."""
    tasks = sorted({task for task, _, _ in grouped})
    columns = sorted({(train_type, swept) for _, train_type, swept in grouped}, key=repr)
    seed = min(run.seed for members in grouped.values() for run in members) if seed is None else seed
    figure = Figure(figsize=(3 * len(columns), 3.2 * len(tasks)), dpi=100)
    axes = np.atleast_2d(figure.subplots(len(tasks), len(columns), squeeze=False))
    for (i, task), (j, (train_type, swept)) in itertools.product(enumerate(tasks), enumerate(columns)):
        ax = axes[i, j]
        title = "\n".join([f"{task}, train_type {train_type}", *(f"{key}={value}" for key, value in swept)])
        run = next((r for r in grouped.get((task, train_type, swept), []) if r.seed == seed), None)
        try:
            if run is None:
                raise FileNotFoundError(f"no run with seed {seed}")
            model, spec, _ = load_trained(run.path)
        except (OSError, UnreadableCheckpoint, ValueError, KeyError, RuntimeError) as error:
            ax.axis("off")
            ax.set_title(f"{title}\n({str(error).splitlines()[0][:60]})", fontsize=7)
            continue
        draw_network(model, 0, None if spec.tokens else spec.input_labels, spec.output_labels, title, ax=ax)
    figure.suptitle(f"final networks, seed {seed}")
    figure.tight_layout()
    return figure


def write_report(root: Path, seed: int | None = None) -> list[str]:
    """Write report.md, report.csv and networks.png into `root` (for a search, its trials instead of
    networks.png: `search_report`); returns the lines about missing or unreadable runs."""
    runs, problems = find_runs(root)
    if not runs:
        raise ReportError(f"no completed runs under {root}; {len(problems)} not: {problems[0]}")
    grouped = groups(runs)
    rows = summarise(grouped)
    missing = missing_seeds(grouped)
    (root / "report.md").write_text(markdown(rows, problems, missing))
    (root / "report.csv").write_text(csv_text(rows))
    if is_search(root):
        return [line for line in problems if "not completed" not in line]  # the trials' table lists those
    save_figure_atomic(root / "networks.png", networks_figure(grouped, seed))
    return problems + missing


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
    pictures = write_search_report(args.directory) if is_search(args.directory) else ["networks.png"]
    print(f"wrote {args.directory / 'report.md'}, {', '.join(['report.csv', *pictures])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
