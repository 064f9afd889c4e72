"""Reading the profiles of ``--perf-profile``: ``perfmon profile NODEID``, speedscope JSON, an SVG
flame graph (icicle: the test's frame on top), also drawn by the HTML page.

The profiles are in the file the report's ``session.profile.path`` names (``NAME.profiles.json``
beside it; looked for beside the report too, when both were moved). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
from html import escape
from typing import Any, Optional

from .analysis import ReportError, load_report, write_text
from .argtypes import positive_int
from .command import EXIT_OK, emit
from .files import JSONFileError, read_json
from .profile import functions, split_frame
from .sections import Document, Line, Section, Table
from .units import number

#: The flame graph: its width in px, a row's height, the narrowest frame drawn (px).
SVG_WIDTH = 1200
ROW = 17
MIN_PX = 0.3
#: Colours of the frames: the tests' own files, the installed packages, the standard library.
COLOURS = ("#e8743b", "#5b8ff9", "#9aa5b1")


def profiles_of(report_path: str) -> dict:
    """The profiles' document named by the report at ``report_path`` (one-line ReportError
    when there is none)."""
    report: Any = load_report(report_path, check=False)
    session = report.get("session") if isinstance(report, dict) else None
    block = session.get("profile") if isinstance(session, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("path"), str):
        raise ReportError(
            f"{report_path}: no profiles in this report (run pytest with --perf-profile slow|all)"
        )
    path = block["path"]
    beside = os.path.join(os.path.dirname(os.path.abspath(report_path)), os.path.basename(path))
    for candidate in (path, beside):
        if os.path.exists(candidate):
            try:
                doc = read_json(candidate)
            except JSONFileError as exc:  # names the file
                raise ReportError(f"cannot read the profiles: {exc}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
                raise ReportError(f"{candidate}: not a perfmon profiles file")
            return doc
    raise ReportError(f"{report_path}: its profiles file {path} is missing")


def select(doc: dict, nodeid: str) -> tuple[str, dict, int]:
    """The test's node id, its stacks (every execution of it added up) and how many
    executions: an exact node id, else one that ends with ``::NODEID`` or contains it."""
    tests = [
        t
        for t in doc["tests"]
        if isinstance(t, dict) and isinstance(t.get("nodeid"), str)
        and isinstance(t.get("stacks"), dict)
    ]  # fmt: skip
    ids = sorted({t["nodeid"] for t in tests})
    found = [n for n in ids if n == nodeid] or [n for n in ids if n.endswith("::" + nodeid)]
    found = found or [n for n in ids if nodeid in n]
    if not found:
        some = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        raise ReportError(f"no profile of {nodeid!r} (profiled: {some or 'none'})")
    if len(found) > 1:
        raise ReportError(
            f"{nodeid!r} matches {len(found)} profiled tests ({', '.join(found[:3])} ...): "
            "give more of the node id"
        )
    stacks: dict = {}
    runs = 0
    for t in tests:
        if t["nodeid"] == found[0]:
            runs += 1
            for k, n in t["stacks"].items():
                n = number(n)
                if isinstance(k, str) and n is not None and n > 0:
                    stacks[k] = stacks.get(k, 0) + int(n)
    return found[0], stacks, runs


def rate_of(doc: dict) -> int:
    """The profiles' samples per second (100 where the file does not say it usably)."""
    return max(1, int(number(doc.get("rate")) or 100))


def profile_document(nodeid: str, stacks: dict, runs: int, rate: int, top: int) -> Document:
    """The hottest functions of one test: self and total share, samples, file and line."""
    n = sum(stacks.values())
    rows = []
    for f in functions(stacks)[:top]:
        where = f"{f.file}:{f.line}" if f.line is not None else f.file
        rows.append(
            [
                f"{f.self_samples / n:.1%}",
                f"{f.total_samples / n:.1%}",
                str(f.self_samples),
                f"{f.function} ({where})",
            ]
        )
    lines = [
        Line(
            f"{n} samples at {rate} per second (about {n / rate:.2f} s)"
            + (f", {runs} executions added up" if runs > 1 else "")
        ),
    ]
    table = Table(
        ["self", "total", "samples", "function (file:line)"], rows, [True, True, True, False]
    )
    return Document(
        f"Profile of {nodeid}",
        lines,
        [Section("Hottest functions (by samples of their own)", table=table)],
    )


def speedscope(nodeid: str, stacks: dict, rate: int) -> dict:
    """The speedscope file (https://www.speedscope.app/file-format-schema.json) of one test."""
    frames: list = []
    index: dict = {}
    samples = []
    weights = []
    for folded, count in sorted(stacks.items()):
        row = []
        for frame in folded.split(";"):
            if frame not in index:
                file, name, line = split_frame(frame)
                index[frame] = len(frames)
                frames.append({"name": name, "file": file, "line": line})
            row.append(index[frame])
        samples.append(row)
        weights.append(round(count / rate, 6))
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": nodeid,
                "unit": "seconds",
                "startValue": 0,
                "endValue": round(sum(weights), 6),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": nodeid,
        "exporter": "pytest-perfmon",
    }


def _tree(stacks: dict) -> dict:
    """The folded stacks as a tree: {"n": samples, "c": {frame: subtree}}."""
    root: dict = {"n": 0, "c": {}}
    for folded, count in stacks.items():
        node = root
        node["n"] += count
        for frame in folded.split(";"):
            file, name, _ = split_frame(frame)  # one box per function, whatever its line
            node = node["c"].setdefault(f"{file}:{name}", {"n": 0, "c": {}})
            node["n"] += count
    return root


def _colour(file: str) -> str:
    f = file.replace("\\", "/")
    if "site-packages" in f or f.startswith(("_pytest/", "pluggy/")) or "/_pytest/" in f:
        return COLOURS[1]
    if f.startswith("<") or "/lib/python" in f:
        return COLOURS[2]
    return COLOURS[0]


def flame_svg(nodeid: str, stacks: dict, rate: int, width: int = SVG_WIDTH) -> str:
    """An icicle flame graph (the test on top, callees below) as a self-contained SVG: one
    rectangle per frame, its width its share of the samples, its title the frame and figures."""
    tree = _tree(stacks)
    total = tree["n"] or 1
    rects: list = []
    depth = 0

    def walk(node: dict, x: float, level: int) -> None:
        nonlocal depth
        for frame, child in sorted(node["c"].items(), key=lambda kv: -kv[1]["n"]):
            w = child["n"] / total * width
            if w >= MIN_PX:
                depth = max(depth, level + 1)
                file, name, line = split_frame(frame)
                rects.append((x, level, w, name, file, line, child["n"]))
                walk(child, x, level + 1)
            x += w

    walk(tree, 0.0, 0)
    height = (depth + 1) * ROW + 4
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flame" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" '
        f'font-size="11"><title>{escape(nodeid)}</title>',
        f'<text x="2" y="12">{escape(nodeid)}: {total} samples ({total / rate:.2f} s)</text>',
    ]
    chars = 6.6  # px per character at font-size 11, monospace
    for x, level, w, name, file, line, n in rects:
        y = (level + 1) * ROW
        where = f"{file}:{line}" if line is not None else file
        tip = f"{name} ({where}): {n} samples, {n / total:.1%}"
        label = name if len(name) * chars < w - 4 else name[: max(0, int((w - 4) / chars) - 1)]
        text = (
            f'<text x="{x + 2:.1f}" y="{y + 12}">{escape(label)}</text>' if len(label) >= 2 else ""
        )
        out.append(
            f'<g><title>{escape(tip)}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" '
            f'height="{ROW - 1}" fill="{_colour(file)}" rx="2"/>{text}</g>'
        )
    out.append("</svg>")
    return "".join(out)


def cmd_profile(args: argparse.Namespace) -> int:
    doc = profiles_of(args.report)
    nodeid, stacks, runs = select(doc, args.nodeid)
    rate = rate_of(doc)
    emit(profile_document(nodeid, stacks, runs, rate, args.top).text(_width()))
    if args.speedscope:
        write_text(args.speedscope, json.dumps(speedscope(nodeid, stacks, rate)))
        print(f"perfmon: wrote {args.speedscope} (open it in https://www.speedscope.app)")
    if args.svg:
        write_text(args.svg, flame_svg(nodeid, stacks, rate))
        print(f"perfmon: wrote {args.svg}")
    return EXIT_OK


def _width() -> Optional[int]:
    import shutil

    return shutil.get_terminal_size((120, 24)).columns


def register(subparsers: Any) -> None:
    """Add ``profile`` to ``perfmon``'s subparsers."""
    p = subparsers.add_parser(
        "profile",
        help="the hottest functions of one profiled test (pytest --perf-profile)",
        description="Print the hottest functions of a test profiled with pytest --perf-profile "
        "(self and total share of its samples, file and line), from the profiles file the "
        "report names; write its speedscope JSON or an SVG flame graph on request. Exit "
        "status: 0 fine; 2 bad input or usage.",
    )
    p.add_argument("nodeid", metavar="NODEID", help="the test (a unique part of its node id)")
    p.add_argument(
        "--report",
        default="performance_metrics.json",
        metavar="FILE",
        help="the report (default: performance_metrics.json)",
    )
    p.add_argument("--top", type=positive_int, default=15, metavar="N", help="rows (default: 15)")
    p.add_argument("--speedscope", metavar="FILE", help="also write its speedscope JSON here")
    p.add_argument("--svg", metavar="FILE", help="also write its flame graph (SVG) here")
    p.set_defaults(func=cmd_profile)
