"""Where a run's numbers, pictures and state go: TensorBoard events, metrics.json, figures, checkpoints.

One run directory per replica: replica r of a batched model writes exactly what a single run
writes. The trainer talks to `RunLogger` through the small `Logger` interface only. Every file that
a reader may trust (checkpoint, metrics, figures) is written to a temporary name and renamed, so a
run killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from bimt.model import BioMLP
from bimt.optim import AdamW
from bimt.plot import figure_to_array, network_picture
from bimt.tasks import Task


class RunLogger:
    """Scalars, network snapshots and checkpoints of every replica, each into its own run directory.

    `titles` head each replica's network pictures. `purge_step`, the step training starts from,
    tells TensorBoard to drop what an earlier process logged from that step on (a killed run's
    points past its checkpoint), so a resumed run shows no duplicated points.
    """

    def __init__(
        self,
        run_dirs: Sequence[Path],
        task: Task,
        configs: Sequence[dict[str, Any]],
        titles: Sequence[str],
        purge_step: int = 0,
    ) -> None:
        self.run_dirs = list(run_dirs)
        self.task = task
        self.configs = list(configs)  # each replica's run config, saved in its checkpoints
        self.titles = list(titles)
        self.writers = []
        for run_dir in self.run_dirs:
            with events_of(run_dir):
                self.writers.append(SummaryWriter(log_dir=str(run_dir), purge_step=purge_step))
        self.picture = None  # built at the first drawing, then redrawn in place

    def scalars(self, step: int, values: dict[str, torch.Tensor]) -> None:
        columns = {tag: value.tolist() for tag, value in values.items()}
        for replica, (run_dir, writer) in enumerate(zip(self.run_dirs, self.writers)):
            with events_of(run_dir):
                for tag, column in columns.items():
                    writer.add_scalar(tag, column[replica], step)

    def snapshot(self, step: int, model: BioMLP) -> None:
        for replica, (run_dir, writer) in enumerate(zip(self.run_dirs, self.writers)):
            image = figure_to_array(self.network(model, replica))
            with events_of(run_dir):
                add_image(writer, "network", image, step)

    def network(self, model: BioMLP, replica: int) -> Figure:
        """The picture of replica `replica` of `model` (which holds this logger's replicas, in order).

        One figure serves all replicas: render it before the next call redraws it."""
        if self.picture is None:
            inputs = None if self.task.tokens else self.task.input_labels  # embedded: dimensions 1, 2, ...
            self.picture = network_picture(model, inputs, self.task.output_labels)
        return self.picture.update(model, replica, self.titles[replica])

    def checkpoint(self, steps_done: int, model: BioMLP, optimizer: AdamW) -> None:
        for replica, run_dir in enumerate(self.run_dirs):
            with events_of(run_dir):
                self.writers[replica].flush()
            save_checkpoint(run_dir / CHECKPOINT, model, optimizer, replica, steps_done, self.configs[replica])

    def finish(
        self,
        replica: int,
        step: int,
        hparams: dict[str, Any],
        metrics: dict[str, float],
        modularity: dict[str, float],
        images: dict[str, np.ndarray],
    ) -> None:
        """Final images and `modularity/` scalars at `step`, and the hparams summary with the final
        metrics, in the run's own event file. (`SummaryWriter.add_hparams` would open a second file,
        which TensorBoard may read before the first when both are named in the same second; the
        first one's purge marker would then drop the final metrics.)"""
        writer = self.writers[replica]
        with events_of(self.run_dirs[replica]):
            for tag, rgb in images.items():
                add_image(writer, tag, rgb, step)
            for tag, value in modularity.items():
                writer.add_scalar(f"modularity/{tag}", value, step)
            final = {f"final/{key}": value for key, value in metrics.items()}
            for summary in hparams_summaries(hparams, final):
                writer.file_writer.add_summary(summary, step)
            for tag, value in final.items():
                writer.add_scalar(tag, value, step)
            writer.flush()

    def close(self) -> None:
        for run_dir, writer in zip(self.run_dirs, self.writers):
            with events_of(run_dir):
                writer.close()

    def keep(self, replicas: Sequence[int]) -> None:
        """Go on logging only the given replicas (in that order); close the others' event files."""
        for replica in set(range(len(self.writers))) - set(replicas):
            with events_of(self.run_dirs[replica]):
                self.writers[replica].close()
        self.run_dirs, self.configs, self.titles, self.writers = (
            [items[r] for r in replicas] for items in (self.run_dirs, self.configs, self.titles, self.writers))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flat_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams: dotted keys, values that are not scalars as text."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(config).items()
    }


CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


class WriteFailed(RuntimeError):
    """A run's output could not be written (a full disk, a quota, a file size limit)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"could not write {path}: {reason}")


def _reason(error: OSError) -> str:
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
            raise WriteFailed(path, _reason(error)) from None
        raise


@contextmanager
def events_of(run_dir: Path) -> Iterator[None]:
    """TensorBoard writes to `run_dir`'s event files: an OSError becomes `WriteFailed` naming them.

    TensorBoard writes in a thread of its own and raises the thread's error at the next write or
    flush; the thread's own report of it is silenced (`quiet_event_writer_threads`)."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(run_dir / "events.out.tfevents.*", _reason(error)) from None


_report_thread_error = threading.excepthook


def _quiet_writer_thread_error(args: threading.ExceptHookArgs) -> None:
    if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
        _report_thread_error(args)


def quiet_event_writer_threads() -> None:
    """Keep TensorBoard's writer thread from printing a traceback when a write fails: the error
    reaches the run through the next write (`events_of`), which reports it in one line."""
    threading.excepthook = _quiet_writer_thread_error


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def save_figure_atomic(path: Path, figure: Figure) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip("."), bbox_inches="tight")


def add_image(writer: SummaryWriter, tag: str, rgb: np.ndarray, step: int) -> None:
    """Log an (H, W, 3) uint8 image to TensorBoard as a 64-colour PNG.

    `SummaryWriter.add_image` converts a uint8 image to float and back and writes a full-colour
    PNG of ~120 kB for a network drawing, whose CRC TensorBoard's event writer computes in pure
    Python (~30 ms, holding the GIL). A 64-colour palette keeps these drawings' look at a third of
    the size; the event is the same kind of TensorBoard image summary.
    """
    png = io.BytesIO()
    Image.fromarray(rgb).quantize(64, method=Image.Quantize.FASTOCTREE).save(png, format="PNG", compress_level=1)
    height, width, channels = rgb.shape
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint file that exists but cannot be loaded; the message is one line."""


def save_checkpoint(
    path: Path,
    model: BioMLP,
    optimizer: AdamW,
    replica: int,
    steps_done: int,
    config: dict[str, Any],
) -> None:
    """Everything needed to continue replica `replica` after `steps_done` steps, written atomically.

    The replica's parameters, permutations and optimizer moments, selected by name (never by shape:
    a group of R jobs may have a layer of width R), the step, the config, and the random-number
    states (training itself draws none; they are kept so that code which does continues exactly
    too). What the config rebuilds (the wire lengths) is not stored; neither is the schedule, whose
    lambda and bias penalty are functions of the step.
    """
    one = slice(replica, replica + 1)
    state = {
        "model": {name: getattr(model, name).detach()[one].clone() for name in REPLICA_STATE},
        "shape": list(model.shape),
        "optimizer": {"step": optimizer.steps, **{name: getattr(optimizer, name)[one].clone() for name in MOMENTS}},
        "step": steps_done,
        "config": config,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: a failing write is then a plain OSError, not torch's
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


REPLICA_STATE = ("params", "in_perm", "out_perm")  # a BioMLP's tensors with a leading replica axis
MOMENTS = ("exp_avg", "exp_avg_sq")  # the AdamW state laid out like the parameters


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; raises `UnreadableCheckpoint` naming the file and the reason."""
    try:
        checkpoint = torch.load(path, weights_only=False, map_location="cpu")
        missing = {"model", "optimizer", "step", "config"} - set(checkpoint)
    except Exception as error:  # noqa: BLE001 - whatever torch.load raises, the file is unusable
        raise UnreadableCheckpoint(f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if missing:
        raise UnreadableCheckpoint(f"{path} cannot be read (no {', '.join(sorted(missing))} in it)")
    return checkpoint


def load_checkpoint(checkpoint: dict[str, Any], model: BioMLP, optimizer: AdamW, replica: int = 0) -> None:
    """Restore a single-replica checkpoint (`read_checkpoint`) into replica `replica` of `model` and `optimizer`."""
    with torch.no_grad():
        for name in REPLICA_STATE:
            getattr(model, name)[replica].copy_(checkpoint["model"][name][0])
        for name in MOMENTS:
            getattr(optimizer, name)[replica].copy_(checkpoint["optimizer"][name][0])
    optimizer.steps = int(checkpoint["optimizer"]["step"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    random.setstate(checkpoint["rng"]["python"])


def saved_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint in a run directory, or None when there is none.

    One that cannot be read is moved aside to `checkpoint.pt.unreadable`, reported in one line, and
    the job trains from step 0: a damaged file must not stop the rest of a sweep."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return read_checkpoint(path)
    except UnreadableCheckpoint as error:
        aside = path.with_name(f"{CHECKPOINT}.unreadable")
        os.replace(path, aside)
        print(f"warning: {error}; moved to {aside.name}, this job trains from step 0", file=sys.stderr)
        return None


def read_status(run_dir: Path) -> str | None:
    """The `status` of a run directory's metrics.json, or None when it has none."""
    path = run_dir / METRICS
    return json.loads(path.read_text()).get("status") if path.is_file() else None


def save_figures(run_dir: Path, figures: dict[str, Figure]) -> dict[str, np.ndarray]:
    """Write each figure to `run_dir` as NAME.png; return their pixels, for TensorBoard.

    Each figure is rendered once, for both: the file is the same image TensorBoard shows.
    """
    images = {name: figure_to_array(figure) for name, figure in figures.items()}
    for name, rgb in images.items():
        with atomic_path(run_dir / f"{name}.png") as temporary:
            Image.fromarray(rgb).save(temporary, format="PNG")
    return images
