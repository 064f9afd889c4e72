"""The one plain-text table renderer (``perfmon`` CLI, terminal summary, daemon status).

Standard library only, imports nothing else of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

ELLIPSIS = "..."
MIN_LAST = 12  # the last column keeps at least this many characters before lines are cut


def _cut(text: str, width: int, keep_tail: float = 0.6) -> str:
    """``text`` cut in the middle to ``width`` characters, ``keep_tail`` of them from its end."""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    room = width - len(ELLIPSIS)
    tail = int(room * keep_tail + 0.5)
    head = room - tail
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut in the middle.

    For a pytest node id the file name and the test name are kept as long as they fit:
    ``tests/unit/test_x.py::TestA::TestB::test_y[p]`` becomes
    ``tests/unit/test_x.py::...::test_y[p]``, then ``.../test_x.py::...::test_y[p]``, then
    ``test_x.py::...::test_y[p]``; beyond that the test name itself is cut in its middle.
    Any other text is cut in its middle.
    """
    width = max(0, width)
    if len(text) <= width:
        return text
    if "::" in text:
        path, rest = text.split("::", 1)
        parts = rest.split("::")
        name = parts[-1]
        mid = "::...::" if len(parts) > 1 else "::"
        fname = path.rsplit("/", 1)[-1]
        candidates = [path + mid + name]
        if fname != path:
            candidates += [".../" + fname + mid + name]
        candidates += [fname + mid + name]
        for c in candidates:
            if len(c) <= width:
                return c
        lead = fname + mid
        if len(lead) + MIN_LAST <= width:  # the file name whole, the test name cut
            return lead + _cut(name, width - len(lead), 0.5)
        return _cut(name, width, 0.5)
    return _cut(text, width, 0.5)


def text_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool],
    width: Optional[int] = None,
) -> list[str]:
    """Lines of a table: a two-space indent, cells two spaces apart, ``right`` aligns right.

    The last column (the test id, in practice) is never padded. With ``width``, it is shortened
    (:func:`shorten`) so that each line fits in ``width`` characters; should the other columns
    alone be wider than that, lines are cut at ``width``.
    """
    n = len(headers)
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(n)]
    fixed = 2 + sum(w + 2 for w in widths[:-1])  # where the last column starts
    last_w = None if width is None else max(width - fixed, MIN_LAST)

    def line(cells: Sequence[str]) -> str:
        parts = [
            (c.rjust(widths[i]) if right[i] else c.ljust(widths[i])) for i, c in enumerate(cells)
        ]
        last = cells[-1] if last_w is None else shorten(cells[-1], last_w)
        parts[-1] = last
        text = ("  " + "  ".join(parts)).rstrip()
        return text if width is None else text[: max(width, 0)]

    return [line(headers)] + [line(r) for r in rows]


def fit(text: str, width: Optional[int]) -> str:
    """One line of free text fitted to ``width`` (cut in the middle); unchanged without width."""
    if width is None or len(text) <= width:
        return text
    return _cut(text, width, 0.5)
