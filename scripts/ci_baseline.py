"""Fetch the newest baseline report of a branch from GitHub Actions artifacts.

Used by .github/workflows/test-coverage.yml on pull requests:

    python scripts/ci_baseline.py --repo OWNER/NAME --branch main \
        --artifact perf-combined --dest baseline

Asks the GitHub REST API (through the ``gh`` CLI, authenticated by ``GH_TOKEN``) for the
repository's artifacts named ``--artifact``, keeps the newest unexpired one whose workflow run
was on ``--branch``, downloads its zip and extracts the first ``.json`` file into ``--dest``.

Prints the path of the baseline, and writes ``found=true|false`` and ``path=...`` to
``$GITHUB_OUTPUT`` when set. A missing baseline (first run, expired artifacts, API trouble) is
not an error: the script prints a ``::notice``/``::warning`` line, sets ``found=false`` and
exits 0, so the pull request is compared when a baseline exists and never fails for lack of
one. Exit 2 only on bad usage. Standard library only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from typing import Optional
from urllib.parse import quote

TIMEOUT = 120  # seconds for each gh call


def pick_artifact(listing: dict, branch: str, name: str) -> Optional[dict]:
    """The newest unexpired artifact ``name`` made by a workflow run on ``branch``.

    ``listing`` is the JSON of ``GET /repos/{repo}/actions/artifacts``.
    """
    candidates = [
        a
        for a in listing.get("artifacts") or []
        if a.get("name") == name
        and not a.get("expired")
        and (a.get("workflow_run") or {}).get("head_branch") == branch
    ]
    if not candidates:
        return None
    # ISO 8601 timestamps in one format sort as strings; the id breaks ties.
    return max(candidates, key=lambda a: (a.get("created_at") or "", a.get("id") or 0))


def extract_report(zip_bytes: bytes, dest: str) -> str:
    """Write the first ``.json`` member of the artifact zip into ``dest``; return its path."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".json") and not n.endswith("/"))
        if not names:
            raise ValueError("the artifact holds no .json file")
        os.makedirs(dest, exist_ok=True)
        path = os.path.join(dest, os.path.basename(names[0]))
        with open(path, "wb") as f:
            f.write(zf.read(names[0]))
    return path


def _gh(gh: str, args: list) -> bytes:
    proc = subprocess.run(
        [gh, *args], capture_output=True, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(
            f"gh {args[0]} {args[1] if len(args) > 1 else ''} failed: "
            f"{err[-1] if err else 'exit ' + str(proc.returncode)}"
        )
    return proc.stdout


def fetch(gh: str, repo: str, branch: str, name: str, dest: str) -> Optional[str]:
    listing = json.loads(
        _gh(gh, ["api", f"repos/{repo}/actions/artifacts?name={quote(name)}&per_page=100"])
    )
    artifact = pick_artifact(listing, branch, name)
    if artifact is None:
        return None
    data = _gh(gh, ["api", f"repos/{repo}/actions/artifacts/{artifact['id']}/zip"])
    return extract_report(data, dest)


def _set_outputs(found: bool, path: str) -> None:
    out = os.environ.get("GITHUB_OUTPUT")
    if not out:
        return
    with open(out, "a", encoding="utf-8") as f:
        f.write(f"found={'true' if found else 'false'}\n")
        f.write(f"path={path}\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download the newest perfmon baseline report of a branch (GitHub Actions)."
    )
    parser.add_argument("--repo", required=True, help="OWNER/NAME")
    parser.add_argument("--branch", default="main", help="baseline branch (default: main)")
    parser.add_argument(
        "--artifact", default="perf-combined", help="artifact name (default: perf-combined)"
    )
    parser.add_argument("--dest", default="baseline", help="directory for the report")
    parser.add_argument("--gh", default=os.environ.get("GH", "gh"), help="the gh executable")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.gh, args.repo, args.branch, args.artifact, args.dest)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired, zipfile.BadZipFile) as e:
        msg = str(e).replace("\n", " ")
        print(f"::warning title=perfmon baseline::no baseline, comparison skipped: {msg}")
        _set_outputs(False, "")
        return 0
    if path is None:
        print(
            f"::notice title=perfmon baseline::no '{args.artifact}' artifact from branch "
            f"{args.branch} yet; comparison skipped"
        )
        _set_outputs(False, "")
        return 0
    print(path)
    _set_outputs(True, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
