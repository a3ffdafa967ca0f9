"""An experiment resolved once: everything a group of validated jobs needs to train.

`plan_group` turns the configs of jobs that train in lockstep (one job, for a single run) into a
`Plan`: the device, the seeds, the data of every replica, the model, the optimizer's and the loop's
settings and the per-replica switches. Every check that needs the machine or a file is made here,
once, before anything trains: a GPU, the memory, MNIST's files, formulas that are finite on the
drawn inputs. Training (`bimt.experiment.run`), the bench and the report all build from a plan, so
they cannot disagree on how a config becomes a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from bimt.experiment.schema import DTYPES, RunConfig
from bimt.experiment.validate import ConfigError, check_batch_size, model_shape, require
from bimt.network.model import BioMLP
from bimt.network.spatial import SpatialModel
from bimt.network.transformer import BioTransformer, transformer_network
from bimt.tasks import DataError, Dataset, Minibatches, SettingError, Task, formulas
from bimt.tasks.dataset import stack_datasets
from bimt.tasks.images import IMAGE_TASKS
from bimt.training import ReplicaSettings, TrainSettings


@dataclass(frozen=True)
class Plan:
    """What a lockstep group of jobs trains: one replica per job, in the jobs' order."""

    configs: list[RunConfig]
    task: Task
    device: torch.device
    seeds: list[int]
    data: Dataset
    model: SpatialModel
    settings: TrainSettings
    replicas: ReplicaSettings


def plan_group(configs: Sequence[RunConfig], task: Task) -> Plan:
    """The plan of validated jobs that share everything but their replica keys (`task` is their
    task, as `validate` resolved it). Raises ConfigError for what the machine or the data refuse."""
    configs = [with_sample_counts(config, task) for config in configs]
    first = configs[0]
    device = resolve_device(first.device, first.engine)
    check_memory(first, task, len(configs))
    seeds = [config.run_seed for config in configs]
    data = group_data(first, task, seeds, [config.data_seed for config in configs], device)
    model = build_model(first, task, seeds).to(device)
    if data.train_x.is_floating_point():
        data = replace(data, train_x=data.train_x.to(model.params.dtype), test_x=data.test_x.to(model.params.dtype),
                       train_y=data.train_y.to(model.params.dtype) if data.train_y.is_floating_point() else data.train_y,
                       test_y=data.test_y.to(model.params.dtype) if data.test_y.is_floating_point() else data.test_y)
    return Plan(configs, task, device, seeds, data, model, build_settings(first, task),
                replica_settings(configs, device))


def with_sample_counts(config: RunConfig, task: Task) -> RunConfig:
    """The config with `task.n_train` and `task.n_test` given: what the task's files hold where the
    config leaves them to it (read here, once: their headers, or a table's rows), the batch size checked
    against them."""
    if task.sample_counts is None:
        return config
    try:
        n_train, n_test = task.sample_counts(config.task)
    except (DataError, SettingError) as error:
        raise ConfigError(str(error)) from None
    resolved = replace(config, task=replace(config.task, n_train=n_train, n_test=n_test))
    check_batch_size(resolved, task)
    return resolved


def resolve_device(name: str, engine: str = "eager") -> torch.device:
    """`auto` picks CUDA when a GPU is present and the engine can use it (eager), else the CPU."""
    require(name != "cuda" or torch.cuda.is_available(),
            "device=cuda was asked for but no CUDA GPU is available; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and engine == "eager" else "cpu")
    return torch.device(name)


def build_settings(config: RunConfig, task: Task) -> TrainSettings:
    """The training loop's settings for `config`."""
    return TrainSettings(
        steps=config.steps,
        lr=config.optim.lr,
        weight_decay=config.optim.weight_decay,
        relocate_every=config.relocate.every,
        top_k=config.relocate.top_k,
        relocate_locality=config.relocate.locality,
        relocate_inputs=config.relocate.inputs,
        local_output_layer=config.model.local_output_layer,
        permute_optimizer_state=config.relocate.permute_optimizer_state,
        log_every=config.log_every,
        snapshot_every=config.snapshot_interval,
        checkpoint_every=config.checkpoint_interval,
        engine=config.engine,
        loss=task.loss,
        exact_batches=config.exact_batches,
    )


def build_model(config: RunConfig, task: Task, seeds: Sequence[int]) -> SpatialModel:
    """The run's network, one replica per seed (initial weights drawn from each)."""
    m = config.model
    if m.architecture == "transformer":
        return BioTransformer(task.inputs, task.outputs, seeds, m.width, m.heads, m.blocks, m.hidden[0], m.layer_norm,
                              m.l0, DTYPES[m.dtype], task.init_prelude)
    embedding = (task.tokens, m.embedding_dim) if task.tokens else None
    return BioMLP(model_shape(config, task), seeds, m.in_fold, m.out_fold, m.l0, embedding, DTYPES[m.dtype],
                  m.mean_cost, m.embedding_cost, m.geometry)


def replica_settings(configs: Sequence[RunConfig], device: torch.device) -> ReplicaSettings:
    """Per-replica train-type switches and lambda0s as (R,) tensors."""
    types = [c.switches for c in configs]
    return ReplicaSettings(
        l1=torch.tensor([t.l1 for t in types], device=device),
        locality=torch.tensor([c.model.locality if t.local else 0.0 for c, t in zip(configs, types)], device=device),
        swap=torch.tensor([t.swap for t in types], device=device),
        lambda0=torch.tensor([c.schedule.lambda0 for c in configs], dtype=torch.float64, device=device),
    )


def task_data(config: RunConfig, task: Task, data_seed: int) -> Dataset:
    """One replica's data, drawn (or read) with `data_seed`; data that cannot be had, or formulas
    that are not finite on it, are a ConfigError."""
    try:
        data = task.data(task, config.task, data_seed)
        if task.formula is not None and config.task.outputs is not None:
            formulas.check_finite(config.task, data)
    except (DataError, SettingError) as error:
        raise ConfigError(str(error)) from None
    return data


def group_data(config: RunConfig, task: Task, seeds: Sequence[int], data_seeds: Sequence[int],
               device: torch.device) -> Dataset:
    """Every replica's data, stacked into (R, n, d) tensors, with each replica's minibatch order
    (drawn from its seed).

    Replicas that share a data seed share their data: it is drawn (or read) once, and where all of
    them share it, the stack is a view that repeats it (MNIST is not copied per replica)."""
    drawn: dict[int, Dataset] = {}
    for data_seed in data_seeds:
        if data_seed not in drawn:
            drawn[data_seed] = task_data(config, task, data_seed)
    datasets = [drawn[data_seed] for data_seed in data_seeds]
    if len(drawn) == 1:
        stacked = stack_datasets(datasets[:1], device).expand(len(seeds))
    else:
        stacked = stack_datasets(datasets, device)
    sampler = task.sampler or Minibatches
    batches = None if config.batch_size is None else sampler(stacked.train_x.shape[1], config.batch_size, seeds)
    return replace(stacked, batches=batches, eval_size=datasets[0].eval_size)


def sample_count(config: RunConfig, task: Task) -> int:
    """The larger of a run's training and test sets: all pairs bound it for a task with tokens, all
    sequences for a sequence task."""
    if task.tokens:
        return task.tokens**2
    if config.task.sequences is not None:
        return config.task.sequences
    return max(config.task.n_train, config.task.n_test)


def memory_needed(config: RunConfig, task: Task, replicas: int = 1) -> int:
    """Bytes a run needs, roughly: parameter-sized tensors (parameters, gradient, two Adam moments,
    two penalty tables, prices, wire lengths: 8 copies of 4 bytes), activations kept for the backward
    pass (of a minibatch, where there are minibatches; the whole evaluation otherwise), relocation's
    float64 placement matrix of the widest layer, and the data itself."""
    samples = sample_count(config, task)
    if config.model.architecture == "transformer":
        m = config.model
        network = transformer_network(task.inputs, task.outputs, m.width, m.heads, m.blocks, m.hidden[0])
        tokens = samples * max(1, 2 * config.task.pairs - 1)  # the evaluation of a whole split, token by token
        per_replica = 8 * (8 * network.parameters + tokens * (5 * m.width + m.hidden[0]) * m.blocks)
        return replicas * per_replica
    widths = model_shape(config, task)
    parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(widths[:-1], widths[1:]))
    data = 4 * widths[0] * (config.task.n_train + config.task.n_test) if task.name in IMAGE_TASKS else 0
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
    require(
        needed <= available,
        f"model.hidden={list(config.model.hidden)} needs about {needed / 2**30:.1f} GiB for {what} "
        f"({sample_count(config, task)} samples), more than the {available / 2**30:.1f} GiB this machine has; "
        "use smaller hidden widths or fewer samples" + ("" if replicas == 1 else ", or a smaller hydra.launcher.max_group"),
    )
