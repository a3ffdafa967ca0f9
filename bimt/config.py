"""The run configuration: a dataclass schema, and checks that turn mistakes into one-line errors.

Hydra composes YAML from `conf/`; `load_config` merges the result into this schema (types), then
`validate` checks ranges and how fields fit together. Both raise `ConfigError` with a message that
names the key, the bad value and what is allowed, before any training work starts.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bimt import jit
from bimt.formula import FormulaError, parse
from bimt.geometry import GEOMETRIES, grid_problem
from bimt.native import unsupported
from bimt.schedule import Schedule
from bimt.tasks import (
    TASKS,
    DataError,
    Dataset,
    Task,
    custom_task,
    digits_task,
    mnist_task,
    modular_addition_task,
    permutation_task,
    two_moons_task,
)
from bimt.tasks.images import available_mnist


class ConfigError(ValueError):
    """A user mistake in the configuration; its message is one line meant for the terminal."""


# The schema holds types, not values: every default is in the YAML of `conf/` (one place to read and
# change). A task's optional settings are None where that task has no such setting.


@dataclass
class TaskConfig:
    name: str = MISSING
    seed: int = MISSING  # the paper's seed for this task; the top-level `seed` overrides it
    n_train: int | None = None  # formulas, two_moons, digits, mnist: sample counts
    n_test: int | None = None
    inputs: int | None = None  # custom tasks: number of inputs x1..xn (null: the highest xn used)
    outputs: list[str] | None = None  # custom tasks: one formula per output; null for the paper's tasks
    low: float | None = None  # formulas: inputs are drawn uniformly from [low, high)
    high: float | None = None
    noise: float | None = None  # formulas: std of Gaussian noise on the training labels; two_moons: make_moons'
    data_seed: int | None = None  # the data's own seed (two_moons); null: the run's seed draws data and weights
    p: int | None = None  # modular_addition: the modulus
    train_fraction: float | None = None  # group tasks: share of all pairs that are training data
    eval_size: int | None = None  # digits, mnist: samples of each split the logged metrics are measured on
    path: str | None = None  # mnist: the folder of the four IDX files
    download: bool | None = None  # mnist: fetch the files with torchvision's downloader when missing


@dataclass
class ModelConfig:
    hidden: list[int] = MISSING
    in_fold: int = MISSING
    out_fold: int = MISSING
    l0: float = MISSING
    weight_factor: float = MISSING  # locality weight of the training cost (train types with `local`)
    mean_cost: bool = MISSING  # each cost term averaged over its entries (Section 3.3) instead of summed
    embedding_dim: int | None = MISSING  # tasks with tokens: size of each token's learned embedding
    embedding_cost: bool = MISSING  # l0 * |embedding| is part of the cost
    dtype: str = MISSING  # float32 | float64
    geometry: str = MISSING  # line | grid: where neurons sit, which sets the wire lengths
    local_last: bool = MISSING  # the last layer's wire lengths count in the training cost


@dataclass
class TrainTypeConfig:
    l1: bool = MISSING
    local: bool = MISSING
    swap: bool = MISSING


@dataclass
class OptimConfig:
    lr: float = MISSING
    weight_decay: float = MISSING


@dataclass
class RelocateConfig:
    every: int = MISSING
    top_k: int = MISSING
    weight_factor: float = MISSING  # locality weight of the cost that scores candidate swaps
    inputs: bool = MISSING  # input neurons relocate too
    permute_optimizer_state: bool = MISSING


@dataclass
class ScheduleConfig(Schedule):
    """The lambda schedule's fields, without the library's defaults (`bimt.schedule.Schedule`)."""

    lambda0: float = MISSING
    boost_at: float = MISSING
    boost: float = MISSING
    decay_at: float = MISSING
    decay: float = MISSING
    bias_from: float = MISSING


SNAPSHOTS = 20  # network snapshots per run by default (and one more at the end)


@dataclass
class RunConfig:
    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    train_types: dict[int, TrainTypeConfig] = MISSING
    schedule: ScheduleConfig = MISSING
    optim: OptimConfig = MISSING
    relocate: RelocateConfig = MISSING
    train_type: int = MISSING
    seed: int | None = MISSING
    steps: int = MISSING
    batch_size: int | None = MISSING  # samples per step; null: the whole training set every step
    log_every: int = MISSING
    snapshot_every: int | None = MISSING  # null: SNAPSHOTS per run, every steps / SNAPSHOTS steps
    checkpoint_every: int | None = MISSING  # null: every 10 relocation intervals
    resume: str | None = MISSING  # a run directory to continue
    video: bool = MISSING  # write network.gif (and .mp4 with ffmpeg) from the snapshots at the end
    device: str = MISSING
    threads: int = MISSING
    engine: str = MISSING  # native: compiled training loop (numba, CPU); eager: torch, the notebook's bits

    @property
    def run_seed(self) -> int:
        """The seed actually used: the top-level one, or else the task's paper seed."""
        return self.task.seed if self.seed is None else self.seed

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
ENGINES = ("native", "eager")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# Keys added to the config after runs were already being saved, with the value that reproduces how a
# run saved without them trained (Sections 3.2-3.3 added the model's cost and dtype settings and the
# relocation's wire weight; Section 3.5 the geometry, minibatches and pixel-keeping relocation).
ADDED_KEYS = {
    ("model", "weight_factor"): 1.0,
    ("model", "mean_cost"): False,
    ("model", "embedding_dim"): None,
    ("model", "embedding_cost"): True,
    ("model", "dtype"): "float32",
    ("model", "geometry"): "line",
    ("model", "local_last"): True,
    ("relocate", "weight_factor"): 1.0,
    ("relocate", "inputs"): True,
    ("batch_size",): None,
}


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved with a run (checkpoint, metrics.json), completed with the keys added since it
    was saved, so that older runs still load, resume and compare as they ran."""
    upgraded = copy.deepcopy(saved)
    for path, value in ADDED_KEYS.items():
        node = upgraded
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], value)
    return upgraded


def load_config(cfg: DictConfig) -> RunConfig:
    """Type-check a composed config (without its `hydra` node) against the schema and validate it."""
    plain = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from None
    validate(config)
    return config


PAPER_LOW, PAPER_HIGH = -1.0, 1.0  # the paper tasks' input range


CLASSIFIERS = ("two_moons", "modular_addition", "permutation_s4")
IMAGES = ("digits", "mnist")
DIGITS_SAMPLES = 1797  # scikit-learn's 8x8 digits


def resolve_task(config: TaskConfig) -> Task:
    """The paper's task of that name, or a custom task built from `outputs` formulas."""
    if config.name in CLASSIFIERS:
        return _classifier(config)
    if config.name in IMAGES:
        return _images(config)
    for key in ("path", "download", "eval_size"):
        _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} applies only to the image tasks "
                 f"({', '.join(IMAGES)}); leave it unset for {config.name}")
    for key in ("n_train", "n_test", "low", "high", "noise"):
        _require(getattr(config, key) is not None, f"task.{key}=None is not allowed; task {config.name} draws "
                 "its inputs with it (see conf/task/custom.yaml)")
    _require(
        config.outputs is None or config.name not in TASKS,
        f"task.outputs cannot be used with the paper task {config.name} (task.name={config.name}); your own "
        "formulas need task=custom, with a task.name that is not a paper task's",
    )
    if config.outputs is None:
        _require(
            config.name in TASKS,
            f"task={config.name} has no formulas: use a paper task ({', '.join(TASKS)}) or give your own, "
            "e.g. task=custom 'task.outputs=[x1*x2]'",
        )
        _require(config.inputs is None, f"task.inputs={config.inputs} is only for custom tasks; {config.name} has fixed formulas")
        for key, value, paper in (("low", config.low, PAPER_LOW), ("high", config.high, PAPER_HIGH)):
            _require(value == paper, f"task.{key}={value} changes the inputs of the paper task {config.name} "
                     f"(drawn from [{PAPER_LOW}, {PAPER_HIGH})); for other inputs use task=custom with its formulas")
        return TASKS[config.name]
    _require(len(config.outputs) > 0, "task.outputs=[] is not allowed; give at least one formula")
    formulas = []
    for i, text in enumerate(config.outputs):
        try:
            formulas.append(parse(str(text), config.inputs))
        except FormulaError as error:
            raise ConfigError(f"task.outputs[{i}]={str(text)!r}: {error}") from None
    inputs = config.inputs if config.inputs is not None else max(f.max_input for f in formulas)
    _require(inputs >= 1, f"task.inputs={inputs} is not allowed; a task needs at least one input")
    return custom_task(config.name, inputs, formulas)


def _images(config: TaskConfig) -> Task:
    """Digits or MNIST, after checking the settings that apply (and, for MNIST, the files)."""
    for key in ("inputs", "outputs", "low", "high", "noise", "p", "train_fraction"):
        _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} does not apply to the image task "
                 f"{config.name}; leave it unset")
    for key in ("n_train", "n_test", "eval_size"):
        value = getattr(config, key)
        _require(value is not None and value >= 1, f"task.{key}={value} is not allowed; it must be an integer >= 1")
    if config.name == "digits":
        for key in ("path", "download"):
            _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} does not apply to digits, "
                     "which ships with scikit-learn; it is for task=mnist")
        _require(config.n_train + config.n_test <= DIGITS_SAMPLES,
                 f"task.n_train={config.n_train} and task.n_test={config.n_test} ask for {config.n_train + config.n_test} "
                 f"images; digits has {DIGITS_SAMPLES}")
        return digits_task()
    _require(config.path is not None, "task.path=None: task=mnist reads MNIST's four IDX files from a folder; "
             "give it with task.path=<dir>")
    try:
        available = available_mnist(config.path, bool(config.download))
    except DataError as error:
        raise ConfigError(str(error)) from None
    for key, value, have, split in (("n_train", config.n_train, available[0], "training"),
                                    ("n_test", config.n_test, available[1], "test")):
        _require(value <= have, f"task.{key}={value} is more than the {have} {split} images in {config.path}")
    return mnist_task()


def _classifier(config: TaskConfig) -> Task:
    """Two moons or a group task, after checking the settings that apply to it."""
    for key in ("inputs", "outputs", "low", "high", "eval_size", "path", "download"):
        _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} does not apply to the "
                 f"classification task {config.name}; leave it unset")
    if config.name == "two_moons":
        for key in ("n_train", "n_test", "noise"):
            _require(getattr(config, key) is not None, f"task.{key}=None is not allowed; two_moons needs it")
        for key in ("p", "train_fraction"):
            _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} does not apply to two_moons; "
                     "its sizes are task.n_train and task.n_test")
        _require(config.noise >= 0, f"task.noise={config.noise} is not allowed; make_moons' noise is a standard deviation >= 0")
        return two_moons_task()
    for key in ("n_train", "n_test", "noise"):
        _require(getattr(config, key) is None, f"task.{key}={getattr(config, key)} does not apply to {config.name}; "
                 "its pairs are all p * p, split by task.train_fraction, with exact labels")
    fraction = config.train_fraction
    _require(fraction is not None and 0 < fraction < 1,
             f"task.train_fraction={fraction} is not allowed; it is the share of all pairs used for training, in (0, 1)")
    if config.name == "modular_addition":
        _require(config.p is not None and config.p >= 2, f"task.p={config.p} is not allowed; the modulus must be an integer >= 2")
        task = modular_addition_task(config.p)
    else:
        _require(config.p is None, f"task.p={config.p} does not apply to permutation_s4 (S4 has 24 elements)")
        task = permutation_task(4)
    pairs = task.tokens**2
    train = int(pairs * fraction)
    _require(0 < train < pairs, f"task.train_fraction={fraction} leaves {'no training' if train == 0 else 'no test'} "
             f"pairs among the {pairs} of {config.name}; use a fraction that leaves some of both")
    return task


def task_data(config: TaskConfig, task: Task, seed: int) -> Dataset:
    """The task's data for a run with `seed` (the task's own `data_seed` where it has one)."""
    return task.data(task, config, seed if config.data_seed is None else config.data_seed)


def check_formulas_are_finite(config: TaskConfig, task: Task, seed: int) -> None:
    """Reject formulas that give NaN or inf on the inputs the run will sample, before any training."""
    data = task_data(config, task, seed)
    for i in range(task.outputs):
        values = np.concatenate([data.train_y[:, i].numpy(), data.test_y[:, i].numpy()])
        bad = int((~np.isfinite(values)).sum())
        _require(
            bad == 0,
            f"task.outputs[{i}]={config.outputs[i]!r} gives NaN or inf on {bad} of {values.size} samples "
            f"drawn from [{config.low}, {config.high}); change task.low/task.high to keep inputs in its domain",
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: RunConfig) -> None:
    """Range and cross-field checks; raises ConfigError naming the first problem found."""
    task, model = config.task, config.model
    spec = resolve_task(task)
    known = ", ".join(str(key) for key in sorted(config.train_types))
    _require(config.train_type in config.train_types, f"train_type={config.train_type} is not allowed; use one of {known}")
    for key, value, low in [
        ("steps", config.steps, 1),
        ("log_every", config.log_every, 1),
        ("snapshot_every", config.snapshot_interval, 0),
        ("threads", config.threads, 1),
        ("relocate.every", config.relocate.every, 1),
        ("checkpoint_every", config.checkpoint_interval, 1),
        ("relocate.top_k", config.relocate.top_k, 1),
        ("model.in_fold", model.in_fold, 1),
        ("model.out_fold", model.out_fold, 1),
    ]:
        _require(value >= low, f"{key}={value} is not allowed; it must be an integer >= {low}")
    for key in ("n_train", "n_test"):
        value = getattr(task, key)
        _require(value is None or value >= 1, f"task.{key}={value} is not allowed; it must be an integer >= 1")
    if spec.formula is not None:
        _require(task.low < task.high, f"task.low={task.low} must be below task.high={task.high}")
        _require(task.noise >= 0, f"task.noise={task.noise} is not allowed; it is a standard deviation >= 0")
    if task.outputs is not None:
        check_formulas_are_finite(task, spec, config.run_seed)
    _require(config.seed is None or config.seed >= 0, f"seed={config.seed} is not allowed; use an integer >= 0 (or null for the task's paper seed)")
    _require(len(model.hidden) >= 1, "model.hidden=[] is not allowed; give at least one hidden width")
    for width in model.hidden:
        _require(width >= 1, f"model.hidden={list(model.hidden)} is not allowed; every hidden width must be >= 1")
    if spec.tokens:
        _require(model.embedding_dim is not None and model.embedding_dim >= 1,
                 f"model.embedding_dim={model.embedding_dim} is not allowed; {task.name} embeds its tokens: use an integer >= 1")
        _require(model.in_fold == spec.inputs, f"model.in_fold={model.in_fold} does not fit task {task.name}: "
                 f"its {spec.inputs} operands are embedded one per input fold, so in_fold must be {spec.inputs}")
    else:
        _require(model.embedding_dim is None,
                 f"model.embedding_dim={model.embedding_dim} does not apply to task {task.name}, whose inputs are numbers; leave it null")
        _require(
            spec.inputs % model.in_fold == 0,
            f"model.in_fold={model.in_fold} does not fit task {task.name}: it must divide its {spec.inputs} inputs",
        )
    if spec.classifies:
        _require(model.out_fold == 1, f"model.out_fold={model.out_fold} does not apply to the classification task "
                 f"{task.name}: its {spec.outputs} classes are one row of outputs (out_fold=1)")
    _require(
        spec.outputs % model.out_fold == 0,
        f"model.out_fold={model.out_fold} does not fit task {task.name}: it must divide its {spec.outputs} outputs",
    )
    _require(model.dtype in DTYPES, f"model.dtype={model.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")
    for key, value in (("model.weight_factor", model.weight_factor), ("relocate.weight_factor", config.relocate.weight_factor)):
        _require(math.isfinite(value) and value >= 0, f"{key}={value} is not allowed; it must be a finite number >= 0")
    _require(model.l0 >= 0, f"model.l0={model.l0} is not allowed; it must be >= 0")
    _require(config.optim.lr > 0, f"optim.lr={config.optim.lr} is not allowed; it must be > 0")
    _require(config.optim.weight_decay >= 0, f"optim.weight_decay={config.optim.weight_decay} is not allowed; it must be >= 0")
    schedule = config.schedule
    for key in ("lambda0", "boost", "decay"):
        value = getattr(schedule, key)
        _require(math.isfinite(value) and value >= 0, f"schedule.{key}={value} is not allowed; it must be a finite number >= 0")
    for key in ("boost_at", "decay_at", "bias_from"):
        value = getattr(schedule, key)
        _require(0 <= value <= 1, f"schedule.{key}={value} is not allowed; it is a fraction of steps in [0, 1]")
    _require(
        schedule.boost_at <= schedule.decay_at,
        f"schedule.boost_at={schedule.boost_at} is after schedule.decay_at={schedule.decay_at}; the boost must come first",
    )
    _require(config.device in DEVICES, f"device={config.device!r} is unknown; allowed: {', '.join(DEVICES)}")
    _require(
        config.device != "cuda" or torch.cuda.is_available(),
        "device=cuda was asked for but no CUDA GPU is available; use device=cpu or device=auto",
    )
    _require(config.engine in ENGINES, f"engine={config.engine!r} is unknown; allowed: {', '.join(ENGINES)}")
    _require(
        config.engine != "native" or config.device != "cuda",
        "engine=native runs on the CPU; with device=cuda use engine=eager",
    )
    _require(model.geometry in GEOMETRIES, f"model.geometry={model.geometry!r} is unknown; allowed: {', '.join(GEOMETRIES)}")
    if model.geometry == "grid":
        problem = grid_problem(tuple(model_shape(config, spec)))
        _require(problem is None, f"model.geometry=grid lays layers out as squares, but {problem}; change "
                 f"model.hidden={list(model.hidden)} or use model.geometry=line")
        _require(model.in_fold == 1 and model.out_fold == 1, f"model.in_fold={model.in_fold} and model.out_fold="
                 f"{model.out_fold}: folds exist only on the line geometry; with model.geometry=grid both must be 1")
    training = training_samples(config, spec)
    _require(config.batch_size is None or 1 <= config.batch_size <= training,
             f"batch_size={config.batch_size} is not allowed; it must be between 1 and the {training} training samples "
             f"of {task.name} (or null: the whole training set every step)")
    reason = unsupported(spec.tokens > 0, DTYPES[model.dtype], model.mean_cost, spec.loss, config.batch_size is not None)
    _require(config.engine != "native" or reason is None,
             f"engine=native cannot run task {task.name}: {reason}; use engine=eager")
    _require(
        config.engine != "native" or jit.available(),
        "engine=native needs numba, which cannot be imported here (pip install numba); or use engine=eager",
    )
    check_memory(config, spec)


def model_shape(config: RunConfig, task: Task) -> list[int]:
    """Neurons per layer: the task's inputs (each embedded, for a task with tokens), the hidden
    widths, the task's outputs."""
    inputs = task.inputs * (config.model.embedding_dim if task.tokens else 1)
    return [inputs, *config.model.hidden, task.outputs]


def sample_count(config: RunConfig, task: Task) -> int:
    """The larger of a run's training and test sets: all pairs bound it for a task with tokens."""
    return task.tokens**2 if task.tokens else max(config.task.n_train, config.task.n_test)


def training_samples(config: RunConfig, task: Task) -> int:
    """The size of the training set (for a task with tokens: its share of all pairs)."""
    return int(task.tokens**2 * config.task.train_fraction) if task.tokens else config.task.n_train


def memory_needed(config: RunConfig, task: Task, replicas: int = 1) -> int:
    """Bytes a run needs, roughly: parameter-sized tensors (parameters, gradient, two Adam moments,
    two penalty tables, prices, wire lengths: 8 copies of 4 bytes), activations kept for the backward
    pass (of a minibatch, where there are minibatches; the whole evaluation otherwise), relocation's
    float64 placement matrix of the widest layer, and the data itself."""
    widths = model_shape(config, task)
    parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(widths[:-1], widths[1:]))
    samples = sample_count(config, task)
    data = 4 * widths[0] * (config.task.n_train + config.task.n_test) if task.name in IMAGES else 0
    per_replica = 4 * (8 * parameters + 4 * samples * sum(widths)) + 8 * max(widths) ** 2
    return replicas * per_replica + data


def machine_memory(device: str) -> int:
    """Bytes of memory the run's device has: the GPU's, or the machine's physical memory."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(config: RunConfig, task: Task, replicas: int = 1) -> None:
    """Refuse, in one line, a run (or a batched group of `replicas`) that cannot fit in memory."""
    needed, available = memory_needed(config, task, replicas), machine_memory(config.device)
    what = "one run" if replicas == 1 else f"a batched group of {replicas}"
    samples = sample_count(config, task)
    _require(
        needed <= available,
        f"model.hidden={list(config.model.hidden)} needs about {needed / 2**30:.1f} GiB for {what} "
        f"({samples} samples), more than the {available / 2**30:.1f} GiB this machine has; use smaller hidden "
        "widths or fewer samples" + ("" if replicas == 1 else ", or a smaller hydra.launcher.max_batch"),
    )


def resolve_device(name: str, engine: str = "eager") -> torch.device:
    """`auto` picks CUDA when a GPU is present and the engine can use it (eager), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and engine == "eager" else "cpu")
    return torch.device(name)
