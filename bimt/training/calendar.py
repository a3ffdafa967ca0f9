"""The events of a run as functions of the step: the training loop stops for them and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Calendar:
    """Every event of a run, as a function of the step: the loop stops for them and nowhere else.

    Step s is the (s+1)-th update. A log line is written with step s's forward pass, before its
    update; lambda and the bias penalty change at the schedule's steps; relocation, snapshots and
    checkpoints happen after an update, once `done` steps are done.
    """

    steps: int
    log_every: int
    relocate_every: int  # 0: no relocation
    snapshot_every: int  # 0: none during training
    checkpoint_every: int  # 0: none during training
    changes: tuple[int, ...]  # steps at which lambda or the bias penalty may change

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0

    def relocates(self, done: int) -> bool:
        return bool(self.relocate_every) and done % self.relocate_every == 0

    def snapshots(self, done: int) -> bool:
        """A snapshot shows the network after step done - 1 (so step 0's is the first)."""
        return bool(self.snapshot_every) and (done - 1) % self.snapshot_every == 0

    def checkpoints(self, done: int) -> bool:
        return bool(self.checkpoint_every) and done % self.checkpoint_every == 0 and done < self.steps

    def next_stop(self, step: int) -> int:
        """The first step count after `step` at which the loop must come back: before a log line or
        a change of lambda or of the bias penalty, after a relocation, snapshot or checkpoint."""

        def next_multiple(every: int) -> int:
            return (step // every + 1) * every

        stops = [self.steps, next_multiple(self.log_every), *(change for change in self.changes if change > step)]
        for every in (self.relocate_every, self.checkpoint_every):
            if every:
                stops.append(next_multiple(every))
        if self.snapshot_every:
            stops.append(-(-step // self.snapshot_every) * self.snapshot_every + 1)
        return min(stops)
