"""Where a run comes from: the machine fingerprint, the commit and the branch (stdlib only).

What the machine is comes from the report's ``system`` block
(:func:`..report.system_info`, its CPU from :mod:`..machine`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from typing import Optional

#: (commit variable, branch variable) of common CI systems, first match wins.
CI_VARIABLES = (
    ("GITHUB_SHA", "GITHUB_REF_NAME"),  # GitHub Actions
    ("CI_COMMIT_SHA", "CI_COMMIT_REF_NAME"),  # GitLab CI
    ("CIRCLE_SHA1", "CIRCLE_BRANCH"),  # CircleCI
    ("TRAVIS_COMMIT", "TRAVIS_BRANCH"),  # Travis CI
    ("BUILDKITE_COMMIT", "BUILDKITE_BRANCH"),  # Buildkite
    ("BITBUCKET_COMMIT", "BITBUCKET_BRANCH"),  # Bitbucket Pipelines
    ("BUILD_SOURCEVERSION", "BUILD_SOURCEBRANCHNAME"),  # Azure Pipelines
    ("DRONE_COMMIT_SHA", "DRONE_BRANCH"),  # Drone
    ("GIT_COMMIT", "GIT_BRANCH"),  # Jenkins (git plugin)
)

GIT_TIMEOUT = 2.0


def local_machine() -> dict:
    """The fingerprint's inputs for this machine: its report ``system`` block (same units)."""
    from ..report import system_info

    info = system_info()
    keys = ("cpu_model", "cpu_count", "memory_total_mb", "platform", "machine")
    return {
        **{k: info.get(k) for k in keys},
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
    }


def machine(system: Optional[Mapping]) -> dict:
    """The fingerprint's inputs: from a report's ``system`` block (it describes the machine
    that ran the tests), completed from this machine for what the block lacks (reports of
    older versions have no CPU model); the local machine when there is no block."""
    local = local_machine()
    if not isinstance(system, Mapping):
        return local
    out = {}
    for key, value in local.items():
        given = system.get(key)
        out[key] = given if given is not None else value
    return out


def fingerprint(desc: Mapping) -> str:
    """A stable id of the machine: CPU model, logical cores, memory (whole GiB, so that a few
    MB the kernel reserves differently after a reboot do not matter), OS and architecture, and
    the Python implementation and version. 16 hex digits."""
    mem = desc.get("memory_total_mb")
    gib = round(float(mem) / 1024) if isinstance(mem, (int, float)) else None
    key = {
        "cpu": str(desc.get("cpu_model") or ""),
        "cores": desc.get("cpu_count"),
        "mem_gib": gib,
        "os": str(desc.get("platform") or ""),
        "arch": str(desc.get("machine") or ""),
        "python": f"{desc.get('python_implementation') or ''} {desc.get('python_version') or ''}",
    }
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _git(rootdir: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "-C", rootdir, *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def commit_branch(
    rootdir: Optional[str], env: Optional[Mapping[str, str]] = None
) -> tuple[Optional[str], Optional[str]]:
    """(commit, branch): the first CI system whose commit variable is set, else ``git`` in
    ``rootdir`` (bounded: 2 s per call), else None."""
    env = os.environ if env is None else env
    for sha_var, branch_var in CI_VARIABLES:
        sha = env.get(sha_var)
        if sha:
            branch = env.get(branch_var) or None
            if branch and branch.startswith("origin/"):
                branch = branch[len("origin/") :]
            return sha, branch
    if rootdir and os.path.isdir(rootdir):
        sha = _git(rootdir, "rev-parse", "HEAD")
        if sha:
            branch = _git(rootdir, "rev-parse", "--abbrev-ref", "HEAD")
            return sha, (branch if branch and branch != "HEAD" else None)
    return None, None
