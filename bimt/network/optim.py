"""AdamW on one flat parameter tensor, in nine tensor operations.

`torch.optim.AdamW` spends 100-350 microseconds per step in Python bookkeeping on this model,
several times the rest of a training step. This class performs exactly its arithmetic (the
`foreach` path without amsgrad: the same operations, in the same order, with the same Python-float
bias corrections), so the numbers are bit for bit torch's; tests/test_optim.py holds it to that.
"""

from __future__ import annotations

import torch


class AdamW:
    """Decoupled-weight-decay Adam over `params` (a leaf tensor whose `.grad` the caller fills)."""

    def __init__(
        self,
        params: torch.Tensor,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.weight_decay, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.steps = 0
        self.exp_avg = torch.zeros_like(params, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(params, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        params, grad = self.params, self.params.grad
        self.steps += 1
        if self.weight_decay != 0:
            params.mul_(1 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = (self.lr / (1 - beta1 ** float(self.steps))) * -1
        denominator = self.exp_avg_sq.sqrt().div_((1 - beta2 ** float(self.steps)) ** 0.5).add_(self.eps)
        params.addcdiv_(self.exp_avg, denominator, value=step_size)

    def moments(self) -> list[torch.Tensor]:
        """The per-parameter state tensors, laid out like `params` (relocation may permute them)."""
        return [self.exp_avg, self.exp_avg_sq]

    def replica_view(self, params: torch.Tensor, replica: int) -> AdamW:
        """An optimizer of replica `replica` alone, driving `params` (a view of that replica's row),
        whose moments are views of this one's: stepping it steps that replica here."""
        view = AdamW(params, self.lr, self.weight_decay, self.betas, self.eps)
        view.steps = self.steps
        view.exp_avg, view.exp_avg_sq = self.exp_avg[replica : replica + 1], self.exp_avg_sq[replica : replica + 1]
        return view

    def replica_subset(self, params: torch.Tensor, replicas: torch.Tensor) -> AdamW:
        """This optimizer's state for the given rows (replicas), driving `params`."""
        subset = AdamW(params, self.lr, self.weight_decay, self.betas, self.eps)
        subset.load_state_dict({"step": self.steps, "exp_avg": self.exp_avg[replicas],
                                "exp_avg_sq": self.exp_avg_sq[replicas]})
        return subset

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"step": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        self.steps = int(state["step"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
