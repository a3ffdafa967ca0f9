"""bimt.wrap: a user's own nn.Module, trained with torch.optim.AdamW and autograd, against the runner.

The MLP case must be the runner's run bit for bit (every logged loss and cost, the swaps, the final
permutations and weights); relocation must leave every supported kind of model computing the same
function; the cost must be the runner's for the same weights and geometry; what the tracer cannot
follow must be refused in one line naming the module and the operation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bimt
from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP
from bimt.tasks import TASKS, make_dataset

from conftest import metrics_without_timing, read_events, train_cli


class Block(nn.Module):
    """A pre-norm residual MLP block."""

    def __init__(self, width: int, hidden: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResidualMLP(nn.Module):
    def __init__(self, inputs: int, width: int, hidden: int, outputs: int, blocks: int, norm: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(Block(width, hidden, norm) for _ in range(blocks))
        self.out = nn.Linear(width, outputs)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.out(h)


class GatedMLP(nn.Module):
    """A residual SwiGLU block: the gate's and the up projection's outputs multiply, so they share a space."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
        self.gate, self.up, self.down = nn.Linear(6, 10), nn.Linear(6, 10), nn.Linear(10, 6)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.down(F.silu(self.gate(h)) * self.up(h))
        return F.softmax(self.out(h), dim=-1)


class TorchAttention(nn.Module):
    """A pre-norm block around torch's own nn.MultiheadAttention, which needs no declaration."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm, self.out = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        h = self.embed(x)
        n = self.norm(h)
        mixed, _ = self.attention(n, n, n, need_weights=False)
        return self.out(h + mixed)


class SelfAttention(nn.Module):
    """Causal multi-head self-attention in plain nn: heads are contiguous blocks of q, k and v."""

    def __init__(self, width: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        if fused:
            self.qkv = nn.Linear(width, 3 * width)
        else:
            self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, d = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Transformer(nn.Module):
    def __init__(self, inputs: int, width: int, heads: int, outputs: int, blocks: int, fused: bool) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.attention = nn.ModuleList(SelfAttention(width, heads, fused) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(2 * blocks))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
                                 for _ in range(blocks))
        self.unembed = nn.Linear(width, outputs)

    def forward(self, x):
        h = self.embed(x)
        for b, (attention, mlp) in enumerate(zip(self.attention, self.mlp)):
            h = h + attention(self.norms[2 * b](h))
            h = h + mlp(self.norms[2 * b + 1](h))
        return self.unembed(h)


def attention_of(fused: bool) -> dict:
    spec = bimt.Attention(heads=2, qkv="qkv", out="proj") if fused else \
        bimt.Attention(heads=2, q="query", k="key", v="value", out="proj")
    return {SelfAttention: spec}


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """A model with large random weights everywhere (LayerNorm gains too), so that every swap matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def mlp(shape: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(shape[:-1], shape[1:])):
        layers += [nn.Linear(n_in, n_out)] + ([nn.SiLU()] if i < len(shape) - 2 else [])
    return nn.Sequential(*layers)


STEPS, LOG_EVERY = 600, 50
RUNNER = ("task=independence", "engine=eager", f"steps={STEPS}", f"log_every={LOG_EVERY}")


@pytest.fixture(scope="module")
def runner_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runner") / "run"
    result = train_cli(*RUNNER, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_wrapped_sequential_with_adamw_reproduces_train_py_bit_for_bit(runner_run):
    torch.manual_seed(0)  # the paper's seed for independence: the runner's nn.Linear draws
    model = mlp([4, 20, 20, 2])
    net = bimt.wrap(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.0)
    data, schedule = make_dataset(TASKS["independence"], seed=0), bimt.Schedule()
    losses, costs, permutations = {}, {}, []
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = torch.mean((model(data.train_x) - data.train_y) ** 2)
        cost = net.connection_cost(locality=1.0, penalize_bias=schedule.penalize_bias(step, STEPS))
        (loss + schedule.lam(step, STEPS) * cost).backward()
        optimizer.step()
        if step % LOG_EVERY == 0:
            losses[step], costs[step] = loss.item(), cost.item()
        if step % 200 == 199:
            net.relocate()
            permutations.append((net.in_perm.tolist(), net.out_perm.tolist()))
    events = read_events(runner_run)
    assert {e.step: e.value for e in events.Scalars("loss/train")} == losses  # float32, as TensorBoard keeps them
    assert {e.step: e.value for e in events.Scalars("cost/connection")} == costs
    metrics = json.loads((runner_run / "metrics.json").read_text())
    assert (metrics["in_perm"], metrics["out_perm"]) == permutations[-1]
    assert permutations[0] != ([0, 1, 2, 3], [0, 1])  # swaps happened, and were the runner's
    ours = torch.cat([p.detach().flatten() for layer in model[::2] for p in (layer.weight, layer.bias)])
    assert torch.equal(ours, torch.load(runner_run / "checkpoint.pt", weights_only=False)["model"]["params"][0])


def test_fit_is_train_py_in_one_call(runner_run, tmp_path):
    run = bimt.fit(task="independence", engine="eager", steps=STEPS, log_every=LOG_EVERY, run_dir=tmp_path / "run")
    assert metrics_without_timing(tmp_path / "run") == metrics_without_timing(runner_run)
    assert run.metrics["test_mse"] == json.loads((runner_run / "metrics.json").read_text())["test_mse"]
    assert {e.step: e.value for e in read_events(runner_run).Scalars("loss/train")} == run.history["loss/train"]
    assert torch.equal(run.model.params.detach()[0],
                       torch.load(runner_run / "checkpoint.pt", weights_only=False)["model"]["params"][0])
    again = bimt.fit(task="independence", engine="eager", steps=STEPS, log_every=LOG_EVERY, run_dir=tmp_path / "run")
    assert again.metrics == run.metrics  # a completed run is read back, not trained again
    with pytest.raises(bimt.experiment.validate.ConfigError, match="train_type=7 is not allowed"):
        bimt.fit(train_type=7, run_dir=tmp_path / "bad")


@settings(max_examples=18, deadline=None)
@given(kind=st.sampled_from(["mlp", "residual", "residual_norm", "gated", "transformer", "transformer_fused",
                             "multihead"]),
       seed=st.integers(0, 2**16), top_k=st.integers(1, 12), inputs=st.booleans())
def test_relocation_leaves_the_function_unchanged_and_never_raises_the_cost(kind, seed, top_k, inputs):
    torch.manual_seed(seed)
    if kind == "mlp":
        model, x, attention = mlp([5, 9, 7, 3]), torch.rand(16, 5), None
    elif kind == "multihead":
        model, x, attention = TorchAttention().eval(), torch.rand(4, 6, 3), None
    elif kind == "gated":
        model, x, attention = GatedMLP().double(), torch.rand(16, 4, dtype=torch.float64), None
    elif kind.startswith("residual"):
        model, x, attention = ResidualMLP(4, 8, 12, 3, 2, kind.endswith("norm")), torch.rand(16, 4), None
    else:
        fused = kind.endswith("fused")
        model, x, attention = Transformer(3, 8, 2, 2, 2, fused), torch.rand(4, 6, 3), attention_of(fused)
    model = perturbed(model, seed)
    before = model(x).detach()
    net = bimt.wrap(model, attention=attention)
    cost = net.connection_cost().item()
    for _ in range(3):
        net.relocate(top_k=top_k, inputs=inputs)
        assert net.connection_cost().item() <= cost * (1 + 1e-6)
        cost = net.connection_cost().item()
    # Permuted neurons sum in another order: float32 transformers' outputs (up to 34 here) moved by at
    # most 2.2e-5 over 600 cases measured under MKL_CBWR=COMPATIBLE, AVX2 and the default (1e-5 failed).
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-4)
    if not inputs:
        assert net.in_perm.tolist() == list(range(len(net.in_perm)))


def test_swaps_move_neurons_and_keep_their_weights():
    torch.manual_seed(3)
    model = perturbed(mlp([4, 10, 3]), 3)
    entries = [sorted(p.detach().flatten().tolist()) for p in model.parameters()]
    net = bimt.wrap(model)
    net.relocate(top_k=10)
    assert [sorted(p.detach().flatten().tolist()) for p in model.parameters()] == entries  # moved, not changed
    assert net.in_perm.tolist() != [0, 1, 2, 3] or net.out_perm.tolist() != [0, 1, 2]


@pytest.mark.parametrize("geometry", ["line", "grid"])
def test_connection_cost_equals_the_runners_for_the_same_weights_and_geometry(geometry):
    shape = [16, 9, 9, 4] if geometry == "grid" else [4, 20, 20, 2]
    runner = BioMLP(shape, seeds=[5], geometry=geometry)
    model = mlp(shape)
    with torch.no_grad():
        for i, layer in enumerate(model[::2]):
            layer.weight.copy_(runner.weights[i][0])
            layer.bias.copy_(runner.biases[i][0])
    net = bimt.wrap(model, geometry=geometry)
    for locality in (0.0, 1.0, 2.0):
        for bias in (False, True):
            assert torch.equal(net.connection_cost(locality, bias), connection_cost(runner, locality, bias)[0])


def test_connection_cost_is_differentiable_in_the_models_own_parameters():
    model = mlp([3, 5, 2])
    net = bimt.wrap(model)
    net.connection_cost(locality=0.0).backward()
    assert torch.equal(model[0].weight.grad, 0.1 * torch.sgn(model[0].weight.detach()))


def test_state_dict_carries_the_permutations_and_reloads_the_same_function():
    torch.manual_seed(1)
    model = perturbed(mlp([4, 8, 3]), 1)
    net = bimt.wrap(model)
    net.relocate(top_k=8)
    x = torch.rand(5, 4)
    copy = mlp([4, 8, 3])
    bimt.wrap(copy)
    copy.load_state_dict(model.state_dict())
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)


def test_optimizer_state_moves_with_the_neurons_when_asked():
    torch.manual_seed(2)
    model = perturbed(mlp([4, 8, 3]), 2)
    net = bimt.wrap(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.mean(model(torch.rand(6, 4)) ** 2).backward()
    optimizer.step()
    moment = {id(p): optimizer.state[p]["exp_avg"].clone() for p in model.parameters()}
    rows = model[0].weight.detach().clone()
    net.relocate(top_k=8, inputs=False, optimizer=optimizer)  # the first layer's columns stay
    order = [rows.tolist().index(row) for row in model[0].weight.detach().tolist()]  # where each row came from
    assert order != list(range(8))
    assert torch.equal(optimizer.state[model[0].weight]["exp_avg"], moment[id(model[0].weight)][order])


def test_multihead_attention_is_read_as_fused_qkv_with_heads():
    net = bimt.wrap(TorchAttention())
    attention = net.network.spaces[net.spaces.index("attention")]
    assert (attention.size, attention.heads) == (8, 2)
    (fused,) = [m for m in net.network.maps if m.name == "attention.in_proj"]
    assert fused.out_fold == 3
    with pytest.raises(bimt.WrapError, match="not self-attention"):
        bimt.wrap(CrossAttention())


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.attention = nn.Linear(3, 4), nn.Linear(3, 4), nn.MultiheadAttention(4, 2)

    def forward(self, x):
        return self.attention(self.a(x), self.b(x), self.b(x))[0]


def test_draw_shows_every_row_and_saves(tmp_path):
    model = Transformer(3, 8, 2, 2, 1, fused=False)
    net = bimt.wrap(model, attention=attention_of(False))
    figure = net.draw(title="untrained", input_labels=["a", "b", "c"])
    figure.savefig(tmp_path / "network.png")
    assert (tmp_path / "network.png").stat().st_size > 1000
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {"a", "b", "c", "input", "attention.0", "output"} <= texts


def test_input_flatten_keeps_pixels_in_the_images_order():
    torch.manual_seed(4)
    model = perturbed(nn.Sequential(nn.Flatten(), nn.Linear(16, 9), nn.ReLU(), nn.Linear(9, 4)), 4)
    x = torch.rand(3, 1, 4, 4)
    before = model(x).detach()
    net = bimt.wrap(model, geometry={"input": "grid", "1": "grid", "output": "grid"})
    net.relocate(top_k=9)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


class Scaled(nn.Module):
    """A model that reads its input's shape and scales by a number: neither moves a feature."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 5), nn.Linear(5, 2)

    def forward(self, x):
        width = x.shape[-1]
        return self.fc2(torch.tanh(self.fc1(x)) * 0.5 / width) - 1.0


def test_shape_reads_and_scaling_by_numbers_keep_the_spaces():
    torch.manual_seed(5)
    model = perturbed(Scaled(), 5)
    x = torch.rand(4, 3)
    before = model(x).detach()
    net = bimt.wrap(model)
    assert net.spaces == ["input", "fc1", "output"]
    net.relocate(top_k=5)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


class Convolution(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 2, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x[:, None, :]).flatten(1))


class Concatenation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=-1))


class Reshaping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).view(-1, 2, 3))


@pytest.mark.parametrize(("model", "named"), [
    (Convolution(), "operation 'getitem'"),
    (Concatenation(), "operation 'cat'"),
    (Reshaping(), "operation 'view'"),
    (nn.Sequential(nn.Linear(3, 4), nn.Conv1d(4, 4, 1)), "module '1' (Conv1d)"),
])
def test_what_the_tracer_cannot_follow_is_refused_in_one_line_naming_it(model, named):
    with pytest.raises(bimt.WrapError) as error:
        bimt.wrap(model)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_bad_declarations_are_refused_in_one_line():
    for attention, named in [({SelfAttention: bimt.Attention(heads=2)}, "'q' is not an nn.Linear child"),
                             ({"attention.7": bimt.Attention(heads=2)}, "'attention.7'"),
                             ({SelfAttention: bimt.Attention(heads=3, q="query", k="key", v="value", out="proj")},
                              "not divisible by its 3 heads"),
                             ({SelfAttention: 2}, "must be a bimt.Attention")]:
        with pytest.raises(bimt.WrapError, match=named):
            bimt.wrap(Transformer(3, 8, 2, 2, 1, fused=False), attention=attention)
    with pytest.raises(bimt.WrapError, match="not a square number"):
        bimt.wrap(mlp([5, 4, 2]), geometry="grid")
    with pytest.raises(bimt.WrapError, match="geometry names the space 'hidden'"):
        bimt.wrap(mlp([4, 4, 2]), geometry={"hidden": "grid"})
    with pytest.raises(bimt.WrapError, match="'sphere'"):
        bimt.wrap(mlp([4, 4, 2]), geometry="sphere")
    wrapped = mlp([4, 4, 2])
    net = bimt.wrap(wrapped)
    with pytest.raises(bimt.WrapError, match="wrapped already"):
        bimt.wrap(wrapped)
    for bad in ({"top_k": 0}, {"top_k": 2.5}, {"locality": -1.0}, {"locality": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}=.* is not allowed"):
            net.relocate(**bad)


def test_the_refusal_the_docs_show_is_the_real_one():
    page = (Path(__file__).resolve().parents[1] / "docs" / "own-model.md").read_text()
    (shown,) = [line.removeprefix("bimt.WrapError: ") for line in page.splitlines() if line.startswith("bimt.WrapError: ")]
    with pytest.raises(bimt.WrapError) as error:
        bimt.wrap(nn.Sequential(nn.Linear(3, 4), nn.Conv1d(4, 4, 1)))
    assert str(error.value) == shown
