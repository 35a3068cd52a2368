"""The promises about arun.Client's public surface: typed, documented, no protobuf in sight.

Every class and function ``arun.client`` exports (and ``arun.Runtime``) has a
docstring, every public method and property too, every public signature is
fully annotated, and no annotation or dataclass field names a protobuf,
grpclib or generated type; records are dataclasses; the package ships ``py.typed``.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from pathlib import Path
from typing import Any

import arun
import arun.client

# Words that would mean a wire type leaked into the interface.
LEAK = re.compile(r"pb2|protobuf|grpclib|\bMessage\b|\bStream\b|arun\.api\b|_grpc\b")
# Transport is the documented message-level extension point (see arun.client's docstring).
EXTENSION_POINTS = {"Transport"}
RECORDS = {
    "ContainerInfo", "ContentInfo", "Descriptor", "Event", "ExitStatus", "ImageInfo", "ImageManifest",
    "Mount", "Namespace", "ProcessInfo", "PullProgress", "RuncOptions", "SnapshotInfo", "Version",
}  # fmt: skip


def _exports() -> dict[str, Any]:
    out = {name: getattr(arun.client, name) for name in arun.client.__all__}
    out["Runtime"] = arun.Runtime
    return {k: v for k, v in out.items() if k not in EXTENSION_POINTS}


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__aenter__", "__aexit__", "__aiter__", "__init__"):
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if inspect.isfunction(value):
            out.append((name, value))
    return out


def _annotations(fn: Any) -> list[str]:
    sig = inspect.signature(fn)
    texts = [str(p.annotation) for p in sig.parameters.values()]
    texts.append(str(sig.return_annotation))
    return texts


def test_exports_are_documented() -> None:
    missing = []
    for name, obj in _exports().items():
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            for mname, fn in _members(obj):
                if mname.startswith("__"):
                    continue
                if not (fn.__doc__ or "").strip():
                    missing.append(f"{name}.{mname}")
    assert not missing, f"no docstring: {missing}"


def test_signatures_are_annotated_and_free_of_wire_types() -> None:
    unannotated, leaks = [], []
    for name, obj in _exports().items():
        fns = [(name, obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            fns += [(f"{name}.{m}", f) for m, f in _members(obj)]
            if dataclasses.is_dataclass(obj):
                for f in dataclasses.fields(obj):
                    if LEAK.search(str(f.type)):
                        leaks.append(f"{name}.{f.name}: {f.type}")
        for qual, fn in fns:
            sig = inspect.signature(fn)
            for p in sig.parameters.values():
                if p.name in ("self", "cls"):
                    continue
                if p.annotation is inspect.Parameter.empty:
                    unannotated.append(f"{qual}({p.name})")
            if sig.return_annotation is inspect.Signature.empty and not qual.endswith("__init__"):
                unannotated.append(f"{qual} -> ?")
            leaks += [f"{qual}: {t}" for t in _annotations(fn) if LEAK.search(t)]
    assert not unannotated, f"missing annotations: {unannotated}"
    assert not leaks, f"wire types in the public surface: {leaks}"


def test_records_are_dataclasses() -> None:
    exports = _exports()
    assert RECORDS <= set(exports)
    assert all(dataclasses.is_dataclass(exports[n]) for n in RECORDS), [
        n for n in RECORDS if not dataclasses.is_dataclass(exports[n])
    ]


def test_package_is_marked_typed() -> None:
    root = Path(arun.__file__).parent
    assert (root / "py.typed").is_file()
    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    assert '"py.typed"' in pyproject.read_text()
