"""Two moons (Section 3.2, Figure 4): classify points of two interleaving half circles.

The data are scikit-learn's `make_moons`, drawn as the notebook draws them: the training set, then
the test set, from one numpy stream seeded with the data seed, in float64, cast to float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bimt.tasks.base import Task, require
from bimt.tasks.dataset import Dataset


def two_moons_data(seed: int, n_train: int, n_test: int, noise: float) -> Dataset:
    """Points (n, 2) float32 and their moon (n,) int64, train then test from one stream."""
    from sklearn.datasets import make_moons  # scikit-learn (and scipy) take 0.7 s to import: only when used

    stream = np.random.RandomState(seed)
    train_x, train_y = make_moons(n_samples=n_train, noise=noise, random_state=stream)
    test_x, test_y = make_moons(n_samples=n_test, noise=noise, random_state=stream)

    def points(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.long)

    return Dataset(points(train_x), labels(train_y), points(test_x), labels(test_y))


def two_moons_task() -> Task:
    def data(task, settings, seed):
        return two_moons_data(seed, settings.n_train, settings.n_test, settings.noise)

    return Task("two_moons", 2, 2, ("class 1", "class 2"), data=data, figures=("decision_boundary",), loss="cross_entropy")


def build(settings: Any) -> Task:
    """Two moons, after checking the settings (`task.*`) that apply to it."""
    for key in ("inputs", "outputs", "low", "high", "eval_size", "path", "download"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to the "
                "classification task two_moons; leave it unset")
    for key in ("n_train", "n_test", "noise"):
        require(getattr(settings, key) is not None, f"task.{key}=None is not allowed; two_moons needs it")
    for key in ("p", "train_fraction"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to two_moons; "
                "its sizes are task.n_train and task.n_test")
    require(settings.noise >= 0, f"task.noise={settings.noise} is not allowed; make_moons' noise is a standard deviation >= 0")
    return two_moons_task()
