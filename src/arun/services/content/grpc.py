"""The Content servicer, including the bidirectional Write stream.

Write follows containerd's protocol: the first message names the ref (and
may give the total and expected digest) and opens, or resumes, the ingest;
every message is answered with the writer's offset. ``STAT`` reports the
status; ``WRITE`` appends data, which must come at the current offset (an
offset of 0 on a non-empty ingest restarts it); ``COMMIT`` writes the last
data and commits with the given size, digest and labels. A digest that is
already present ends the stream with ALREADY_EXISTS and aborts the ingest.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.content.v1 import content_grpc, content_pb2
from arun.core.content import Info, Status
from arun.errdefs import (
    AlreadyExistsError,
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
)
from arun.services import convert
from arun.services.content.local import ContentLocal

log = logging.getLogger(__name__)

LIST_BATCH = 100


def info_to_pb(info: Info) -> content_pb2.Info:
    return content_pb2.Info(
        digest=info.digest,
        size=info.size,
        created_at=convert.timestamp(info.created_at),
        updated_at=convert.timestamp(info.updated_at),
        labels=info.labels,
    )


def status_to_pb(st: Status) -> content_pb2.Status:
    return content_pb2.Status(
        started_at=convert.timestamp(st.started_at),
        updated_at=convert.timestamp(st.updated_at),
        ref=st.ref,
        offset=st.offset,
        total=st.total,
        expected=st.expected,
    )


class ContentServicer(content_grpc.ContentBase):
    def __init__(self, local: ContentLocal) -> None:
        self.local = local

    async def Info(self, stream: Any) -> None:
        req = await stream.recv_message()
        info = await self.local.info(req.digest)
        await stream.send_message(content_pb2.InfoResponse(info=info_to_pb(info)))

    async def Update(self, stream: Any) -> None:
        req = await stream.recv_message()
        i = req.info
        info = Info(
            i.digest,
            i.size,
            convert.from_timestamp(i.created_at),
            convert.from_timestamp(i.updated_at),
            dict(i.labels),
        )
        updated = await self.local.update(info, *convert.field_paths(req))
        await stream.send_message(content_pb2.UpdateResponse(info=info_to_pb(updated)))

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        batch: list[content_pb2.Info] = []
        async for info in self.local.walk(*req.filters):
            batch.append(info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                await stream.send_message(content_pb2.ListContentResponse(info=batch))
                batch = []
        if batch:
            await stream.send_message(content_pb2.ListContentResponse(info=batch))

    async def Delete(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.delete(req.digest)
        await stream.send_message(empty_pb2.Empty())

    async def Read(self, stream: Any) -> None:
        req = await stream.recv_message()
        # local.read validates the digest before anything is sent.
        async for offset, data in self.local.read(req.digest, req.offset, req.size):
            await stream.send_message(content_pb2.ReadContentResponse(offset=offset, data=data))

    async def Status(self, stream: Any) -> None:
        req = await stream.recv_message()
        st = await self.local.status(req.ref)
        await stream.send_message(content_pb2.StatusResponse(status=status_to_pb(st)))

    async def ListStatuses(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list_statuses(*req.filters)
        await stream.send_message(content_pb2.ListStatusesResponse(statuses=[status_to_pb(s) for s in found]))

    async def Abort(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.abort(req.ref)
        await stream.send_message(empty_pb2.Empty())

    async def Write(self, stream: Any) -> None:
        req = await stream.recv_message()
        if req is None:
            return
        ref = req.ref
        if not ref:
            raise InvalidArgumentError("first message must have a reference")
        total = req.total
        expected = req.expected
        w = await self.local.writer(ref, total=total, expected=expected)
        try:
            while True:
                st = await w.status()
                resp = content_pb2.WriteContentResponse(action=req.action, offset=st.offset)
                if req.expected:
                    expected = req.expected
                    try:
                        await self.local.info(expected)
                    except NotFoundError:
                        pass
                    else:
                        await w.close()
                        try:
                            await self.local.abort(ref)
                        except NotFoundError:
                            pass
                        raise AlreadyExistsError(f"blob with expected digest {expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == content_pb2.STAT:
                    resp.digest = w.digest()
                    resp.started_at.CopyFrom(convert.timestamp(st.started_at))
                    resp.updated_at.CopyFrom(convert.timestamp(st.updated_at))
                    resp.total = total
                elif req.action in (content_pb2.WRITE, content_pb2.COMMIT):
                    if req.offset > 0 and req.offset != st.offset:
                        raise OutOfRangeError(f"write @{req.offset} must occur at current offset {st.offset}")
                    if req.offset == 0 and st.offset > 0:
                        await w.truncate(0)
                        resp.offset = 0
                    if req.data:
                        n = await w.write(req.data)
                        if n != len(req.data):
                            raise DataLossError(f"wrote {n} of {len(req.data)} bytes")
                        resp.offset += n
                    if req.action == content_pb2.COMMIT:
                        await w.commit(total, expected, labels=dict(req.labels) or None)
                    resp.digest = w.digest()
                else:
                    raise InvalidArgumentError(f"unknown write action {req.action}")
                await stream.send_message(resp)
                if req.action == content_pb2.COMMIT:
                    return
                req = await stream.recv_message()
                if req is None:
                    return
        finally:
            await w.close()
