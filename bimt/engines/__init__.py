"""Engines: where a stretch of training steps runs. The contract of every engine is written here, once.

An engine trains a model's replicas in lockstep, on (R, n, d) data, with the flat-parameter AdamW
of `bimt.network.optim`. Each step it computes, for every replica r,

    loss_r(step's samples) + lambda_r * cost_r,   cost_r = sum |w| * price + l0 * (sum |b| if biases) [+ l0 * sum |E|]

with the wire prices the trainer hands it (`bimt.network.cost.wire_factors`), takes the gradient
(d|w|/dw = sign(w), as autograd's `abs` backward), and applies one AdamW update. It stops early,
before applying a step, when that step's loss is not finite. Relocation happens outside the engine
(the trainer calls `relocated` afterwards).

Three implementations compute this, because speed and bit-fidelity need different code:

| implementation | where | what it is bit for bit |
|---|---|---|
| `bimt.reference` | plain `nn.Linear`, autograd | the notebooks' own code (it is the oracle) |
| `EagerEngine` | torch ops, CPU or CUDA | a single run is the reference's bits on any CPU: it calls the kernels autograd calls for `nn.Linear` (2-D `addmm`, `mm`, `silu_backward`, the loss's own). A batched group (`exact_batches=False`) runs one `baddbmm`/`bmm` and one elementwise kernel for all replicas, faster, but their last bits differ from a single run's (MKL's kernels, vector loops that end elsewhere) |
| `ReplicaByReplicaEngine` | torch ops, CPU or CUDA | a batched eager group by default (`exact_batches`): one `EagerEngine` per replica on views of its memory, so replica r is bit for bit the single run of r |
| `TransformerEngine` | torch ops, CPU or CUDA | the eager engine of a transformer: its backward written out (the attention core left to autograd), a single run the literal model's bits; a batched group steps replica by replica (`exact_batches`) |
| `AutogradEngine` | torch ops and autograd, CPU or CUDA | a transformer with LayerNorms applied, and batched transformer groups with `exact_batches=false` (batched products, torch's fused GELU): autograd on views of the flat parameters; a single run is the literal model's bits |
| `NativeEngine` | numba loops, CPU, float32 | itself on a given machine: the same arithmetic summed in another order (vectorised), within measured tolerances of the reference; replica r of a group is bit for bit its single run, since every replica runs the same code |

A task an engine cannot run is a one-line error (`unsupported`), never other numbers.
"""

from __future__ import annotations

from typing import Protocol

import torch

from bimt.engines.autograd import AutogradEngine
from bimt.engines.eager import EagerEngine, ReplicaByReplicaEngine
from bimt.engines.native import NativeEngine, unsupported
from bimt.engines.transformer import TransformerEngine
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.spatial import SpatialModel
from bimt.network.transformer import BioTransformer
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import Loss

ENGINES = ("native", "eager")


class Engine(Protocol):
    """What the trainer asks of an engine (see the module's contract)."""

    def set_lambda(self, lam: torch.Tensor) -> None:
        """lambda of every replica, (R,), from the next step on."""

    def run(self, step: int, count: int, penalize_bias: bool) -> tuple[int, torch.Tensor]:
        """Up to `count` steps from step `step` on: the number done, and each step's training loss (steps, R)."""

    def relocated(self) -> None:
        """The model's neurons have moved: re-read its permutations."""

    def test_metrics(self) -> dict[str, torch.Tensor]:
        """`loss/test` (R,), and `acc/test`, `acc/train` for a classifier, of the model as it is."""


def make_engine(name: str, model: SpatialModel, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW,
                loss: Loss, exact_batches: bool = True) -> Engine:
    """The training engine called `name`: "eager" (torch: written-out for a BioMLP, autograd for
    other models) or "native" (numba, BioMLPs). A batched eager group steps its replicas one by one
    unless `exact_batches` is off."""
    if name == "native":
        return NativeEngine(model, data, prices, optimizer, loss)
    if isinstance(model, BioMLP):
        alone = EagerEngine
    else:
        written_out = isinstance(model, BioTransformer) and not model.layer_norm
        alone = TransformerEngine if written_out else AutogradEngine
    if exact_batches and model.replicas > 1:
        return ReplicaByReplicaEngine(model, data, prices, optimizer, loss, alone)
    if model.replicas == 1 or isinstance(model, BioMLP):
        return alone(model, data, prices, optimizer, loss)
    return AutogradEngine(model, data, prices, optimizer, loss)


__all__ = ["ENGINES", "AutogradEngine", "EagerEngine", "TransformerEngine", "Engine", "NativeEngine", "ReplicaByReplicaEngine", "make_engine", "unsupported"]
