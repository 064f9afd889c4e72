"""The compatibility matrix: the plugin's end-to-end tests against each supported pytest.

    pip install nox
    nox                             # oldest (Python 3.9) and compat
    nox -s oldest                   # the lower bounds of every dependency, on Python 3.9
    nox -s compat                   # the later pytest/pytest-xdist pairs, on nox's Python
    nox -s "compat(pytest7)"        # one of them: pytest7, pytest8, newest
    nox -s compat --force-python 3.13  # on another interpreter (it must be on PATH)
    nox -s compat -- tests/test_xdist.py -x   # other test files or options
    nox -s plugins                  # tests/test_compat.py with pytest 8 and the newest pytest
    nox -s tests                    # the whole suite, newest versions
    nox -s dist                     # build sdist + wheel into dist/ and check them
    nox -s types                    # mypy (scripts/typecheck.py, pyproject.toml's [tool.mypy])

Each session installs the project with pinned versions and runs the test files that drive
pytest's hooks through real pytest runs (with and without xdist workers):

- oldest: the lower bounds in pyproject.toml's ``dependencies`` and ``xdist`` extra, on
  Python 3.9 (the oldest psutil and msgpack have no wheels for newer ones);
- compat(pytest7) / compat(pytest8): the newest minor of each earlier pytest major, with the newest
  pytest-xdist that supports it;
- compat(newest): whatever the index has now;
- plugins(pytest8) / plugins(newest): tests/test_compat.py, the matrix of third-party pytest
  plugins (pinned in pyproject.toml's test extra) with pytest 8 (pytest-subtests loads by its
  entry point; pytest 9's built-in subtests case skips) and with the newest pytest.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".nox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", ".coverage*",
)  # fmt: skip

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["oldest", "compat", "plugins", "types"]

#: the test files whose tests run real pytest sessions with the plugin (all its hooks,
#: with and without xdist), and the cases of tests/test_compat.py's matrix that take no
#: third-party plugin: the --dist modes, -n 0, -n 12, -p no:xdist; the rest of the suite does
#: not depend on pytest's version
HOOK_TESTS = ["tests/test_plugin.py", "tests/test_xdist.py", "tests/test_report_e2e.py"] + [
    f"tests/test_compat.py::test_matrix[{case}]"
    for case in ["n0-serial", "no-xdist-serial", "n12-n12"]
    + [f"dist-{mode}-n2" for mode in ["loadfile", "loadgroup", "worksteal"]]
    + ["dist-each-n2"]
]
#: what those tests import besides the project (see tests/conftest.py)
TEST_DEPS = ["jsonschema>=4.0"]

#: the plugins of tests/test_compat.py's matrix: installed as pyproject.toml's test extra pins them
MATRIX_PLUGINS = [
    "pytest-rerunfailures",
    "pytest-repeat",
    "pytest-timeout",
    "pytest-asyncio",
    "pytest-randomly",
    "pytest-cov",
    "pytest-benchmark",
    "pytest-subtests",
    "hypothesis",
]

PAIRS = {
    # pluggy of pytest 7.4's time: with pluggy >= 1.4, every usage error of pytest 7 (its own
    # and ours) also prints a PluggyTeardownRaisedWarning, an error under filterwarnings=error
    "pytest7": ["pytest==7.4.4", "pluggy==1.3.0", "pytest-xdist==3.8.0"],
    "pytest8": ["pytest==8.4.2", "pytest-xdist==3.8.0"],
    "newest": ["--upgrade", "pytest", "pytest-xdist"],
}
#: the lower bounds of pyproject.toml's dependencies and xdist extra, on the oldest Python
#: supported (msgpack 1.0.4: the oldest with wheels for it; 1.0.0, built from source, passed too)
OLDEST = [
    "pytest==7.0.0",
    "pluggy==1.0.0",  # of pytest 7.0's time: pluggy >= 1.4 adds a warning to its usage errors
    "pytest-xdist==3.2.0",  # 3.0.2 / 3.1.0 pass all but --dist worksteal (new in 3.2.0)
    "psutil==5.9.0",
    "pyzmq==25.0.0",
    "msgpack==1.0.4",
]
OLDEST_PYTHON = "3.9"


@nox.session
@nox.parametrize("pair", list(PAIRS), ids=list(PAIRS))
def compat(session: nox.Session, pair: str) -> None:
    _hook_tests(session, PAIRS[pair])


@nox.session(python=OLDEST_PYTHON)
def oldest(session: nox.Session) -> None:
    _hook_tests(session, OLDEST)


@nox.session
@nox.parametrize("pair", ["pytest8", "newest"], ids=["pytest8", "newest"])
def plugins(session: nox.Session, pair: str) -> None:
    session.install(_clean_copy(session), *TEST_DEPS, *PAIRS[pair], *_matrix_pins())
    session.run("python", "-m", "pip", "list", "--format=freeze")
    args = session.posargs or ["-n", "2", "tests/test_compat.py"]
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-q", *args)


def _matrix_pins() -> list:
    """The test extra's requirements of MATRIX_PLUGINS, environment markers included."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    names = "|".join(map(re.escape, MATRIX_PLUGINS))
    pins = re.findall(rf'"((?:{names})\s*[=<>~][^"]*)"', text)
    found = {re.split(r"[\s=<>~]", p, maxsplit=1)[0] for p in pins}
    if found != set(MATRIX_PLUGINS):
        raise RuntimeError(f"pyproject.toml's test extra lacks {set(MATRIX_PLUGINS) - found}")
    return pins


def _hook_tests(session: nox.Session, pins: list) -> None:
    session.install(_clean_copy(session), *TEST_DEPS, *pins)
    session.run("python", "-m", "pip", "list", "--format=freeze")
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        *(session.posargs or HOOK_TESTS),
    )


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *(session.posargs or ["-n", "2", "--dist", "worksteal"]))


@nox.session
def types(session: nox.Session) -> None:
    """mypy (scripts/typecheck.py, pyproject.toml's [tool.mypy])."""
    session.install("-e", ".[test]")
    session.run("python", "scripts/typecheck.py", *session.posargs)


@nox.session
def dist(session: nox.Session) -> None:
    """What the release workflow does before publishing."""
    session.install("build", "twine>=6.1", "check-wheel-contents>=0.6")
    session.run("python", "-c", "import shutil; shutil.rmtree('dist', ignore_errors=True)")
    session.run("python", "-m", "build")
    session.run("twine", "check", "--strict", *_glob("dist/*"))
    session.run("check-wheel-contents", *_glob("dist/*.whl"))


def _clean_copy(session: nox.Session) -> str:
    """The project copied without build products: installed as users get it (not editable:
    pytest 7.0 warns about setuptools' editable finder, an error under filterwarnings=error),
    and built outside the source tree (setuptools leaves a build/ directory where it builds)."""
    dest = Path(session.create_tmp()) / "project"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return str(dest)


def _glob(pattern: str) -> list:
    import glob

    found = sorted(glob.glob(pattern))
    if not found:
        raise RuntimeError(f"nothing matches {pattern}")
    return found
