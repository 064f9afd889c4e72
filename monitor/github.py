"""GitHub Actions: workflow-command escaping, ``::warning`` annotations and the step summary.

Used by ``perfmon report``/``compare`` and ``perfmon history check``. Standard library only,
imports nothing else of the project.
"""

from __future__ import annotations

import os
import sys


def escape_data(s: str) -> str:
    """A workflow command's message, escaped."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    """A workflow command's property value (``file=``, ``title=``), escaped."""
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def warning(nodeid: str, title: str, message: str) -> str:
    """One ``::warning`` workflow command about a test: its file (when the node id names a
    ``.py`` file), a title and the message."""
    path = nodeid.split("::", 1)[0]
    props = [f"file={escape_property(path)}"] if path.endswith(".py") else []
    props.append(f"title={escape_property(title)}")
    return f"::warning {','.join(props)}::{escape_data(message)}"


def in_actions() -> bool:
    """Whether this runs in a GitHub Actions job (annotations are printed there)."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


def append_step_summary(markdown: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when set; a failure there is a warning, not an error."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown + "\n")
    except OSError as e:
        print(
            f"perfmon: warning: cannot append to GITHUB_STEP_SUMMARY {path} ({e.strerror or e})",
            file=sys.stderr,
        )
