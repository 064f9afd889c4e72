""".github/workflows/test-coverage.yml and its helper, scripts/ci_baseline.py."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "test-coverage.yml"
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
ISSUE_TEMPLATES = ROOT / ".github" / "ISSUE_TEMPLATE"
BASELINE_SCRIPT = ROOT / "scripts" / "ci_baseline.py"
TIMEOUT = 120


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / (name + (".exe" if os.name == "nt" else ""))
    found = str(exe) if exe.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


def check_workflow(
    path: Path, schema: str = "vendor.github-workflows"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- the workflow


@pytest.mark.parametrize("path", [WORKFLOW, RELEASE], ids=lambda p: p.name)
def test_workflow_matches_github_schema(path: Path) -> None:
    proc = check_workflow(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_issue_templates_match_github_schemas() -> None:
    forms = sorted(p for p in ISSUE_TEMPLATES.glob("*.yml") if p.name != "config.yml")
    assert forms
    for form in forms:
        proc = check_workflow(form, "vendor.github-issue-forms")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = check_workflow(ISSUE_TEMPLATES / "config.yml", "vendor.github-issue-config")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The check above is not vacuous: a workflow with a misspelt key fails it."""
    broken = WORKFLOW.read_text(encoding="utf-8").replace("runs-on:", "run-on:", 1)
    (tmp_path / "broken.yml").write_text(broken, encoding="utf-8")
    assert check_workflow(tmp_path / "broken.yml").returncode != 0


def _load(path: Path) -> dict:
    yaml = pytest.importorskip("ruamel.yaml")  # check-jsonschema's own YAML parser
    return yaml.YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workflow() -> dict:
    return _load(WORKFLOW)


def _uses(job: dict, action: str) -> list:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def test_matrix_groups_and_pythons(workflow: dict) -> None:
    test = workflow["jobs"]["test"]
    matrix = test["strategy"]["matrix"]
    assert matrix["python-version"] == ["3.9", "3.10", "3.11", "3.12", "3.13"]
    assert matrix["os"] == ["ubuntu-latest", "macos-latest", "windows-latest"]
    assert test["runs-on"] == "${{ matrix.os }}"
    assert test["defaults"]["run"]["shell"] == "bash"  # one syntax on Windows too
    paths = {inc["group"]: inc["paths"] for inc in matrix["include"]}
    assert set(paths) == set(matrix["group"]) == {"core", "cli"}
    assert "tests/test_cli.py" in paths["cli"] and "tests/test_workflow.py" in paths["cli"]
    assert "--ignore=tests/test_cli.py" in paths["core"]
    # the groups together cover every test file exactly once
    for test_file in (ROOT / "tests").glob("test_*.py"):
        rel = test_file.relative_to(ROOT).as_posix()
        in_cli = rel in paths["cli"].split()
        in_core = f"--ignore={rel}" not in paths["core"]
        assert in_cli != in_core, rel


def test_jobs_measure_and_upload(workflow: dict) -> None:
    test = workflow["jobs"]["test"]
    run = " ".join(s.get("run", "") for s in test["steps"])
    assert "--perf-monitor" in run and "--perf-output=perf-" in run
    (upload,) = _uses(test, "actions/upload-artifact")
    assert upload["with"]["retention-days"] == 30
    assert upload["if"] == "always()"


def test_aggregate_merges_reports_and_compares(workflow: dict) -> None:
    agg = workflow["jobs"]["aggregate"]
    assert agg["needs"] == "test" and agg["if"] == "always()"
    (download,) = _uses(agg, "actions/download-artifact")
    assert download["with"]["pattern"] == "perf-*-py*"  # the jobs' artifacts, not perf-combined
    upload, html = _uses(agg, "actions/upload-artifact")
    assert upload["with"] == {
        "name": "perf-combined",
        "path": "perf-combined.json",
        "retention-days": 90,
    }
    assert html["with"]["path"] == "perfmon.html" and html["id"] == "perfhtml"
    runs = [s.get("run", "") for s in agg["steps"]]
    assert any(r.startswith("perfmon html perf-combined.json -o perfmon.html") for r in runs)
    link = "steps.perfhtml.outputs.artifact-url"
    assert any(link in r and "GITHUB_STEP_SUMMARY" in r for r in runs)
    assert any(r.startswith("perfmon merge ") for r in runs)
    assert any(r.startswith("perfmon report ") and "--format markdown" in r for r in runs)
    baseline = next(s for s in agg["steps"] if s.get("id") == "baseline")
    assert baseline["if"] == "github.event_name == 'pull_request'"
    assert (
        "scripts/ci_baseline.py" in baseline["run"]
        and "--artifact perf-combined" in (baseline["run"])
    )
    compare = next(s for s in agg["steps"] if s.get("run", "").startswith("perfmon compare"))
    assert compare["if"] == "steps.baseline.outputs.found == 'true'"
    assert workflow["permissions"]["actions"] == "read"


def test_history_is_kept_and_checked(workflow: dict) -> None:
    """The SQLite store travels in the Actions cache, saved from main only; pull requests run
    `perfmon history check` (exit 1 fails the job only with PERFMON_FAIL_ON_REGRESSION)."""
    agg = workflow["jobs"]["aggregate"]
    (restore,) = _uses(agg, "actions/cache/restore")
    (save,) = _uses(agg, "actions/cache/save")
    assert restore["with"]["path"] == save["with"]["path"] == "perf-history.db"
    assert restore["with"]["restore-keys"] == "perf-history-"
    assert save["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    steps = agg["steps"]
    names = [s.get("uses", s.get("run", "")) for s in steps]
    imp = next(i for i, n in enumerate(names) if n.startswith("perfmon history import"))
    chk = next(i for i, n in enumerate(names) if n.startswith("perfmon history check"))
    assert names.index(restore["uses"]) < imp < chk < names.index(save["uses"])
    assert steps[chk]["if"] == "github.event_name == 'pull_request'"
    assert any(s.get("run", "").startswith('python -m pip install -e ".[history]"') for s in steps)


def test_artifact_names_carry_os_and_python(workflow: dict) -> None:
    test = workflow["jobs"]["test"]
    (upload,) = _uses(test, "actions/upload-artifact")
    name = upload["with"]["name"]
    assert "${{ runner.os }}" in name and "${{ matrix.python-version }}" in name
    assert upload["with"]["path"] == name + ".json"
    run = " ".join(s.get("run", "") for s in test["steps"])
    assert f"--perf-output={name}.json" in run


# --------------------------------------------------------------------------- release.yml


@pytest.fixture(scope="module")
def release() -> dict:
    return _load(RELEASE)


def test_release_runs_on_version_tags_only(release: dict) -> None:
    # ruamel's safe loader reads the key "on" as the string "on" (YAML 1.2)
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {}


def test_release_builds_and_checks_before_publishing(release: dict) -> None:
    build, publish = release["jobs"]["build"], release["jobs"]["publish"]
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    for needed in (
        "python -m build",
        "twine check --strict dist/*",
        "check-wheel-contents dist/*.whl",
        "--perf-monitor",
        "-n 2",
        '"v$version"',
    ):
        assert needed in runs, needed
    assert build["permissions"] == {"contents": "read"}
    assert publish["needs"] == "build"
    (upload,) = _uses(build, "actions/upload-artifact")
    (download,) = _uses(publish, "actions/download-artifact")
    assert upload["with"]["name"] == download["with"]["name"] == "dist"


def test_release_publishes_with_trusted_publishing(release: dict) -> None:
    publish = release["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    (step,) = _uses(publish, "pypa/gh-action-pypi-publish")
    # OIDC: no password, no token, no secret anywhere in the workflow
    assert "password" not in step.get("with", {}) and "user" not in step.get("with", {})
    assert "secrets." not in RELEASE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- ci_baseline.py


@pytest.fixture(scope="module")
def ci_baseline():
    spec = importlib.util.spec_from_file_location("ci_baseline", BASELINE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def artifact(aid: int, created: str, branch: str = "main", **extra: object) -> dict:
    a = {
        "id": aid,
        "name": "perf-combined",
        "expired": False,
        "created_at": created,
        "workflow_run": {"id": aid * 10, "head_branch": branch},
    }
    a.update(extra)
    return a


def test_pick_artifact_newest_on_branch(ci_baseline) -> None:
    listing = {
        "artifacts": [
            artifact(1, "2025-01-01T00:00:00Z"),
            artifact(2, "2025-03-01T00:00:00Z", branch="feature"),
            artifact(3, "2025-02-01T00:00:00Z"),
            artifact(4, "2025-04-01T00:00:00Z", expired=True),
            artifact(5, "2025-05-01T00:00:00Z", name="perf-core-py3.9"),
        ]
    }
    assert ci_baseline.pick_artifact(listing, "main", "perf-combined")["id"] == 3
    assert ci_baseline.pick_artifact(listing, "feature", "perf-combined")["id"] == 2
    assert ci_baseline.pick_artifact(listing, "release", "perf-combined") is None
    assert ci_baseline.pick_artifact({"artifacts": []}, "main", "perf-combined") is None
    assert ci_baseline.pick_artifact({}, "main", "perf-combined") is None


def make_zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_report(ci_baseline, tmp_path: Path) -> None:
    data = make_zip({"README.txt": "x", "perf-combined.json": '{"schema_version": 1}'})
    path = ci_baseline.extract_report(data, str(tmp_path / "out"))
    assert Path(path) == tmp_path / "out" / "perf-combined.json"
    assert json.loads(Path(path).read_text(encoding="utf-8")) == {"schema_version": 1}
    with pytest.raises(ValueError, match="no .json file"):
        ci_baseline.extract_report(make_zip({"a.txt": "x"}), str(tmp_path / "none"))


FAKE_GH = """#!{python}
import json, sys
from pathlib import Path
here = Path(__file__).parent
with open(here / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
mode = (here / "mode").read_text().strip()
if mode == "fail":
    sys.stderr.write("HTTP 401: Bad credentials\\n")
    sys.exit(1)
url = sys.argv[2]
if "/artifacts?" in url:
    sys.stdout.write((here / "listing.json").read_text())
elif url.endswith("/zip"):
    sys.stdout.buffer.write((here / "artifact.zip").read_bytes())
else:
    sys.exit(3)
"""


@pytest.fixture
def fake_gh(tmp_path: Path) -> Path:
    if os.name == "nt":
        pytest.skip("the fake gh is a POSIX script")
    d = tmp_path / "gh"
    d.mkdir()
    gh = d / "gh"
    gh.write_text(FAKE_GH.format(python=sys.executable), encoding="utf-8")
    gh.chmod(0o755)
    (d / "mode").write_text("ok", encoding="utf-8")
    listing = {
        "artifacts": [artifact(7, "2025-01-01T00:00:00Z"), artifact(9, "2025-02-01T00:00:00Z")]
    }
    (d / "listing.json").write_text(json.dumps(listing), encoding="utf-8")
    (d / "artifact.zip").write_bytes(make_zip({"perf-combined.json": '{"schema_version": 1}'}))
    return gh


def run_script(gh: Path, tmp_path: Path, *extra: str) -> tuple:
    out = tmp_path / "github_output"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["GITHUB_OUTPUT"] = str(out)
    proc = subprocess.run(
        [
            sys.executable,
            str(BASELINE_SCRIPT),
            "--repo",
            "owner/name",
            "--dest",
            str(tmp_path / "baseline"),
            "--gh",
            str(gh),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    outputs = out.read_text(encoding="utf-8") if out.exists() else ""
    return proc, outputs


def test_script_downloads_newest_baseline(fake_gh: Path, tmp_path: Path) -> None:
    proc, outputs = run_script(fake_gh, tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "baseline" / "perf-combined.json"
    assert proc.stdout.strip() == str(path)
    assert outputs == f"found=true\npath={path}\n"
    calls = (fake_gh.parent / "calls.log").read_text(encoding="utf-8").splitlines()
    assert calls == [
        "api repos/owner/name/actions/artifacts?name=perf-combined&per_page=100",
        "api repos/owner/name/actions/artifacts/9/zip",
    ]


def test_script_without_baseline_skips(fake_gh: Path, tmp_path: Path) -> None:
    proc, outputs = run_script(fake_gh, tmp_path, "--branch", "release")
    assert proc.returncode == 0
    assert proc.stdout.startswith("::notice title=perfmon baseline::")
    assert outputs == "found=false\npath=\n"
    assert not (tmp_path / "baseline").exists()


def test_script_gh_failure_is_a_warning(fake_gh: Path, tmp_path: Path) -> None:
    (fake_gh.parent / "mode").write_text("fail", encoding="utf-8")
    proc, outputs = run_script(fake_gh, tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("::warning title=perfmon baseline::")
    assert "Bad credentials" in proc.stdout
    assert outputs == "found=false\npath=\n"


def test_script_missing_gh_is_a_warning(tmp_path: Path) -> None:
    proc, outputs = run_script(tmp_path / "no-such-gh", tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("::warning ")
    assert outputs == "found=false\npath=\n"


def test_script_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BASELINE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "--repo" in proc.stderr and "Traceback" not in proc.stderr
