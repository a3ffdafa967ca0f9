"""A run directory: who may write it, what it holds, and whether a config may continue it.

A run directory belongs to one process at a time: `claim` takes an exclusive lock on the directory
itself (`flock`), which the kernel releases when the process ends, however it ends, so a killed run
never leaves a stale lock, and no lock file is left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bimt.experiment.checkpoints import CHECKPOINT, read_checkpoint, saved_checkpoint
from bimt.experiment.outcome import resume_command
from bimt.experiment.schema import RunConfig, resume_identity, saved_config
from bimt.experiment.validate import ConfigError, load_config

METRICS = "metrics.json"


class InUse(RuntimeError):
    """The directory is being written by another process; the message is one line."""


_claimed: dict[Path, int] = {}  # directory -> the open descriptor that holds its lock


def claim(directory: Path, what: str = "run") -> None:
    """Lock `directory` (created if needed) for this process until `release` or the process's end;
    `InUse` if another process holds it."""
    directory = directory.resolve()
    if directory in _claimed:
        return
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise InUse(f"{directory} is in use: another {what} is writing there now; wait for it to end, or choose "
                    f"another hydra.{'sweep' if what == 'sweep' else 'run'}.dir") from None
    _claimed[directory] = descriptor


def release(directory: Path) -> None:
    """Give up this process's lock on `directory`, if it holds one."""
    descriptor = _claimed.pop(directory.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run directory's metrics.json; empty when it has none."""
    path = run_dir / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def read_status(run_dir: Path) -> str | None:
    """The `status` of a run directory's metrics.json, or None when it has none."""
    return read_metrics(run_dir).get("status")


def checkpoint_step(run_dir: Path) -> int:
    """The steps a run directory's checkpoint has done; 0 without one."""
    path = run_dir / CHECKPOINT
    return read_checkpoint(path)["step"] if path.is_file() else 0


def config_for_run_dir(config: RunConfig, run_dir: Path) -> RunConfig:
    """The config to run in `run_dir`: with `resume`, the one saved there (device and threads may
    change); otherwise `config`, which must equal the saved one if the directory already holds a run."""
    checkpoint = saved_checkpoint(run_dir)
    saved = None if checkpoint is None else saved_config(checkpoint["config"])
    if config.resume is not None:
        if saved is None:
            raise ConfigError(f"resume={config.resume}: there is no {CHECKPOINT} in that directory to continue from")
        resumed = load_config(OmegaConf.create(saved))
        resumed.device, resumed.threads = config.device, config.threads
        return resumed
    if saved is not None:
        now, before = resume_identity(asdict(config)), resume_identity(saved)
        for key in sorted(set(now) | set(before)):
            if now.get(key) != before.get(key):
                raise ConfigError(
                    f"{run_dir} holds a run with another config ({key}={before.get(key)!r} there, "
                    f"{now.get(key)!r} now); choose another hydra.run.dir, or continue it with {resume_command(run_dir)}"
                )
    return config
