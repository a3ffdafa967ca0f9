#!/usr/bin/env python
"""Benchmark the project's training against the literal reference algorithm, side by side.

For each task of Section 3.1 at train_type 5 it times, in this one process:
  literal  the oracle of tests/reference.py: nn.Linear layers, the permutation gather on every step,
           the test loss on every step, swap-recompute-unswap relocation (the notebook's algorithm);
  eager    the project's trainer with `engine=eager` (torch; bit for bit the literal numbers);
  native   the same with `engine=native` (numba; the default of `python train.py`).
It prints ms/step of a full run (training and relocation, logging at the default interval; median of
--run-repeats runs, after one warm-up run that compiles the native code), ms per relocation call
(median over --repeats, on the same trained state for both), and the speedups, then the time of one
network snapshot (drawing, PNG encoding, TensorBoard write) and the peak memory of a single
`train.py` run. For the classifiers of Sections 3.2-3.3 (two moons, modular addition, S4) it times
the notebook's own loop (tests/reference.py) against each engine that can run them, with the ratio.
For Section 3.5 it times the MNIST notebook's loop (784-100-100-10 on grids, batches of 100,
relocation every 500 steps) against `task=mnist` on random images of MNIST's shape, single and with
K seeds batched (--grid-batched). Whole processes last: a 10-step `python train.py` (the fixed cost of
a run), the full independence run, and the literal loop run as a process of its own, beside the
targets of the speed issue (10-step run <= 2.5 s, full run >= 12x, batched native >= 150x at K=50 on
independence and >= 100x on compositionality).
`--json PATH` also writes the figures as JSON.

    python scripts/bench.py --steps 2000 --repeats 20 --run-repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bimt import BioMLP, NullLogger, ReplicaSettings, Schedule, TrainSettings, make_dataset, relocate, train
from bimt.engines.native import unsupported
from bimt.experiment.fit import compose_run_config
from bimt.experiment.memory import keep_freed_memory
from bimt.experiment.plan import build_model, build_settings, group_data, plan_group, replica_settings
from bimt.experiment.schema import DTYPES
from bimt.experiment.tensorboard import RunLogger
from bimt.experiment.validate import validate
from bimt.reference import (
    PAPER,
    LiteralData,
    LiteralGridMLP,
    literal_classifier_train,
    literal_copy,
    literal_grid_train,
    literal_incontext_train,
    literal_model,
    literal_regression_data,
    literal_train,
    literal_transformer,
    literal_transformer_copy,
    notebook,
)
from bimt.tasks import TASKS
from bimt.tasks.dataset import stack_datasets
from bimt.tasks.incontext import draw_tasks

REPO = Path(__file__).resolve().parents[1]
FULL_BIMT = ReplicaSettings(torch.tensor([True]), torch.tensor([1.0]), torch.tensor([True]))


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


ENGINES = ("eager", "native")


def bench_task(name: str, steps: int, repeats: int, run_repeats: int) -> dict[str, float]:
    seed, hidden, boost, decay = PAPER[name]
    task = TASKS[name]
    shape = [task.inputs, *hidden, task.outputs]
    data = make_dataset(task, seed)
    stacked = stack_datasets([data], torch.device("cpu"))
    schedule = Schedule(boost=boost, rescale=decay)
    results = {}

    def literal_run():
        literal_train(literal_model(shape, seed), data, 5, steps, log_every=200, boost=boost, decay=decay)

    results["literal_ms_per_step"] = median_ms(literal_run, run_repeats) / steps
    for engine in ENGINES:
        def project_run(engine=engine):
            train(BioMLP(shape, [seed]), stacked, FULL_BIMT, schedule,
                  TrainSettings(steps, progress=False, engine=engine), NullLogger())

        project_run()  # warm-up: numba compiles (or loads its cache) on the first call
        results[f"{engine}_ms_per_step"] = median_ms(project_run, run_repeats) / steps
        results[f"{engine}_step_speedup"] = results["literal_ms_per_step"] / results[f"{engine}_ms_per_step"]

    model = BioMLP(shape, [seed])
    train(model, stacked, FULL_BIMT, schedule, TrainSettings(steps, "eager", progress=False), NullLogger())
    trained = {key: value.clone() for key, value in model.state_dict().items()}  # restored before each call

    def relocate_project():
        model.load_state_dict(trained)
        relocate(model)

    reload_ms = median_ms(lambda: model.load_state_dict(trained), repeats)
    literal_relocate = median_ms(lambda: literal_copy(model).relocate(), max(5, repeats // 2))
    literal_copy_ms = median_ms(lambda: literal_copy(model), repeats)
    results["literal_ms_per_relocation"] = literal_relocate - literal_copy_ms
    results["ms_per_relocation"] = median_ms(relocate_project, repeats) - reload_ms
    results["relocation_speedup"] = results["literal_ms_per_relocation"] / results["ms_per_relocation"]
    return results


CLASSIFIERS = ("two_moons", "modular_addition", "permutation_s4")


def bench_classifier(name: str, steps: int, run_repeats: int) -> dict[str, Any]:
    """ms per step of a full run of a Section 3.2-3.3 task: the notebook's loop (`reference.notebook`:
    autograd, the test set's forward pass on every step, swap-recompute-unswap relocation) against the
    project's engines on the task's own config. An engine that cannot run the task says why."""
    config = compose_run_config([f"task={name}", f"steps={steps}"])
    task = validate(config)
    results: dict[str, Any] = {}

    def literal_run():
        model, data, lr, lambdas, weight_factor, top_k = notebook(name, steps)
        literal_classifier_train(model, data, steps, lr, lambdas, weight_factor, top_k, log_every=200)

    results["literal_ms_per_step"] = median_ms(literal_run, run_repeats) / steps
    for engine in ENGINES:
        reason = unsupported(task.tokens > 0, DTYPES[config.model.dtype], config.model.mean_cost, task.loss)
        if engine == "native" and reason:
            results["native_unsupported"] = reason
            continue

        def project_run(engine=engine):
            plan = plan_group([replace(config, engine=engine)], task)
            settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
            train(plan.model, plan.data, plan.replicas, config.schedule, settings, NullLogger())

        project_run()
        results[f"{engine}_ms_per_step"] = median_ms(project_run, run_repeats) / steps
        results[f"{engine}_step_speedup"] = results["literal_ms_per_step"] / results[f"{engine}_ms_per_step"]
    return results


def bench_exact_batches(task_name: str, sizes: list[int], steps: int, run_repeats: int) -> dict[str, Any]:
    """What exact batched groups cost: ms per replica-step of K seeds of `task_name` (its own config,
    eager) trained as one group, each replica stepped alone (`exact_batches=true`, the default: a
    single run's bits) against one batched product for all (`exact_batches=false`)."""
    results: dict[str, Any] = {}
    for replicas in sizes:
        for exact in (True, False):
            configs = [compose_run_config([f"task={task_name}", f"steps={steps}", f"seed={seed}", "engine=eager",
                                       f"exact_batches={str(exact).lower()}"]) for seed in range(replicas)]
            task = validate(configs[0])

            def group_run():
                plan = plan_group(configs, task)
                settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
                train(plan.model, plan.data, plan.replicas, configs[0].schedule, settings, NullLogger())

            group_run()
            ms = median_ms(group_run, run_repeats) / steps
            results[f"K{replicas}_{'exact' if exact else 'bmm'}_ms_per_replica_step"] = ms / replicas
    return results


def bench_incontext(steps: int, run_repeats: int, seeds: int, relocation: bool) -> dict[str, Any]:
    """Section 3.4: ms per step of the notebook's loop (`reference.literal_incontext_train`: autograd,
    the test batch's forward pass and the cost on every step) against `task=incontext` on its own
    config (eager, float64), a single run and `seeds` seeds batched (ms per replica-step, each
    replica stepped alone as `exact_batches` has it, and with one batched product for all). With
    `relocation`, one relocation of a trained full-size transformer by the notebook's swap-recompute-
    unswap search against the project's, timed, and whether both make the same swaps."""
    results: dict[str, Any] = {}
    data, _ = literal_regression_data(seed=1)

    def literal_run():
        model = literal_transformer(1, prelude=lambda: draw_tasks(10000, 2, 1))
        literal_incontext_train(model, data, steps, log_every=100, swap_every=None)

    results["notebook_ms_per_step"] = median_ms(literal_run, run_repeats) / steps
    for label, extra in (("single", []), ("single_no_logs", [f"log_every={steps}"])):
        config = compose_run_config(["task=incontext", f"steps={steps}", *extra])
        task = validate(config)

        def project_run(config=config, task=task):
            plan = plan_group([config], task)
            settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
            train(plan.model, plan.data, plan.replicas, config.schedule, settings, NullLogger())

        project_run()
        results[f"{label}_ms_per_step"] = median_ms(project_run, run_repeats) / steps
        results[f"{label}_speedup"] = results["notebook_ms_per_step"] / results[f"{label}_ms_per_step"]
    for exact in (True, False):
        configs = [compose_run_config(["task=incontext", f"steps={steps}", f"seed={seed}",
                                   f"exact_batches={str(exact).lower()}"]) for seed in range(1, seeds + 1)]
        task = validate(configs[0])

        def group_run(configs=configs, task=task):
            plan = plan_group(configs, task)
            settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
            train(plan.model, plan.data, plan.replicas, configs[0].schedule, settings, NullLogger())

        group_run()
        ms = median_ms(group_run, run_repeats) / steps / seeds
        key = f"K{seeds}_{'exact' if exact else 'bmm'}"
        results[f"{key}_ms_per_replica_step"] = ms
        results[f"{key}_speedup"] = results["notebook_ms_per_step"] / ms
    if relocation:
        results.update(bench_incontext_relocation())
    return results


def bench_incontext_relocation(steps: int = 3000) -> dict[str, Any]:
    """One relocation of the full-size transformer after `steps` steps of training: the notebook's
    search (`LiteralTransformer.relocate`) against the project's, on the same state."""
    config = compose_run_config(["task=incontext", f"steps={steps}"])
    plan = plan_group([config], validate(config))
    settings = replace(plan.settings, progress=False, snapshot_every=0, checkpoint_every=0)
    train(plan.model, plan.data, plan.replicas, config.schedule, settings, NullLogger())
    literal = literal_transformer_copy(plan.model)
    began = time.perf_counter()
    literal.relocate()
    literal_s = time.perf_counter() - began
    model = plan.model
    times = []
    for _ in range(5):
        copy = model.replica_subset([0])
        began = time.perf_counter()
        relocate(copy, config.relocate.top_k, locality=config.relocate.locality)
        times.append(time.perf_counter() - began)
    same = all(torch.equal(a, b) for a, b in zip(literal_transformer_copy(copy).parameters(), literal.parameters()))
    return {"relocation_notebook_s": literal_s, "relocation_ms": 1000 * statistics.median(times),
            "relocation_same_swaps": same}


def write_random_mnist(folder: Path, n_train: int, n_test: int) -> None:
    """IDX files of MNIST's format holding random images and labels: the shapes, not the digits."""
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        for kind, shape in (("images-idx3", (count, 28, 28)), ("labels-idx1", (count,))):
            values = torch.randint(0, 256 if kind.startswith("images") else 10, shape, generator=generator, dtype=torch.uint8)
            header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(header + values.numpy().tobytes())


def bench_grid(steps: int, run_repeats: int, sizes: list[int]) -> dict[str, Any]:
    """ms per step of a full run of Section 3.5's network (`task=mnist`'s config on random images of
    MNIST's shape): the notebook's loop (`reference.literal_grid_train`: autograd, its cost on every
    step, relocation by swap-recompute-unswap over all 784 inputs and both hidden layers) against the
    eager engine, one seed, then K seeds batched (ms per replica-step)."""
    results: dict[str, Any] = {}
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        write_random_mnist(Path(folder), 6000, 2000)
        config = compose_run_config(["task=mnist", f"task.path={folder}", "task.n_train=6000", "task.n_test=2000",
                                 f"steps={steps}"])
        task = validate(config)
        single = group_data(config, task, [config.run_seed], [config.data_seed], cpu)
        results["native_unsupported"] = unsupported(False, torch.float32, True, task.loss, True)

        def literal_run():
            torch.manual_seed(config.run_seed)
            model = LiteralGridMLP([784, 100, 100, 10])
            data = LiteralData(single.train_x[0], single.train_y[0], single.test_x[0], single.test_y[0])
            batches = [single.batches.indices(step)[0] for step in range(steps)]
            literal_grid_train(model, data, batches, steps, config.log_every, config.task.eval_size)

        results["literal_ms_per_step"] = median_ms(literal_run, run_repeats) / steps
        for replicas in sizes:
            seeds = list(range(config.run_seed, config.run_seed + replicas))
            configs = [replace(config, seed=seed) for seed in seeds]
            data = group_data(config, task, seeds, [c.data_seed for c in configs], cpu)

            def project_run():
                settings = replace(build_settings(config, task), progress=False, snapshot_every=0, checkpoint_every=0)
                train(build_model(config, task, seeds), data, replica_settings(configs, cpu), config.schedule,
                      settings, NullLogger())

            project_run()
            ms = median_ms(project_run, run_repeats) / steps
            results[f"eager_K{replicas}"] = {"ms_per_step": ms, "ms_per_replica_step": ms / replicas,
                                             "speedup": results["literal_ms_per_step"] * replicas / ms}
    return results




def bench_batched(sizes: list[int], steps: int, literal_ms_per_step: float,
                  task_name: str = "independence") -> dict[str, dict[str, float]]:
    """Replica-steps per second of K replicas (seeds 0..K-1, train_type 5, `task_name` at the paper's
    settings) trained in lockstep, and the speedup over the literal algorithm (one replica-step per
    literal step).

    For independence, the eager engine at the largest K is timed twice: with glibc's default malloc
    settings, then after `keep_freed_memory` (the runner applies it to every run), to show the
    page-fault trap.
    """
    task = TASKS[task_name]
    _, hidden, boost, decay = PAPER[task_name]
    schedule = Schedule(boost=boost, rescale=decay)
    results = {}

    def timed(engine: str, replicas: int, exact: bool = True) -> float:
        seeds = list(range(replicas))
        stacked = stack_datasets([make_dataset(task, seed) for seed in seeds], torch.device("cpu"))
        switches = ReplicaSettings(*(torch.tensor([value] * replicas) for value in (True, 1.0, True)))

        def batched_run():
            train(BioMLP([task.inputs, *hidden, task.outputs], seeds), stacked, switches, schedule,
                  TrainSettings(steps, progress=False, engine=engine, exact_batches=exact), NullLogger())

        batched_run()
        return median_ms(batched_run, 3) / steps

    if task_name == "independence":
        largest = max(sizes)
        results[f"eager_K{largest}_default_malloc_ms_per_step"] = timed("eager", largest, exact=False)
        keep_freed_memory()
        results[f"eager_K{largest}_kept_memory_ms_per_step"] = timed("eager", largest, exact=False)
    for replicas in sizes:
        for name, engine, exact in (("eager", "eager", True), ("eager_bmm", "eager", False), ("native", "native", True)):
            ms = timed(engine, replicas, exact)
            results[f"{name}_K{replicas}"] = {
                "ms_per_step": ms,
                "replica_steps_per_s": 1000 * replicas / ms,
                "speedup": literal_ms_per_step * replicas / ms,
            }
    return results


def bench_snapshot(repeats: int) -> float:
    """One training snapshot of an untrained network (all wires drawn: the slowest case), until its
    event is written to disk."""
    task = TASKS["independence"]
    model = BioMLP([4, 20, 20, 2], [0])
    with tempfile.TemporaryDirectory() as folder:
        logger = RunLogger([Path(folder)], task, [{"log_every": 200}], ["independence, train_type 5, seed 0"])
        step = iter(range(10**6))

        def snapshot():
            logger.snapshot(next(step), model)
            logger.writers[0].flush()

        snapshot()  # the first one builds the drawing
        ms = median_ms(snapshot, repeats)
        logger.close()
    return ms


def wall_s(commands: list[list[str]]) -> float:
    """Median wall time of whole processes (imports, start-up and finishing included), in seconds."""
    times = []
    for command in commands:
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


LITERAL_PROCESS = (  # the notebook's whole process: imports, data, the literal loop of 20000 steps
    "import torch; torch.set_num_threads(1); "
    "from bimt import TASKS, make_dataset; from bimt.reference import literal_model, literal_train; "
    "literal_train(literal_model([4, 20, 20, 2], 0), make_dataset(TASKS['independence'], 0), 5, 20000, 200)"
)


def bench_processes(repeats: int) -> dict[str, float]:
    """Whole-process wall times: a 10-step `python train.py` (its fixed cost: start-up, figures,
    checkpoint), the full independence run, and the notebook's loop as a process of its own."""
    train = [sys.executable, str(REPO / "train.py")]
    with tempfile.TemporaryDirectory() as folder:
        results = {
            "ten_step_s": wall_s([[*train, "steps=10", f"hydra.run.dir={folder}/ten{i}"] for i in range(repeats)]),
            "full_run_s": wall_s([[*train, f"hydra.run.dir={folder}/full{i}"] for i in range(repeats)]),
            "literal_process_s": wall_s([[sys.executable, "-c", LITERAL_PROCESS]]),
        }
    results["full_run_speedup"] = results["literal_process_s"] / results["full_run_s"]
    return results


def peak_rss_mb(steps: int) -> float:
    """Peak resident memory of one `python train.py` run, in MB.

    The run is started from a small intermediate Python process: a child's peak memory on Linux
    counts from the fork, and this benchmark's own process is large by then.
    """
    report_child_peak = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", report_child_peak, sys.executable, str(REPO / "train.py"),
                                 f"steps={steps}", f"hydra.run.dir={folder}/run"],
                                cwd=REPO, check=True, capture_output=True, text=True)
    return int(result.stdout) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=20, help="repeats for the median relocation and snapshot timings")
    parser.add_argument("--run-repeats", type=int, default=3, help="repeats for the median full-run timings")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batched", default="1,50,150", help="replica counts K for the batched timings (comma-separated)")
    parser.add_argument("--batched-steps", type=int, default=1000,
                        help="training steps per batched timing (enough to amortise building K replicas)")
    parser.add_argument("--classifier-steps", type=int, default=1000,
                        help="training steps per timed run of the tasks of Sections 3.2-3.3 (0: skip them)")
    parser.add_argument("--grid-steps", type=int, default=1000,
                        help="training steps per timed run of Section 3.5's network (0: skip it)")
    parser.add_argument("--grid-batched", default="1,4,10", help="seeds K batched in the Section 3.5 timings")
    parser.add_argument("--processes", type=int, default=3,
                        help="repeats for the whole-process timings (10-step and full train.py runs; 0: skip them)")
    parser.add_argument("--exact-batches", default="10",
                        help="seeds K of permutation_s4 batched with and without exact_batches (comma-separated; empty: skip)")
    parser.add_argument("--exact-steps", type=int, default=400, help="training steps per exact_batches timing")
    parser.add_argument("--incontext-steps", type=int, default=1000,
                        help="training steps per timed run of Section 3.4's transformer (0: skip it)")
    parser.add_argument("--incontext-seeds", type=int, default=10, help="seeds batched in the Section 3.4 timings")
    parser.add_argument("--incontext-relocation", action=argparse.BooleanOptionalAction, default=True,
                        help="time the notebook's relocation of the full transformer (about 20 s) against the project's")
    parser.add_argument("--only", choices=["incontext"], help="run only this section of the bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {"threads": args.threads, "steps": args.steps, "tasks": {}}
    if args.incontext_steps:
        r = results["tasks"]["incontext"] = bench_incontext(args.incontext_steps, args.run_repeats,
                                                           args.incontext_seeds, args.incontext_relocation)
        k = args.incontext_seeds
        print(f"Section 3.4's transformer (float64, {args.incontext_steps} steps, {args.threads} thread(s)): ms per step")
        print(f"  notebook's loop {r['notebook_ms_per_step']:.3f}; eager single run {r['single_ms_per_step']:.3f} "
              f"({r['single_speedup']:.2f}x; target >= 3x), without the test split's logs every 100 steps "
              f"{r['single_no_logs_ms_per_step']:.3f} ({r['single_no_logs_speedup']:.2f}x)")
        print(f"  {k} seeds batched, per replica-step: exact_batches {r[f'K{k}_exact_ms_per_replica_step']:.3f} "
              f"({r[f'K{k}_exact_speedup']:.2f}x), one batched product {r[f'K{k}_bmm_ms_per_replica_step']:.3f} "
              f"({r[f'K{k}_bmm_speedup']:.2f}x; target >= 5x)")
        if "relocation_ms" in r:
            print(f"  one relocation of the trained transformer: the notebook's {r['relocation_notebook_s']:.1f} s, "
                  f"the project's {r['relocation_ms']:.1f} ms; same swaps: {r['relocation_same_swaps']}")
    if args.only == "incontext":
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    print(f"ms per step of a full train_type-5 run ({args.steps} steps: training, relocation, logging), "
          f"and ms per relocation call; speedups against the literal algorithm")
    print(f"{'task':18} {'literal':>8} {'eager':>7} {'speedup':>8} {'native':>7} {'speedup':>8} "
          f"{'reloc literal':>14} {'reloc':>6} {'speedup':>8}")
    for name in PAPER:
        r = bench_task(name, args.steps, args.repeats, args.run_repeats)
        results["tasks"][name] = r
        print(f"{name:18} {r['literal_ms_per_step']:8.3f} {r['eager_ms_per_step']:7.3f} {r['eager_step_speedup']:7.1f}x "
              f"{r['native_ms_per_step']:7.3f} {r['native_step_speedup']:7.1f}x "
              f"{r['literal_ms_per_relocation']:14.2f} {r['ms_per_relocation']:6.2f} {r['relocation_speedup']:7.1f}x")
    if args.classifier_steps:
        print(f"\nms per step of a full train_type-5 run of the classifiers ({args.classifier_steps} steps), "
              "the notebook's own loop against each engine")
        print(f"{'task':18} {'notebook':>9} {'eager':>7} {'speedup':>8}  native")
        for name in CLASSIFIERS:
            r = results["tasks"][name] = bench_classifier(name, args.classifier_steps, args.run_repeats)
            native = (f"{r['native_ms_per_step']:.3f} ({r['native_step_speedup']:.1f}x)" if "native_ms_per_step" in r
                      else f"cannot run it: {r['native_unsupported']}")
            print(f"{name:18} {r['literal_ms_per_step']:9.3f} {r['eager_ms_per_step']:7.3f} "
                  f"{r['eager_step_speedup']:7.1f}x  {native}")
    if args.grid_steps:
        grid_sizes = [int(k) for k in args.grid_batched.split(",") if k]
        r = results["tasks"]["mnist"] = bench_grid(args.grid_steps, args.run_repeats, grid_sizes)
        print(f"\nSection 3.5's network (784-100-100-10 on grids, batches of 100, {args.grid_steps} steps, random "
              f"images): the notebook's loop {r['literal_ms_per_step']:.3f} ms/step; native cannot run it: "
              f"{r['native_unsupported']}")
        print(f"{'K seeds':>8} {'eager ms/step':>14} {'ms/replica-step':>16} {'speedup':>8}")
        for k in grid_sizes:
            e = r[f"eager_K{k}"]
            print(f"{k:8d} {e['ms_per_step']:14.3f} {e['ms_per_replica_step']:16.3f} {e['speedup']:7.1f}x")
    sizes = [int(k) for k in args.batched.split(",") if k]
    if sizes:
        literal = results["tasks"]["independence"]["literal_ms_per_step"]
        batched = results["batched"] = bench_batched(sizes, args.batched_steps, literal)
        print(f"\nK replicas trained in lockstep (independence, train_type 5, {args.batched_steps} steps, "
              f"{args.threads} thread(s)); speedup in replica-steps per second over the literal algorithm")
        print(f"{'K':>5} {'eager ms/step':>14} {'replica-steps/s':>16} {'speedup':>8} "
              f"{'native ms/step':>15} {'replica-steps/s':>16} {'speedup':>8}")
        for k in sizes:
            e, n = batched[f"eager_K{k}"], batched[f"native_K{k}"]
            print(f"{k:5d} {e['ms_per_step']:14.3f} {e['replica_steps_per_s']:16.0f} {e['speedup']:7.1f}x "
                  f"{n['ms_per_step']:15.3f} {n['replica_steps_per_s']:16.0f} {n['speedup']:7.1f}x")
        print("eager with exact_batches=false (one bmm for all replicas): " + ", ".join(
            f"K={k} {batched[f'eager_bmm_K{k}']['ms_per_step']:.3f} ms/step ({batched[f'eager_bmm_K{k}']['speedup']:.1f}x)"
            for k in sizes))
        largest = max(sizes)
        print(f"eager (exact_batches=false) at K={largest}: {batched[f'eager_K{largest}_default_malloc_ms_per_step']:.2f} ms/step with "
              f"glibc's default malloc, {batched[f'eager_K{largest}_kept_memory_ms_per_step']:.2f} ms/step "
              f"keeping freed memory (bimt.experiment.memory)")
    if 50 in sizes:
        composed = results["batched_compositionality"] = bench_batched(
            [50], args.batched_steps, results["tasks"]["compositionality"]["literal_ms_per_step"], "compositionality")
        print(f"batched native per replica-step at K=50: independence {batched['native_K50']['speedup']:.1f}x the "
              f"literal step (target >= 150x), compositionality {composed['native_K50']['speedup']:.1f}x "
              f"(target >= 100x)")
    exact_sizes = [int(k) for k in args.exact_batches.split(",") if k]
    if exact_sizes:
        r = results["exact_batches"] = bench_exact_batches("permutation_s4", exact_sizes, args.exact_steps,
                                                          args.run_repeats)
        print(f"\npermutation_s4, eager, K seeds as one group ({args.exact_steps} steps): ms per replica-step")
        for k in exact_sizes:
            print(f"K={k}: each replica alone (exact_batches, a single run's bits) "
                  f"{r[f'K{k}_exact_ms_per_replica_step']:.3f}, one bmm for all {r[f'K{k}_bmm_ms_per_replica_step']:.3f}")
    if args.processes:
        p = results["processes"] = bench_processes(args.processes)
        print(f"\nwhole processes (median of {args.processes}): a 10-step `python train.py` {p['ten_step_s']:.2f} s "
              f"(target <= 2.5 s); the full independence run {p['full_run_s']:.2f} s against the notebook's loop as "
              f"a process, {p['literal_process_s']:.1f} s: {p['full_run_speedup']:.1f}x (target >= 12x)")

    results["snapshot_ms"] = bench_snapshot(args.repeats)
    results["peak_rss_mb"] = peak_rss_mb(args.steps)
    print(f"network snapshot (draw + PNG + TensorBoard): {results['snapshot_ms']:.1f} ms")
    print(f"peak memory of one train.py run ({args.steps} steps): {results['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
