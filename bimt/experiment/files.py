"""Writing a run's files so that a reader never sees half of one, and a failed write says so in one line.

Every file that a reader may trust (checkpoint, metrics, figures) is written to a temporary name
and renamed, so a run killed at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from bimt.pictures import figure_to_array


class WriteFailed(RuntimeError):
    """A run's output could not be written (a full disk, a quota, a file size limit)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"could not write {path}: {reason}")


def reason(error: OSError) -> str:
    return error.strerror or str(error)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed to `path` once written, so that a reader
    sees the old file or the new one, never half of one. A write that fails leaves the old file and
    no temporary one, and raises `WriteFailed` naming `path`."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteFailed(path, reason(error)) from None
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def save_figure_atomic(path: Path, figure: Figure) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip("."), bbox_inches="tight")


def save_figures(run_dir: Path, figures: dict[str, Figure]) -> dict[str, np.ndarray]:
    """Write each figure to `run_dir` as NAME.png; return their pixels, for TensorBoard.

    Each figure is rendered once, for both: the file is the same image TensorBoard shows.
    """
    images = {name: figure_to_array(figure) for name, figure in figures.items()}
    for name, rgb in images.items():
        with atomic_path(run_dir / f"{name}.png") as temporary:
            Image.fromarray(rgb).save(temporary, format="PNG")
    return images
