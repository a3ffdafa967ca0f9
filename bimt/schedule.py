"""The paper's lambda schedule and the late bias penalty, as pure functions of the step.

lambda starts at `lambda0`, is multiplied by `boost` from step int(boost_at * steps) on and by
`decay` from step int(decay_at * steps) on; biases enter the cost from step int(bias_from * steps)
on. The multiplications happen in that order on Python floats, as in the reference, so the value is
bit-for-bit the reference's. The fields double as the `schedule` section of the run config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Schedule:
    lambda0: float = 1e-3
    boost_at: float = 0.25
    boost: float = 10.0
    decay_at: float = 0.75
    decay: float = 0.1
    bias_from: float = 0.75

    def lam(self, step: int, steps: int) -> float:
        """Connection-cost weight in the loss at `step` of `steps` (train types with L1)."""
        value = self.lambda0
        if step >= int(self.boost_at * steps):
            value *= self.boost
        if step >= int(self.decay_at * steps):
            value *= self.decay
        return value

    def penalize_bias(self, step: int, steps: int) -> bool:
        """Whether biases are part of the connection cost at `step` of `steps`."""
        return step >= int(self.bias_from * steps)

    def changes(self, steps: int) -> list[int]:
        """The steps at which lambda or the bias penalty may change."""
        return [int(self.boost_at * steps), int(self.decay_at * steps), int(self.bias_from * steps)]
