"""Command-line guard rails for `train.py`: user mistakes become one line on stderr and exit code 2.

Hydra reports an unknown config-group option or an unwritable output directory with a multi-line
message or a traceback; these checks run first and say what is wrong, and what is allowed, in one
line.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bimt.experiment.outcome import EXIT_CODES, Outcome
from bimt.experiment.rundir import InUse, claim, release
from bimt.experiment.schema import RENAMED_KEYS, RunConfig
from bimt.experiment.validate import ConfigError, load_config, validate
from bimt.tasks import Task
from bimt.tasks.metrics import format_dependencies
from bimt.training.status import Status

USAGE_ERROR = 2
CHECKED_GROUPS = ("task", "model", "schedule", "sweep", "search")
PLUGIN_LAUNCHERS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher"}


FORMULA_LIST = re.compile(r"^(\+{0,2}task\.outputs)=\[(.*)\]$")


def quote_formulas(argv: Sequence[str]) -> list[str]:
    """Quote each formula of an unquoted `task.outputs=[...]` list.

    Hydra's override grammar reads `sin(pi*x2)` inside a list as a call of a sweep function; quoted,
    it is a plain string. So `'task.outputs=[x1*x3, sin(pi*x2)+x4**2]'` works as typed.
    """
    quoted = []
    for arg in argv:
        match = FORMULA_LIST.match(arg)
        if match and not set("\"'") & set(match.group(2)):
            formulas = _split_top_level(match.group(2))
            arg = f"{match.group(1)}=[{','.join(json.dumps(f.strip()) for f in formulas)}]"
        quoted.append(arg)
    return quoted


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


class JobFailed(RuntimeError):
    """One job of a sweep failed; raised (not exited) so that Hydra runs the other jobs. `interrupted`:
    it was stopped (Ctrl-C), which stops a search too, rather than failing on its own."""

    def __init__(self, message: str, interrupted: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted


def fail(message: str, run_dir: Path | None = None, code: int = USAGE_ERROR, in_sweep: bool = False) -> NoReturn:
    """Print one line and remove a run directory that holds nothing but Hydra's bookkeeping.

    Then exit with `code`, or, inside a sweep, raise `JobFailed`: Hydra records the job as failed,
    runs the remaining jobs, and ends the sweep with a non-zero exit code.
    """
    print(f"error: {message}", file=sys.stderr)
    if run_dir is not None and run_dir.is_dir():
        leftovers = [p for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
        if not leftovers:
            shutil.rmtree(run_dir, ignore_errors=True)
    if in_sweep:
        raise JobFailed(message) from None
    sys.exit(code)


def end_with(result: Outcome, in_sweep: bool) -> NoReturn:
    """Print a job's outcome that is an error and exit with its code; in a sweep, raise `JobFailed`."""
    print(result.line, file=sys.stderr)
    if in_sweep:
        raise JobFailed(result.line, interrupted=result.exit_code == EXIT_CODES[Status.INTERRUPTED]) from None
    sys.exit(result.exit_code)


def print_structure(metrics: dict[str, Any], task: Task, config: RunConfig) -> None:
    """What a completed run's network computes: which inputs each output depends on (for a task that
    declares its structure), or the embedding dimensions it uses."""
    if "dependencies" in metrics:
        found = "found" if metrics["expected_structure_found"] else "not found"
        print(f"inputs each output depends on, after pruning |w| < 0.01 (expected structure {found}):")
        print(format_dependencies(np.array(metrics["dependencies"], dtype=bool), task))
    if "active_embedding_dims" in metrics:
        print(f"embedding dimensions in use after pruning |w| < 0.01: {metrics['n_active_embedding_dims']} "
              f"of {config.model.embedding_dim}")


def resume_overrides(argv: Sequence[str]) -> list[str]:
    """`resume=DIR` continues the run in DIR: it becomes the run directory, and Hydra leaves that
    run's recorded config (DIR/.hydra) as it is.

    DIR is passed to Hydra quoted: a multirun's job directory (`seed=0,train_type=5`) would
    otherwise read as a sweep over several values."""
    for i, arg in enumerate(argv):
        if arg.startswith("resume=") and arg != "resume=null":
            directory = arg.removeprefix("resume=")
            if not directory.startswith(("'", '"')):
                directory = "'" + directory.replace("'", "\\'") + "'"
            return [*argv[:i], f"resume={directory}", *argv[i + 1 :], f"hydra.run.dir={directory}",
                    "hydra.output_subdir=null"]
    return list(argv)


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(path.stem for path in (conf_dir / group).glob("*.yaml"))


def check_group_choices(argv: Sequence[str], conf_dir: Path) -> None:
    """Fail on `group=value` overrides (single or swept) that name no file in conf/<group>/."""
    candidates = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return  # malformed overrides: Hydra's own parser reports them
    for override in overrides:
        group = override.key_or_group
        if group not in CHECKED_GROUPS or override.package is not None or override.is_delete():
            continue
        allowed = group_options(conf_dir, group)
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except HydraException:
                continue
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if value not in allowed:
                fail(f"{group}={value} is not allowed; choose one of: {', '.join(allowed)}")


BATCHED_OPTION = re.compile(r"^hydra\.launcher\.(max_group|n_jobs)=(.*)$")


def check_launcher(argv: Sequence[str]) -> None:
    """Fail on `hydra/launcher=NAME` when NAME's plugin is not installed, and on a batched launcher's
    `max_group` or `n_jobs` below 1 (Hydra would show a traceback for either)."""
    batched = batched_launcher(argv)
    for arg in argv:
        name = arg.removeprefix("hydra/launcher=") if arg.startswith("hydra/launcher=") else None
        if name in PLUGIN_LAUNCHERS and importlib.util.find_spec(PLUGIN_LAUNCHERS[name]) is None:
            fail(f"hydra/launcher={name} needs its Hydra plugin, which is not installed: pip install -e \".[cluster]\"")
        option = BATCHED_OPTION.match(arg)
        if batched and option and not (option.group(2).isdigit() and int(option.group(2)) >= 1):
            fail(f"hydra.launcher.{option.group(1)}={option.group(2)} is not allowed; it must be an integer >= 1")


SEARCH_SWEEPER = "bimt_optuna"  # hydra_plugins/bimt_launchers/search.py: the Optuna sweeper set up for train.py
SAMPLERS = ("tpe", "random", "cmaes", "nsgaii", "motpe", "grid")  # the plugin's hydra/sweeper/sampler options


def search_overrides(argv: Sequence[str]) -> list[str]:
    """`hydra/sweeper=optuna` as the Optuna sweeper set up for this runner (`SEARCH_SWEEPER`). Fails
    where the plugin is not installed, naming the extra, and on a search preset without the sweeper."""
    searches = [arg for arg in argv if arg == "hydra/sweeper=optuna" or arg.lstrip("+").startswith("search=")]
    if searches and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        fail(f"{searches[0]} needs Hydra's Optuna sweeper plugin, which is not installed: pip install -e \".[search]\"")
    if searches and "hydra/sweeper=optuna" not in argv:
        fail(f"{searches[0]} is a search with Optuna's sweeper; add hydra/sweeper=optuna")
    for arg in argv:
        sampler = arg.removeprefix("hydra/sweeper/sampler=") if arg.startswith("hydra/sweeper/sampler=") else None
        if sampler is not None and sampler not in SAMPLERS:
            fail(f"hydra/sweeper/sampler={sampler} is not allowed; choose one of: {', '.join(SAMPLERS)}")
    return [f"hydra/sweeper={SEARCH_SWEEPER}" if arg == "hydra/sweeper=optuna" else arg for arg in argv]


RENAMED_OPTIONS = {**{".".join(old): ".".join(new) for old, new in RENAMED_KEYS.items()},
                   "hydra.launcher.max_batch": "hydra.launcher.max_group"}


def check_renamed(argv: Sequence[str]) -> None:
    """Fail, naming the new key, on an override of a key that has been renamed."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in RENAMED_OPTIONS:
            fail(f"{key} is now {RENAMED_OPTIONS[key]}; use {RENAMED_OPTIONS[key]}={value}")


def check_configs(argv: Sequence[str], conf_dir: Path) -> None:
    """Compose the config (in a multirun: every swept value) before Hydra does, so that an unknown
    key or a bad override is one line, not Hydra's report of several.

    A multirun whose jobs train one after another (any launcher but `batched`) also validates
    each swept value here, beside the first value of every other key, so that a bad value in the
    last job is found before the others train; a value that is bad only in one combination is still
    reported when that job starts. A single run, and each job of a batched sweep (which prepares
    every job before any trains), is validated once, by the job itself.
    """
    job_overrides = [arg for arg in argv if "=" in arg and not arg.startswith(("-", "hydra"))]
    sweeper = [arg for arg in argv if arg.startswith("hydra/sweeper=")]  # a search preset sets its settings
    multirun = bool({"-m", "--multirun"} & set(argv))
    try:
        overrides = OverridesParser.create().parse_overrides(job_overrides)
        for override in overrides:
            if override.is_sweep_override() and not multirun:
                fail(f"{override.input_line} lists several values; add -m (--multirun) to run one job for each")
        jobs = representative_jobs(overrides)
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            configs = [compose(config_name="config", overrides=[*sweeper, *job]) for job in jobs]
    except HydraException as error:
        fail(" ".join(line.strip() for line in str(error).splitlines() if line.strip()))
    if not multirun or batched_launcher(argv):
        return
    for config in configs:
        try:
            validate(load_config(config))
        except ConfigError as error:
            fail(str(error))


def batched_launcher(argv: Sequence[str]) -> bool:
    """Whether the command's jobs go to the batched launcher (its option, or a sweep preset)."""
    return "hydra/launcher=batched" in argv or any(arg.startswith("+sweep=") for arg in argv)


def representative_jobs(overrides: Sequence[Override]) -> list[list[str]]:
    """The job overrides that try every swept value once, each beside the first value of every
    other key (all combinations of a large sweep would take seconds per hundred to compose)."""
    per_key = [_override_values(override) for override in overrides]
    base = [values[0] for values in per_key]
    return [base] + [base[:i] + [value] + base[i + 1 :] for i, values in enumerate(per_key) for value in values[1:]]


def _override_values(override: Override) -> list[str]:
    """`key=value` for each value an override takes in a sweep (one for a plain override)."""
    key = override.get_key_element()
    if override.is_interval_sweep():  # a search's range (hydra/sweeper=optuna): its start stands for it
        return [f"{key}={override.value().start}"]
    if override.is_sweep_override():
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    return [f"{key}={override.get_value_element_as_str()}"]


def _check_writable(directory: str) -> None:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        fail(f"output directory {directory!r} cannot be written: {error.strerror or error}")


def _claim(directory: str, what: str) -> None:
    _check_writable(directory)
    try:
        claim(Path(directory), what)
    except InUse as error:
        fail(str(error))


class ClaimOutputDir(Callback):
    """Hydra callback: before Hydra writes anything into the run or sweep directory, make sure it can
    be written and take it for this process (`bimt.experiment.rundir.claim`): a second run started
    in the same directory stops with one line instead of mixing its files with the first's."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim(config.hydra.run.dir, "run")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim(config.hydra.sweep.dir, "sweep")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.sweep.dir))
