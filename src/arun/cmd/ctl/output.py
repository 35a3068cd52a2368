"""How the client commands print records: a table, JSON or YAML (``--output``).

Commands hand over a list of plain dicts and the columns of the table view;
JSON and YAML show every field of every record (timestamps as RFC 3339).
The YAML writer covers what the commands print — maps, lists, strings,
numbers, booleans and null — with strings double-quoted whenever plain style
could be misread.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["FORMATS", "Column", "ago", "emit", "to_yaml"]

FORMATS = ("table", "json", "yaml")


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    fmt: Callable[[Any], str] | None = None
    right: bool = False

    def cell(self, record: Mapping[str, Any]) -> str:
        value = record.get(self.key)
        if self.fmt is not None:
            return self.fmt(value)
        if value is None or value == "":
            return "-"
        if isinstance(value, Mapping):
            return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value) or "-"
        return str(value)


def ago(value: Any) -> str:
    """``3 minutes ago`` for an RFC 3339 string or datetime; ``-`` for nothing."""
    if not value:
        return "-"
    when = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(str(value))
    secs = (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = int(secs // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    n = max(0, int(secs))
    return f"{n} second{'s' if n != 1 else ''} ago"


def size(value: Any) -> str:
    if value is None:
        return "-"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_./@:+ -]*$")
_SPECIAL = {"", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"}


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    s = str(v)
    looks_numeric = re.fullmatch(
        r"[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?|0x[0-9a-fA-F]+|\.inf|\.nan", s
    )
    if (
        _PLAIN.match(s)
        and s.lower() not in _SPECIAL
        and not looks_numeric
        and not s.endswith((" ", ":"))
        and ": " not in s
        and " #" not in s
    ):
        return s
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(data: Any, indent: int = 0) -> str:
    """``data`` (JSON-shaped) as block-style YAML."""
    pad = " " * indent
    if isinstance(data, Mapping):
        if not data:
            return pad + "{}\n"
        out = []
        for k, v in data.items():
            key = _scalar(str(k))
            if isinstance(v, Mapping) and v:
                out.append(f"{pad}{key}:\n{to_yaml(v, indent + 2)}")
            elif isinstance(v, list | tuple) and v:
                out.append(f"{pad}{key}:\n{to_yaml(v, indent)}")
            elif isinstance(v, Mapping | list | tuple):
                out.append(f"{pad}{key}: {'{}' if isinstance(v, Mapping) else '[]'}\n")
            else:
                out.append(f"{pad}{key}: {_scalar(v)}\n")
        return "".join(out)
    if isinstance(data, list | tuple):
        if not data:
            return pad + "[]\n"
        out = []
        for item in data:
            if isinstance(item, Mapping | list | tuple) and item:
                body = to_yaml(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2 :]}")
            elif isinstance(item, Mapping):
                out.append(f"{pad}- {{}}\n")
            elif isinstance(item, list | tuple):
                out.append(f"{pad}- []\n")
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
        return "".join(out)
    return pad + _scalar(data) + "\n"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    right = right or set()

    def line(cells: Sequence[str]) -> str:
        return "   ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def emit(
    out: IO[str],
    fmt: str,
    records: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    columns: Sequence[Column] = (),
    *,
    quiet_key: str | None = None,
    quiet: bool = False,
) -> None:
    """Print ``records`` in ``fmt``; one record (a mapping) prints as an object, not a list."""
    if quiet and quiet_key:
        items = [records] if isinstance(records, Mapping) else records
        for r in items:
            out.write(f"{r.get(quiet_key, '')}\n")
        return
    if fmt == "json":
        out.write(json.dumps(_jsonable(records), indent=2, ensure_ascii=False) + "\n")
    elif fmt == "yaml":
        out.write(to_yaml(_jsonable(records)))
    else:
        items = [records] if isinstance(records, Mapping) else list(records)
        if not columns:
            keys: list[str] = []
            for r in items:
                keys += [k for k in r if k not in keys]
            columns = [Column(k.upper(), k) for k in keys]
        rows = [[c.cell(r) for c in columns] for r in items]
        out.write(
            render_table([c.header for c in columns], rows, {i for i, c in enumerate(columns) if c.right})
            + "\n"
        )
