"""Metadata maps and the default status hooks."""

from __future__ import annotations

from arun.ttrpc import MD, ClosedError, Code, OversizedMessageError, StatusError
from arun.ttrpc.metadata import current
from arun.ttrpc.status import default_from_status, default_to_status


def test_md_lower_cases_keys_and_keeps_value_lists() -> None:
    md = MD({"Containerd-Namespace-TTRPC": ["default"]})
    md.append("X-Multi", "a")
    md.append("x-multi", "b")
    assert md["containerd-namespace-ttrpc"] == ["default"]
    assert md["CONTAINERD-NAMESPACE-TTRPC"] == ["default"]
    assert "X-MULTI" in md and md.first("x-multi") == "a"
    assert list(md.pairs()) == [("containerd-namespace-ttrpc", "default"), ("x-multi", "a"), ("x-multi", "b")]
    md.set("x-multi", "c")
    assert md["x-multi"] == ["c"]
    md.delete("X-Multi")
    assert "x-multi" not in md and md.first("x-multi") is None and len(md) == 1


def test_md_from_wire_pairs_groups_repeats() -> None:
    md = MD.from_pairs([("k", "1"), ("K", "2"), ("j", "3")])
    assert dict(md) == {"k": ["1", "2"], "j": ["3"]}
    copy = md.copy()
    copy.append("k", "4")
    assert md["k"] == ["1", "2"]


def test_metadata_outside_a_request_is_empty() -> None:
    assert len(current()) == 0


def test_default_to_status() -> None:
    assert default_to_status(StatusError(Code.NOT_FOUND, "x")) == (5, "x")
    assert default_to_status(TimeoutError("t")) == (4, "t")
    assert default_to_status(FileNotFoundError("f")) == (5, "f")
    assert default_to_status(FileExistsError("f")) == (6, "f")
    assert default_to_status(PermissionError("p")) == (7, "p")
    assert default_to_status(NotImplementedError("n")) == (12, "n")
    assert default_to_status(OversizedMessageError(5, 4)) == (
        8,
        "message length 5 exceed maximum message size of 4",
    )
    assert default_to_status(ValueError("v")) == (2, "v")


def test_default_from_status() -> None:
    exc = default_from_status(9, "busy")
    assert isinstance(exc, StatusError) and (exc.code, exc.message) == (9, "busy")
    assert str(exc) == "ttrpc: code = 9 desc = busy"


def test_closed_error_text() -> None:
    assert str(ClosedError()) == "ttrpc: closed"


def test_codes_are_the_grpc_numbers() -> None:
    assert [c.value for c in Code] == list(range(17))
