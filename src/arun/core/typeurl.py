"""A serialized value tagged with its type URL (protobuf's ``Any`` without the protobuf).

Core types carry opaque payloads (a container's OCI spec, runtime options,
extensions, event bodies) in this form so that nothing in ``core`` depends on
generated code; the gRPC adapters convert to and from ``google.protobuf.Any``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Any:
    type_url: str
    value: bytes = b""
