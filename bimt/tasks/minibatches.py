"""Minibatches: which training samples each step sees, as a pure function of the seed and the step.

Each epoch is a fresh shuffle of the training set, cut into consecutive batches of `size` (the last
one smaller when `size` does not divide the set), as `DataLoader(shuffle=True)` does. The shuffle of
epoch e is drawn from numpy's generator seeded with (seed, e), so step s's batch is known without
replaying the steps before it: a resumed run sees exactly the batches an uninterrupted one would.
Each replica shuffles with its own seed (a batched sweep over seeds trains each on its own order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class Minibatches:
    def __init__(self, samples: int, size: int, seeds: Sequence[int]) -> None:
        if not 1 <= size <= samples:
            raise ValueError(f"batch size {size} must be between 1 and the {samples} training samples")
        self.samples, self.size, self.seeds = samples, size, list(seeds)
        self.per_epoch = -(-samples // size)
        self._epoch, self._orders = -1, np.empty((0, samples), dtype=np.int64)

    def indices(self, step: int) -> torch.Tensor:
        """(R, b) training-sample indices of step `step`'s batch, one row per replica."""
        epoch, batch = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._orders = np.stack([np.random.default_rng([seed, epoch]).permutation(self.samples) for seed in self.seeds])
        return torch.from_numpy(self._orders[:, batch * self.size : (batch + 1) * self.size])

    def replica_subset(self, index: torch.Tensor | slice) -> Minibatches:
        """The order of the given replicas (as `Dataset.replica_subset` selects them)."""
        seeds = self.seeds[index] if isinstance(index, slice) else [self.seeds[r] for r in index.tolist()]
        return Minibatches(self.samples, self.size, seeds)
