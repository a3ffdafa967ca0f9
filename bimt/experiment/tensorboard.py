"""A run's TensorBoard events: scalars, network snapshots, final images and metrics, one run directory
per replica.

Replica r of a batched model writes exactly what a single run writes. The trainer talks to
`RunLogger` through the small `Logger` interface only (`bimt.training`).
"""

from __future__ import annotations

import io
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

from bimt.experiment.checkpoints import CHECKPOINT, save_checkpoint
from bimt.experiment.files import WriteFailed, reason
from bimt.experiment.schema import flatten
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.pictures import figure_to_array, network_picture
from bimt.tasks import Task

HPARAMS_MODULARITY = ("modularity_q", "modularity_q_task")  # beside the final metrics in the hparams table


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
        metrics and the modularity Q, in the run's own event file. (`SummaryWriter.add_hparams` would
        open a second file, which TensorBoard may read before the first when both are named in the
        same second; the first one's purge marker would then drop the final metrics.)"""
        writer = self.writers[replica]
        with events_of(self.run_dirs[replica]):
            for tag, rgb in images.items():
                add_image(writer, tag, rgb, step)
            for tag, value in modularity.items():
                writer.add_scalar(f"modularity/{tag}", value, step)
            final = {f"final/{key}": value for key, value in metrics.items()}
            q = {f"modularity/{key}": value for key, value in modularity.items() if key in HPARAMS_MODULARITY}
            for summary in hparams_summaries(hparams, {**final, **q}):
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


def flat_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams: dotted keys, values that are not scalars as text."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in flatten(config).items()
    }


@contextmanager
def events_of(run_dir: Path) -> Iterator[None]:
    """TensorBoard writes to `run_dir`'s event files: an OSError becomes `WriteFailed` naming them.

    TensorBoard writes in a thread of its own and raises the thread's error at the next write or
    flush; the thread's own report of it is silenced (`quiet_event_writer_threads`)."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(run_dir / "events.out.tfevents.*", reason(error)) from None


_report_thread_error = threading.excepthook


def _quiet_writer_thread_error(args: threading.ExceptHookArgs) -> None:
    if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
        _report_thread_error(args)


def quiet_event_writer_threads() -> None:
    """Keep TensorBoard's writer thread from printing a traceback when a write fails: the error
    reaches the run through the next write (`events_of`), which reports it in one line."""
    threading.excepthook = _quiet_writer_thread_error


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
