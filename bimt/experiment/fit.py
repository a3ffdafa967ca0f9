"""`bimt.fit`: the runner in one call from a notebook, with `train.py`'s configs and defaults.

`bimt.fit(task="independence", steps=2000, relocate={"every": 100})` composes the same config as
`python train.py task=independence steps=2000 relocate.every=100`, checks it the same way, trains it
into a run directory of its own under `outputs/runs/` (TensorBoard logs, figures, metrics.json, the
checkpoint) and hands back the trained model, its metrics and its logged scalars.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bimt.experiment.checkpoints import CHECKPOINT, load_checkpoint, read_checkpoint
from bimt.experiment.outcome import Status
from bimt.experiment.plan import build_model, build_settings
from bimt.experiment.run import run_group
from bimt.experiment.rundir import METRICS, config_for_run_dir, read_status
from bimt.experiment.schema import RunConfig
from bimt.experiment.validate import ConfigError, load_config, validate
from bimt.network.spatial import SpatialModel
from bimt.training import make_optimizer

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class FitResult:
    """A trained run: the model as it ended, metrics.json's values, every logged scalar by tag as
    {step: value}, and the run directory that holds the rest."""

    model: SpatialModel
    metrics: dict[str, Any]
    history: dict[str, dict[int, float]]
    run_dir: Path
    config: RunConfig


def overrides_of(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keyword settings as Hydra overrides: nested mappings become dotted keys, lists `[a,b]`, None `null`."""
    overrides = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            overrides += overrides_of(value, f"{name}.")
        else:
            overrides.append(f"{name}={_value(value)}")
    return overrides


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, str) and any(c in value for c in ",[]{}()=' "):
        return '"' + value.replace('"', '\\"') + '"'
    return str(value)


def compose_run_config(overrides: Sequence[str]) -> RunConfig:
    """The run config `python train.py <overrides>` would run, typed; one-line `ConfigError` otherwise."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return load_config(compose(config_name="config", overrides=list(overrides)))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(str(error).strip().splitlines()[0]) from None


def fit(task: str | None = None, overrides: Sequence[str] = (), run_dir: str | Path | None = None,
        **settings: Any) -> FitResult:
    """Train one run as `train.py` does: `task` and `settings` are its keys (`steps=2000`,
    `relocate={"every": 100}`), `overrides` any in its own syntax (`["task.path=data.csv"]`).

    The run goes to `run_dir` (default `outputs/runs/<time>_<task>_tt<train_type>`); a directory that
    holds a checkpoint of the same config is continued from it, one that holds a completed run is read
    back. Raises `ConfigError` (one line) for a config `train.py` would refuse, and `RuntimeError` for a
    run that did not complete (diverged).
    """
    everything = [*([f"task={task}"] if task is not None else []), *overrides_of(settings), *overrides]
    config = compose_run_config(everything)
    if run_dir is None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        run_dir = Path("outputs") / "runs" / f"{stamp}_{config.task.name}_tt{config.train_type}"
    run_dir = Path(run_dir)
    config = config_for_run_dir(config, run_dir)
    resolved = validate(config)
    if read_status(run_dir) != Status.COMPLETED:
        run_dir.mkdir(parents=True, exist_ok=True)
        (outcome,) = run_group([config], [run_dir], resolved)
        if outcome.get("status") != Status.COMPLETED.value:
            raise RuntimeError(outcome.get("error") or f"the run in {run_dir} ended {outcome.get('status')}")
    metrics = json.loads((run_dir / METRICS).read_text())  # as saved, whether trained now or before
    model = build_model(config, resolved, [config.run_seed])
    load_checkpoint(read_checkpoint(run_dir / CHECKPOINT), model, make_optimizer(model, build_settings(config, resolved)))
    return FitResult(model, metrics, logged_scalars(run_dir), run_dir, config)


def logged_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar a run logged to TensorBoard, by tag: {step: value}."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
