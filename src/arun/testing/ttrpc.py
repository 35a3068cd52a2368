"""ttrpc test helpers: an in-memory client/server Connection pair and an Echo service.

The Echo service is built from a descriptor made at runtime (no generated code), so the
ttrpc tests need nothing beyond the envelope protos:

.. code-block:: proto

    package arun.testing.ttrpc;
    message EchoRequest  { string text = 1; int64 sleep_ms = 2; int32 count = 3; bytes blob = 4; }
    message EchoResponse { string text = 1; int32 index = 2; bytes blob = 3; }
    service Echo {
      rpc Unary(EchoRequest) returns (EchoResponse);
      rpc ServerStream(EchoRequest) returns (stream EchoResponse);
      rpc ClientStream(stream EchoRequest) returns (EchoResponse);
      rpc Bidi(stream EchoRequest) returns (stream EchoResponse);
    }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

from arun.ttrpc.connection import Connection, Role
from arun.ttrpc.events import Event

__all__ = [
    "ECHO_SERVICE",
    "ConnectionPair",
    "EchoRequest",
    "EchoResponse",
    "echo_descriptor",
]

ECHO_FILE = "arun/testing/ttrpc_echo.proto"
ECHO_SERVICE = "arun.testing.ttrpc.Echo"


def _build() -> tuple[ServiceDescriptor, Any, Any]:
    pool = descriptor_pool.Default()
    try:
        fd = pool.FindFileByName(ECHO_FILE)
    except KeyError:
        T = descriptor_pb2.FieldDescriptorProto
        f = descriptor_pb2.FileDescriptorProto(name=ECHO_FILE, package="arun.testing.ttrpc", syntax="proto3")
        req = f.message_type.add(name="EchoRequest")
        req.field.add(name="text", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
        req.field.add(name="sleep_ms", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
        req.field.add(name="count", number=3, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
        req.field.add(name="blob", number=4, type=T.TYPE_BYTES, label=T.LABEL_OPTIONAL)
        resp = f.message_type.add(name="EchoResponse")
        resp.field.add(name="text", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
        resp.field.add(name="index", number=2, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
        resp.field.add(name="blob", number=3, type=T.TYPE_BYTES, label=T.LABEL_OPTIONAL)
        svc = f.service.add(name="Echo")
        for name, cs, ss in (
            ("Unary", False, False),
            ("ServerStream", False, True),
            ("ClientStream", True, False),
            ("Bidi", True, True),
        ):
            svc.method.add(
                name=name,
                input_type=".arun.testing.ttrpc.EchoRequest",
                output_type=".arun.testing.ttrpc.EchoResponse",
                client_streaming=cs,
                server_streaming=ss,
            )
        pool.Add(f)
        fd = pool.FindFileByName(ECHO_FILE)
    return (
        fd.services_by_name["Echo"],
        message_factory.GetMessageClass(fd.message_types_by_name["EchoRequest"]),
        message_factory.GetMessageClass(fd.message_types_by_name["EchoResponse"]),
    )


echo_descriptor, EchoRequest, EchoResponse = _build()


class ConnectionPair:
    """A client and a server Connection wired in memory, h11-test style."""

    def __init__(self) -> None:
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)

    def to_server(self) -> list[Event]:
        """Deliver what the client has buffered; the server's events."""
        data = self.client.data_to_send()
        return self.server.receive_data(data) if data else []

    def to_client(self) -> list[Event]:
        """Deliver what the server has buffered; the client's events."""
        data = self.server.data_to_send()
        return self.client.receive_data(data) if data else []
