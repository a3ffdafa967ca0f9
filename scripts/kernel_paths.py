#!/usr/bin/env python
"""Measure how far the engines' numbers move with the CPU's kernels, and run the float tests on each path.

MKL picks its matrix kernels per CPU (and `MKL_CBWR` forces one branch), ATen its vectorised reductions
(`ATEN_CPU_CAPABILITY` forces a narrower one), and numba compiles for the host CPU (`NUMBA_CPU_NAME` and
`NUMBA_CPU_FEATURES` force another vector width; the name alone keeps the host's features, so the paths
below set both where it matters). For each such kernel path this script, in a child process with that
environment:
  - measures, over 600 steps of every train type and task at the paper's settings, the largest
    relative difference of every logged value (train, test, total loss, cost) between
      eager single run   and the literal algorithm (tests/reference.py): 0 by construction;
      native             and eager (single runs);
      eager batched      (replicas of different seeds and train types) and each replica alone;
      native batched     and each replica alone: 0 by construction;
    before the lambda boost and after it, and whether the final permutations are the same;
  - the same, over 1000 steps of train types 5, 1, 3, 4, for the classifiers: two_moons native vs
    eager, and eager batched vs single for two_moons (float32) and permutation_s4 (float64);
  - with `--tests`, runs the float-sensitive tests (test_fidelity.py, test_engines.py, test_relocate.py).
The tolerances in those tests come from these figures (see their docs).

    python scripts/kernel_paths.py            # every path this CPU supports
    python scripts/kernel_paths.py --tests    # and the tests under each
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = 600  # lambda boost at 150, decay and biases at 450, relocations after 199, 399 and 599
# Haswell's features: what numba compiles for on an AVX2 machine (NUMBA_CPU_NAME alone keeps the host's).
AVX2_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,"
                 "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
FLOAT_TESTS = ["tests/test_fidelity.py", "tests/test_engines.py", "tests/test_relocate.py",
               "tests/test_fidelity_classifiers.py", "tests/test_classifiers.py"]
CASES = [("independence", t) for t in range(1, 6)] + [("feature_sharing", 5), ("compositionality", 5)]
CLASSIFIER_STEPS = 1000  # two_moons: lambda x10 at 500; permutation_s4: lambda constant (all "after")
CLASSIFIER_PLAN = [(2, 5), (1, 1), (0, 3), (3, 4)]  # (seed, train_type) of the classifier runs


def kernel_paths() -> dict[str, dict[str, str]]:
    """The environments to compare: MKL's branches this CPU can run, and numba's vector widths."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    paths = {"default": {}, "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"}}
    for branch, flag in (("SSE4_2", "sse4_2"), ("AVX", " avx "), ("AVX2", "avx2"), ("AVX512", "avx512f")):
        if flag in flags:
            paths[f"MKL_CBWR={branch}"] = {"MKL_CBWR": branch}
    for capability in ("default", "avx2"):  # ATen's own vectorised kernels (reductions, elementwise)
        paths[f"ATEN_CPU_CAPABILITY={capability}"] = {"ATEN_CPU_CAPABILITY": capability}
    paths["numba: NUMBA_CPU_NAME=generic (128-bit vectors)"] = {"NUMBA_CPU_NAME": "generic"}
    if "avx2" in flags:
        paths["numba: an AVX2 CPU without AVX-512 (256-bit)"] = {"NUMBA_CPU_NAME": "haswell",
                                                                "NUMBA_CPU_FEATURES": AVX2_FEATURES}
    if "avx512f" in flags:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        features = llvm.get_host_cpu_features().flatten()
        paths["numba: AVX-512 without the 256-bit preference (512-bit)"] = {
            "NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": features + ",-prefer-256-bit"}
    return paths


def measure() -> dict[str, dict[str, float]]:
    """The largest relative differences of this process's kernel path (see the module doc)."""
    import torch

    from bimt import (
        BioMLP,
        RecordingLogger,
        ReplicaSettings,
        Schedule,
        TrainSettings,
        make_dataset,
        stack_datasets,
        train,
    )
    from bimt.reference import PAPER, literal_model, literal_train
    from bimt.tasks import TASKS

    torch.set_num_threads(1)

    def switches_of(types):
        """The paper's train types (1 none, 2 L1, 3 L1+local, 4 L1+swap, 5 all) as per-replica switches."""
        return ReplicaSettings(l1=torch.tensor([t > 1 for t in types]),
                               locality=torch.tensor([1.0 if t in (3, 5) else 0.0 for t in types]),
                               swap=torch.tensor([t >= 4 for t in types]))

    def run(task_name, seeds, types, engine):
        _, hidden, boost, decay = PAPER[task_name]
        task = TASKS[task_name]
        model = BioMLP([task.inputs, *hidden, task.outputs], seeds)
        data = stack_datasets([make_dataset(task, seed) for seed in seeds], torch.device("cpu"))
        recorder = RecordingLogger()
        train(model, data, switches_of(types), Schedule(boost=boost, rescale=decay),
              TrainSettings(STEPS, log_every=10, progress=False, engine=engine), recorder)
        return model, recorder.rows

    worst: dict[str, dict[str, float]] = {}

    def compare(name, rows, expected, r=0, r_expected=0, same_perms=True, boost_step=STEPS // 4):
        """Accuracies are left out: one sample more or less right is a step, not a rounding."""
        entry = worst.setdefault(name, {"before_boost": 0.0, "after_boost": 0.0, "same_permutations": True})
        for step, row in expected.items():
            phase = "before_boost" if step < boost_step else "after_boost"
            for tag, values in ((tag, values) for tag, values in row.items() if not tag.startswith("acc/")):
                ours, theirs = rows[step][tag][r], values[r_expected]
                difference = abs(ours - theirs) / max(abs(theirs), 1e-12)
                entry[phase] = max(entry[phase], difference)
        entry["same_permutations"] = entry["same_permutations"] and same_perms

    def perms(model, r):
        return model.in_perm[r].tolist(), model.out_perm[r].tolist()

    for task_name, train_type in CASES:
        seed, hidden, boost, decay = PAPER[task_name]
        task = TASKS[task_name]
        literal = literal_model([task.inputs, *hidden, task.outputs], seed)
        expected = literal_train(literal, make_dataset(task, seed), train_type, STEPS, 10, boost, decay)
        eager_model, eager = run(task_name, [seed], [train_type], "eager")
        literal_rows = {step: dict(zip(("loss/train", "loss/test", "cost/connection"), ([v] for v in values)))
                        for step, values in expected.items()}
        literal_perms = literal.in_perm.long().tolist(), literal.out_perm.long().tolist()
        compare("eager single vs literal", eager, literal_rows, same_perms=perms(eager_model, 0) == literal_perms)
        native_model, native = run(task_name, [seed], [train_type], "native")
        compare("native vs eager", native, eager, same_perms=perms(native_model, 0) == perms(eager_model, 0))

    plan = [(0, 5), (1, 2), (2, 4), (0, 1)]  # (seed, train_type) of the batched replicas
    for engine in ("eager", "native"):
        batched_model, batched = run("independence", [s for s, _ in plan], [t for _, t in plan], engine)
        for r, (seed, train_type) in enumerate(plan):
            single_model, single = run("independence", [seed], [train_type], engine)
            compare(f"{engine} batched vs single", batched, single, r=r,
                    same_perms=perms(batched_model, r) == perms(single_model, 0))

    def run_classifier(task_name, jobs, engine):
        """Jobs (seed, train_type) of a Section 3.2-3.3 task, from its config, as one model."""
        from dataclasses import replace

        from hydra import compose, initialize_config_dir

        from bimt.experiment.plan import plan_group
        from bimt.experiment.validate import load_config, validate

        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            configs = [load_config(compose("config", [f"task={task_name}", f"steps={CLASSIFIER_STEPS}", f"seed={seed}",
                                                      f"train_type={train_type}", f"engine={engine}"]))
                       for seed, train_type in jobs]
        plan, recorder = plan_group(configs, validate(configs[0])), RecordingLogger()
        settings = replace(plan.settings, log_every=10, snapshot_every=0, checkpoint_every=0, progress=False)
        train(plan.model, plan.data, plan.replicas, configs[0].schedule, settings, recorder)
        return plan.model, recorder.rows

    moons_boost = CLASSIFIER_STEPS // 2
    for job in CLASSIFIER_PLAN:
        eager_model, eager = run_classifier("two_moons", [job], "eager")
        native_model, native = run_classifier("two_moons", [job], "native")
        compare("two_moons: native vs eager", native, eager, boost_step=moons_boost,
                same_perms=perms(native_model, 0) == perms(eager_model, 0))
    for task_name, boost_step in (("two_moons", moons_boost), ("permutation_s4", 0)):
        batched_model, batched = run_classifier(task_name, CLASSIFIER_PLAN, "eager")
        for r, job in enumerate(CLASSIFIER_PLAN):
            single_model, single = run_classifier(task_name, [job], "eager")
            compare(f"{task_name}: eager batched vs single", batched, single, r=r, boost_step=boost_step,
                    same_perms=perms(batched_model, r) == perms(single_model, 0))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", action="store_true", help="also run the float-sensitive tests on each path")
    parser.add_argument("--measure-here", action="store_true", help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()
    if args.measure_here:
        print(json.dumps(measure()))
        return 0
    failed = False
    for name, extra in kernel_paths().items():
        env = {**os.environ, **extra}
        child = subprocess.run([sys.executable, __file__, "--measure-here"], env=env, capture_output=True, text=True,
                               cwd=REPO)
        if child.returncode != 0:
            print(f"{name}: measurement failed\n{child.stderr}")
            failed = True
            continue
        print(f"\n{name}")
        for comparison, entry in json.loads(child.stdout.splitlines()[-1]).items():
            print(f"  {comparison:38} before boost {entry['before_boost']:.1e}  after boost {entry['after_boost']:.1e}"
                  f"  same permutations: {entry['same_permutations']}")
        if args.tests:
            tests = subprocess.run([sys.executable, "-m", "pytest", "-q", *FLOAT_TESTS],
                                   env=env, capture_output=True, text=True, cwd=REPO)
            print(f"  tests: {tests.stdout.strip().splitlines()[-1]}")
            failed = failed or tests.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
