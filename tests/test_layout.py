"""The code stays readable in one sitting: no module outside tests/ over 400 lines, no function
outside tests/ and bench/ over 50 lines (the team's rule; issue 16)."""
import ast
import glob
import os

from conftest import REPO

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def python_files():
    for path in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True):
        relative = os.path.relpath(path, REPO)
        if not relative.startswith((".", "work" + os.sep)):
            yield relative


def test_no_module_outside_tests_is_over_400_lines():
    long = []
    for name in python_files():
        if not name.startswith("tests" + os.sep):
            with open(os.path.join(REPO, name), encoding="utf-8") as stream:
                lines = stream.read().count("\n")
            if lines > MAX_MODULE_LINES:
                long.append(f"{name}: {lines} lines")
    assert not long, long


def test_no_function_outside_tests_and_bench_is_over_50_lines():
    long = []
    for name in python_files():
        if name.startswith(("tests" + os.sep, "bench" + os.sep)):
            continue
        with open(os.path.join(REPO, name), encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not long, long
