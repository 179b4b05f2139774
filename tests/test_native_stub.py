"""The typed stub heaptrail/_native.pyi against the extension it describes: mypy's stubtest
(every public function, class, method, argument, default and constant: present on both sides,
same kinds and names), plus what stubtest leaves out (private functions, which are most of
_native's, and the `testing` submodule). Runs on the installed package, so it also checks that
the wheel ships the stub and its py.typed marker. mypy is pinned in tests/requirements.txt;
without it the test is skipped, except under CI (CI=1), where it fails."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import heaptrail
from heaptrail import _native

PACKAGE = Path(heaptrail.__file__).parent
STUB = PACKAGE / "_native.pyi"
# Helpers that exist only in the stub: type aliases, the type of the `testing` submodule, and
# the TypedDict of the dict rows TraceTable.sites() returns.
STUB_ONLY = {"_Testing", "_SiteRow"}
# What every module has; not part of the extension's interface.
MODULE_DUNDERS = {"__all__", "__doc__", "__file__", "__loader__", "__name__", "__package__",
                  "__spec__"}


def require_mypy():
    try:
        import mypy.stubtest  # noqa: F401
    except ImportError:
        message = "needs mypy (pip install -r tests/requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)


def stub_tree():
    return ast.parse(STUB.read_text(encoding="utf-8"), str(STUB))


def defined_names(body):
    """Names a stub body defines (functions, classes, annotated names), also under `if`."""
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.If):
            names.update(defined_names(node.body))
            names.update(defined_names(node.orelse))
    return names


def test_the_wheel_ships_the_stub_and_py_typed():
    assert STUB.is_file(), f"{STUB} is not installed"
    assert (PACKAGE / "py.typed").is_file(), "py.typed is not installed"


def test_stubtest_finds_no_difference(tmp_path):
    require_mypy()
    # From an empty folder, with an empty configuration, so mypy reads the installed package
    # (found through py.typed) and nothing of the repository's or the user's.
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "heaptrail._native", "--mypy-config-file",
         str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_name_of_the_module_is_in_the_stub():
    """stubtest checks the stub's private names, but never asks for the module's private
    names the stub lacks (`_read_fleet`, `_analyse_holders`, ...): this does."""
    stub = set(defined_names(stub_tree().body)) - STUB_ONLY
    runtime = set(dir(_native)) - MODULE_DUNDERS
    assert sorted(runtime - stub) == [], "in heaptrail._native, missing from _native.pyi"
    assert sorted(stub - runtime) == [], "in _native.pyi, not in heaptrail._native"


def test_the_testing_submodule_matches_the_stub():
    testing = defined_names(stub_tree().body)["_Testing"]
    stub = {node.name: node for node in testing.body if isinstance(node, ast.FunctionDef)}
    runtime = {name for name in dir(_native.testing) if not name.startswith("__")}
    assert sorted(runtime) == sorted(stub)
    for name, node in stub.items():
        names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        assert list(inspect.signature(getattr(_native.testing, name)).parameters) == names, name
