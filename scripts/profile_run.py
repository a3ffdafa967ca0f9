#!/usr/bin/env python
"""Where a `train.py` command's wall time goes, split into its parts (imports, Hydra, engines, relocation, pictures, ...).

    python scripts/profile_run.py steps=10              # a single run's fixed cost
    python scripts/profile_run.py task=independence     # a full single run
    python scripts/profile_run.py +sweep=ablation       # the ablation preset, on one core

The command runs in this process with a stopwatch around a few functions (Python's import, Hydra's
composition, the engines, relocation, snapshots, ...). Each second goes to the innermost part that
is running, so the parts add up to the wall time: an import made while a snapshot draws counts as
the snapshot's, and "other" is what no part covers (Python's start, Hydra's own bookkeeping, building a
group's data and model). cProfile would name every function, but its overhead on Python-heavy parts
(imports, composition) doubles them; a stopwatch on a few functions costs nothing measurable.

A multirun runs with `hydra.launcher.n_jobs=1` (added unless given): every job is prepared and
trained in this process, so the figures are CPU seconds, which a launcher with n workers spreads
over n cores.
"""

from __future__ import annotations

import functools
import importlib
import importlib._bootstrap
import runpy
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (part, module, attribute path): the function whose calls count as the part. Functions that modules
# import by name are timed where they are looked up.
TIMED = [
    ("imports", "importlib._bootstrap", "_find_and_load"),
    ("Hydra: composing configs", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_configuration"),
    ("Hydra: composing configs", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config"),
    ("Hydra: a job's directory, .hydra/ and logging", "hydra.core.utils", "run_job"),
    ("Hydra: a job's directory, .hydra/ and logging", "hydra._internal.hydra", "run_job"),
    ("bimt: checking configs", "bimt.experiment.cli", "check_configs"),
    ("bimt: checking configs", "bimt.experiment.rundir", "config_for_run_dir"),
    ("bimt: checking configs", "bimt.experiment.validate", "validate"),
    ("bimt: planning (device, memory, data, model)", "bimt.experiment.run", "plan_group"),
    ("training loop (Python and torch between stretches)", "bimt.experiment.run", "train"),
    ("native engine: compiled training steps", "bimt.engines.native", "NativeEngine.run"),
    ("eager engine: training steps", "bimt.engines.eager", "EagerEngine.run"),
    ("numba's start-up (typing, loading cached code)", "numba.core.dispatcher", "_DispatcherBase._compile_for_args"),
    ("logging: test metrics, cost, TensorBoard scalars", "bimt.engines.native", "NativeEngine.test_metrics"),
    ("logging: test metrics, cost, TensorBoard scalars", "bimt.engines.eager", "EagerEngine.test_metrics"),
    ("logging: test metrics, cost, TensorBoard scalars", "bimt.training.loop", "priced_cost"),
    ("logging: test metrics, cost, TensorBoard scalars", "bimt.experiment.tensorboard", "RunLogger.scalars"),
    ("relocation", "bimt.training.loop", "relocate"),
    ("network snapshots (draw, PNG, TensorBoard)", "bimt.experiment.tensorboard", "RunLogger.snapshot"),
    ("checkpoints and closing event files", "bimt.experiment.tensorboard", "RunLogger.checkpoint"),
    ("checkpoints and closing event files", "bimt.experiment.tensorboard", "RunLogger.close"),
    ("finishing each job: metrics, figures, final TensorBoard entries", "bimt.experiment.run", "_finish_job"),
    ("video", "bimt.experiment.run", "write_video"),
]


class Stopwatch:
    """Exclusive wall time per part: the clock always runs for the innermost part entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack = ["other"]
        self.last = time.perf_counter()

    def switch(self) -> None:
        """Charge the time since the last switch to the part running now."""
        now = time.perf_counter()
        self.seconds[self.stack[-1]] += now - self.last
        self.last = now

    def wrap(self, part: str, function, top_level_only: bool = False):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if top_level_only and self.stack[-1] != "other":
                return function(*args, **kwargs)
            self.switch()
            self.stack.append(part)
            try:
                return function(*args, **kwargs)
            finally:
                self.switch()
                self.stack.pop()

        return timed


def install(stopwatch: Stopwatch, part: str, module_name: str, path: str) -> None:
    """Time `module_name.path` as `part`. Imports count only outside the other parts: one that
    starts later (matplotlib's, at the first snapshot; numba's typing, at its first call) is part
    of the cost of what needed it."""
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, stopwatch.wrap(part, getattr(owner, name), top_level_only=part == "imports"))


def main() -> int:
    overrides = sys.argv[1:]
    if any(o.startswith("+sweep=") or o in ("-m", "--multirun") for o in overrides) and not any(
            o.startswith("hydra.launcher.n_jobs=") for o in overrides):
        overrides.append("hydra.launcher.n_jobs=1")
    began = time.perf_counter()
    stopwatch = Stopwatch()
    install(stopwatch, *TIMED[0])  # imports first: timing the others imports their modules
    for timed in TIMED[1:]:
        install(stopwatch, *timed)
    sys.argv = [str(REPO / "train.py"), *overrides]
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            print(f"train.py exited with {exit.code}", file=sys.stderr)
            return 1
    stopwatch.switch()
    wall = time.perf_counter() - began
    print(f"\ntrain.py {' '.join(overrides)}: {wall:.2f} s wall (after Python's own start)")
    parts = list(dict.fromkeys(part for part, *_ in TIMED)) + ["other"]
    for part in parts:
        seconds = stopwatch.seconds.get(part, 0.0)
        if seconds >= 0.005:
            print(f"  {part:<66} {seconds:7.2f} s {100 * seconds / wall:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
