"""Your own data from a file: `task=table task.path=data.csv 'task.inputs=[a,b]' 'task.targets=[y]'`.

A table is a `.csv` file (a header row of column names, then one row per sample; without a header,
columns are numbered from 0), a `.npy` file of one 2-D array (columns numbered), or a `.npz` file of
one 2-D array (numbered) or of 1-D arrays of equal length (each a column, by its name). `task.inputs`
and `task.targets` name columns or give their 0-based indices; inputs default to every column that
is not a target. `task.kind` is `regression` (MSE on the targets) or `classification` (one target
column of integer class labels; cross-entropy and accuracy; the labels' distinct values, in order,
are the classes).

The rows are shuffled with the data seed and the last `test_fraction` of them are the test split.
With `standardize`, every input column is shifted and scaled to mean 0 and standard deviation 1 on
the training split (the test split with the training split's numbers); targets keep their units.
Reading the file is the task's build (its columns are the model's shape): a bad file is refused
there, in one line naming the file, and the row and column where it is bad, before anything trains.
"""

from __future__ import annotations

import csv
import functools
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bimt.tasks.base import SettingError, Task, require
from bimt.tasks.dataset import Dataset

KINDS = ("regression", "classification")
SUFFIXES = (".csv", ".npy", ".npz")
OTHER_TASKS_KEYS = ("outputs", "low", "high", "noise", "p", "train_fraction", "eval_size", "download", "source",
                    "sequences", "pairs", "dim", "n_train", "n_test")


@dataclass(frozen=True)
class Table:
    """A file's numbers (rows, columns) float64 and its column names."""

    values: np.ndarray
    columns: tuple[str, ...]


def _bad(path: Path, what: str) -> SettingError:
    return SettingError(f"task.path={path}: {what}")


@functools.cache
def _read(path: Path, modified: float) -> Table:
    """The table in `path` (read again when the file changes: `modified` is its mtime)."""
    if path.suffix == ".csv":
        return _read_csv(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _bad(path, f"cannot be read as a {path.suffix} file ({str(error).splitlines()[0]})") from None
    if path.suffix == ".npz":
        arrays = {name: loaded[name] for name in loaded.files}
        if len(arrays) == 1:
            (array,) = arrays.values()
        else:
            lengths = {len(a) for a in arrays.values() if a.ndim == 1}
            require(all(a.ndim == 1 for a in arrays.values()) and len(lengths) == 1,
                    f"task.path={path}: a .npz table holds one 2-D array or 1-D arrays of one length (columns); "
                    f"it holds {', '.join(f'{n} {a.shape}' for n, a in arrays.items()) or 'nothing'}")
            return _numeric(path, np.stack(list(arrays.values()), axis=1), tuple(arrays))
    else:
        array = loaded
    require(array.ndim == 2, f"task.path={path} holds an array of shape {array.shape}, not a 2-D table (rows, columns)")
    return _numeric(path, array, tuple(str(i) for i in range(array.shape[1])))


def _numeric(path: Path, array: np.ndarray, columns: tuple[str, ...]) -> Table:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise _bad(path, f"holds {array.dtype} values, not numbers")
    values = array.astype(np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = bad[0]
        raise _bad(path, f"row {row} column {columns[column]!r} is {values[row, column]}, not a finite number")
    return Table(values, columns)


def _read_csv(path: Path) -> Table:
    try:
        with open(path, newline="") as stream:
            rows = [row for row in csv.reader(stream) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise _bad(path, f"cannot be read ({error})") from None
    require(bool(rows), f"task.path={path} is empty")
    header = not all(_is_number(field) for field in rows[0])
    columns = tuple(name.strip() for name in rows[0]) if header else tuple(str(i) for i in range(len(rows[0])))
    body = rows[1:] if header else rows
    values = np.empty((len(body), len(columns)))
    for i, row in enumerate(body):
        line = i + 1 + header  # 1-based, as an editor numbers the file's lines
        if len(row) != len(columns):
            raise _bad(path, f"line {line} has {len(row)} values where the header has {len(columns)} columns")
        for j, field in enumerate(row):
            try:
                value = float(field)
            except ValueError:
                raise _bad(path, f"line {line} column {columns[j]!r} is {field.strip()!r}, not a number") from None
            if not math.isfinite(value):
                raise _bad(path, f"line {line} column {columns[j]!r} is {field.strip()!r}, not a finite number")
            values[i, j] = value
    return Table(values, columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: str | Path) -> Table:
    """The table in a .csv, .npy or .npz file; one-line `SettingError` for a file that is missing,
    unreadable or not a table of finite numbers."""
    path = Path(path).expanduser()
    require(path.suffix in SUFFIXES, f"task.path={path} is not allowed; a table is a {', '.join(SUFFIXES)} file")
    require(path.is_file(), f"task.path={path} does not exist (or is not a file)")
    return _read(path.resolve(), path.stat().st_mtime)


def _column(table: Table, key: str, spec: Any) -> int:
    """The index of the column `spec` (a name, or a 0-based index) names."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        require(0 <= spec < len(table.columns), f"task.{key}: column {spec} is not in the table, whose columns are "
                f"0 to {len(table.columns) - 1}")
        return spec
    name = str(spec)
    if name in table.columns:
        return table.columns.index(name)
    raise SettingError(f"task.{key}: column {name!r} is not in the table; its columns: {', '.join(table.columns)}")


def _columns(table: Table, key: str, spec: Any) -> list[int]:
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    require(len(specs) > 0, f"task.{key}=[] is not allowed; name at least one column")
    return [_column(table, key, s) for s in specs]


@dataclass(frozen=True)
class Columns:
    """Which columns a config reads: inputs, targets, and for a classifier its classes' values."""

    inputs: list[int]
    targets: list[int]
    classes: np.ndarray | None
    n_train: int
    n_test: int


def columns_of(settings: Any) -> tuple[Table, Columns]:
    """The table and what a config reads of it, checked."""
    require(settings.path is not None, "task.path=None: task=table reads a .csv, .npy or .npz file; give it with "
            "task.path=<file>")
    require(settings.targets is not None, "task.targets=None: name the target columns, e.g. 'task.targets=[y]'")
    require(settings.kind in KINDS, f"task.kind={settings.kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    fraction = settings.test_fraction
    require(isinstance(fraction, (int, float)) and 0 < fraction < 1,
            f"task.test_fraction={fraction} is not allowed; it must be a number between 0 and 1")
    table = read_table(settings.path)
    targets = _columns(table, "targets", settings.targets)
    if settings.inputs is None:
        inputs = [j for j in range(len(table.columns)) if j not in targets]
        require(bool(inputs), f"task.path={settings.path}: every column is a target; the table has no inputs")
    else:
        inputs = _columns(table, "inputs", settings.inputs)
    both = sorted(set(inputs) & set(targets))
    if both:
        raise SettingError(f"task.inputs and task.targets both name column {table.columns[both[0]]!r}")
    n_test = round(len(table.values) * fraction)
    n_train = len(table.values) - n_test
    require(min(n_train, n_test) >= 2, f"task.path={settings.path} has {len(table.values)} rows: with "
            f"task.test_fraction={fraction} that is {n_train} training and {n_test} test rows; each split needs at least 2")
    classes = None
    if settings.kind == "classification":
        require(len(targets) == 1, f"task.targets={list(settings.targets)}: a classification table has one target "
                "column (the class labels)")
        labels = table.values[:, targets[0]]
        fractional = np.flatnonzero(labels != np.round(labels))
        if len(fractional):
            row = fractional[0]
            raise SettingError(f"task.path={settings.path}: row {row} column {table.columns[targets[0]]!r} is "
                               f"{labels[row]:g}, not an integer class label (task.kind=classification); for numbers "
                               "to fit use task.kind=regression")
        classes = np.unique(labels)
        require(len(classes) >= 2, f"task.path={settings.path}: column {table.columns[targets[0]]!r} holds a single "
                f"class ({classes[0]:g}); classification needs at least 2")
    return table, Columns(inputs, targets, classes, n_train, n_test)


def table_data(settings: Any, seed: int) -> Dataset:
    """The table split with `seed` (the last test_fraction of a shuffle are the test split),
    inputs standardised on the training split where asked; float32, or int64 classes."""
    table, columns = columns_of(settings)
    order = np.random.default_rng(seed).permutation(len(table.values))
    train, test = order[: columns.n_train], order[columns.n_train :]
    x = table.values[:, columns.inputs]
    if settings.standardize:
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    if columns.classes is None:
        y = torch.tensor(table.values[:, columns.targets], dtype=torch.float32)
    else:
        y = torch.from_numpy(np.searchsorted(columns.classes, table.values[:, columns.targets[0]]).astype(np.int64))
    x = torch.tensor(x, dtype=torch.float32)
    return Dataset(x[train], y[train], x[test], y[test])


def build(settings: Any) -> Task:
    """The table task, after reading the file and checking the columns (`SettingError` otherwise)."""
    for key in OTHER_TASKS_KEYS:
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to task=table; "
                "its splits are task.test_fraction of the file's rows")
    table, columns = columns_of(settings)
    inputs = [table.columns[j] for j in columns.inputs]
    if columns.classes is None:
        outputs, loss, figures = tuple(table.columns[j] for j in columns.targets), "mse", ("pred_vs_true",)
    else:
        outputs, loss, figures = tuple(f"{value:g}" for value in columns.classes), "cross_entropy", ()
    return Task(settings.name, len(inputs), len(outputs), outputs, data=lambda task, s, seed: table_data(s, seed),
                figures=figures, loss=loss, input_names=tuple(inputs),
                sample_counts=sample_counts)


def sample_counts(settings: Any) -> tuple[int, int]:
    """The training and test rows a config's split holds."""
    _, columns = columns_of(settings)
    return columns.n_train, columns.n_test
