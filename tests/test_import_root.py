"""One unique import root: a user's `perfmon/` folder shadows nothing of ours, the monitor
package never imports pytest, and no module of ours imports itself in a circle (function-level
imports included)."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = "def test_one():\n    pass\n"


@pytest.mark.parametrize("folder", ["empty", "package"])
@pytest.mark.parametrize("monitor", [False, True], ids=["off", "perf-monitor"])
def test_a_perfmon_folder_in_the_project(pytester, folder, monitor):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user=SUITE)
    pkg = pytester.path / "perfmon"
    pkg.mkdir()
    if folder == "package":
        # Anything that imports a top-level `perfmon` gets this and fails loudly.
        (pkg / "__init__.py").write_text("raise ImportError('the user perfmon package')\n")
    args = ["-p", "no:cacheprovider"]
    if monitor:
        args += ["--perf-monitor", f"--perf-output={pytester.path / 'perf.json'}"]
    res = pytester.runpytest_subprocess(*args, timeout=120)
    assert res.ret == 0, res.stdout.str() + res.stderr.str()
    res.assert_outcomes(passed=1)
    assert (pytester.path / "perf.json").exists() is monitor


def test_the_monitor_package_never_imports_pytest():
    code = (
        "import sys\n"
        "import pytest_perfmon.monitor, pytest_perfmon.monitor.daemon, pytest_perfmon.monitor.cli\n"
        "import pytest_perfmon.monitor.collector, pytest_perfmon.monitor.report\n"
        "print(sorted(m for m in ('pytest', '_pytest', 'pluggy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- the import graph

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pytest_perfmon"
#: (folder, its module name): the import root and its monitor subpackage (package-dir).
FOLDERS = (("plugin", PACKAGE), ("monitor", f"{PACKAGE}.monitor"))


def _modules() -> dict:
    """Every module of the distribution, subpackages and their modules included: name -> path."""
    out = {}
    for folder, name in FOLDERS:
        base = ROOT / folder
        pattern = "*.py" if folder == "plugin" else "**/*.py"  # plugin/ holds monitor/ apart
        for path in sorted(base.glob(pattern)):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


@functools.cache
def _imports(path: Path) -> tuple:
    """The import statements of one file: (those at its top level, every one wherever it is).
    Parsed once per process: the graph's tests and the alias check read the same files (the
    parse was most of this module's cost); only these nodes are kept, not the whole tree."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    kinds = (ast.Import, ast.ImportFrom)
    top = tuple(node for node in tree.body if isinstance(node, kinds))
    return top, tuple(node for node in ast.walk(tree) if isinstance(node, kinds))


def import_graph() -> dict:
    """module -> the modules of ours it imports, wherever in its code: at the top, in a
    function, under ``if TYPE_CHECKING``. ``from P import x`` is an edge to ``P.x`` when that
    is a module, else to ``P``."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in _imports(path)[1]:
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
                continue
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in modules else target)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict):
    """One import cycle as a list of modules (first == last), or None."""
    state: dict = {}
    stack: list = []

    def visit(node):
        state[node] = "active"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "active":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _reach(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_graph_reads_every_kind_of_import():
    graph = import_graph()
    m = f"{PACKAGE}.monitor"
    assert (
        f"{m}.history.store" in graph
        and f"{m}.daemon.core" in graph
        and f"{PACKAGE}._roles" in graph
    )
    # a function-level import (report -> machine), a subpackage's module by a relative import
    # two levels up (history.cli -> command), an absolute one from the plugin (_owner -> report)
    assert f"{m}.machine" in graph[f"{m}.report"]
    assert f"{m}.command" in graph[f"{m}.history.cli"]
    assert f"{m}.report" in graph[f"{PACKAGE}._owner"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_anywhere():
    """No circle in the import graph of every module of every (sub)package, function-level
    imports included: domain code lives in modules of its own, never in a command line's."""
    graph = import_graph()
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_report_chain_and_the_leaves():
    graph = import_graph()
    m = f"{PACKAGE}.monitor"
    # the report chain, each below the next: schema < summary < report < analysis < tables <
    # render < cli (no module reaches one above it)
    chain = ["schema", "summary", "report", "analysis", "tables", "render", "cli"]
    for i, low in enumerate(chain):
        for high in chain[i + 1 :]:
            assert f"{m}.{high}" not in _reach(graph, f"{m}.{low}"), f"{low} reaches {high}"
    # standard library only, importing nothing of ours (or only units)
    for leaf in ("units", "endpoints", "machine", "github", "command", "tables", "schema"):
        assert graph[f"{m}.{leaf}"] == set(), leaf
    for name in ("summary", "vocabulary"):
        assert graph[f"{m}.{name}"] == {f"{m}.units"}, name
    # the CLI builds its parser without the database layer: no top-level path to the store
    # (the history modules that need SQLAlchemy are imported where a command runs)
    history_cli = ROOT / "monitor" / "history" / "cli.py"
    top = _imports(history_cli)[0]
    names = {a.module for a in top if isinstance(a, ast.ImportFrom)}
    assert "store" not in names and "detect" not in names


def test_every_module_imports():
    """Every module imports (its optional extras aside), in one fresh interpreter."""
    names = [n for n in sorted(_modules()) if not n.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if (exc.name or '').startswith('pytest_perfmon'):\n"
        "            raise\n"
        "        print('optional', name, exc.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok"


#: ``as`` and the name after it (a line continuation or newline may part them in an import)
AS_NAME = re.compile(r"\bas(?:\s|\\|#[^\n]*)+(\w+)")


def test_module_names_explain_themselves():
    """No one- or two-letter alias for a module of ours (``protocol as P`` meant protocol in
    some files and predict in others), in the package, the tests and the scripts."""
    short = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        # Parsed only if its text has ``as`` before a name that could be such an alias (one or
        # two characters, upper case): no other file can hold one. (Parsing every file was
        # nearly all of this test's CPU, for the few that spell one.)
        names = AS_NAME.findall(path.read_text(encoding="utf-8"))
        if not any(len(name) <= 2 and name.isupper() for name in names):
            continue
        for node in _imports(path)[1]:
            if isinstance(node, ast.ImportFrom):
                ours = node.level > 0 or (node.module or "").startswith(PACKAGE)
            else:
                ours = any(a.name.startswith(PACKAGE) for a in node.names)
            if ours:  # a standard alias of another library (ElementTree as ET) is its own
                for alias in node.names:
                    if alias.asname and len(alias.asname) <= 2 and alias.asname.isupper():
                        short.append(f"{path.relative_to(ROOT)}: {alias.name} as {alias.asname}")
    assert short == []
