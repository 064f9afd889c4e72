"""One unique import root: a user's `perfmon/` folder shadows nothing of ours, and the monitor
package never imports pytest."""

from __future__ import annotations

import subprocess
import sys

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
        "import pytest_perfmon.monitor.monitor, pytest_perfmon.monitor.report\n"
        "print(sorted(m for m in ('pytest', '_pytest', 'pluggy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
