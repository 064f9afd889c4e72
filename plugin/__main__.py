"""``python -m pytest_perfmon --version``: the versions a bug report needs.

The plugin itself runs inside pytest (``pytest --perf-monitor``); this entry point only reports.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from .monitor import about


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_perfmon",
        description="pytest-perfmon is a pytest plugin: run `pytest --perf-monitor`. "
        "This command prints versions for bug reports.",
    )
    about.add_version_option(parser)
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
