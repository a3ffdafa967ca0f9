"""Custom formulas: the grammar, safe rejection, numpy semantics, and the paper tasks as formulas."""

from __future__ import annotations

import json
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from bimt.experiment.schema import TaskConfig
from bimt.tasks import TASKS, SettingError, build_task, formulas, make_dataset
from bimt.tasks.expressions import FormulaError, parse

from conftest import REPO, scalars, train_cli

X = np.random.default_rng(0).uniform(-1, 1, size=(64, 4))
x1, x2, x3, x4 = X.T

ACCEPTED = [
    ("x1", x1),
    ("x1*x3", x1 * x3),
    ("sin(pi*x2)+x4**2", np.sin(np.pi * x2) + x4**2),
    ("-x1 + +x2", -x1 + +x2),
    ("(x1 - x2) / (2 + x3)", (x1 - x2) / (2 + x3)),
    ("x1**-2", x1**-2),
    ("e**x1", np.e**x1),
    ("exp(x1) - log(2 + x2)", np.exp(x1) - np.log(2 + x2)),
    ("sqrt(abs(x3))", np.sqrt(np.abs(x3))),
    ("tanh(x4) * cos(x1) + tan(x2)", np.tanh(x4) * np.cos(x1) + np.tan(x2)),
    ("sigmoid(3*x1)", 1 / (1 + np.exp(-(3 * x1)))),
    ("1.5e-3 * x2", 1.5e-3 * x2),
    ("2", np.full(64, 2.0)),
    ("pi", np.full(64, np.pi)),
]


@pytest.mark.parametrize("text,expected", ACCEPTED)
def test_accepted_formulas_evaluate_as_numpy_does(text, expected):
    np.testing.assert_array_equal(parse(text, inputs=4)(X), expected)


REJECTED = [
    ("__import__('os').system('ls')", "call"),
    ("os.system('ls')", "call"),
    ("os", "unknown name 'os'"),
    ("x1.__class__", "attribute access"),
    ("().__class__.__bases__", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "call"),
    ("x1[0]", "subscript"),
    ("lambda: 1", "lambda"),
    ("[x1 for x1 in x2]", "comprehension"),
    ("(x1 for x1 in x2)", "comprehension"),
    ("'text'", "not a number"),
    ("b'bytes'", "not a number"),
    ("f'{x1}'", "string"),
    ("True", "not a number"),
    ("1j", "not a number"),
    ("x1 if x2 else x3", "conditional expression"),
    ("x1 < x2", "comparison"),
    ("x1 and x2", "boolean operator"),
    ("not x1", "operator"),
    ("~x1", "operator"),
    ("x1 // x2", "operator"),
    ("x1 % x2", "operator"),
    ("x1 @ x2", "operator"),
    ("x1 << 2", "operator"),
    ("sin", "must be called"),
    ("sin(x1, x2)", "exactly one argument"),
    ("sin(*x1)", "exactly one argument"),
    ("sin(x=x1)", "exactly one argument"),
    ("foo(x1)", "call 'foo(x1)'"),
    ("eval('1')", "call"),
    ("x0", "unknown name 'x0'"),
    ("y1", "unknown name 'y1'"),
    ("x5", "x5 is used, but the task has 4 inputs"),
    ("(x1, x2)", "tuple"),
    ("{x1: 1}", "dict"),
    ("(y := 2)", "assignment"),
    ("x1 +", "not a formula"),
    ("import os", "not a formula"),
    ("x1; x2", "not a formula"),
    ("(" * 300 + "x1" + ")" * 300, "not a formula"),
    ("x1 + " * 400 + "x1", "too long"),
    ("-" * 300 + "x1", "nested more than 100 levels"),
]


@pytest.mark.parametrize("text,reason", REJECTED)
def test_everything_outside_the_grammar_is_rejected_by_name(text, reason):
    with pytest.raises(FormulaError, match=None) as error:
        parse(text, inputs=4)
    assert reason in str(error.value)
    assert "\n" not in str(error.value)


def _formulas(max_leaves=12):
    """(text, function) pairs: random formulas and the numpy code that computes the same thing."""
    variables = st.sampled_from([(f"x{i + 1}", lambda x, i=i: x[:, i]) for i in range(4)])
    numbers = st.floats(-4, 4, allow_nan=False).map(lambda v: (repr(v), lambda x, v=v: v))
    constants = st.sampled_from([("pi", lambda x: np.pi), ("e", lambda x: np.e)])
    binary = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
    functions = {"sin": np.sin, "cos": np.cos, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
                 "abs": np.abs, "tanh": np.tanh, "tan": np.tan}

    def extend(children):
        pair = st.tuples(children, st.sampled_from(sorted(binary)), children).map(
            lambda t: (f"({t[0][0]}) {t[1]} ({t[2][0]})",
                       lambda x, t=t: binary[t[1]](np.float64(t[0][1](x)), t[2][1](x))))
        call = st.tuples(st.sampled_from(sorted(functions)), children).map(
            lambda t: (f"{t[0]}({t[1][0]})", lambda x, t=t: functions[t[0]](t[1][1](x))))
        negation = children.map(lambda c: (f"-({c[0]})", lambda x, c=c: -c[1](x)))
        return pair | call | negation

    return st.recursive(variables | numbers | constants, extend, max_leaves=max_leaves)


@settings(max_examples=300, deadline=None)
@given(_formulas())
def test_random_formulas_evaluate_exactly_as_numpy(formula):
    text, reference = formula
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(np.asarray(reference(X), dtype=np.float64), (64,))
    np.testing.assert_array_equal(parse(text, inputs=4)(X), expected)


def custom(**settings) -> TaskConfig:
    """conf/task/custom.yaml's task settings, with `settings` changed."""
    defaults = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / "custom.yaml"))["task"]
    return TaskConfig(**{**defaults, **settings})


PAPER_FORMULAS = {
    "independence": ["(x1+x3)**3", "x2**2+sin(pi*x4)"],
    "feature_sharing": ["x1**2", "x1**2+x2**2", "x1**2+x2**2+x3**2"],
    "compositionality": ["sqrt((x1-x2)**2+(x3-x4)**2)"],
}


@pytest.mark.parametrize("name", sorted(PAPER_FORMULAS))
def test_paper_tasks_as_formulas_give_exactly_the_built_in_data(name):
    built_in = TASKS[name]
    same = build_task(custom(inputs=built_in.inputs, outputs=PAPER_FORMULAS[name]))
    for seed in (0, 3, 4):
        a, b = make_dataset(built_in, seed), make_dataset(same, seed)
        for field in ("train_x", "train_y", "test_x", "test_y"):
            assert np.array_equal(getattr(a, field).numpy(), getattr(b, field).numpy())


def test_inputs_default_to_the_highest_variable_used():
    assert build_task(custom(outputs=["x1*x3"])).inputs == 3


def test_formulas_with_nan_or_inf_on_the_inputs_are_rejected_with_a_count():
    config = custom(outputs=["x1", "log(x1)"])
    task = build_task(config)
    with pytest.raises(SettingError, match=r"task.outputs\[1\]='log\(x1\)' gives NaN or inf on \d+ of 200 .*task.low"):
        formulas.check_finite(config, task.data(task, config, 0))
    positive = custom(outputs=["log(x1)"], low=0.5, high=2.0)
    task = build_task(positive)
    formulas.check_finite(positive, task.data(task, positive, 0))


def test_label_noise_changes_training_labels_only():
    task = build_task(custom(outputs=["x1*x2"]))
    clean, noisy = make_dataset(task, 0), make_dataset(task, 0, noise=0.1)
    assert np.array_equal(clean.train_x.numpy(), noisy.train_x.numpy())
    assert np.array_equal(clean.test_y.numpy(), noisy.test_y.numpy())
    difference = (noisy.train_y - clean.train_y).numpy()
    assert 0.05 < difference.std() < 0.15


def test_custom_formula_trains_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    result = train_cli("task=custom", "task.inputs=4", "task.outputs=[x1*x3, sin(pi*x2)+x4**2]",
                       "task.name=mine", "steps=200", "log_every=50", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "mine"
    assert sorted(metrics["in_perm"]) == [0, 1, 2, 3] and sorted(metrics["out_perm"]) == [0, 1]
    assert sorted(scalars(run_dir)["loss/train"]) == [0, 50, 100, 150]


@pytest.mark.parametrize(
    "override,message",
    [
        ("task.outputs=[x1*x2, __import__(os)]", "task.outputs[1]='__import__(os)': call"),
        ("task.outputs=[log(x1)]", "task.outputs[0]='log(x1)' gives NaN or inf on"),
        ("task.outputs=[x1*x7]", "x7 is used, but the task has 4 inputs"),
    ],
)
def test_bad_formulas_fail_before_training_in_one_line(tmp_path, override, message):
    result = train_cli("task=custom", "task.inputs=4", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "run").exists()
