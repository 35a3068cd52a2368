"""containerd's filter language: parse ``List`` filters and match objects against them.

A filter is a comma-separated list of selectors that must *all* match; a list of
filters (``parse_all``) matches when *any* of them does, which is how the
``filters`` repeated fields of containerd's List requests are read::

    selectors := selector ("," selector)*
    selector  := fieldpath [operator value]
    fieldpath := field ("." field)*
    field     := "quoted" | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | any run of printable characters without "," or space

Quoted strings use Go escape rules; a field may only be double-quoted, a
``~=`` value may also be quoted with ``/.../`` or ``|...|`` so regular
expressions need less escaping. A selector without an operator tests that the
field is present.

The matcher asks an *adaptor* for the value at a field path: a callable that
returns the string value or None when the field is absent. ``mapping_adaptor``
builds one from nested mappings (``{"id": ..., "labels": {...}}``), which covers
most stores.

Example::

    f = filters.parse_all(['labels."io.cri".role==web,id~=^nginx'])
    wanted = [c for c in containers if f.match(adaptor_for(c))]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from arun.errdefs import InvalidArgumentError

__all__ = [
    "ALWAYS",
    "Adaptor",
    "AllOf",
    "AnyOf",
    "Filter",
    "Operator",
    "Selector",
    "mapping_adaptor",
    "parse",
    "parse_all",
]

# Returns the value at a field path, or None when the object has no such field.
Adaptor = Callable[[Sequence[str]], str | None]


class Filter(Protocol):
    def match(self, adaptor: Adaptor) -> bool: ...


class Operator(Enum):
    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


@dataclass(frozen=True)
class Selector:
    fieldpath: tuple[str, ...]
    operator: Operator = Operator.PRESENT
    value: str = ""
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    def match(self, adaptor: Adaptor) -> bool:
        got = adaptor(self.fieldpath)
        if self.operator is Operator.PRESENT:
            return got is not None
        if self.operator is Operator.EQUAL:
            return got is not None and got == self.value
        if self.operator is Operator.NOT_EQUAL:
            # An absent field has the empty value, so it differs from any non-empty one.
            return (got or "") != self.value
        assert self.regex is not None
        return self.regex.search(got or "") is not None


@dataclass(frozen=True)
class AllOf:
    """Matches when every member matches (one filter string: selectors joined by ``,``)."""

    members: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return all(m.match(adaptor) for m in self.members)


@dataclass(frozen=True)
class AnyOf:
    """Matches when some member matches (several filter strings)."""

    members: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return any(m.match(adaptor) for m in self.members)


class _Always:
    def match(self, adaptor: Adaptor) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS: Filter = _Always()


def parse(text: str) -> Filter:
    """Parse one filter string; the empty string matches everything."""
    if text == "":
        return ALWAYS
    return _Parser(text).selectors()


def parse_all(texts: Iterable[str]) -> Filter:
    """Parse several filter strings into one filter matching when any of them does.

    No strings (or only empty ones, as an unset protobuf field gives) match everything.
    """
    parsed = [parse(t) for t in texts]
    if not parsed or any(p is ALWAYS for p in parsed):
        return ALWAYS
    return parsed[0] if len(parsed) == 1 else AnyOf(tuple(parsed))


def mapping_adaptor(obj: Mapping[str, object]) -> Adaptor:
    """An adaptor over nested mappings of strings.

    ``("labels", "a", "b")`` looks for key ``"a.b"`` in ``obj["labels"]`` first,
    as containerd does for label maps, so ``labels.io.kubernetes.pod==x``
    works without quoting. Non-string leaves (numbers, booleans) are compared
    by their ``str()``; a mapping reached at the end of the path is "present"
    with the empty value.
    """

    def lookup(path: Sequence[str]) -> str | None:
        cur: object = obj
        i = 0
        while i < len(path):
            if not isinstance(cur, Mapping):
                return None
            rest = ".".join(path[i:])
            if len(path) - i > 1 and rest in cur:
                cur = cur[rest]
                break
            if path[i] not in cur:
                return None
            cur = cur[path[i]]
            i += 1
        if cur is None:
            return None
        if isinstance(cur, Mapping):
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return lookup


# ---------------------------------------------------------------------------------------------
# Scanner and parser.

_EOF = ""
_QUOTES = '"/|'
_OPERATOR_CHARS = "=!~"
_SEPARATORS = ",."


class _Token(Enum):
    EOF = "end of input"
    QUOTED = "quoted"
    VALUE = "value"
    FIELD = "field"
    SEPARATOR = "separator"
    OPERATOR = "operator"
    ILLEGAL = "illegal"


def _is_field_char(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _is_value_char(c: str) -> bool:
    # Printable, non-space characters other than the selector separator.
    return c != "," and not c.isspace() and unicodedata.category(c)[0] in "LMNPS"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        # After an operator the next bare word is a value (which may contain '.', '=' ...).
        self.expect_value = False
        self.error = ""

    def peek(self) -> str:
        """The next non-space character, without consuming anything."""
        i = self.pos
        while i < len(self.text) and self.text[i].isspace():
            i += 1
        return self.text[i] if i < len(self.text) else _EOF

    def scan(self) -> tuple[int, _Token, str]:
        text = self.text
        while self.pos < len(text) and text[self.pos].isspace():
            self.pos += 1
        start = self.pos
        if start >= len(text):
            return start, _Token.EOF, ""
        c = text[start]
        self.pos += 1
        if c == "\x00":
            self.error = "unexpected null"
            return start, _Token.ILLEGAL, c
        if c in _QUOTES:
            ok = self._scan_quoted(c)
            self.expect_value = False
            return start, (_Token.QUOTED if ok else _Token.ILLEGAL), text[start : self.pos]
        if c in _SEPARATORS:
            self.expect_value = False
            return start, _Token.SEPARATOR, c
        if c in _OPERATOR_CHARS:
            while self.pos < len(text) and text[self.pos] in _OPERATOR_CHARS:
                self.pos += 1
            self.expect_value = True
            return start, _Token.OPERATOR, text[start : self.pos]
        if self.expect_value and _is_value_char(c):
            while self.pos < len(text) and _is_value_char(text[self.pos]):
                self.pos += 1
            self.expect_value = False
            return start, _Token.VALUE, text[start : self.pos]
        if _is_field_char(c):
            while self.pos < len(text) and _is_field_char(text[self.pos]):
                self.pos += 1
            return start, _Token.FIELD, text[start : self.pos]
        self.error = f"unexpected character {c!r}"
        return start, _Token.ILLEGAL, c

    def _scan_quoted(self, quote: str) -> bool:
        text = self.text
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                self.error = "quoted literal not terminated"
                return False
            c = text[self.pos]
            self.pos += 1
            if c == quote:
                return True
            if c == "\\":
                # Skip the escaped character; _unquote validates the sequence.
                if self.pos >= len(text):
                    self.error = "quoted literal not terminated"
                    return False
                self.pos += 1


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _unquote(quoted: str) -> str:
    """Decode a quoted token with Go string escapes; the quote character may be escaped."""
    if len(quoted) < 2 or quoted[-1] != quoted[0]:
        raise ValueError("quote syntax error")
    quote, body = quoted[0], quoted[1:-1]
    out: list[str] = []
    raw = bytearray()  # \x and octal escapes are bytes, joined as UTF-8 at the end

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            raise ValueError("unescaped quote inside literal")
        if c != "\\":
            flush()
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("quote syntax error")
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESCAPES:
            flush()
            out.append(_SIMPLE_ESCAPES[e])
        elif e in "'\"|/":
            if e != quote:
                raise ValueError(f"invalid escape \\{e}")
            flush()
            out.append(e)
        elif e in _HEX_ESCAPES:
            n = _HEX_ESCAPES[e]
            digits = body[i : i + n]
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError("illegal hex escape sequence")
            i += n
            v = int(digits, 16)
            if e == "x":
                raw.append(v)
            else:
                if v > 0x10FFFF:
                    raise ValueError("escape sequence is not a valid code point")
                flush()
                out.append(chr(v))
        elif e in "01234567":
            digits = e + body[i : i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise ValueError("illegal octal escape sequence")
            i += 2
            v = int(digits, 8)
            if v > 255:
                raise ValueError("octal escape value > 255")
            raw.append(v)
        else:
            raise ValueError(f"illegal escape sequence \\{e}")
    flush()
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = _Scanner(text)

    def error(self, pos: int, msg: str) -> InvalidArgumentError:
        t = self.text
        if pos < len(t):
            where = f"[{t[:pos]} >|{t[pos]}|< {t[pos + 1 :]}]"
        else:
            where = f"[{t}]"
        return InvalidArgumentError(f"filters: parse error: {where}: {msg}")

    def selectors(self) -> Filter:
        members: list[Filter] = [self.selector()]
        while True:
            pos, tok, text = self.scanner.scan()
            if tok is _Token.EOF:
                break
            if tok is _Token.SEPARATOR and text == ",":
                members.append(self.selector())
                continue
            raise self.error(pos, f"unexpected input: {text!r}")
        return members[0] if len(members) == 1 else AllOf(tuple(members))

    def selector(self) -> Selector:
        path = self.fieldpath()
        if self.scanner.peek() in (",", _EOF):
            return Selector(path)
        op = self.operator()
        pos, tok, text = self.scanner.scan()
        if tok in (_Token.VALUE, _Token.FIELD):
            value = text
        elif tok is _Token.QUOTED:
            if op is not Operator.MATCHES and text[0] != '"':
                raise self.error(pos, "invalid quote encountered")
            try:
                value = _unquote(text)
            except ValueError as e:
                raise self.error(pos, f"unquoting failed: {e}") from None
        elif tok is _Token.ILLEGAL:
            raise self.error(pos, self.scanner.error)
        else:
            raise self.error(pos, "expected value or quoted")
        regex = None
        if op is Operator.MATCHES:
            try:
                regex = re.compile(value)
            except re.error as e:
                raise self.error(pos, f"invalid regular expression {value!r}: {e}") from None
        return Selector(path, op, value, regex)

    def fieldpath(self) -> tuple[str, ...]:
        fields = [self.field()]
        while self.scanner.peek() == ".":
            self.scanner.scan()
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> str:
        pos, tok, text = self.scanner.scan()
        if tok is _Token.FIELD:
            return text
        if tok is _Token.QUOTED:
            if text[0] != '"':
                raise self.error(pos, "invalid quote encountered")
            try:
                return _unquote(text)
            except ValueError as e:
                raise self.error(pos, f"unquoting failed: {e}") from None
        if tok is _Token.ILLEGAL:
            raise self.error(pos, self.scanner.error)
        raise self.error(pos, "expected field or quoted")

    def operator(self) -> Operator:
        pos, tok, text = self.scanner.scan()
        if tok is _Token.OPERATOR:
            for op in (Operator.EQUAL, Operator.NOT_EQUAL, Operator.MATCHES):
                if text == op.value:
                    return op
            raise self.error(pos, f"unsupported operator {text!r}")
        if tok is _Token.ILLEGAL:
            raise self.error(pos, self.scanner.error)
        raise self.error(pos, 'expected an operator ("=="|"!="|"~=")')
