"""Real test suites from PyPI, pinned, that the pytest plugin is checked on (tests/
test_real_suites.py) and timed on (benches/bench_pytest_plugin.py): pure-Python libraries whose
sdists ship their tests. Each sdist is fetched by pip with its hash checked, unpacked once into
target/real-suites/, and its tests run from there with the unpacked tree on PYTHONPATH (pure
Python: nothing to build)."""

import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "target" / "real-suites"


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    sha256: str    # of the sdist, checked by pip (--require-hashes)
    tests: str     # the tests' path inside the unpacked sdist
    style: str     # how its tests are written, for the reader of the results

    @property
    def directory(self):
        return CACHE / f"{self.name}-{self.version}"


SUITES = (
    # Function-style pytest tests, doctests run through doctest.testmod, curried functions and
    # signature caches.
    Suite("toolz", "1.0.0", "2c86e3d9a04798ac556793bced838816296a2f085017664e4995cb40a1047a02",
          "toolz/tests", "pytest functions"),
    # unittest.TestCase classes (its own runner is `python -m unittest`), iterators, recipes
    # with lazily built state.
    Suite("more-itertools", "10.5.0",
          "5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6",
          "tests", "unittest.TestCase"),
)


def prepare(suite):
    """The unpacked sdist's directory, fetched and unpacked first when it is not there yet.
    Raises RuntimeError with pip's message when the sdist cannot be fetched."""
    if (suite.directory / "PKG-INFO").exists():
        return suite.directory
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{suite.name}=={suite.version} --hash=sha256:{suite.sha256}\n")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--require-hashes", "-r", str(requirements), "-d", scratch],
            capture_output=True, text=True, timeout=600)
        archives = list(Path(scratch).glob("*.tar.gz"))
        if done.returncode != 0 or len(archives) != 1:
            raise RuntimeError(f"cannot fetch {suite.name}=={suite.version} from PyPI: "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        with tarfile.open(archives[0]) as archive:
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            archive.extractall(scratch, filter="data")
        unpacked = Path(scratch) / archives[0].name.removesuffix(".tar.gz")
        os.replace(unpacked, suite.directory)
    return suite.directory


def pytest_command(suite, *options, junit=None):
    """The command (argv, cwd, env) that runs `suite`'s tests with pytest under this
    interpreter: quiet, no cache directory written into the unpacked tree."""
    directory = prepare(suite)
    # An empty configuration of its own, so that pytest does not climb out of the unpacked
    # tree and take a parent project's settings (this repository's pyproject.toml).
    config = directory / "heaptrail-pytest.ini"
    if not config.exists():
        config.write_text("[pytest]\n")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "no:randomly", "-c", str(config), "--rootdir", str(directory), *options]
    if junit is not None:
        argv.append(f"--junitxml={junit}")
    argv.append(suite.tests)
    env = dict(os.environ, PYTHONPATH=str(directory), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return argv, directory, env


def junit_results(junit):
    """{classname::name: (outcome, failure text)} from pytest's JUnit XML at `junit` (empty if
    the run wrote none); outcome is passed, failed, error or skipped."""
    if not Path(junit).exists():
        return {}
    tags = {"failure": "failed", "error": "error", "skipped": "skipped"}
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for child in case:
            if child.tag in tags:
                outcome, text = tags[child.tag], (child.get("message") or "") + (child.text or "")
        found[f"{case.get('classname')}::{case.get('name')}"] = (outcome, text)
    return found
