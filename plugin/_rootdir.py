"""Say when the value of one of our options, written as a separate argument, moved pytest's rootdir.

pytest decides its rootdir and ini file (``Config.parse`` -> ``findpaths.determine_setup``) from
the command line (with ``PYTEST_ADDOPTS``) before it loads the plugins of the ``pytest11`` entry
points. It does not know our options then: the value of ``--perf-history ../h.db`` is one more
test path to it, and an existing path outside the project moves the rootdir to a common ancestor
(every node id changes) and can leave the project's ini file unread. ``--perf-history=../h.db``
is one unknown argument and moves nothing.

No hook of pytest 7 to 9 runs early enough to prevent it: ``pytest_addhooks``,
``pytest_addoption`` and ``pytest_load_initial_conftests`` reach a plugin loaded from an entry
point after ``determine_setup``, and setting another rootdir then would still leave the right
ini file's ``addopts``, ``pythonpath``, ``minversion``, ``required_plugins`` and ``confcutdir``
unapplied. So this module only detects it: it asks pytest's own ``determine_setup`` what it
decides with and without those values and, when they decide differently and "with" is what
pytest did, names the options and the ``=`` form to write, in one line. Any failure of pytest's
private API (``Config._parser``, ``determine_setup``'s signature) means saying nothing.

plugin.py imports this module only when one of our value-taking options appears as an argument
of its own (in the command line or ``PYTEST_ADDOPTS``); it runs once, at configure time.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Optional

Setup = tuple[Path, Optional[Path]]


def command_line(config: Any) -> list[str]:
    """The arguments pytest decided its rootdir from: ``PYTEST_ADDOPTS``, then the command line."""
    env = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    return [*env, *(os.fspath(a) for a in config.invocation_params.args)]


def spaced(args: Sequence[str], flags: Collection[str]) -> list[tuple[int, str, str]]:
    """(index of the flag, flag, value) of each of our flags followed by its value as the next
    argument, as argparse reads it: a next argument that starts with "-" is not a value, and
    nothing after "--" is an option."""
    found = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in flags and i + 1 < len(args) and not args[i + 1].startswith("-"):
            found.append((i, arg, args[i + 1]))
            i += 2
        else:
            i += 1
    return found


def _exists(value: str, where: Path) -> bool:
    """Whether pytest's get_dirs_from_args counts the value (the file part of a node id)."""
    try:
        return (where / value.split("::", 1)[0]).exists()
    except (OSError, ValueError):
        return False


def _decider(config: Any, args: Sequence[str]) -> Callable[[Collection[int]], Setup]:
    """A function: the indices of arguments to leave out -> (rootdir, ini file) that pytest's
    determine_setup decides from the rest (parsed with every option known now)."""
    from _pytest.config.findpaths import determine_setup

    params = inspect.signature(determine_setup).parameters
    parser = config._parser
    where = config.invocation_params.dir

    def decide(leave_out: Collection[int]) -> Setup:
        rest = [a for i, a in enumerate(args) if i not in leave_out]
        ns = parser.parse_known_args(rest, namespace=argparse.Namespace())
        given = {
            "inifile": getattr(ns, "inifilename", None),
            "override_ini": getattr(ns, "override_ini", None),
            "args": list(getattr(ns, "file_or_dir", None) or ()),
            "rootdir_cmd_arg": getattr(ns, "rootdir", None) or None,
            "invocation_dir": where,
            "config": config,  # pytest 7
        }
        setup = determine_setup(**{k: v for k, v in given.items() if k in params})
        return Path(setup[0]), None if setup[1] is None else Path(setup[1])

    return decide


def _what(actual: Setup, expected: Setup) -> str:
    """What the values did: moved the rootdir, changed the ini file, or both."""
    (root, ini), (want_root, want_ini) = actual, expected
    parts = []
    if root != want_root:
        parts.append(f"moved pytest's rootdir to {root} (from {want_root})")
    if ini != want_ini:
        if ini is None:
            parts.append(f"left the ini file {want_ini} unread")
        elif want_ini is None:
            parts.append(f"made pytest read the ini file {ini}")
        else:
            parts.append(f"made pytest read the ini file {ini} instead of {want_ini}")
    return " and ".join(parts)


def message(config: Any, flags: Collection[str]) -> str | None:
    """The warning, or None: nothing moved, or pytest's private API did not answer."""
    try:
        args = command_line(config)
        where = Path(config.invocation_params.dir)
        if Path.cwd() != where:
            return None  # determine_setup resolves relative paths against the current directory
        pairs = spaced(args, flags)
        suspects = [p for p in pairs if _exists(p[2], where)]
        if not suspects:
            return None  # a value that names nothing cannot have moved anything
        decide = _decider(config, args)
        flag_at = {i for i, _, _ in pairs}
        value_at = {i + 1 for i, _, _ in suspects}
        actual = (Path(config.rootpath), None if config.inipath is None else Path(config.inipath))
        if decide(flag_at) != actual:
            return None  # not what pytest decided: this account of it does not hold
        expected = decide(flag_at | value_at)
        if expected == actual:
            return None
        if len(suspects) > 1:  # name the values that move it on their own, if any do
            alone = [p for p in suspects if decide(flag_at | (value_at - {p[0] + 1})) != expected]
            suspects = alone or suspects
    except Exception:  # noqa: BLE001 - pytest's internals changed: say nothing
        return None
    given = " and ".join(f"{flag} {shlex.quote(value)}" for _, flag, value in suspects)
    write = " ".join(shlex.quote(f"{flag}={value}") for _, flag, value in suspects)
    values = "the values for test paths" if len(suspects) > 1 else "the value for a test path"
    return (
        f"perfmon: warning: {given} {_what(actual, expected)}: pytest took {values} "
        f"(it reads its options before it loads plugins); write {write}"
    )


def warn(config: Any, flags: Collection[str]) -> None:
    """Print the warning line, if there is one, as the plugin prints its other warnings."""
    line = message(config, flags)
    if line is None:
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        print(line, file=sys.stderr)
        return
    tr.ensure_newline()
    tr.write_line(line, yellow=True)
