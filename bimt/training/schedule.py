"""The paper's lambda schedule and the late bias penalty, as pure functions of the step.

lambda starts at `lambda0`, is multiplied by `boost` from step int(boost_at * steps) on and by
`rescale` from step int(rescale_at * steps) on (0.1 in the formulas' schedule, a decay; 10 in the
MNIST notebook's, a second boost); biases enter the cost from step int(bias_from * steps) on. The
multiplications happen in that order on Python floats, as in the reference, so the value is
bit-for-bit the reference's. The fields double as the `schedule` section of the run config, and
the defaults are `conf/schedule/paper.yaml`'s.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Schedule:
    lambda0: float = 1e-3
    boost_at: float = 0.25
    boost: float = 10.0
    rescale_at: float = 0.75
    rescale: float = 0.1
    bias_from: float = 0.75

    def lam(self, step: int, steps: int) -> float:
        """Connection-cost weight in the loss at `step` of `steps` (train types with L1)."""
        value = self.lambda0
        if step >= int(self.boost_at * steps):
            value *= self.boost
        if step >= int(self.rescale_at * steps):
            value *= self.rescale
        return value

    def penalize_bias(self, step: int, steps: int) -> bool:
        """Whether biases are part of the connection cost at `step` of `steps`."""
        return step >= int(self.bias_from * steps)

    def changes(self, steps: int) -> list[int]:
        """The steps at which lambda or the bias penalty may change."""
        return [int(self.boost_at * steps), int(self.rescale_at * steps), int(self.bias_from * steps)]
