"""A training video from the network snapshots a run logged to TensorBoard.

The frames are the `network` images that every run writes every `snapshot_every` steps (and at the
end), so nothing is held in memory during training and no second copy of the frames is kept. The
GIF is written with Pillow; where ffmpeg is installed an MP4 is written as well.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAG = "network"


def snapshot_frames(run_dir: Path) -> list[tuple[int, bytes]]:
    """(step, PNG bytes) of every network snapshot of the run, in step order."""
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 1, "tensors": 1})
    events.Reload()
    if TAG not in events.Tags()["images"]:
        return []
    return sorted((image.step, image.encoded_image_string) for image in events.Images(TAG))


def write_video(run_dir: Path, seconds_per_frame: float = 0.2) -> list[Path]:
    """Write `network.gif` (and `network.mp4` where ffmpeg exists) into the run directory."""
    frames = snapshot_frames(run_dir)
    if not frames:
        raise FileNotFoundError(f"no '{TAG}' snapshots in the TensorBoard events of {run_dir}")

    def decoded() -> Iterator[Image.Image]:
        for _, png in frames[1:]:
            yield Image.open(io.BytesIO(png)).convert("RGB")

    gif = run_dir / "network.gif"
    first = Image.open(io.BytesIO(frames[0][1])).convert("RGB")
    first.save(gif, save_all=True, append_images=decoded(), duration=int(seconds_per_frame * 1000), loop=0)
    written = [gif]
    if shutil.which("ffmpeg"):
        written.append(_write_mp4(frames, run_dir / "network.mp4", seconds_per_frame))
    return written


def _write_mp4(frames: list[tuple[int, bytes]], path: Path, seconds_per_frame: float) -> Path:
    with tempfile.TemporaryDirectory() as folder:
        for i, (_, png) in enumerate(frames):
            Path(folder, f"frame_{i:06d}.png").write_bytes(png)
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-framerate", str(1 / seconds_per_frame),
             "-i", str(Path(folder, "frame_%06d.png")), "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
             "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="video", description="Turn a run's network snapshots into a GIF/MP4.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seconds-per-frame", type=float, default=0.2)
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"error: {args.run_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        written = write_video(args.run_dir, args.seconds_per_frame)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
