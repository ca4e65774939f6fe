"""Functions in the library's core (training/, evaluation/, lab/) read in one sitting: at most 60
lines and a cyclomatic complexity of at most 15 each, counted as radon counts it (one plus a
branch for every if/elif, loop, except, assert, conditional expression, comprehension `for`/`if`
and extra operand of and/or). An exception is listed here with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cnnlab"
CORE = ("training", "evaluation", "lab")
MAX_LINES, MAX_COMPLEXITY = 60, 15
EXCEPTIONS: dict[str, str] = {}  # "package/module.py:function" -> why it may be longer


def complexity(fn: ast.AST) -> int:
    n = 1
    for node in ast.walk(fn):
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler,
                             ast.Assert, ast.match_case)):
            n += 1
        elif isinstance(node, ast.comprehension):
            n += 1 + len(node.ifs)
        elif isinstance(node, ast.BoolOp):
            n += len(node.values) - 1
    return n


def functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                yield where, node.end_lineno - node.lineno + 1, complexity(node)


@pytest.mark.parametrize("package", CORE)
def test_core_functions_read_in_one_sitting(package):
    too_big = [f"{where}: {lines} lines, complexity {cc}"
               for where, lines, cc in functions(ROOT / package)
               if (lines > MAX_LINES or cc > MAX_COMPLEXITY) and where not in EXCEPTIONS]
    assert not too_big, "split these functions:\n" + "\n".join(too_big)


def test_the_complexity_count_sees_branches():
    fn = ast.parse("def f(x):\n    if x and x > 1:\n        return [i for i in x if i]\n"
                   "    for i in x:\n        pass\n    return 1 if x else 2\n").body[0]
    assert complexity(fn) == 1 + 1 + 1 + 2 + 1 + 1  # if, and, comprehension for+if, for, ifexp
