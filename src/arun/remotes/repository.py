"""One remote repository: resolve a tag, fetch manifests and blobs, upload blobs and
manifests — the distribution v2 API over the endpoints the hosts configuration gives.

* ``resolve()``: ``HEAD /v2/<name>/manifests/<tag-or-digest>`` on each endpoint with the
  *resolve* capability (by digest: *pull*, falling back to ``/blobs/`` on 404), reading
  ``Docker-Content-Digest``, ``Content-Type`` and ``Content-Length``; without the digest
  header the manifest is fetched and hashed. Manifests over ``max_manifest_size`` are refused.
* ``iter_blob(desc)``: the bytes of a manifest or blob as an async iterator of chunks. A
  connection that drops mid-body is resumed with ``Range: bytes=<offset>-`` (and when the
  server ignores the range, the bytes already seen are skipped). More bytes than
  ``desc.size`` or a body that ends short are errors; a read with no data for
  ``stall_timeout`` seconds is DeadlineExceededError. Digests are checked by whoever
  stores the bytes (the content writer's commit), or by ``fetch_bytes``.
* Uploads: ``blob_exists``, ``mount_blob`` (cross-repository ``?mount=&from=``),
  ``upload_blob`` (monolithic or chunked ``PATCH`` + ``PUT ?digest=``), ``put_manifest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from arun import errdefs, reference
from arun.images import mediatypes as mt
from arun.images.manifest import Descriptor, validate_digest
from arun.remotes.hosts import Capability, RegistryHost

if TYPE_CHECKING:
    from arun.remotes.client import RegistryClient

log = logging.getLogger(__name__)

__all__ = ["Repository"]

_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _media_type(resp: aiohttp.ClientResponse) -> str:
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip()


class Repository:
    """``client.repository("localhost:5000/app:v1")``."""

    def __init__(self, client: RegistryClient, ref: str) -> None:
        self.client = client
        self.spec = reference.parse_spec(ref)
        self.ref = str(self.spec)
        self.registry = self.spec.hostname
        self.name = self.spec.repository

    # -- helpers -------------------------------------------------------------------------------

    def _hosts(self, cap: Capability) -> list[RegistryHost]:
        hosts = [h for h in self.client.hosts(self.registry) if h.has(cap)]
        if not hosts:
            raise errdefs.NotFoundError(
                f"no {cap.name.lower() if cap.name else cap} hosts for {self.registry!r}"
            )
        return hosts

    def scopes(self, *, push: bool = False) -> list[str]:
        return [f"repository:{self.name}:{'pull,push' if push else 'pull'}"]

    @staticmethod
    def _path_for(desc: Descriptor, manifest: bool | None = None) -> tuple[str, str]:
        if manifest is not None:
            return ("manifests" if manifest else "blobs"), desc.digest
        if mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type):
            return "manifests", desc.digest
        return "blobs", desc.digest

    # -- resolve ---------------------------------------------------------------------------

    async def resolve(self) -> Descriptor:
        """The descriptor of the manifest or index this reference names."""
        tag, digest = self.spec.tag, self.spec.digest
        if digest:
            validate_digest(digest, self.ref)
            paths = [("manifests", digest), ("blobs", digest)]
            hosts = self._hosts(Capability.PULL)
        else:
            if not tag:
                raise errdefs.InvalidArgumentError(f"reference {self.ref!r} has neither tag nor digest")
            paths = [("manifests", tag)]
            hosts = self._hosts(Capability.RESOLVE)
        accept = {"Accept": mt.MANIFEST_ACCEPT}
        first_err: Exception | None = None
        priority = 0
        limit = self.client.options.max_manifest_size
        for kind, obj in paths:
            if priority > 2:
                break
            for i, host in enumerate(hosts):
                last = i == len(hosts) - 1
                try:
                    desc = await self._resolve_one(host, kind, obj, digest, accept, last)
                except errdefs.NotFoundError as exc:
                    if priority < 2:
                        first_err, priority = exc, 2
                    continue
                except (errdefs.UnavailableError, errdefs.UnauthenticatedError) as exc:
                    if priority < 1 or (priority < 3 and not isinstance(exc, errdefs.UnavailableError)):
                        first_err, priority = exc, 3 if isinstance(exc, errdefs.UnauthenticatedError) else 1
                    if last and len(hosts) == 1:
                        raise
                    continue
                except errdefs.ArunError as exc:
                    if priority < 3:
                        first_err, priority = exc, 3
                    continue
                if desc.size > limit:
                    if priority < 4:
                        first_err = errdefs.ResourceExhaustedError(
                            f"rejecting {desc.size} byte manifest for {self.ref!r}: larger than {limit} bytes"
                        )
                        priority = 4
                    continue
                return desc
        if first_err is None:
            first_err = errdefs.NotFoundError(f"{self.ref}: not found")
        raise first_err

    async def _resolve_one(
        self, host: RegistryHost, kind: str, obj: str, digest: str, accept: dict[str, str], last: bool
    ) -> Descriptor:
        what = f"resolve {self.ref!r} at {host.host}"
        async with self.client.request(
            host,
            "HEAD",
            self.name,
            kind,
            obj,
            registry=self.registry,
            scopes=self.scopes(),
            headers=accept,
            last_host=last,
        ) as resp:
            if resp.status == 404:
                raise errdefs.NotFoundError(f"{self.ref}: not found")
            if resp.status >= 300:
                raise await self.client.error(resp, what)
            size = resp.content_length if resp.content_length is not None else -1
            media_type = _media_type(resp)
            header_digest = resp.headers.get("Docker-Content-Digest", "")
        if not digest and header_digest and size >= 0:
            try:
                digest = validate_digest(header_digest, f"{what}: Docker-Content-Digest")
            except errdefs.InvalidArgumentError:
                raise errdefs.InvalidArgumentError(
                    f"{what}: {header_digest!r} in header not a valid digest"
                ) from None
        if digest and size >= 0:
            return Descriptor(media_type, digest, size)
        # No usable headers: GET the manifest and hash it (bounded by the manifest limit).
        limit = self.client.options.max_manifest_size
        async with self.client.request(
            host,
            "GET",
            self.name,
            kind,
            obj,
            registry=self.registry,
            scopes=self.scopes(),
            headers=accept,
            last_host=last,
        ) as resp:
            if resp.status >= 400:
                raise await self.client.error(resp, what)
            media_type = _media_type(resp)
            body = await resp.content.read(limit + 1)
        if media_type == mt.DOCKER_MANIFEST_V1:
            raise errdefs.UnimplementedError(f"{what}: Docker schema 1 manifests are not supported")
        if len(body) > limit:
            return Descriptor(media_type, digest or "sha256:" + "0" * 64, len(body) + 1)
        return Descriptor(media_type, digest or "sha256:" + hashlib.sha256(body).hexdigest(), len(body))

    # -- fetch -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open(
        self, desc: Descriptor, offset: int, manifest: bool | None = None
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int]]:
        """A response carrying ``desc`` from ``offset`` (or from 0 if the server ignored the
        range); yields it with the offset its body starts at. ``manifest`` forces the
        endpoint (``/manifests/`` or ``/blobs/``) instead of choosing by media type."""
        kind, obj = self._path_for(desc, manifest)
        headers = {"Accept": f"{desc.media_type}, */*" if desc.media_type else "*/*"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        hosts = self._hosts(Capability.PULL)
        first_err: Exception | None = None
        yielded = False
        for i, host in enumerate(hosts):
            last = i == len(hosts) - 1
            try:
                async with self.client.request(
                    host,
                    "GET",
                    self.name,
                    kind,
                    obj,
                    registry=self.registry,
                    scopes=self.scopes(),
                    headers=headers,
                    last_host=last,
                    stall=True,
                ) as resp:
                    if resp.status == 404:
                        first_err = first_err or errdefs.NotFoundError(
                            f"{desc.digest} not found in {self.registry}/{self.name}"
                        )
                        continue
                    if resp.status == 416 and offset > 0:
                        raise errdefs.OutOfRangeError(
                            f"{self.registry}/{self.name}: cannot resume {desc.digest} at {offset}: "
                            "range not satisfiable"
                        )
                    if resp.status >= 300:
                        err = await self.client.error(resp, f"fetch {desc.digest} from {host.host}")
                        if last:
                            raise err
                        first_err = first_err or err
                        continue
                    start = 0
                    if resp.status == 206:
                        m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
                        if m is None:
                            raise errdefs.InvalidArgumentError(
                                f"fetch {desc.digest}: invalid Content-Range "
                                f"{resp.headers.get('Content-Range')!r}"
                            )
                        start = int(m.group(1))
                        if start != offset:
                            raise errdefs.InvalidArgumentError(
                                f"fetch {desc.digest}: asked for bytes from {offset}, got from {start}"
                            )
                    total = (resp.content_length or 0) + start if resp.content_length is not None else None
                    if total is not None and desc.size >= 0 and total != desc.size:
                        raise errdefs.FailedPreconditionError(
                            f"fetch {desc.digest} from {host.host}: size mismatch: registry sends "
                            f"{total} bytes, descriptor says {desc.size}"
                        )
                    yielded = True
                    yield resp, start
                    return
            except errdefs.UnavailableError as exc:
                if last or yielded:
                    raise
                first_err = first_err or exc
        raise first_err or errdefs.NotFoundError(f"{desc.digest} not found in {self.registry}/{self.name}")

    async def iter_blob(
        self,
        desc: Descriptor,
        offset: int = 0,
        *,
        on_resume: Callable[[int, BaseException], None] | None = None,
        manifest: bool | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of ``desc`` from ``offset``, in chunks; resumes dropped connections."""
        pos = offset
        policy = self.client.options.retry
        chunk = self.client.options.chunk_size
        stall = self.client.options.stall_timeout
        resumes = 0
        while desc.size < 0 or pos < desc.size or (pos == 0 and desc.size == 0):
            # Errors thrown in by the consumer at a yield are not ours to retry.
            yielding = False
            try:
                async with self._open(desc, pos, manifest) as (resp, start):
                    skip = pos - start
                    async for data in resp.content.iter_chunked(chunk):
                        if skip:
                            if len(data) <= skip:
                                skip -= len(data)
                                continue
                            data = data[skip:]
                            skip = 0
                        if desc.size >= 0 and pos + len(data) > desc.size:
                            raise errdefs.FailedPreconditionError(
                                f"fetch {desc.digest}: more data than the {desc.size} bytes "
                                "the descriptor says"
                            )
                        pos += len(data)
                        yielding = True
                        yield data
                        yielding = False
                if desc.size < 0 or pos >= desc.size:
                    return
                # A clean end of body, short of the size: the server's Content-Length lied.
                raise errdefs.FailedPreconditionError(
                    f"fetch {desc.digest}: body ended at {pos} of {desc.size} bytes"
                )
            except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                if yielding:
                    raise
                raise errdefs.DeadlineExceededError(
                    f"fetch {desc.digest} from {self.registry}/{self.name}: no data received for {stall}s "
                    f"(stalled at {pos} of {desc.size} bytes)"
                ) from exc
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
                if yielding:
                    raise
                resumes += 1
                if resumes >= policy.max_attempts:
                    raise errdefs.UnavailableError(
                        f"fetch {desc.digest}: connection lost at {pos} of {desc.size} bytes "
                        f"after {resumes} attempts: {exc}"
                    ) from exc
                log.debug("fetch %s interrupted at %d: %s; resuming", desc.digest, pos, exc)
                if on_resume is not None:
                    on_resume(pos, exc)
                await asyncio.sleep(policy.delay(resumes))
            if desc.size == 0:
                return

    async def fetch_bytes(
        self, desc: Descriptor, *, limit: int | None = None, manifest: bool | None = None
    ) -> bytes:
        """The whole of a small blob (a manifest, a config), size and digest verified."""
        cap = limit if limit is not None else self.client.options.max_manifest_size
        if desc.size > cap:
            raise errdefs.ResourceExhaustedError(
                f"{desc.digest}: {desc.size} bytes is larger than the limit of {cap} bytes"
            )
        parts: list[bytes] = []
        async with contextlib.aclosing(self.iter_blob(desc, manifest=manifest)) as it:
            async for data in it:
                parts.append(data)
        body = b"".join(parts)
        verify(desc, body)
        return body

    # -- push -------------------------------------------------------------------------------

    def _push_host(self) -> RegistryHost:
        return self._hosts(Capability.PUSH)[0]

    async def blob_exists(self, desc: Descriptor) -> bool:
        host = self._push_host()
        kind, obj = self._path_for(desc)
        headers = {"Accept": f"{desc.media_type}, */*"} if kind == "manifests" else {}
        async with self.client.request(
            host,
            "HEAD",
            self.name,
            kind,
            obj,
            registry=self.registry,
            scopes=self.scopes(push=True),
            headers=headers,
        ) as resp:
            if resp.status == 404:
                return False
            if resp.status >= 300:
                raise await self.client.error(resp, f"check {desc.digest} in {self.registry}/{self.name}")
            return True

    async def _start_upload(self, params: list[tuple[str, str]], scopes: list[str]) -> tuple[int, str]:
        host = self._push_host()
        async with self.client.request(
            host,
            "POST",
            self.name,
            "blobs",
            "uploads/",
            registry=self.registry,
            scopes=scopes,
            params=params,
        ) as resp:
            if resp.status not in (201, 202):
                raise await self.client.error(resp, f"start upload to {self.registry}/{self.name}")
            return resp.status, self._location(host, resp)

    def _location(self, host: RegistryHost, resp: aiohttp.ClientResponse) -> str:
        loc = resp.headers.get("Location", "")
        if not loc:
            raise errdefs.InvalidArgumentError(
                f"{self.registry}/{self.name}: upload response without Location"
            )
        return str(resp.url.join(URL(loc)))

    async def mount_blob(self, desc: Descriptor, from_repo: str) -> bool:
        """Cross-repository mount from ``from_repo`` (same registry); True if mounted."""
        scopes = [*self.scopes(push=True), f"repository:{from_repo}:pull"]
        status, location = await self._start_upload([("mount", desc.digest), ("from", from_repo)], scopes)
        if status == 201:
            return True
        # The registry started a normal upload instead; cancel it, the caller uploads.
        await self._cancel_upload(location)
        return False

    async def _cancel_upload(self, location: str) -> None:
        host = self._push_host()
        with contextlib.suppress(errdefs.ArunError):
            async with self.client.request(
                host,
                "DELETE",
                self.name,
                registry=self.registry,
                scopes=self.scopes(push=True),
                url=location,
            ):
                pass

    async def upload_blob(
        self,
        desc: Descriptor,
        read_chunks: Callable[[], AsyncIterator[bytes]],
        *,
        chunk_size: int | None = None,
        on_progress: Callable[[int], Awaitable[None] | None] | None = None,
    ) -> None:
        """Upload ``desc``'s bytes (``read_chunks()`` yields them from the start).

        ``chunk_size`` None: one monolithic ``PUT``. Otherwise ``PATCH`` requests of up to
        ``chunk_size`` bytes each with ``Content-Range``, then ``PUT ?digest=``.
        """
        host = self._push_host()
        scopes = self.scopes(push=True)
        _, location = await self._start_upload([], scopes)
        sent = 0
        if chunk_size is None:
            buf = bytearray()
            async for part in read_chunks():
                buf += part
            body = bytes(buf)
            async with self.client.request(
                host,
                "PUT",
                self.name,
                registry=self.registry,
                scopes=scopes,
                url=location,
                params=[("digest", desc.digest)],
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                if resp.status != 201:
                    raise await self.client.error(
                        resp, f"upload {desc.digest} to {self.registry}/{self.name}"
                    )
            if on_progress is not None:
                r = on_progress(len(body))
                if r is not None:
                    await r
            return
        pending = bytearray()

        async def send(piece: bytes) -> str:
            nonlocal sent
            async with self.client.request(
                host,
                "PATCH",
                self.name,
                registry=self.registry,
                scopes=scopes,
                url=location,
                data=piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{sent}-{sent + len(piece) - 1}",
                },
            ) as resp:
                if resp.status != 202:
                    raise await self.client.error(resp, f"upload chunk of {desc.digest} at {sent}")
                nxt = self._location(host, resp)
            sent += len(piece)
            if on_progress is not None:
                r = on_progress(sent)
                if r is not None:
                    await r
            return nxt

        async for part in read_chunks():
            pending += part
            while len(pending) >= chunk_size:
                location = await send(bytes(pending[:chunk_size]))
                del pending[:chunk_size]
        if pending:
            location = await send(bytes(pending))
        async with self.client.request(
            host,
            "PUT",
            self.name,
            registry=self.registry,
            scopes=scopes,
            url=location,
            params=[("digest", desc.digest)],
        ) as resp:
            if resp.status != 201:
                raise await self.client.error(
                    resp, f"complete upload of {desc.digest} to {self.registry}/{self.name}"
                )

    async def put_manifest(self, reference_: str, desc: Descriptor, body: bytes) -> str:
        """PUT a manifest or index under a tag or digest; returns the digest the registry reports."""
        host = self._push_host()
        async with self.client.request(
            host,
            "PUT",
            self.name,
            "manifests",
            reference_,
            registry=self.registry,
            scopes=self.scopes(push=True),
            data=body,
            headers={"Content-Type": desc.media_type},
        ) as resp:
            if resp.status not in (200, 201):
                raise await self.client.error(
                    resp, f"put manifest {reference_} to {self.registry}/{self.name}"
                )
            got = resp.headers.get("Docker-Content-Digest", desc.digest)
        if got != desc.digest:
            raise errdefs.FailedPreconditionError(
                f"registry stored manifest {reference_} as {got}, expected {desc.digest}"
            )
        return got


def verify(desc: Descriptor, body: bytes) -> None:
    """Size and digest of ``body`` against ``desc`` (FailedPreconditionError on mismatch)."""
    if len(body) != desc.size:
        raise errdefs.FailedPreconditionError(
            f"{desc.digest}: size mismatch: got {len(body)} bytes, expected {desc.size}"
        )
    alg, _, _ = desc.digest.partition(":")
    try:
        h = hashlib.new(alg, body)
    except ValueError:
        raise errdefs.InvalidArgumentError(f"unsupported digest algorithm in {desc.digest!r}") from None
    got = f"{alg}:{h.hexdigest()}"
    if got != desc.digest:
        raise errdefs.FailedPreconditionError(f"digest mismatch: expected {desc.digest}, got {got}")


async def collect(chunks: AsyncIterable[bytes]) -> bytes:
    return b"".join([c async for c in chunks])
