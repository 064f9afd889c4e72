"""The section model of every text output, and its three layouts.

The analyses' documents (``perfmon report``, ``perfmon compare``, the plugin's terminal summary,
the GitHub step summary) are made of :class:`Section` objects: a title, prose, a table (headers,
rows of strings, which columns align right) and notes. They say *what* is shown; a layout says
*how*, one per output, as coverage.py's reporters do:

- :func:`text`: plain text (``perfmon report``/``compare`` tables); with a width, every table
  line fits in it;
- :func:`markdown`: GitHub Markdown (``--format markdown``, the step summary);
- :func:`terminal`: pytest's terminal summary: a separator line for the title, prose wrapped to
  the terminal (a number never parted from its unit), section titles in bold, warnings in
  yellow, every line fitted to the terminal's width.

In every layout the last column of a table is its name column (a test id, in practice): cut in
the middle to fit (:func:`.tables.shorten`), code in Markdown.

Standard library only; imports :mod:`.tables` alone. The plugin imports it at the end of a
monitored session only.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Optional

from .tables import MIN_LAST, shorten, text_table

# --------------------------------------------------------------------------- the model


@dataclass
class Line:
    """One line of prose. ``warn``: something to look at (yellow in the terminal, bold in
    Markdown). ``name``: a test id that ends the line, cut in the middle to fit the width."""

    text: str
    warn: bool = False
    name: Optional[str] = None


@dataclass
class Table:
    """Rows of strings under ``headers``; ``right[i]``: column ``i`` aligns right. The last
    column is the name column."""

    headers: list
    rows: list
    right: list


@dataclass
class Section:
    """A titled part of a document: prose, then a table (``empty`` stands for a table without
    rows), then notes on it."""

    title: str
    lines: list = field(default_factory=list)
    table: Optional[Table] = None
    empty: str = "(none)"
    notes: list = field(default_factory=list)


@dataclass
class Document:
    """A title, the prose under it (``lines``), and sections."""

    title: str
    lines: list = field(default_factory=list)
    sections: list = field(default_factory=list)

    def text(self, width: Optional[int] = None) -> str:
        return text(self, width)

    def markdown(self) -> str:
        return markdown(self)


# --------------------------------------------------------------------------- plain text


def _named(line: Line, width: Optional[int]) -> str:
    """A line ending in a name, the name cut in the middle so that the line fits ``width``."""
    if line.name is None:
        return line.text
    if width is None:
        return line.text + line.name
    room = max(MIN_LAST, width - len(line.text))
    return (line.text + shorten(line.name, room))[: max(width, 0)]


def text(doc: Document, width: Optional[int] = None) -> str:
    """Plain text: the title, its prose, then each section after a blank line. With ``width``,
    every table line (and every line ending in a name) fits in ``width`` characters; prose is
    not wrapped."""
    out = [doc.title] + [_named(x, width) for x in doc.lines]
    for s in doc.sections:
        out += ["", s.title] + [_named(x, width) for x in s.lines]
        if s.table is not None:
            t = s.table
            out += text_table(t.headers, t.rows, t.right, width) if t.rows else [s.empty]
        out += [_named(x, width) for x in s.notes]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- Markdown


#: A control character in a cell (a node id from a file name with a newline) as the escape
#: that names it: a raw line break ends the table's row.
_CONTROLS = {
    **{i: f"\\x{i:02x}" for i in (*range(32), 127)},
    **{ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"},
}


def md_cell(text: str) -> str:
    """``text`` as one cell of a Markdown table: ``|`` escaped, control characters named."""
    return text.translate(_CONTROLS).replace("|", "\\|")


def md_code(text: str) -> str:
    """``text`` as code in a Markdown table's cell (a backtick in it: a double fence)."""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{md_cell(text)}{pad}{fence}"


def _md_line(line: Line) -> str:
    body = line.text + ("" if line.name is None else md_code(line.name))
    return f"**{body}**" if line.warn else body


def markdown(doc: Document) -> str:
    """GitHub Markdown: the title a level-3 heading, each section's a level-4 one, prose as
    paragraphs, the name column as code."""
    out = [f"### {doc.title}", ""]
    for x in doc.lines:
        out += [_md_line(x), ""]
    for s in doc.sections:
        out += [f"#### {s.title}", ""]
        for x in s.lines:
            out += [_md_line(x), ""]
        t = s.table
        if t is not None and t.rows:
            out.append("| " + " | ".join(t.headers) + " |")
            out.append("|" + "|".join("---:" if r else "---" for r in t.right) + "|")
            for r in t.rows:
                cells = [md_cell(c) for c in r[:-1]] + [md_code(r[-1])]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif t is not None:
            out += [s.empty, ""]
        for x in s.notes:
            out += [_md_line(x), ""]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the terminal

#: A number and the unit after it, kept on one line by :meth:`Terminal.prose`.
_UNIT = re.compile(r"(\d) (s|ms|MB|%)\b")


class Terminal:
    """Writes to pytest's TerminalReporter (``write_line``, ``write_sep``, ``_tw.fullwidth``),
    every line fitted to the terminal."""

    def __init__(self, tr: Any) -> None:
        self.tr = tr
        full = getattr(getattr(tr, "_tw", None), "fullwidth", None)
        # pytest's own lines stop one short of the edge, so that no terminal wraps them
        self.width: int = max(20, (full if isinstance(full, int) else 80) - 1)

    def prose(self, text: str, indent: str = "", **markup: Any) -> None:
        """Prose, wrapped to the terminal: nothing cut, every line fits, and no number is
        parted from its unit ("0.031 s" never breaks after "0.031")."""
        text = _UNIT.sub("\\1\x00\\2", text)
        lines = textwrap.wrap(
            text,
            self.width,
            initial_indent=indent,
            subsequent_indent=indent + "  ",
            break_on_hyphens=False,
        ) or [""]
        for line in lines:
            self.tr.write_line(line.replace("\x00", " "), **markup)

    def line(self, line: Line, indent: str = "") -> None:
        markup = {"yellow": True} if line.warn else {}
        if line.name is None:
            self.prose(line.text, indent, **markup)
        else:
            self.tr.write_line(_named(Line(indent + line.text, name=line.name), self.width))

    def table(self, table: Table, empty: str = "(none)") -> None:
        if not table.rows:
            self.tr.write_line("  " + empty)
            return
        for row in text_table(table.headers, table.rows, table.right, self.width):
            self.tr.write_line(row)

    def section(self, s: Section) -> None:
        self.prose(s.title, bold=True)
        for x in s.lines:
            self.line(x)
        if s.table is not None:
            self.table(s.table, s.empty)
        for x in s.notes:
            self.line(x, indent="  ")

    def document(self, doc: Document) -> None:
        self.tr.write_sep("=", doc.title)
        for x in doc.lines:
            self.line(x)
        for s in doc.sections:
            self.section(s)


def terminal(doc: Document, tr: Any) -> None:
    """Lay ``doc`` out in pytest's terminal summary."""
    Terminal(tr).document(doc)
