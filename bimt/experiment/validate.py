"""Checks that turn a mistake in a config into one line, before any training work starts.

`load_config` merges a composed config into the schema (types); `validate` checks ranges and how
fields fit together, and resolves the task on the way. Both are pure: they read no file and draw no
data (what needs I/O, such as MNIST's files, the machine's memory or a GPU, is checked when the
experiment is planned, `bimt.experiment.plan`). Both raise `ConfigError` with a message that names
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bimt.engines import ENGINES, unsupported
from bimt.experiment.objective import objective_problem
from bimt.experiment.schema import DEVICES, DTYPES, RunConfig
from bimt.network import jit
from bimt.network.geometry import GEOMETRIES, grid_problem
from bimt.tasks import SettingError, Task, build_task
from bimt.tasks.base import ARCHITECTURES

SEEDS = 2**32  # numpy's seeds are below this


class ConfigError(ValueError):
    """A user mistake in the configuration; its message is one line meant for the terminal."""


def load_config(cfg: DictConfig) -> RunConfig:
    """Type-check a composed config (without its `hydra` node) against the schema."""
    plain = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from None


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def resolve_task(config: RunConfig) -> Task:
    """The task the config names, its `task.*` settings checked (pure)."""
    try:
        return build_task(config.task)
    except SettingError as error:
        raise ConfigError(str(error)) from None


def validate(config: RunConfig) -> Task:
    """Range and cross-field checks; returns the config's task, resolved once, here. Raises
    ConfigError naming the first problem found."""
    task = resolve_task(config)
    model = config.model
    known = ", ".join(str(key) for key in sorted(config.train_types))
    require(config.train_type in config.train_types, f"train_type={config.train_type} is not allowed; use one of {known}")
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
        require(value >= low, f"{key}={value} is not allowed; it must be an integer >= {low}")
    for key in ("n_train", "n_test"):
        value = getattr(config.task, key)
        require(value is None or value >= 1, f"task.{key}={value} is not allowed; it must be an integer >= 1")
    for key, value, what in (("seed", config.seed, " (or null for the task's paper seed)"),
                             ("task.seed", config.task.seed, ""), ("task.data_seed", config.task.data_seed, "")):
        require(value is None or 0 <= value < SEEDS,
                f"{key}={value} is not allowed; use an integer from 0 to {SEEDS - 1}{what}")
    _check_architecture(config, task)
    require(len(model.hidden) >= 1, "model.hidden=[] is not allowed; give at least one hidden width")
    for width in model.hidden:
        require(width >= 1, f"model.hidden={list(model.hidden)} is not allowed; every hidden width must be >= 1")
    _check_task_fits(config, task)
    require(model.dtype in DTYPES, f"model.dtype={model.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")
    for key, value, bound in (("model.locality", model.locality, ">= 0"),
                              ("relocate.locality", config.relocate.locality, ">= 0"),
                              ("model.l0", model.l0, ">= 0"),
                              ("optim.weight_decay", config.optim.weight_decay, ">= 0"),
                              ("optim.lr", config.optim.lr, "> 0")):
        positive = value > 0 if bound == "> 0" else value >= 0
        require(math.isfinite(value) and positive, f"{key}={value} is not allowed; it must be a finite number {bound}")
    _check_schedule(config)
    require(config.device in DEVICES, f"device={config.device!r} is unknown; allowed: {', '.join(DEVICES)}")
    require(config.engine in ENGINES, f"engine={config.engine!r} is unknown; allowed: {', '.join(ENGINES)}")
    require(config.engine != "native" or config.device != "cuda", "engine=native runs on the CPU; with device=cuda use engine=eager")
    require(model.geometry in GEOMETRIES, f"model.geometry={model.geometry!r} is unknown; allowed: {', '.join(GEOMETRIES)}")
    if model.geometry == "grid":
        problem = grid_problem(tuple(model_shape(config, task)))
        require(problem is None, f"model.geometry=grid lays layers out as squares, but {problem}; change "
                f"model.hidden={list(model.hidden)} or use model.geometry=line")
        require(model.in_fold == 1 and model.out_fold == 1, f"model.in_fold={model.in_fold} and model.out_fold="
                f"{model.out_fold}: folds exist only on the line geometry; with model.geometry=grid both must be 1")
    check_batch_size(config, task)
    problem = objective_problem(config.objective, task)
    require(problem is None, str(problem))
    reason = unsupported(task.tokens > 0, DTYPES[model.dtype], model.mean_cost, task.loss, config.batch_size is not None)
    require(config.engine != "native" or reason is None, f"engine=native cannot run task {task.name}: {reason}; use engine=eager")
    require(config.engine != "native" or jit.available(),
            "engine=native needs numba, which cannot be imported here (pip install numba); or use engine=eager")
    return task


def _check_architecture(config: RunConfig, task: Task) -> None:
    """The model is the one the task's inputs fit; a transformer's shape is whole."""
    model = config.model
    require(model.architecture in ARCHITECTURES,
            f"model.architecture={model.architecture!r} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    require(model.architecture == task.architecture, f"model.architecture={model.architecture} does not fit task "
            f"{task.name}, which trains {'an MLP' if task.architecture == 'mlp' else 'a transformer'}; use model={'mlp2' if task.architecture == 'mlp' else 'transformer'}")
    if model.architecture != "transformer":
        for key in ("width", "heads", "blocks", "layer_norm"):
            require(getattr(model, key) is None, f"model.{key}={getattr(model, key)} is for transformers; "
                    f"task {task.name} trains an MLP, so leave it unset")
        return
    for key in ("width", "heads", "blocks"):
        value = getattr(model, key)
        require(value is not None and value >= 1, f"model.{key}={value} is not allowed; it must be an integer >= 1")
    require(model.width % model.heads == 0, f"model.width={model.width} does not split into model.heads={model.heads} "
            "heads; use a width divisible by the heads")
    require(model.layer_norm is not None, "model.layer_norm=None is not allowed; use true or false")
    require(len(model.hidden) == 1, f"model.hidden={list(model.hidden)} is not allowed for a transformer; give one "
            "width, each block's MLP's (e.g. [128])")
    require(model.geometry == "line", f"model.geometry={model.geometry} is not allowed for a transformer; its neurons "
            "sit on lines (model.geometry=line)")
    require(model.in_fold == 1 and model.out_fold == 1, f"model.in_fold={model.in_fold} and model.out_fold="
            f"{model.out_fold}: a transformer's token channels have no folds; both must be 1")
    require(config.engine != "native", f"engine=native runs MLPs only; task {task.name} trains a transformer: "
            "use engine=eager")


def _check_task_fits(config: RunConfig, task: Task) -> None:
    """The model's folds and embedding fit the task's inputs and outputs."""
    model, name = config.model, task.name
    if task.tokens:
        require(model.embedding_dim is not None and model.embedding_dim >= 1,
                f"model.embedding_dim={model.embedding_dim} is not allowed; {name} embeds its tokens: use an integer >= 1")
        require(model.in_fold == task.inputs, f"model.in_fold={model.in_fold} does not fit task {name}: "
                f"its {task.inputs} operands are embedded one per input fold, so in_fold must be {task.inputs}")
    else:
        require(model.embedding_dim is None,
                f"model.embedding_dim={model.embedding_dim} does not apply to task {name}, whose inputs are numbers; leave it null")
        require(task.inputs % model.in_fold == 0,
                f"model.in_fold={model.in_fold} does not fit task {name}: it must divide its {task.inputs} inputs")
    if task.classifies:
        require(model.out_fold == 1, f"model.out_fold={model.out_fold} does not apply to the classification task "
                f"{name}: its {task.outputs} classes are one row of outputs (out_fold=1)")
    require(task.outputs % model.out_fold == 0,
            f"model.out_fold={model.out_fold} does not fit task {name}: it must divide its {task.outputs} outputs")


def _check_schedule(config: RunConfig) -> None:
    schedule = config.schedule
    for key in ("lambda0", "boost", "rescale"):
        value = getattr(schedule, key)
        require(math.isfinite(value) and value >= 0, f"schedule.{key}={value} is not allowed; it must be a finite number >= 0")
    for key in ("boost_at", "rescale_at", "bias_from"):
        value = getattr(schedule, key)
        require(0 <= value <= 1, f"schedule.{key}={value} is not allowed; it is a fraction of steps in [0, 1]")
    require(schedule.boost_at <= schedule.rescale_at,
            f"schedule.boost_at={schedule.boost_at} is after schedule.rescale_at={schedule.rescale_at}; the boost must come first")


def model_shape(config: RunConfig, task: Task) -> list[int]:
    """Neurons per layer: the task's inputs (each embedded, for a task with tokens), the hidden
    widths, the task's outputs."""
    inputs = task.inputs * (config.model.embedding_dim if task.tokens else 1)
    return [inputs, *config.model.hidden, task.outputs]


def check_batch_size(config: RunConfig, task: Task) -> None:
    """The batch size fits the training set (where its size is known without reading files)."""
    training = training_samples(config, task)
    require(config.batch_size is None or (config.batch_size >= 1 and (training is None or config.batch_size <= training)),
            f"batch_size={config.batch_size} is not allowed; it must be between 1 and the {training} training samples "
            f"of {task.name} (or null: the whole training set every step)")


def training_samples(config: RunConfig, task: Task) -> int | None:
    """The size of the training set (for a task with tokens: its share of all pairs; for sequences,
    its share of them); None where it is what the task's files hold (`bimt.experiment.plan` reads it)."""
    if task.tokens:
        return int(task.tokens**2 * config.task.train_fraction)
    if config.task.sequences is not None:
        return int(config.task.sequences * config.task.train_fraction)
    return config.task.n_train
