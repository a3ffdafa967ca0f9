"""Group operations learned from embeddings (Section 3.3): modular addition (Figure 5) and
composition in the permutation group S4 (Figure 6).

Each example is a pair of elements (a, b), given to the network as two token ids whose learned
embeddings are concatenated (one input fold each); the label is the pair's product. All p * p pairs
are listed in the notebooks' order (row r is (r mod p, r div p)); the training set is
`int(p * p * fraction)` of them, drawn by `np.random.choice` without replacement from numpy's
stream seeded with the data seed, and the test set is the rest, in the order the notebooks' Python
set difference lists it (which decides the order of the test loss's sum).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from bimt.tasks.base import Task, require
from bimt.tasks.dataset import Dataset


def all_pairs(elements: int) -> np.ndarray:
    """(p * p, 2): row r is (r mod p, r div p), the notebooks' meshgrid order."""
    first, second = np.meshgrid(np.arange(elements), np.arange(elements))
    return np.stack([first.ravel(), second.ravel()], axis=1)


def split(pairs: np.ndarray, labels: np.ndarray, seed: int, fraction: float) -> Dataset:
    """Token pairs (n, 2) and labels (n,), int64, split as the notebooks split them."""
    total = len(pairs)
    np.random.seed(seed)
    train = np.random.choice(total, int(total * fraction), replace=False)
    test = np.array(list(set(np.arange(total)) - set(train)))

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.long)

    return Dataset(tensor(pairs[train]), tensor(labels[train]), tensor(pairs[test]), tensor(labels[test]))


def modular_addition_data(seed: int, p: int, fraction: float) -> Dataset:
    """(a + b) mod p for all pairs of residues."""
    pairs = all_pairs(p)
    return split(pairs, pairs.sum(axis=1) % p, seed, fraction)


def permutations(n: int) -> list[tuple[int, ...]]:
    """The permutations of 0..n-1 in lexicographic order: element i of the group is the i-th."""
    return list(itertools.permutations(range(n)))


def permutation_data(seed: int, n: int, fraction: float) -> Dataset:
    """The product of permutations a and b, as the notebook forms it: (a * b)[k] = a[b[k]]."""
    elements = permutations(n)
    index = {perm: i for i, perm in enumerate(elements)}
    pairs = all_pairs(len(elements))
    labels = np.array([index[tuple(elements[a][k] for k in elements[b])] for a, b in pairs])
    return split(pairs, labels, seed, fraction)


def modular_addition_task(p: int) -> Task:
    def data(task, settings, seed):
        return modular_addition_data(seed, p, settings.train_fraction)

    return Task("modular_addition", 2, p, tuple(str(c) for c in range(p)), data=data, figures=("embeddings",),
                loss="cross_entropy", tokens=p)


def permutation_task(n: int = 4) -> Task:
    def data(task, settings, seed):
        return permutation_data(seed, n, settings.train_fraction)

    labels = tuple("".join(str(k + 1) for k in perm) for perm in permutations(n))
    return Task(f"permutation_s{n}", 2, len(labels), labels, data=data, figures=("embeddings",),
                loss="cross_entropy", tokens=len(labels))


def build(settings: Any) -> Task:
    """Modular addition or S4, after checking the settings (`task.*`) that apply to it."""
    name = settings.name
    for key in ("inputs", "outputs", "low", "high", "eval_size", "path", "download"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to the "
                f"classification task {name}; leave it unset")
    for key in ("n_train", "n_test", "noise"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to {name}; "
                "its pairs are all p * p, split by task.train_fraction, with exact labels")
    fraction = settings.train_fraction
    require(fraction is not None and 0 < fraction < 1,
            f"task.train_fraction={fraction} is not allowed; it is the share of all pairs used for training, in (0, 1)")
    if name == "modular_addition":
        require(settings.p is not None and settings.p >= 2,
                f"task.p={settings.p} is not allowed; the modulus must be an integer >= 2")
        task = modular_addition_task(settings.p)
    else:
        require(settings.p is None, f"task.p={settings.p} does not apply to permutation_s4 (S4 has 24 elements)")
        task = permutation_task(4)
    pairs = task.tokens**2
    train = int(pairs * fraction)
    require(0 < train < pairs, f"task.train_fraction={fraction} leaves {'no training' if train == 0 else 'no test'} "
            f"pairs among the {pairs} of {name}; use a fraction that leaves some of both")
    return task
