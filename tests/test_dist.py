"""The distributions as users get them, and the ``--version`` of every command.

The slow part builds the sdist and, from it, the wheel (as ``python -m build`` does, in one
isolated build environment: BUILD; from a copy of the source tree so that no build/ or
egg-info lands in it), checks both (``twine check --strict``,
``check-wheel-contents``), installs the wheel into a fresh venv (its dependencies from the
package index) and runs the demo suite there, copied to a temporary folder, under
``--perf-monitor -n 2``: no source tree on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import shared_once, validate
from pytest_perfmon import __main__ as module_main
from pytest_perfmon import __version__
from pytest_perfmon.monitor import about
from pytest_perfmon.monitor import cli as perfmon_cli
from pytest_perfmon.monitor.daemon import cli as daemon_cli

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 300  # isolated builds fetch setuptools; installs fetch the dependencies
RUN_TIMEOUT = 180
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", ".nox", ".tox", "build", "dist", "*.egg-info", "__pycache__",
    ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis", ".coverage*", "bench-out",
)  # fmt: skip
LIBRARIES = ("pytest", "pytest-xdist", "pyzmq", "libzmq", "psutil", "msgpack")


def _run(cmd: list, timeout: float = BUILD_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", _clean_env())
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )
    return proc


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _clean_env() -> dict:
    """No PYTHONPATH, no GitHub step summary, no coverage of the inner runs."""
    drop = ("PYTHONPATH", "PYTHONHOME", "GITHUB_STEP_SUMMARY", "COV_CORE_SOURCE", "PYTEST_ADDOPTS")
    return {k: v for k, v in os.environ.items() if k not in drop}


# --------------------------------------------------------------------------- --version


def _lines(text: str) -> dict:
    pairs = (line.split(": ", 1) for line in text.splitlines()[1:])
    return {k: v for k, v in pairs}


def test_version_text_names_every_library() -> None:
    text = about.version_text()
    assert text.splitlines()[0] == f"pytest-perfmon {__version__}"
    found = _lines(text)
    for name in LIBRARIES:
        assert found[name] not in ("", "not installed", "not available"), (name, text)
    import psutil
    import zmq

    assert found["libzmq"] == zmq.zmq_version() and found["pyzmq"] == zmq.__version__
    assert found["psutil"] == psutil.__version__ and found["pytest"] == pytest.__version__


def test_version_text_of_a_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    real = about.metadata.version

    def version(name: str) -> str:
        if name == "pytest-xdist":
            raise about.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(about.metadata, "version", version)
    assert _lines(about.version_text())["pytest-xdist"] == "not installed"


@pytest.mark.parametrize(
    "main", [perfmon_cli.main, daemon_cli.main, module_main.main], ids=["perfmon", "daemon", "m"]
)
def test_every_command_prints_the_versions(main, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert out.strip() == about.version_text() and err == ""


def test_module_without_arguments_points_to_pytest(capsys: pytest.CaptureFixture) -> None:
    assert module_main.main([]) == 0
    assert "pytest --perf-monitor" in capsys.readouterr().out


def test_daemon_options_still_belong_to_run(capsys: pytest.CaptureFixture) -> None:
    """Only -h and --version are perfmon-daemon's own; other leading options go to run."""
    with pytest.raises(SystemExit) as exc:
        daemon_cli.main(["--interval", "0.001"])
    assert exc.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_version_does_not_import_pytest() -> None:
    code = (
        "import sys\nfrom pytest_perfmon.monitor import about\nabout.version_text()\n"
        "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules, 'pytest imported'\n"
    )
    _ok(_run([sys.executable, "-c", code], timeout=RUN_TIMEOUT))


def test_version_action_keeps_its_lines() -> None:
    """argparse's own version action would join the lines into one paragraph."""
    parser = argparse.ArgumentParser(prog="x")
    about.add_version_option(parser)
    assert "--version" in parser.format_help()


def test_version_is_the_same_in_pyproject_and_the_package() -> None:
    """Two places to bump at a release (CONTRIBUTING.md); the release workflow reads pyproject."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
    assert declared is not None and declared.group(1) == __version__


def test_every_package_is_listed_in_pyproject() -> None:
    """A new subpackage missing from [tool.setuptools] packages is missing from the wheel."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'^\s+"(pytest_perfmon[\w.]*)",$', text, re.MULTILINE))
    roots = {"pytest_perfmon": ROOT / "plugin", "pytest_perfmon.monitor": ROOT / "monitor"}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    missing = found - listed
    assert not missing, f"add to pyproject.toml [tool.setuptools] packages: {sorted(missing)}"


# --------------------------------------------------------------------------- distributions


#: ``python -m build SRC``, in one isolated environment instead of two: a fresh venv holding
#: only what pyproject.toml's [build-system] asks for (and the backend then asks for) builds the
#: sdist, then the wheel from the unpacked sdist, whose [build-system] must be the same. ``build``
#: would make (and fill from the package index) a second such venv for the wheel.
BUILD = """
import os, sys, tarfile
from build import ProjectBuilder
from build.env import DefaultIsolatedEnv

src, out, unpacked = sys.argv[1:]
with DefaultIsolatedEnv() as env:
    builder = ProjectBuilder.from_isolated_env(env, src)
    env.install(builder.build_system_requires)
    env.install(builder.get_requires_for_build("sdist"))
    sdist = builder.build("sdist", out)
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (top,) = os.listdir(unpacked)
    assert os.path.basename(sdist) == top + ".tar.gz", (sdist, top)
    from_sdist = ProjectBuilder.from_isolated_env(env, os.path.join(unpacked, top))
    assert from_sdist.build_system_requires == builder.build_system_requires, "[build-system]"
    env.install(from_sdist.get_requires_for_build("wheel"))
    from_sdist.build("wheel", out)
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Built once per session, by whichever xdist worker needs them first."""

    def build(base: Path) -> None:
        shutil.copytree(ROOT, base / "src", ignore=COPY_IGNORE)
        args = [base / "src", base / "out", base / "unpacked"]
        _ok(_run([sys.executable, "-c", BUILD, *args], cwd=base))

    base = shared_once(tmp_path_factory, "dists", build)
    src, out = base / "src", base / "out"
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"src": src, "wheel": wheel, "sdist": sdist}


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / (name + (".exe" if os.name == "nt" else ""))
    found = str(exe) if exe.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.mark.slow
def test_twine_check_strict(dists: dict) -> None:
    out = _ok(_run([_tool("twine"), "check", "--strict", dists["wheel"], dists["sdist"]]))
    assert out.count("PASSED") == 2, out


@pytest.mark.slow
def test_check_wheel_contents(dists: dict) -> None:
    # cwd: the copy, whose pyproject.toml configures it (top level: pytest_perfmon only)
    out = _ok(_run([_tool("check-wheel-contents"), dists["wheel"]], cwd=dists["src"]))
    assert out.strip().endswith("OK"), out


@pytest.mark.slow
def test_wheel_holds_one_package_its_data_and_the_licence(dists: dict) -> None:
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = zf.namelist()
        info = f"pytest_perfmon-{__version__}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        licence = zf.read(f"{info}/licenses/LICENSE").decode()
    assert {n.split("/")[0] for n in names} == {"pytest_perfmon", info}
    assert "pytest_perfmon/monitor/report.schema.json" in names
    assert "pytest_perfmon/__main__.py" in names
    assert not [n for n in names if "/tests/" in n or n.endswith((".pyc", ".orig"))]
    assets = sorted(p.name for p in (ROOT / "monitor" / "htmlassets").glob("*") if p.is_file())
    for asset in assets:
        assert f"pytest_perfmon/monitor/htmlassets/{asset}" in names
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "Copyright (c) 2026 the pytest-perfmon authors" in licence
    assert licence == (ROOT / "LICENSE").read_text(encoding="utf-8")


@pytest.mark.slow
def test_sdist_holds_the_licence_and_the_test_suite(dists: dict) -> None:
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "PKG-INFO",
        "pyproject.toml",
        "monitor/report.schema.json",
        "examples/test_demo.py",
        "tests/conftest.py",
        "tests/test_dist.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith((".venv/", ".git/", "build/"))]


@pytest.fixture(scope="module")
def venv(dists: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (plus the xdist extra) and its dependencies, nothing else;
    made once per session, by whichever xdist worker needs it first."""

    def make(base: Path) -> None:
        home = base / "v"
        _ok(_run([sys.executable, "-m", "venv", "--without-pip", home]))
        python = _bindir(home) / ("python.exe" if os.name == "nt" else "python")
        wheel = f"pytest-perfmon[xdist] @ {dists['wheel'].as_uri()}"
        # our pip installs into it (pip >= 22.3): no pip bootstrap inside the venv. Without
        # compiling every installed module (pygments' lexers most of all): 4.4 -> 2.7 CPU-s,
        # and the demo run compiles the few it imports (+0.3 s; docs/benchmarks.md).
        install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile"]
        _ok(_run([*install, "--disable-pip-version-check", wheel]))

    return _bindir(shared_once(tmp_path_factory, "venv", make) / "v")


def _bindir(home: Path) -> Path:
    return home / ("Scripts" if os.name == "nt" else "bin")


def _exe(bindir: Path, name: str) -> Path:
    return bindir / (name + (".exe" if os.name == "nt" else ""))


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_suite(venv: Path, tmp_path: Path) -> None:
    python = _exe(venv, "python")
    where = _ok(_run([python, "-I", "-c", "import pytest_perfmon; print(pytest_perfmon.__file__)"]))
    assert Path(where.strip()).is_relative_to(venv.parent), where  # not the source tree
    shutil.copy(ROOT / "examples" / "test_demo.py", tmp_path)
    report_path = tmp_path / "report.json"
    args = ["-I", "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--perf-monitor"]
    proc = _run(
        [python, *args, f"--perf-output={report_path}", "test_demo.py"],
        cwd=tmp_path,
        timeout=RUN_TIMEOUT,
    )
    out = _ok(proc)
    report = validate(json.loads(report_path.read_text(encoding="utf-8")))
    n_tests = 28  # examples/test_demo.py
    assert f"{n_tests} passed" in out
    assert report["session"]["total_tests"] == len(report["tests"]) == n_tests
    assert report["session"]["exit_status"] == 0 and report["session"]["perfmon_version"] == (
        __version__
    )
    assert set(report["workers"]) == {"gw0", "gw1"}
    assert report["summary"]["outcomes"] == {"passed": n_tests}
    leaky = report["tests"]["test_demo.py::test_leaky_cache"]
    assert leaky["memory"]["delta_mb"] >= 30  # 40 MB kept; start and end are read at boundaries


@pytest.mark.slow
@pytest.mark.parametrize("command", ["perfmon", "perfmon-daemon", "python -m pytest_perfmon"])
def test_installed_commands_print_versions(venv: Path, command: str) -> None:
    cmd = command.split()
    cmd[0] = _exe(venv, cmd[0])
    if cmd[0].name.startswith("python"):
        cmd.insert(1, "-I")
    found = _ok(_run([*cmd, "--version"], timeout=RUN_TIMEOUT)).splitlines()
    assert found[0] == f"pytest-perfmon {__version__}"
    versions = _lines("\n".join(found))
    for name in LIBRARIES:
        assert versions[name][:1].isdigit(), (name, found)
