#!/usr/bin/env python
"""Benchmark the project's training against the literal reference algorithm, side by side.

For each task at train_type 5 it times, in this one process:
  literal  the oracle of tests/reference.py: nn.Linear layers, the permutation gather on every step,
           the test loss on every step, swap-recompute-unswap relocation (the notebook's algorithm);
  eager    the project's trainer (the engine `python train.py` uses).
It prints ms/step of a full run (training and relocation, logging at the default interval), ms per
relocation call (median over repeats, on the same trained state for both), and the speedups, then the
time of one network snapshot (drawing, PNG encoding, TensorBoard write) and the peak memory of a
single `train.py` run. `--json PATH` also writes the figures as JSON.

    python scripts/bench.py --steps 2000 --repeats 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the literal algorithm is kept with the tests, as their oracle

from bimt import BioMLP, NullLogger, ReplicaSettings, Schedule, TrainSettings, make_dataset, relocate, train  # noqa: E402
from bimt.logging import RunLogger  # noqa: E402
from bimt.run import stack_datasets  # noqa: E402
from bimt.tasks import TASKS  # noqa: E402

from reference import PAPER, literal_copy, literal_model, literal_train  # noqa: E402

FULL_BIMT = ReplicaSettings(torch.tensor([True]), torch.tensor([1.0]), torch.tensor([True]))


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_task(name: str, steps: int, repeats: int) -> dict[str, float]:
    seed, hidden, boost, decay = PAPER[name]
    task = TASKS[name]
    shape = [task.inputs, *hidden, task.outputs]
    data = make_dataset(task, seed)
    schedule = Schedule(boost=boost, decay=decay)

    start = time.perf_counter()
    literal_train(literal_model(shape, seed), data, 5, steps, log_every=200, boost=boost, decay=decay)
    literal_step = 1000 * (time.perf_counter() - start) / steps

    model = BioMLP(shape, [seed])
    start = time.perf_counter()
    train(model, stack_datasets([data], torch.device("cpu")), FULL_BIMT, schedule,
          TrainSettings(steps, progress=False), NullLogger())
    eager_step = 1000 * (time.perf_counter() - start) / steps

    trained = model.state_dict()  # the same trained state for both relocations, restored each time

    def relocate_project():
        model.load_state_dict(trained)
        relocate(model)

    reload_ms = median_ms(lambda: model.load_state_dict(trained), repeats)
    literal_relocate = median_ms(lambda: literal_copy(model).relocate(), max(3, repeats // 5))
    literal_copy_ms = median_ms(lambda: literal_copy(model), repeats)
    eager_relocate = median_ms(relocate_project, repeats) - reload_ms
    return {
        "literal_ms_per_step": literal_step,
        "eager_ms_per_step": eager_step,
        "step_speedup": literal_step / eager_step,
        "literal_ms_per_relocation": literal_relocate - literal_copy_ms,
        "eager_ms_per_relocation": eager_relocate,
        "relocation_speedup": (literal_relocate - literal_copy_ms) / eager_relocate,
    }


def bench_snapshot(repeats: int) -> float:
    task = TASKS["independence"]
    model = BioMLP([4, 20, 20, 2], [0])
    with tempfile.TemporaryDirectory() as folder:
        logger = RunLogger([Path(folder)], task, {"log_every": 200})
        step = iter(range(10**6))
        ms = median_ms(lambda: logger.snapshot(next(step), model), repeats)
        logger.close()
    return ms


def peak_rss_mb(steps: int) -> float:
    """Peak resident memory of one `python train.py` run, in MB."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, str(REPO / "train.py"), f"steps={steps}", f"hydra.run.dir={folder}/run"],
                       cwd=REPO, check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=20, help="repeats for the median timings")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {"threads": args.threads, "steps": args.steps, "tasks": {}}
    print(f"{'task':18} {'literal ms/step':>15} {'eager ms/step':>13} {'speedup':>8} "
          f"{'literal ms/reloc':>16} {'eager ms/reloc':>14} {'speedup':>8}")
    for name in PAPER:
        r = bench_task(name, args.steps, args.repeats)
        results["tasks"][name] = r
        print(f"{name:18} {r['literal_ms_per_step']:15.3f} {r['eager_ms_per_step']:13.3f} {r['step_speedup']:7.1f}x "
              f"{r['literal_ms_per_relocation']:16.2f} {r['eager_ms_per_relocation']:14.2f} {r['relocation_speedup']:7.1f}x")
    results["snapshot_ms"] = bench_snapshot(args.repeats)
    results["peak_rss_mb"] = peak_rss_mb(args.steps)
    print(f"network snapshot (draw + PNG + TensorBoard): {results['snapshot_ms']:.1f} ms")
    print(f"peak memory of one train.py run ({args.steps} steps): {results['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
