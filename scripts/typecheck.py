"""mypy over pytest-perfmon, each module under its installed name.

    python scripts/typecheck.py [mypy options]

The folders plugin/ and monitor/ are the packages pytest_perfmon and pytest_perfmon.monitor
(setuptools' package-dir). mypy names a module after its folder (`mypy plugin monitor`: "No
parent module") and cannot follow the import hook of an editable install (`mypy -p
pytest_perfmon`: "Can't find package"), so this script hands it every file with its module
name. It reads the source tree, not an installed copy: the same with an editable install, a
regular one or none (third-party imports resolve in the running interpreter's environment).
The settings are pyproject.toml's [tool.mypy]; options given here come first on mypy's
command line. Exit status as mypy's: 0 clean, 1 errors, 2 a blocking error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.fscache import FileSystemCache
from mypy.main import process_options
from mypy.modulefinder import BuildSource
from mypy.util import count_stats

ROOT = Path(__file__).resolve().parent.parent
#: pyproject.toml's [tool.setuptools.package-dir]
PACKAGE_DIRS = {"plugin": "pytest_perfmon", "monitor": "pytest_perfmon.monitor"}


def sources() -> list[BuildSource]:
    """Every .py file of the package folders, with its module name."""
    found = []
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(BuildSource(str(path.relative_to(ROOT)), ".".join((package, *parts))))
    return found


def main(argv: list[str]) -> int:
    os.chdir(ROOT)  # pyproject.toml's [tool.mypy] and paths relative to the root
    fscache = FileSystemCache()
    # the folders only satisfy mypy's "missing target" check: their sources are replaced
    _, options = process_options([*argv, *PACKAGE_DIRS], fscache=fscache)
    targets = sources()
    try:
        result = build.build(targets, options, fscache=fscache)
    except CompileError as error:
        print("\n".join(error.messages))
        return 2
    for line in result.errors:
        print(line)
    errors, _, files = count_stats(result.errors)
    if errors:
        print(
            f"Found {errors} error{'s' * (errors != 1)} in {files} file{'s' * (files != 1)}"
            f" (checked {len(targets)} source files)"
        )
        return 1
    print(f"Success: no issues found in {len(targets)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
