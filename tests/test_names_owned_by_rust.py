"""Verdict, process-verdict and pattern names have one owner: the Rust core, exported through
``heaptrail._native``. The Python shell must take them from there; a name spelled out again
in Python is a copy that can drift from the core (a renamed verdict would still be compared
against the old spelling). These tests read the shell's source and fail on such a copy."""

import ast
import pathlib

import heaptrail
from heaptrail import _native

PACKAGE = pathlib.Path(heaptrail.__file__).parent
# Names that are also ordinary words in messages or keys; a literal equal to one of these is a
# copy only where it is compared with a report's verdict or pattern field, which the
# comparison check below catches.
COMMON_WORDS = {"ok", "unknown", "leak", "fixed", "suspect", "plateau"}


def owned_names():
    return (set(_native.SITE_VERDICTS) | set(_native.PROCESS_VERDICTS)
            | set(_native.LEAK_PATTERNS))


# Code that runs inside other processes (the attach agent, whose target's heaptrail may be
# another version) stands alone: its fallback reads that version's reports by literal names.
STANDS_ALONE = PACKAGE / "_inject"


def python_sources():
    files = sorted(p for p in PACKAGE.rglob("*.py") if STANDS_ALONE not in p.parents)
    assert files, PACKAGE
    return files


def string_literals(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def test_the_core_exports_every_name_family():
    assert set(_native.SITE_VERDICTS) >= {"leak", "suspect", "fixed", "warming-up", "plateau"}
    assert "unknown" in _native.PROCESS_VERDICTS
    assert _native.NOT_A_LEAK_PATTERN in _native.LEAK_PATTERNS
    assert _native.ALWAYS_REPORTED <= set(_native.SITE_VERDICTS)


def test_no_distinctive_name_is_spelled_in_python():
    distinctive = owned_names() - COMMON_WORDS
    found = []
    for path in python_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in string_literals(tree):
            if node.value in distinctive:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "names owned by the Rust core, copied in Python:\n" + "\n".join(found)


def test_no_verdict_or_pattern_is_compared_with_a_literal():
    """`row["verdict"] == "leak"` is a copy even for a common word."""
    names = owned_names()
    found = []
    for path in python_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                if (isinstance(side, ast.Constant) and side.value in names) or (
                        isinstance(side, (ast.Set, ast.Tuple, ast.List))
                        and any(isinstance(e, ast.Constant) and e.value in names
                                for e in side.elts)):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, "comparisons with a literal verdict or pattern name:\n" + "\n".join(found)
