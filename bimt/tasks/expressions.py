"""User formulas such as `sin(pi*x2) + x4**2`, parsed safely and evaluated with numpy.

The text is parsed by Python's `ast` and every node is checked against an allow-list: numbers, the
variables x1..xn, the constants pi and e, + - * / ** (and unary minus or plus), parentheses, and
calls of one argument to the functions in FUNCTIONS. Anything else is rejected, naming the piece.
Nothing is ever handed to eval or exec: evaluation walks the checked tree.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class FormulaError(ValueError):
    """A formula outside the grammar; the message names the offending piece."""


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}
CONSTANTS = {"pi": np.pi, "e": np.e}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
VARIABLE = re.compile(r"x([1-9][0-9]*)")
MAX_LENGTH = 1000
MAX_DEPTH = 100
GRAMMAR = "numbers, x1..xn, pi, e, + - * / **, parentheses and " + " ".join(FUNCTIONS)


@dataclass(frozen=True)
class Formula:
    """A checked formula: its text, its tree, and the inputs (1-based) it uses."""

    text: str
    tree: ast.expr
    inputs_used: tuple[int, ...]

    @property
    def max_input(self) -> int:
        return max(self.inputs_used, default=0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate on inputs of shape (n, inputs); returns shape (n,)."""
        with np.errstate(all="ignore"):  # NaN and inf are counted and reported by the caller
            value = _evaluate(self.tree, x)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (x.shape[0],))


KINDS = {ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Lambda: "lambda",
         ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
         ast.GeneratorExp: "comprehension", ast.Compare: "comparison", ast.BoolOp: "boolean operator",
         ast.IfExp: "conditional expression", ast.JoinedStr: "string", ast.NamedExpr: "assignment"}


def parse(text: str, inputs: int | None = None) -> Formula:
    """Check `text` against the grammar (and the number of inputs, if given)."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"a formula of {len(text)} characters is too long; at most {MAX_LENGTH}")
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval").body
    except (SyntaxError, RecursionError, MemoryError):
        raise FormulaError(f"not a formula; use {GRAMMAR}") from None
    used: set[int] = set()
    for node in ast.walk(tree):
        piece = repr(ast.get_source_segment(source, node))
        if isinstance(node, ast.Name):
            match = VARIABLE.fullmatch(node.id)
            if match:
                used.add(int(match.group(1)))
            elif node.id in FUNCTIONS and not _is_called(tree, node):
                raise FormulaError(f"function {node.id!r} must be called, as in {node.id}(x1)")
            elif node.id not in CONSTANTS and node.id not in FUNCTIONS:
                raise FormulaError(f"unknown name {node.id!r}; use {GRAMMAR}")
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise FormulaError(f"call {piece} is not allowed; functions: {' '.join(FUNCTIONS)}")
            if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
                raise FormulaError(f"{piece}: {node.func.id} takes exactly one argument")
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                raise FormulaError(f"constant {piece} is not a number")
        elif isinstance(node, (ast.BinOp, ast.UnaryOp)):
            if type(node.op) not in BINARY and type(node.op) not in UNARY:
                raise FormulaError(f"the operator in {piece} is not allowed; use + - * / **")
        elif not isinstance(node, (ast.Load, *BINARY, *UNARY)):
            kind = KINDS.get(type(node), type(node).__name__.lower())
            raise FormulaError(f"{kind} {piece} is not allowed; use {GRAMMAR}")
    if _depth(tree) > MAX_DEPTH:
        raise FormulaError(f"the formula is nested more than {MAX_DEPTH} levels deep")
    formula = Formula(text, tree, tuple(sorted(used)))
    if inputs is not None and formula.max_input > inputs:
        raise FormulaError(f"x{formula.max_input} is used, but the task has {inputs} inputs (x1..x{inputs})")
    return formula


def _depth(tree: ast.expr) -> int:
    """Nesting depth of the tree, found without recursion (evaluation recurses to this depth)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _is_called(tree: ast.expr, name: ast.Name) -> bool:
    return any(isinstance(node, ast.Call) and node.func is name for node in ast.walk(tree))


def _evaluate(node: ast.expr, x: np.ndarray):
    """Walk a checked tree; variables are columns of x, numbers stay Python numbers (numpy rules)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        return x[:, int(node.id[1:]) - 1]
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, x), _evaluate(node.right, x)
        if not isinstance(left, np.ndarray) and not isinstance(right, np.ndarray):
            left = np.float64(left)  # number op number: overflow gives inf, not a hang (2**10**10)
        return BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_evaluate(node.operand, x))
    return FUNCTIONS[node.func.id](_evaluate(node.args[0], x))
