"""In-context linear regression (Section 3.4, Figure 7): a transformer reads pairs (x_t, y_t = w . x_t)
of one task w and predicts each y_t from what came before it.

The data are drawn as the notebook incontext_3.4 draws them, float64: after `torch.manual_seed(seed)`,
w ~ U(-1, 1) of shape (sequences, dim), then x ~ U(1, 3) of shape (sequences, pairs, dim). A sequence
is the tokens (0, x_1), (y_1, 0), (0, x_2), ...: the inputs are all of them but the last, the targets
all but the first, and the loss reads the predictions at the x tokens (every other position, channel
0). The training set is `np.random.choice` of `int(sequences * fraction)` ids without replacement from
numpy's stream seeded with the seed, the test set the rest in Python's set order. Each step trains on
64 sequences drawn with replacement from the same stream, which then draws 64 test ids the notebook
evaluates and this project does not (`SequenceDraws` keeps that stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bimt.network.transformer import BioTransformer
from bimt.tasks.base import Task, require
from bimt.tasks.dataset import Dataset

SETTINGS = ("sequences", "pairs", "dim", "train_fraction")


def draw_tasks(sequences: int, pairs: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w (sequences, dim) ~ U(-1, 1), then x (sequences, pairs, dim) ~ U(1, 3), float64, from torch's
    global generator (the notebook's two draws, in its order)."""
    w = torch.rand(sequences, dim, dtype=torch.float64) * 2 - 1
    x = torch.rand(sequences, pairs, dim, dtype=torch.float64) * 2 + 1
    return w, x


def split_ids(stream: np.random.RandomState, sequences: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training ids drawn from `stream` without replacement, and the rest in Python's set order."""
    train = stream.choice(sequences, int(sequences * fraction), replace=False)
    return train, np.array(list(set(np.arange(sequences)) - set(train)))


def regression_data(seed: int, sequences: int, pairs: int, dim: int, fraction: float) -> Dataset:
    """Token sequences (n, 2 * pairs - 1, dim + 1) and their targets, train and test."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        w, x = draw_tasks(sequences, pairs, dim)
    y = torch.einsum("ik,ijk->ij", w, x)
    tokens = torch.zeros(sequences, 2 * pairs, dim + 1, dtype=torch.float64)
    tokens[:, 0::2, 1:] = x
    tokens[:, 1::2, 0] = y
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    train, test = split_ids(np.random.RandomState(seed), sequences, fraction)
    return Dataset(inputs[train], targets[train], inputs[test], targets[test])


def task_weights(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sequence's w, from its first pair (dim = 1): y_1 / x_1, as exact as the data (x_1 >= 1)."""
    return targets[..., 0, 0] / inputs[..., 0, 1]


@dataclass(frozen=True)
class Probe:
    """A linear read-out of each sequence's w from the residual stream after block 1, at the last
    position: fitted by least squares (with an intercept) on the training split, scored by R^2 on the
    test split. `neurons` are the residual positions whose standardised coefficients |beta| * std
    are largest: the neurons that encode w."""

    r2: float
    neurons: tuple[int, ...]
    strength: np.ndarray  # (width,): |beta| * std per residual position
    features: np.ndarray  # (test sequences, width): the stream at the last position
    w: np.ndarray  # (test sequences,)


def residual_features(model: BioTransformer, x: torch.Tensor, replica: int) -> np.ndarray:
    """Replica `replica`'s residual stream after block 1 at the last position, (n, width), float64."""
    alone = model.replica_view(replica)
    return alone.residual(x[replica : replica + 1], 1)[0, :, -1].double().cpu().numpy()


@torch.no_grad()
def w_probe(model: BioTransformer, data: Dataset, replica: int = 0) -> Probe:
    """The probe of replica `replica` (see `Probe`)."""
    train = residual_features(model, data.train_x, replica)
    test = residual_features(model, data.test_x, replica)
    w_train = task_weights(data.train_x[replica], data.train_y[replica]).double().cpu().numpy()
    w_test = task_weights(data.test_x[replica], data.test_y[replica]).double().cpu().numpy()
    design = np.column_stack([train, np.ones(len(train))])
    beta = np.linalg.lstsq(design, w_train, rcond=None)[0]
    predicted = np.column_stack([test, np.ones(len(test))]) @ beta
    total = float(((w_test - w_test.mean()) ** 2).sum())
    r2 = 1 - float(((w_test - predicted) ** 2).sum()) / total if total > 0 else 0.0
    strength = np.abs(beta[:-1]) * train.std(axis=0)
    return Probe(r2, tuple(int(i) for i in np.argsort(-strength, kind="stable")[:2]), strength, test, w_test)


def incontext_metrics(model: BioTransformer, data: Dataset) -> dict[str, torch.Tensor]:
    """`probe_w_r2` of every replica, (R,)."""
    return {"probe_w_r2": torch.tensor([w_probe(model, data, r).r2 for r in range(model.replicas)], dtype=torch.float64)}


class SequenceDraws:
    """The notebook's minibatches: per step, `size` training ids drawn with replacement from numpy's
    stream seeded with the replica's seed (after the split's draw), then `size` test ids.

    The stream's draws vary in length, so step s's batch is found by replaying the stream from the
    split; walking the steps in order costs one draw each, and a resumed run replays once."""

    def __init__(self, sequences: int, fraction: float, size: int, seeds: Sequence[int]) -> None:
        self.sequences, self.fraction, self.size, self.seeds = sequences, fraction, size, list(seeds)
        self.train = int(sequences * fraction)
        self.test = sequences - self.train
        self._step, self._streams = 0, self._fresh()

    def _fresh(self) -> list[np.random.RandomState]:
        streams = [np.random.RandomState(seed) for seed in self.seeds]
        for stream in streams:
            split_ids(stream, self.sequences, self.fraction)
        return streams

    def indices(self, step: int) -> torch.Tensor:
        """(R, size) training ids of step `step`'s batch, one row per replica."""
        if step < self._step:
            self._step, self._streams = 0, self._fresh()
        while True:
            batch = np.stack([stream.choice(self.train, self.size, replace=True) for stream in self._streams])
            for stream in self._streams:
                stream.choice(self.test, self.size, replace=True)
            self._step += 1
            if self._step > step:
                return torch.from_numpy(batch)

    def replica_subset(self, index: torch.Tensor | slice) -> SequenceDraws:
        seeds = self.seeds[index] if isinstance(index, slice) else [self.seeds[r] for r in index.tolist()]
        subset = SequenceDraws(self.sequences, self.fraction, self.size, seeds)
        if self._step:
            subset.indices(self._step - 1)
        return subset


def incontext_task(sequences: int, pairs: int, dim: int, fraction: float) -> Task:
    def data(task: Task, settings: Any, seed: int) -> Dataset:
        return regression_data(seed, settings.sequences, settings.pairs, settings.dim, settings.train_fraction)

    def sampler(samples: int, size: int, seeds: Sequence[int]) -> SequenceDraws:
        return SequenceDraws(sequences, fraction, size, seeds)

    channels = ("$y$",) + (("$x$",) if dim == 1 else tuple(f"$x_{{{i + 1}}}$" for i in range(dim)))
    return Task("incontext", dim + 1, dim + 1, channels, data=data, figures=("incontext_predictions", "w_neurons"),
                loss="incontext_mse", architecture="transformer", input_names=channels, sampler=sampler,
                init_prelude=lambda: draw_tasks(sequences, pairs, dim), final_metrics=incontext_metrics)


def build(settings: Any) -> Task:
    """In-context regression, after checking the settings (`task.*`) that apply to it."""
    for key in ("inputs", "outputs", "low", "high", "noise", "p", "eval_size", "path", "download", "n_train", "n_test"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to incontext; "
                "its sizes are task.sequences, task.pairs, task.dim and task.train_fraction")
    for key in ("sequences", "pairs", "dim"):
        value = getattr(settings, key)
        require(value is not None and value >= 1, f"task.{key}={value} is not allowed; it must be an integer >= 1")
    fraction = settings.train_fraction
    require(fraction is not None and 0 < fraction < 1 and 1 <= int(settings.sequences * fraction) < settings.sequences,
            f"task.train_fraction={fraction} is not allowed; it must leave at least one of the "
            f"{settings.sequences} sequences in each split")
    return incontext_task(settings.sequences, settings.pairs, settings.dim, fraction)
