"""How a job ended: one status, and from it the line the terminal shows and the process's exit code.

`train.py` and the batched launcher both report through `outcome`, so a job says the same thing
however it was launched.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bimt.training.status import Status

EXIT_CODES = {Status.COMPLETED: 0, Status.INVALID: 2, Status.DIVERGED: 3, Status.FAILED: 4, Status.INTERRUPTED: 130}


@dataclass(frozen=True)
class Outcome:
    line: str
    exit_code: int
    is_error: bool  # shown on stderr, and a failed job of a sweep


def resume_command(run_dir: Path) -> str:
    """The shell command that continues the run in `run_dir`."""
    return f"python train.py {shlex.quote(f'resume={run_dir}')}"


def outcome(metrics: dict[str, Any], run_dir: Path, in_sweep: bool) -> Outcome:
    """The line and exit code of a job that ended with `metrics` (its metrics.json, or a status and
    an `error`). In a sweep an error names its job's directory, and an interrupted job is continued
    by the sweep's own command."""
    status = Status(metrics["status"])
    code = EXIT_CODES[status]
    if status is Status.COMPLETED:
        return Outcome(f"{result_line(metrics)} | outputs in {run_dir}", code, False)
    if status is Status.INTERRUPTED:
        step = metrics["step"]
        if in_sweep:
            return Outcome(f"error: {run_dir}: interrupted after step {step}; run the same command again (same "
                           "hydra.sweep.dir) to continue", code, True)
        return Outcome(f"interrupted after step {step}; continue with: {resume_command(run_dir)}", code, True)
    where = f"{run_dir}: " if in_sweep else ""
    return Outcome(f"error: {where}{metrics['error']}", code, True)


def result_line(metrics: dict[str, Any]) -> str:
    """A completed job's headline numbers, one line: its losses (and accuracies) and cost."""
    if "test_acc" in metrics:
        numbers = (f"train loss {metrics['train_loss']:.3e} | test loss {metrics['test_loss']:.3e} | "
                   f"train acc {metrics['train_acc']:.3f} | test acc {metrics['test_acc']:.3f}")
    else:
        numbers = f"train MSE {metrics['train_mse']:.3e} | test MSE {metrics['test_mse']:.3e}"
    return (f"{metrics['task']} train_type={metrics['train_type']} seed={metrics['seed']}: {numbers} | "
            f"connection cost {metrics['connection_cost']:.3f}")
