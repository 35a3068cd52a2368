"""Logging for the daemon: request context on every record, text or JSON lines.

Modules log with ``logging.getLogger(__name__)`` and never configure anything;
``setup()`` is called once by the entry points (``arun.cmd``, the shim's main).
``ContextFilter`` copies the request context — namespace, request id, method,
plugin, container and sandbox id — from contextvars onto each record, so a line
logged deep inside a store still says which request it belongs to. ``bind()``
adds such fields for a block (the CRI handlers bind ``container_id``).

Text lines look like logrus's, which is what containerd prints::

    time="2024-05-01T10:00:00.123456Z" level=info msg="request done" method=/...Version ns=default

JSON lines carry the same fields as one object.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import IO, Any, Final

from arun import namespaces
from arun.errdefs import InvalidArgumentError
from arun.plugin.context import current_plugin

__all__ = [
    "FORMATS",
    "LEVELS",
    "ContextFilter",
    "JSONFormatter",
    "TextFormatter",
    "bind",
    "method",
    "parse_level",
    "request_id",
    "setup",
]

# Set by the request middlewares (gRPC and ttrpc), per request task.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
method: ContextVar[str | None] = ContextVar("method", default=None)
# Extra fields bound for a block with ``bind()``: container_id, sandbox_id, …
_fields: ContextVar[Mapping[str, object] | None] = ContextVar("log_fields", default=None)

LEVELS: Final[Mapping[str, int]] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
FORMATS: Final = ("text", "json")
_CHATTY = ("hpack", "h2", "aiosqlite", "asyncio")
# hpack logs every header it encodes or decodes at DEBUG: ~27 ``Logger.debug`` calls (each with
# an ``isEnabledFor`` call under it) per gRPC request, ~5 % of the daemon's CPU for a bare unary
# call. Below "trace" those lines are dropped anyway, so ``setup()`` gives these loggers a
# ``debug`` that drops them in C: ``"".format`` takes any arguments and ignores them.
_HPACK_LOGGERS = ("hpack.hpack", "hpack.table")
_DROP: Final = "".format

# Attributes every LogRecord has; anything else on a record is a field.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged in this block (and tasks created in it)."""
    token = _fields.set({**(_fields.get() or {}), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current request context onto each record (never overriding ``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        d = record.__dict__
        ns = namespaces.current()
        if ns and "namespace" not in d:
            d["namespace"] = ns
        for name, var in (("request_id", request_id), ("method", method), ("plugin", current_plugin)):
            value = var.get()
            if value is not None and name not in d:
                d[name] = value
        for name, bound in (_fields.get() or {}).items():
            d.setdefault(name, bound)
        return True


def _fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    t = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
    # What strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, at a fraction of its cost (every log line).
    date = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    return f"{date}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def _level_name(record: logging.LogRecord) -> str:
    name = record.levelname.lower()
    return {"warning": "warning", "critical": "fatal"}.get(name, name)


# Values made only of these print bare (``\w`` is str.isalnum() plus "_").
_BARE = re.compile(r"[\w\-./:@+]+")


def _quote(value: object) -> str:
    s = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(s):
        return s
    return json.dumps(s, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """logrus-style ``key=value`` lines; exceptions follow on their own lines."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"time={_quote(_timestamp(record))}",
            f"level={_level_name(record)}",
            f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}",
        ]
        parts.extend(f"{k}={_quote(v)}" for k, v in _fields_of(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, logger, the fields, and ``error`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "time": _timestamp(record),
            "level": _level_name(record),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        for k, v in _fields_of(record).items():
            obj[k] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
        if record.exc_info:
            obj["error"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def parse_level(level: str) -> int:
    """The logging level for containerd's level names (trace … panic); InvalidArgument otherwise."""
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown log level {level!r} (one of: {', '.join(sorted(set(LEVELS)))})"
        ) from None


def setup(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger to ``stream`` (stderr) at ``level`` in ``fmt``; returns the handler.

    Replaces handlers installed by an earlier call, so it may run again after
    the config is read.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown log format {fmt!r} (one of: {', '.join(FORMATS)})")
    lvl = parse_level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_arun", False):
            root.removeHandler(old)
    handler._arun = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(lvl)
    # Libraries' debug output (every HPACK header, every sqlite call) only at "trace".
    trace = level.lower() == "trace"
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if trace else max(lvl, logging.INFO))
    for name in _HPACK_LOGGERS:
        logger = logging.getLogger(name)
        if trace:
            logger.__dict__.pop("debug", None)
        else:
            logger.debug = _DROP  # type: ignore[method-assign,assignment]
    # grpclib logs every failed request at ERROR with a traceback; the middleware logs them once.
    logging.getLogger("grpclib").setLevel(logging.NOTSET if trace else max(lvl, logging.WARNING))
    return handler
