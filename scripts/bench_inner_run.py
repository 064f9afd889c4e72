"""CPU of the test suite's inner pytest runs (tests/preloaded.py): N one-test runs of a given
kind, forked from one server, to be run under a CPU counter that sees every process (a cgroup:
the server and its forks are not this script's children).

    /tmp/cgrun a python scripts/bench_inner_run.py --runs 1 -- -n 2
    /tmp/cgrun b python scripts/bench_inner_run.py --runs 11 -- -n 2

(b - a) / 10 is the CPU of one run; ``--preloaded DIR`` takes another tests/preloaded.py (an
older one, to compare). ``--popen``: each run started by ``preloaded.popen`` (stdout to a file,
stderr with it), ``--session`` in a session of its own (its xdist workers then real starts);
with ``PERFMON_TESTS_EXEC=1`` set, ``subprocess.Popen``'s real starts. Every run must pass."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--preloaded", default=here, help="the directory of preloaded.py")
    ap.add_argument("--popen", action="store_true", help="start each run by preloaded.popen")
    ap.add_argument("--session", action="store_true", help="--popen's start_new_session")
    ap.add_argument("args", nargs="*", help="the runs' pytest options, e.g. -n 2")
    opts = ap.parse_args()
    # the suite's environment (tests/conftest.py): bytecode (and rewritten asserts) cached
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.path.insert(0, os.path.abspath(opts.preloaded))
    sys.path.insert(1, here)
    import preloaded
    from helpers import inner_addopts  # the plugins the suite's runs switch off

    env = dict(os.environ, PYTEST_ADDOPTS=f"-p no:cacheprovider {inner_addopts()}")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "test_one.py"), "w") as f:
            f.write("def test_one():\n    pass\n")
        with open(os.path.join(tmp, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        for _ in range(opts.runs):
            cmd = [sys.executable, "-m", "pytest", "-q", *opts.args, "test_one.py"]
            if opts.popen:
                import subprocess

                with open(os.path.join(tmp, "log"), "w+") as log:
                    run = preloaded.popen(
                        cmd, tmp, env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=opts.session,
                    )  # fmt: skip
                    run.wait(120)
                    log.seek(0)
                    proc = subprocess.CompletedProcess(cmd, run.returncode, log.read(), "")
            else:
                proc = preloaded.run(cmd, tmp, env, 120)
            if proc.returncode != 0:
                sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        if os.environ.get("BENCH_SHOW"):
            print(proc.stdout, proc.stderr)


if __name__ == "__main__":
    main()
