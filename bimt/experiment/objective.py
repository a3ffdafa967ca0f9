"""What a run returns to a sweeper: the number, or numbers, that `objective=` names.

Hydra's Optuna sweeper optimises what the task function returns. `objective=test_loss` makes a run
return its test loss; `objective=[test_loss,active_weights]` returns both, for a multi-objective
search. Each objective has the direction it is optimised in, so a search never needs to be told.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bimt.tasks import Task


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # minimize | maximize
    keys: tuple[str, ...]  # the metrics.json key it reads: the first of these the run has
    meaning: str

    @property
    def worst(self) -> float:
        """The value of a run that failed or diverged: ranked below every run that completed."""
        return math.inf if self.direction == "minimize" else -math.inf


OBJECTIVES = {objective.name: objective for objective in (
    Objective("test_loss", "minimize", ("test_loss", "test_mse"), "the test loss (MSE for a regression)"),
    Objective("test_acc", "maximize", ("test_acc",), "the test accuracy (a classifier's)"),
    Objective("modularity_q", "maximize", ("modularity_q",), "Newman's modularity of the pruned network"),
    Objective("active_weights", "minimize", ("n_active_weights",), "the weights with |w| >= 0.01"),
)}


def objective_names(objective: str | Sequence[str]) -> tuple[str, ...]:
    """`objective` as a tuple of names: one for `objective=test_loss`, several for a list."""
    return (objective,) if isinstance(objective, str) else tuple(objective)


def objective_problem(objective: str | Sequence[str], task: Task) -> str | None:
    """Why `objective` cannot be a run's objective for `task`, in one line; None if it can."""
    names = objective_names(objective)
    produced = [name for name in OBJECTIVES if name != "test_acc" or task.classifies]
    shown = objective if isinstance(objective, str) else f"[{','.join(map(str, names))}]"
    if not names:
        return f"objective={shown} is not allowed; name one or more of {', '.join(OBJECTIVES)}"
    for name in names:
        if name not in OBJECTIVES:
            return f"objective={shown}: {name!r} is unknown; allowed: {', '.join(OBJECTIVES)}"
        if name not in produced:
            return (f"objective={shown}: task {task.name} is a regression and has no {name}; it produces "
                    f"{', '.join(produced)}")
    if len(set(names)) < len(names):
        return f"objective={shown} names an objective twice; name each once"
    return None


def directions(objective: str | Sequence[str]) -> list[str]:
    """Optuna's direction for each objective, in order."""
    return [OBJECTIVES[name].direction for name in objective_names(objective)]


def objective_value(metrics: dict[str, Any], objective: str | Sequence[str]) -> float | list[float]:
    """The objective of a completed run from its metrics: a number, or a list for several objectives.
    A metric that is undefined for the run (the modularity of a network pruned to nothing) counts as
    the objective's worst value."""
    values = []
    for name in objective_names(objective):
        spec = OBJECTIVES[name]
        value = next((metrics[key] for key in spec.keys if key in metrics), None)
        values.append(spec.worst if value is None else float(value))
    return values[0] if isinstance(objective, str) else values


def worst_value(objective: str | Sequence[str]) -> float | list[float]:
    """The objective of a run that failed or diverged."""
    values = [OBJECTIVES[name].worst for name in objective_names(objective)]
    return values[0] if isinstance(objective, str) else values
