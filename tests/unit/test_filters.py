from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arun import filters
from arun.errdefs import InvalidArgumentError

OBJECTS = [
    {"id": "nginx-1", "name": "web", "labels": {"role": "web", "io.k8s.pod": "a", "empty": ""}},
    {"id": "redis", "name": "cache", "labels": {"role": "db"}},
    {"id": "bare", "name": "", "labels": {}},
    {"id": "a.b", "name": "dotted", "labels": {"weird key": "x,y"}},
]


def ids(text: str | list[str]) -> list[str]:
    f = filters.parse_all([text] if isinstance(text, str) else text)
    return [str(o["id"]) for o in OBJECTS if f.match(filters.mapping_adaptor(o))]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", ["nginx-1", "redis", "bare", "a.b"]),
        ("id==redis", ["redis"]),
        ("id!=redis", ["nginx-1", "bare", "a.b"]),
        ("name", ["nginx-1", "redis", "bare", "a.b"]),  # present, even when empty
        ("labels.role", ["nginx-1", "redis"]),
        ("labels.empty", ["nginx-1"]),
        ("labels.role==web", ["nginx-1"]),
        ("labels.role!=web", ["redis", "bare", "a.b"]),  # absent counts as ""
        ("labels.io.k8s.pod==a", ["nginx-1"]),  # dotted label key without quoting
        ('labels."io.k8s.pod"==a', ["nginx-1"]),
        ('labels."weird key"=="x,y"', ["a.b"]),
        ("id~=^n", ["nginx-1"]),
        ("id~=/^(redis|bare)$/", ["redis", "bare"]),
        ("id~=|s$|", ["redis"]),
        ("id~=s", ["redis"]),  # search, not full match
        ("labels.role==web,name==web", ["nginx-1"]),  # AND
        ("labels.role==web,name==cache", []),
        ("  id == redis  ", ["redis"]),
        ("id==a.b", ["a.b"]),  # values may contain dots
        ('id=="a.b"', ["a.b"]),
        ("nosuch", []),
        ("nosuch!=x", ["nginx-1", "redis", "bare", "a.b"]),
        ("labels", ["nginx-1", "redis", "bare", "a.b"]),
        ('name=="\\x77eb"', ["nginx-1"]),
        ('name=="\\u0077eb"', ["nginx-1"]),
        ('name=="\\167eb"', ["nginx-1"]),
    ],
)
def test_match(text: str, want: list[str]) -> None:
    assert ids(text) == want


def test_several_filters_are_or() -> None:
    assert ids(["id==redis", "labels.role==web"]) == ["nginx-1", "redis"]
    assert ids([]) == ["nginx-1", "redis", "bare", "a.b"]
    assert ids(["id==nope", ""]) == ["nginx-1", "redis", "bare", "a.b"]


def test_parse_structure() -> None:
    f = filters.parse('labels."a.b"~=/x\\/y/,id')
    assert isinstance(f, filters.AllOf)
    first, second = f.members
    assert first == filters.Selector(("labels", "a.b"), filters.Operator.MATCHES, "x/y")
    assert second == filters.Selector(("id",))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("id==", "expected value or quoted"),
        ("id=", "unsupported operator '='"),
        ("id===x", "unsupported operator"),
        ("id<x", "unexpected character"),
        (",id", "expected field or quoted"),
        ("id,", "expected field or quoted"),
        ("id==a b", "unexpected input"),
        ("id==/x/", "invalid quote encountered"),  # /…/ only after ~=
        ("/id/==x", "invalid quote encountered"),
        ('id=="unterminated', "not terminated"),
        ('id=="bad \\q escape"', "illegal escape"),
        ("id~=/(unclosed/", "invalid regular expression"),
        ("labels.", "expected field or quoted"),
        ("id==x\x00", "unexpected input"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as ei:
        filters.parse_all([text])
    assert fragment in str(ei.value)
    assert str(ei.value).startswith("filters: parse error: [")


def test_error_points_at_the_offending_character() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[id >\|<\|< x\]"):
        filters.parse("id<x")


def test_mapping_adaptor_values() -> None:
    a = filters.mapping_adaptor({"n": 3, "b": True, "m": {"k": "v"}, "none": None})
    assert a(("n",)) == "3"
    assert a(("b",)) == "true"
    assert a(("m",)) == ""
    assert a(("m", "k")) == "v"
    assert a(("m", "k", "deeper")) is None
    assert a(("none",)) is None
    assert a(()) == ""


_field = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_value = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(key=_field, value=_value)
def test_quoted_equality_round_trips_any_value(key: str, value: str) -> None:
    escaped = (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in value)
    quoted = '"' + "".join(escaped) + '"'
    f = filters.parse(f"labels.{key}=={quoted}")
    assert f.match(filters.mapping_adaptor({"labels": {key: value}}))
    assert not f.match(filters.mapping_adaptor({"labels": {key: value + "x"}}))


@given(st.text(max_size=30))
def test_parser_never_crashes(text: str) -> None:
    try:
        filters.parse(text)
    except InvalidArgumentError:
        pass
