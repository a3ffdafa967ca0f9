"""The paper's lambda schedule and the late bias penalty, as pure functions of the step.

lambda starts at `base`, is multiplied by `boost` from step int(boost_at * steps) on and by `decay`
from step int(decay_at * steps) on; biases enter the cost from step int(bias_from * steps) on.
The multiplications happen in that order on Python floats, as in the reference, so the value is
bit-for-bit the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    steps: int
    base: float = 1e-3
    boost_at: float = 0.25
    boost: float = 10.0
    decay_at: float = 0.75
    decay: float = 0.1
    bias_from: float = 0.75

    def lam(self, step: int) -> float:
        """Connection-cost weight used in the loss at `step` (for base 1; scale per train type)."""
        value = self.base
        if step >= int(self.boost_at * self.steps):
            value *= self.boost
        if step >= int(self.decay_at * self.steps):
            value *= self.decay
        return value

    def penalize_bias(self, step: int) -> bool:
        """Whether biases are part of the connection cost at `step`."""
        return step >= int(self.bias_from * self.steps)
