"""The pytest plugin over real test suites from PyPI (tests/real_suites.py): `--heaptrail-leaks`
checks every test of each suite and reports no leak, except where the leak is real.

The real leak: toolz 1.0.0's test_inspect_wrapped_property, on a CPython whose
inspect.signature mishandles wrappers (the test's own check: 3.11 before 3.11.9, 3.12 before
3.12.3), registers a signature for a class it defines afresh on every run:
``_sigs.signatures[Wrapped] = ...`` (toolz/tests/test_inspect_args.py:502), into toolz's
module-level registry, which keeps every class ever registered. Each run adds a class and its
entry for good: a leak by the test's design, at the line heaptrail names.

(This suite once found a leak of heaptrail's own: toolz's test_doctests, which compiles every
doctest example afresh, was flagged on 3.12+ because heaptrail held the examples' code
objects for the tracebacks of tuples those very code objects cached; see
test_engine.py::test_code_objects_only_heaptrail_holds_are_let_go_with_what_they_own.)
"""

import os
import subprocess
import sys

import pytest

import real_suites


def inspect_signature_mishandles_wrappers():
    """toolz's own test of the CPython it runs on (test_inspect_args.py:489-498)."""
    minor, micro = sys.version_info[1:3]
    return (minor == 11 and micro <= 8) or (minor == 12 and micro <= 2)


def expected_leaks(suite):
    """{test id: the leaking line heaptrail must name} for the tests of `suite` that fail."""
    expected = {}
    if suite.name == "toolz" and inspect_signature_mishandles_wrappers():
        expected["toolz.tests.test_inspect_args::test_inspect_wrapped_property"] = \
            "test_inspect_args.py:502"
    return expected


def prepared(suite):
    try:
        return real_suites.prepare(suite)
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.mark.parametrize("suite", real_suites.SUITES, ids=lambda s: f"{s.name}-{s.version}")
def test_every_test_of_a_real_suite_is_checked_and_only_real_leaks_fail(tmp_path, suite):
    prepared(suite)
    junit = tmp_path / "junit.xml"
    argv, cwd, env = real_suites.pytest_command(suite, junit=tmp_path / "plain.xml")
    plain = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    argv, cwd, env = real_suites.pytest_command(suite, "--heaptrail-leaks", junit=junit)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    found = real_suites.junit_results(junit)
    checked = {test for test, (outcome, _) in found.items() if outcome != "skipped"}
    assert len(checked) >= 100, (len(checked), done.stdout[-3000:])
    # Every test the plain run passed was checked and passed, but the real leaks.
    plain_passed = {t for t, (outcome, _) in
                    real_suites.junit_results(tmp_path / "plain.xml").items()
                    if outcome == "passed"}
    failed = {test: text for test, (outcome, text) in found.items()
              if test in plain_passed and outcome != "passed"}
    expected = expected_leaks(suite)
    assert set(failed) == set(expected), done.stdout[-6000:]
    for test, line in expected.items():
        assert "LEAK at " in failed[test] and line in failed[test], failed[test]

