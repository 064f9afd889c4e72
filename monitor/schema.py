"""The report's schema: its version, the names of the measurement methods, the shipped JSON
Schema (``report.schema.json``) and a validator for the subset of JSON Schema it uses.

The bottom of the dependency graph: standard library only, imports nothing else of the project.
jsonschema is not a runtime dependency, so :func:`first_problem` implements the keywords the
shipped schema uses (and refuses any other, so the schema cannot silently outgrow it); the test
suite checks it against jsonschema on valid and broken reports.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

SCHEMA_VERSION = 1

METHOD_TIME = "pytest-report-durations"
METHOD_CPU = "process-cpu-time"
METHOD_RSS_BOUNDARY = "proc-statm-at-boundaries"
METHOD_PEAK_KERNEL = "kernel-peak-rss-reset-at-boundaries"
METHOD_SAMPLED = "psutil-sampled"
#: Reports before 0.1's issue 27 said "rusage-children-at-boundaries+psutil-sampled-descendants"
#: (every sampled descendant billed to the test its sample fell in).
METHOD_CHILDREN = "rusage-children+counted-starts+psutil-sampled-descendants-billed-by-birth"
METHOD_FIXTURES = "pytest-fixture-setup-wrapper"

_cache: dict = {}


def version_problem(data: dict, perfmon_version: str) -> Optional[str]:
    """Why this perfmon (``perfmon_version``: the caller's ``__version__``, this module
    imports nothing of ours) cannot read a report whose ``schema_version`` is another; None
    when it is this one. ``data``: a JSON object that has the key."""
    version = data["schema_version"]
    if version == SCHEMA_VERSION and not isinstance(version, bool):
        return None
    return (
        f"schema_version {json.dumps(version)} is not supported "
        f"(this perfmon {perfmon_version} reads schema_version {SCHEMA_VERSION})"
    )


def load_schema() -> dict:
    """The shipped JSON Schema of the report (a fresh copy each call)."""
    if "schema" not in _cache:
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "report.schema.json"), encoding="utf-8") as f:
            _cache["schema"] = f.read()
    return json.loads(_cache["schema"])


# --------------------------------------------------------------------------- validator

#: Keywords that only annotate; everything else must be one :func:`first_problem` implements.
_ANNOTATIONS = frozenset(("$schema", "$id", "$defs", "title", "description"))
_KEYWORDS = frozenset(
    (
        "$ref",
        "type",
        "const",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minimum",
        "exclusiveMinimum",
        "minLength",
        "oneOf",
    )
)


class SchemaError(Exception):
    """The schema itself uses something this validator does not implement."""


def _type_ok(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    if t == "integer":  # JSON Schema: 2.0 is an integer too
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and math.isfinite(v) and v.is_integer()
        )
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    raise SchemaError(f"unknown type {t!r}")


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _show(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier():
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p, ensure_ascii=False)}]"
    return out or "top level"


def _nonfinite(v: Any, path: tuple) -> Optional[tuple]:
    """The first NaN or infinity anywhere in ``v`` (JSON has neither)."""
    if isinstance(v, float):
        return None if math.isfinite(v) else (path, f"{v} is not a JSON number")
    if isinstance(v, dict):
        for k, x in v.items():
            hit = _nonfinite(x, path + (k,))
            if hit:
                return hit
    elif isinstance(v, list):
        for i, x in enumerate(v):
            hit = _nonfinite(x, path + (i,))
            if hit:
                return hit
    return None


class _Validator:
    def __init__(self, root: dict) -> None:
        self.root = root

    def resolve(self, ref: str) -> dict:
        if not ref.startswith("#/"):
            raise SchemaError(f"only local $ref are supported: {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def check(self, v: Any, s: Any, path: tuple) -> Optional[tuple]:
        if s is True or s == {}:
            return _nonfinite(v, path)
        if s is False:
            return path, "is not allowed here"
        unknown = set(s) - _KEYWORDS - _ANNOTATIONS
        if unknown:
            raise SchemaError(f"unsupported keyword(s) {sorted(unknown)} at {_where(path)}")
        if isinstance(v, float) and not math.isfinite(v):
            return path, f"{v} is not a JSON number"
        if "$ref" in s:
            hit = self.check(v, self.resolve(s["$ref"]), path)
            if hit:
                return hit
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_type_ok(v, t) for t in types):
                return path, f"{_show(v)} is not of type {' or '.join(types)}"
        if "const" in s and not _same(v, s["const"]):
            return path, f"{_show(v)} is not {_show(s['const'])}"
        if "enum" in s and not any(_same(v, e) for e in s["enum"]):
            allowed = ", ".join(_show(e) for e in s["enum"])
            return path, f"{_show(v)} is not one of {allowed}"
        if "oneOf" in s:
            matches = [sub for sub in s["oneOf"] if self.check(v, sub, path) is None]
            if len(matches) != 1:
                if not matches:  # the problem of the branch of the right type, if any
                    for sub in s["oneOf"]:
                        hit = self.check(v, sub, path)
                        if hit and hit[0] != path:
                            return hit
                    return path, f"{_show(v)} matches none of the allowed forms"
                return path, "matches more than one of the allowed forms"
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        if num and "minimum" in s and v < s["minimum"]:
            return path, f"{_show(v)} is less than {s['minimum']}"
        if num and "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            return path, f"{_show(v)} is not greater than {s['exclusiveMinimum']}"
        if isinstance(v, str) and "minLength" in s and len(v) < s["minLength"]:
            return path, f"is shorter than {s['minLength']} character(s)"
        if isinstance(v, dict):
            for key in s.get("required", ()):
                if key not in v:
                    return path, f"required field {key!r} is missing"
            props = s.get("properties", {})
            extra = s.get("additionalProperties", True)
            for key, x in v.items():
                if key in props:
                    hit = self.check(x, props[key], path + (key,))
                elif extra is False:
                    return path + (key,), "is not an allowed field"
                else:
                    hit = self.check(x, extra, path + (key,))
                if hit:
                    return hit
        elif isinstance(v, list):
            items = s.get("items", True)
            for i, x in enumerate(v):
                hit = self.check(x, items, path + (i,))
                if hit:
                    return hit
        return None


def first_problem(instance: Any, schema: Optional[dict] = None) -> Optional[str]:
    """The first way ``instance`` breaks ``schema`` (default: the shipped report schema), as
    ``"<where>: <what>"``, or None when it is valid. NaN and infinity are never valid."""
    if schema is None:
        schema = load_schema()
    hit = _Validator(schema).check(instance, schema, ())
    return None if hit is None else f"{_where(hit[0])}: {hit[1]}"
