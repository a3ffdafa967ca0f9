"""The trials of a search (`hydra/sweeper=optuna`): what `scripts/report.py` adds for a search directory.

Writes `search.md` (every trial: its searched values, its objective, its status; the best trial, or
for several objectives the Pareto front) and `search.png` (each objective against lambda, the
best trial marked), and for two objectives `pareto.png`: the trials in the plane of the two
objectives, the front joined, and the network of each point on the front. Trials are the run
directories under the search directory; what Optuna recorded is not needed to read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from bimt.experiment.files import save_figure_atomic
from bimt.experiment.fit import compose_run_config
from bimt.experiment.objective import OBJECTIVES, objective_names, objective_value
from bimt.experiment.rundir import METRICS
from bimt.experiment.schema import flatten, saved_config
from bimt.experiment.trained import load_trained
from bimt.experiment.validate import ConfigError
from bimt.pictures import draw_network
from bimt.training import Status

LAMBDA = "schedule.lambda0"
SEARCHED = (LAMBDA, "model.l0", "relocate.top_k")  # the preset's; others a search varies follow them
MOST_NETWORKS = 6  # network pictures under the Pareto front


@dataclass(frozen=True)
class Trial:
    number: int
    path: Path
    status: str
    settings: dict[str, Any]  # the run's config, dotted keys
    values: tuple[float, ...] | None  # its objectives, None unless it completed


def is_search(root: Path) -> bool:
    """Whether `root` is a search's sweep directory: its runs were launched by the Optuna sweeper."""
    hydra_files = sorted(root.glob("*/.hydra/hydra.yaml"))
    if not hydra_files:
        return False
    target = OmegaConf.load(hydra_files[0]).hydra.sweeper.get("_target_", "")
    return str(target).endswith("OptunaSweeper")


def read_trials(root: Path) -> list[Trial]:
    """The trials under a search directory, in the order Optuna asked for them; those whose run
    never wrote its metrics (still running, or killed) are left out."""
    trials = []
    for hydra_file in root.glob("*/.hydra/hydra.yaml"):
        run_dir = hydra_file.parent.parent
        if not (run_dir / METRICS).is_file():
            continue
        metrics = json.loads((run_dir / METRICS).read_text())
        number = int(OmegaConf.load(hydra_file).hydra.job.num)
        config = flatten(saved_config(metrics["config"]))
        values = None
        if metrics["status"] == Status.COMPLETED:
            value = objective_value(metrics, config["objective"])
            values = tuple(value) if isinstance(value, list) else (value,)
        trials.append(Trial(number, run_dir, metrics["status"], config, values))
    return sorted(trials, key=lambda trial: trial.number)


def searched_keys(trials: list[Trial]) -> list[str]:
    """The config keys whose values differ between trials: what the search chose."""
    keys = {key for trial in trials for key in trial.settings}
    varied = [key for key in keys if len({repr(trial.settings.get(key)) for trial in trials}) > 1]
    return sorted(varied, key=lambda key: (SEARCHED.index(key) if key in SEARCHED else len(SEARCHED), key))


def pareto_front(trials: list[Trial], directions: list[str]) -> list[Trial]:
    """The completed trials that no other completed trial beats in every objective, by the first."""
    signs = np.array([1.0 if direction == "minimize" else -1.0 for direction in directions])
    done = [trial for trial in trials if trial.values is not None]
    scores = [signs * np.array(trial.values) for trial in done]
    front = [trial for trial, score in zip(done, scores)
             if not any(np.all(other <= score) and np.any(other < score) for other in scores)]
    return sorted(front, key=lambda trial: trial.values)


def markdown(trials: list[Trial], names: tuple[str, ...], keys: list[str], best: list[Trial]) -> str:
    header = ["trial", *keys, *names, "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in trials:
        values = [f"{v:.4g}" for v in trial.values] if trial.values is not None else ["–"] * len(names)
        settings = [f"{trial.settings.get(key):.4g}" if isinstance(trial.settings.get(key), float)
                    else str(trial.settings.get(key)) for key in keys]
        lines.append("| " + " | ".join([str(trial.number), *settings, *values, trial.status]) + " |")
    what = "Best trial" if len(names) == 1 else "Pareto front (no other trial is better in every objective)"
    chosen = [f"- trial {t.number}: " + ", ".join(f"{key}={t.settings.get(key)}" for key in keys) + " → " +
              ", ".join(f"{name} {value:.4g}" for name, value in zip(names, t.values)) for t in best]
    failed = sum(trial.values is None for trial in trials)
    return "\n".join(["# Search report", "", f"{len(trials)} trials, {failed} of them failed or diverged; "
                      f"objective: {', '.join(f'{n} ({OBJECTIVES[n].direction})' for n in names)}.", "",
                      *lines, "", f"## {what}", "", *chosen, ""])


def own_lambda(task: str) -> float | None:
    """The lambda the task's own config trains with (the paper's, for a paper task); None for a task
    whose config cannot be composed by its name alone (formulas or a file of one's own)."""
    try:
        return compose_run_config([f"task={task}"]).schedule.lambda0
    except ConfigError:
        return None


def objectives_figure(trials: list[Trial], names: tuple[str, ...], best: list[Trial], own: float | None) -> Figure:
    """Each objective against lambda (log scale), trials coloured by their order, the best ringed, the
    task's own lambda dashed; a trial that failed or diverged is a red cross on the panel's lower edge."""
    figure = Figure(figsize=(4.8 * len(names), 3.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(names), squeeze=False)[0])
    done = [trial for trial in trials if trial.values is not None]
    failed = [trial for trial in trials if trial.values is None]
    for i, (ax, name) in enumerate(zip(axes, names)):
        x = [trial.settings[LAMBDA] for trial in done]
        y = [trial.values[i] for trial in done]
        points = ax.scatter(x, y, c=[trial.number for trial in done], cmap="viridis", s=25, zorder=2)
        ax.scatter([t.settings[LAMBDA] for t in best], [t.values[i] for t in best], s=120, facecolors="none",
                   edgecolors="red", linewidths=1.5, zorder=3, label="best" if len(names) == 1 else "Pareto front")
        if failed:
            ax.scatter([t.settings[LAMBDA] for t in failed], [min(y, default=0.0)] * len(failed), marker="x",
                       color="red", zorder=3, label="failed or diverged")
        if own is not None:
            ax.axvline(own, linestyle="--", color="0.4", label=f"the task's own ({own:g})")
        ax.set_xscale("log")
        if name == "test_loss" and y and min(y) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("lambda (schedule.lambda0)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    figure.colorbar(points, ax=axes.tolist(), label="trial")
    figure.suptitle(f"{len(trials)} trials")
    return figure


def pareto_figure(trials: list[Trial], names: tuple[str, ...], front: list[Trial]) -> Figure:
    """The two objectives of every completed trial, the front joined, and the front's networks."""
    shown = [front[int(i)] for i in np.unique(np.linspace(0, len(front) - 1, min(len(front), MOST_NETWORKS)).round())]
    figure = Figure(figsize=(max(8, 2.6 * len(shown)), 8), dpi=100)
    grid = figure.add_gridspec(2, len(shown), height_ratios=[1.1, 1])
    ax = figure.add_subplot(grid[0, :])
    done = [trial for trial in trials if trial.values is not None]
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], color="0.6", s=20, label="trials")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="red", label="Pareto front")
    for trial in shown:
        ax.annotate(str(trial.number), trial.values, textcoords="offset points", xytext=(4, 4), fontsize=8)
    if all(t.values[0] > 0 for t in done):
        ax.set_xscale("log")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=8)
    for j, trial in enumerate(shown):
        cell = figure.add_subplot(grid[1, j])
        model, task, _ = load_trained(trial.path)
        title = (f"trial {trial.number}: lambda {trial.settings[LAMBDA]:.2g}\n"
                 f"{names[0]} {trial.values[0]:.3g}, {names[1]} {trial.values[1]:.3g}")
        draw_network(model, 0, None if task.tokens else task.input_labels, task.output_labels, title, ax=cell)
    figure.tight_layout()
    return figure


def write_search_report(root: Path) -> list[str]:
    """Write search.md, search.png (and pareto.png for two objectives) into a search directory;
    returns the names of the files written."""
    trials = read_trials(root)
    names = objective_names(trials[0].settings["objective"]) if trials else ()
    if not any(trial.values is not None for trial in trials):
        return []
    keys = searched_keys(trials)
    best = pareto_front(trials, [OBJECTIVES[name].direction for name in names])  # one objective: the best
    (root / "search.md").write_text(markdown(trials, names, keys, best))
    written = ["search.md"]
    if LAMBDA in keys:
        own = own_lambda(trials[0].settings["task.name"])
        save_figure_atomic(root / "search.png", objectives_figure(trials, names, best, own))
        written.append("search.png")
    if len(names) == 2:
        save_figure_atomic(root / "pareto.png", pareto_figure(trials, names, best))
        written.append("pareto.png")
    return written
