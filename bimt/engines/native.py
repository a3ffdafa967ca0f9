"""The native engine: many training steps in one compiled loop (numba), with no per-step overhead.

Python's and torch's per-operation overhead is most of an eager step on these tiny networks (MSE
regression, or cross-entropy classification of numeric inputs: Sections 3.1-3.2). Here a
stretch of steps between two events (a log line, a relocation, a snapshot, a change of lambda)
runs as one call into machine code compiled by numba: forward pass, loss, backward pass, the
connection-cost gradient and AdamW, replica by replica. It is the eager engine's arithmetic in
float32, but summed in another order (and vectorised), and with its own vectorisable sigmoid, so
its numbers agree with the notebook's to rounding, not bit for bit; on a given machine it is
deterministic.

Activations are kept feature-major, (width, samples), so that the loops over samples vectorise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bimt.engines.penalties import connection_penalties
from bimt.network.jit import available, jit
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.tasks.dataset import Dataset
from bimt.tasks.losses import Loss, logged_metrics

# Reassociation lets LLVM vectorise the sums; the IEEE handling of NaN and inf is kept, because the
# loop must notice a diverging loss.
FASTMATH = {"reassoc", "contract", "nsz"}


@jit({"contract", "nsz"})
def _sigmoid(z):
    """1 / (1 + exp(-z)) in float32 arithmetic that vectorises, within 3 ulp of the correctly rounded
    sigmoid (0.17 ulp on average) for |z| <= 80.

    The C library's `expf` is a call that LLVM cannot vectorise, and it took half of a step. Here
    e = exp(-|z|) is reduced as Cephes' `expf` does: |z| = n ln 2 + r with |r| <= ln 2 / 2, ln 2 in two
    parts whose first has so few bits that n times it, and its difference with |z|, are exact (the
    parentheses matter: computed the other way round the error grows to 45 ulp). exp(-r) comes from
    a degree-7 polynomial and 2^-n is written straight into a float's exponent bits. Then
    sigmoid(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) below, so that neither side subtracts from 1.
    |z| is clamped at 87, where 2^-n is still a normal float. A NaN stays NaN, so divergence is
    still seen.
    """
    a = min(abs(z), np.float32(87.0))
    n = np.floor(a * np.float32(1.44269504) + np.float32(0.5))
    x = (n * np.float32(0.693359375) - a) - n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    for coefficient in (np.float32(1.3981999507e-3), np.float32(8.3334519073e-3), np.float32(4.1665795894e-2),
                        np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)):
        p = p * x + coefficient
    power = np.int32((np.int32(127) - np.int32(n)) << 23).view(np.float32)
    e = ((p * x) * x + x + np.float32(1.0)) * power
    sigmoid = np.float32(1.0) / (np.float32(1.0) + e)
    return sigmoid if z >= 0 else e * sigmoid


@jit(FASTMATH)
def _forward(params, x, widths, offsets, acts, pres, sigmoids, r):
    """Activations of replica r for inputs x (width0, n): acts[l] (width_l, n).

    Inputs are taken four at a time, so that an output row is loaded and stored once per four
    multiply-adds instead of once per one: the stores, not the arithmetic, bounded the plain loop."""
    depth = len(widths) - 1
    n = x.shape[1]
    for i in range(widths[0]):
        for s in range(n):
            acts[0, i, s] = x[i, s]
    for layer in range(depth):
        n_in, n_out = widths[layer], widths[layer + 1]
        w0 = offsets[layer]
        b0 = w0 + n_out * n_in
        inputs, outputs = acts[layer], acts[layer + 1]
        for o in range(n_out):
            bias = params[r, b0 + o]
            for s in range(n):
                outputs[o, s] = bias
            row = w0 + o * n_in
            i = 0
            while i + 4 <= n_in:
                wa, wb, wc, wd = params[r, row + i], params[r, row + i + 1], params[r, row + i + 2], params[r, row + i + 3]
                for s in range(n):
                    outputs[o, s] += ((wa * inputs[i, s] + wb * inputs[i + 1, s])
                                      + (wc * inputs[i + 2, s] + wd * inputs[i + 3, s]))
                i += 4
            for i in range(i, n_in):
                w = params[r, row + i]
                for s in range(n):
                    outputs[o, s] += w * inputs[i, s]
            if layer < depth - 1:
                for s in range(n):
                    z = outputs[o, s]
                    sig = _sigmoid(z)
                    pres[layer, o, s] = z
                    sigmoids[layer, o, s] = sig
                    outputs[o, s] = z * sig


@jit(FASTMATH)
def _loss(output, y, samples, classify):
    """The MSE of output against targets y (width_out, n), or with `classify` the mean cross-entropy
    against one-hot targets, over the first `samples` columns."""
    total = 0.0
    n_out = y.shape[0]
    if classify:
        for s in range(samples):
            top = output[0, s]
            for o in range(1, n_out):
                top = max(top, output[o, s])
            exps = 0.0
            for o in range(n_out):
                exps += math.exp(output[o, s] - top)
                total -= y[o, s] * (output[o, s] - top)
            total += math.log(exps)
        return total / samples
    for o in range(n_out):
        for s in range(samples):
            e = output[o, s] - y[o, s]
            total += e * e
    return total / (n_out * samples)


@jit(FASTMATH)
def _output_gradient(output, y, samples, classify, g):
    """d loss / d output into g (width_out, n): 2 (output - y) / count for the MSE, (softmax - y) /
    samples for the cross-entropy. The padding columns get no error, so they add exact zeros."""
    n_out, n = y.shape
    if classify:
        scale = np.float32(1.0 / samples)
        for s in range(n):
            if s >= samples:
                for o in range(n_out):
                    g[o, s] = np.float32(0.0)
                continue
            top = output[0, s]
            for o in range(1, n_out):
                top = max(top, output[o, s])
            exps = np.float32(0.0)
            for o in range(n_out):
                g[o, s] = math.exp(output[o, s] - top)
                exps += g[o, s]
            for o in range(n_out):
                g[o, s] = (g[o, s] / exps - y[o, s]) * scale
        return
    scale = np.float32(2.0 / (n_out * samples))
    for o in range(n_out):
        for s in range(n):
            g[o, s] = (output[o, s] - y[o, s]) * scale if s < samples else np.float32(0.0)


@jit(FASTMATH)
def _backward(params, grad, y, samples, classify, widths, offsets, acts, pres, sigmoids, g, g_next, r):
    """Gradient of replica r's loss on the first `samples` columns of targets y (width_out, n) into
    grad[r] (the flat layout of params).

    As in `_forward`, four weights share each pass over the samples: four weight gradients are
    summed from one load of the error row, and the error sent back gathers four outputs per store."""
    depth = len(widths) - 1
    n = y.shape[1]
    _output_gradient(acts[depth], y, samples, classify, g)
    for layer in range(depth - 1, -1, -1):
        n_in, n_out = widths[layer], widths[layer + 1]
        w0 = offsets[layer]
        b0 = w0 + n_out * n_in
        inputs = acts[layer]
        for o in range(n_out):
            total = np.float32(0.0)
            for s in range(n):
                total += g[o, s]
            grad[r, b0 + o] = total
            row = w0 + o * n_in
            i = 0
            while i + 4 <= n_in:
                ta = tb = tc = td = np.float32(0.0)
                for s in range(n):
                    e = g[o, s]
                    ta += e * inputs[i, s]
                    tb += e * inputs[i + 1, s]
                    tc += e * inputs[i + 2, s]
                    td += e * inputs[i + 3, s]
                grad[r, row + i], grad[r, row + i + 1], grad[r, row + i + 2], grad[r, row + i + 3] = ta, tb, tc, td
                i += 4
            for i in range(i, n_in):
                total = np.float32(0.0)
                for s in range(n):
                    total += g[o, s] * inputs[i, s]
                grad[r, row + i] = total
        if layer > 0:
            for i in range(n_in):
                for s in range(n):
                    g_next[i, s] = 0.0
            o = 0
            while o + 4 <= n_out:
                for i in range(n_in):
                    wa, wb = params[r, w0 + o * n_in + i], params[r, w0 + (o + 1) * n_in + i]
                    wc, wd = params[r, w0 + (o + 2) * n_in + i], params[r, w0 + (o + 3) * n_in + i]
                    for s in range(n):
                        g_next[i, s] += (wa * g[o, s] + wb * g[o + 1, s]) + (wc * g[o + 2, s] + wd * g[o + 3, s])
                o += 4
            for o in range(o, n_out):
                for i in range(n_in):
                    w = params[r, w0 + o * n_in + i]
                    for s in range(n):
                        g_next[i, s] += w * g[o, s]
            for i in range(n_in):
                for s in range(n):
                    sig, z = sigmoids[layer - 1, i, s], pres[layer - 1, i, s]
                    g[i, s] = g_next[i, s] * sig * (1.0 + z * (1.0 - sig))


@jit()
def _activation_buffers(widths, n):
    """What `_forward` fills for n samples: activations, pre-activations and sigmoids per layer."""
    depth = len(widths) - 1
    width = 0
    for w in widths:
        width = max(width, w)
    acts = np.empty((depth + 1, width, n), dtype=np.float32)
    pres = np.empty((max(depth - 1, 1), width, n), dtype=np.float32)
    sigmoids = np.empty((max(depth - 1, 1), width, n), dtype=np.float32)
    return acts, pres, sigmoids


@jit(FASTMATH)
def _loss_per_replica(params, x, y, samples, classify, widths, offsets, losses):
    """losses[r]: replica r's loss on the first `samples` columns of x and y, with the training
    step's own forward pass and sum, so that it does not depend on how many replicas there are."""
    depth = len(widths) - 1
    acts, pres, sigmoids = _activation_buffers(widths, x.shape[2])
    for r in range(params.shape[0]):
        _forward(params, x[r], widths, offsets, acts, pres, sigmoids, r)
        losses[r] = _loss(acts[depth, : y.shape[1]], y[r], samples, classify)


@jit(FASTMATH)
def _train_steps(params, grad, exp_avg, exp_avg_sq, penalty, x, y, samples, classify, widths, offsets, count,
                 adam_step, lr, beta1, beta2, eps, weight_decay, losses):
    """Run up to `count` steps on the first `samples` columns of x and y (the others are padding);
    losses[t, r] gets step t's training loss (MSE, or with `classify` cross-entropy). Returns the steps
    completed: fewer than `count` when a loss is not finite (that step is not applied).

    Each replica's forward and backward pass run back to back, so that its activations are still in
    the cache; one set of buffers serves every replica. AdamW waits until every loss is known finite."""
    replicas, size = params.shape
    depth = len(widths) - 1
    acts, pres, sigmoids = _activation_buffers(widths, x.shape[2])
    g = np.empty(acts.shape[1:], dtype=np.float32)
    g_next = np.empty(acts.shape[1:], dtype=np.float32)
    for t in range(count):
        finite = True
        for r in range(replicas):
            _forward(params, x[r], widths, offsets, acts, pres, sigmoids, r)
            loss = _loss(acts[depth, : y.shape[1]], y[r], samples, classify)
            losses[t, r] = loss
            finite = finite and math.isfinite(loss)
            _backward(params, grad, y[r], samples, classify, widths, offsets, acts, pres, sigmoids, g, g_next, r)
        if not finite:
            return t
        step = adam_step + t + 1
        step_size = np.float32(lr / (1.0 - beta1**step))
        correction = np.float32(math.sqrt(1.0 - beta2**step))
        decay = np.float32(1.0 - lr * weight_decay)
        b1, b2 = np.float32(1.0 - beta1), np.float32(beta2)
        one_minus_b2, e = np.float32(1.0 - beta2), np.float32(eps)
        for r in range(replicas):
            for p in range(size):
                value = params[r, p]
                d = grad[r, p]
                if value > 0:
                    d += penalty[r, p]
                elif value < 0:
                    d -= penalty[r, p]
                value *= decay
                m = exp_avg[r, p] + b1 * (d - exp_avg[r, p])
                v = exp_avg_sq[r, p] * b2 + one_minus_b2 * d * d
                exp_avg[r, p] = m
                exp_avg_sq[r, p] = v
                params[r, p] = value - step_size * m / (math.sqrt(v) / correction + e)
    return count


SAMPLE_BLOCK = 8  # float32 lanes of a 256-bit vector: the loops over samples run in whole vectors


def _feature_major_padded(samples: torch.Tensor) -> np.ndarray:
    """(R, n, d) samples as a contiguous (R, d, n') array, n' the multiple of SAMPLE_BLOCK from n up.

    A loop over 100 samples runs as vectors, then 4 samples one by one; over the thousand short
    loops of a step, those scalar tails took a tenth of the time. Zero samples that get no error
    in the loss change no gradient."""
    padding = -samples.shape[1] % SAMPLE_BLOCK
    return np.ascontiguousarray(torch.nn.functional.pad(samples.transpose(1, 2), (0, padding)).numpy())


class NativeEngine:
    """The engine interface of `bimt.engines.eager.EagerEngine`, running stretches of steps natively."""

    def __init__(self, model: BioMLP, data: Dataset, prices: list[torch.Tensor], optimizer: AdamW, loss: Loss):
        reason = unsupported(model.embedding is not None, model.params.dtype, model.mean_cost, loss.name,
                             data.batches is not None)
        if reason:
            raise RuntimeError(f"engine=native cannot run this model: {reason}; use engine=eager")
        self.loss = loss
        if not available():
            raise RuntimeError("engine=native needs numba (pip install numba); use engine=eager")
        if model.params.device.type != "cpu":
            raise RuntimeError(f"engine=native runs on the CPU, not on {model.params.device}; use engine=eager")
        self.model, self.data, self.prices, self.optimizer = model, data, prices, optimizer
        self.params = model.params.detach().numpy()
        self.grad = np.zeros_like(self.params)
        self.widths = np.array(model.shape, dtype=np.int64)
        self.offsets = np.array(model.layer_offsets(), dtype=np.int64)
        self.relocated()

    def relocated(self) -> None:
        """Inputs in position order and targets in output-position order, both feature-major and
        padded with zero samples to a multiple of SAMPLE_BLOCK."""
        self.train_x, self.train_y = self._in_positions(self.data.train_x, self.data.train_y)
        self.test_x, self.test_y = self._in_positions(self.data.test_x, self.data.test_y)

    def _in_positions(self, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.loss.classifies:  # class ids as one-hot targets, one row per output
            y = torch.nn.functional.one_hot(y, self.model.shape[-1]).to(torch.float32)
        positions = self.model.out_perm[:, None, :].expand(-1, y.shape[1], -1)
        return _feature_major_padded(self.model.to_positions(x)), _feature_major_padded(torch.gather(y, 2, positions))

    def set_lambda(self, lam: torch.Tensor) -> None:
        penalties = connection_penalties(self.model, self.prices, lam)
        self.penalties = {key: penalty.numpy() for key, penalty in penalties.items()}

    def run(self, step: int, count: int, penalize_bias: bool) -> tuple[int, torch.Tensor]:
        """Up to `count` steps (every step sees the whole training set, whatever `step`): the number
        done, and each step's training loss, (steps, R). Fewer than `count` done means the next
        step's loss (the last row) was not finite; that step is not applied."""
        optimizer = self.optimizer
        losses = np.empty((count, self.params.shape[0]), dtype=np.float32)
        done = _train_steps(self.params, self.grad, optimizer.exp_avg.numpy(), optimizer.exp_avg_sq.numpy(),
                            self.penalties[penalize_bias], self.train_x, self.train_y, self.data.train_x.shape[1],
                            self.loss.classifies, self.widths, self.offsets, count, optimizer.steps, optimizer.lr,
                            optimizer.betas[0], optimizer.betas[1], optimizer.eps, optimizer.weight_decay, losses)
        optimizer.steps += done
        return done, torch.from_numpy(losses[: done + (done < count)])

    def test_metrics(self) -> dict[str, torch.Tensor]:
        """Each replica's test loss, computed natively as its training loss is: it does not depend
        on the other replicas of the batch (a batched torch product would: MKL's kernels differ).
        A classifier's accuracies come from the model itself, replica by replica."""
        losses = np.empty(self.params.shape[0], dtype=np.float32)
        _loss_per_replica(self.params, self.test_x, self.test_y, self.data.test_x.shape[1], self.loss.classifies,
                          self.widths, self.offsets, losses)
        metrics = logged_metrics(self.model, self.data, self.loss) if self.loss.classifies else {}
        return {**metrics, "loss/test": torch.from_numpy(losses)}


NATIVE_LOSSES = ("mse", "cross_entropy")


def unsupported(embedded: bool, dtype: torch.dtype, mean_cost: bool, loss: str = "mse",
                minibatches: bool = False) -> str | None:
    """Why the native engine cannot train a model (None when it can): its loops are written for
    float32 MSE or cross-entropy on numeric inputs, with summed costs, on the whole training set
    every step. The geometry does not matter: it only sets the prices, computed outside the loops."""
    if loss not in NATIVE_LOSSES:
        return f"its loops compute {' and '.join(NATIVE_LOSSES)}, not {loss}"
    if minibatches:
        return "its loops train on the whole training set every step, not on minibatches"
    if embedded:
        return "its loops take numeric inputs, not learned token embeddings"
    if dtype != torch.float32:
        return f"its loops run in float32, not {str(dtype).removeprefix('torch.')}"
    if mean_cost:
        return "its cost gradient is for summed costs, not averaged ones"
    return None
