from __future__ import annotations

import pytest

from arun import leasectx, namespaces
from arun.core.images import Descriptor, Image
from arun.core.leases import LABEL_EXPIRE, Resource
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from arun.metadata.common import Hooks
from arun.metadata.db import Database
from arun.metadata.images import SqlImageStore
from arun.metadata.leases import SqlLeaseManager
from arun.testing.events import RecordingPublisher

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
INDEX = "application/vnd.oci.image.index.v1+json"


def image(name: str, digest: str = D1, **kw: object) -> Image:
    img = Image(name=name, target=Descriptor(INDEX, digest, 100))
    for k, v in kw.items():
        setattr(img, k, v)
    return img


@pytest.fixture
def store(db: Database, publisher: RecordingPublisher) -> SqlImageStore:
    return SqlImageStore(db, Hooks(publisher))


async def test_crud_and_events(store: SqlImageStore, ns: str, publisher: RecordingPublisher) -> None:
    created = await store.create(image("docker.io/library/busybox:latest", labels={"a": "1"}))
    assert await store.get("docker.io/library/busybox:latest") == created
    with pytest.raises(AlreadyExistsError):
        await store.create(image("docker.io/library/busybox:latest"))
    await store.delete("docker.io/library/busybox:latest")
    with pytest.raises(NotFoundError):
        await store.get("docker.io/library/busybox:latest")
    with pytest.raises(NotFoundError):
        await store.delete("docker.io/library/busybox:latest")
    assert publisher.topics() == ["/images/create", "/images/delete"]
    assert publisher.events[0].event.labels == {"a": "1"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "target",
    [
        Descriptor(INDEX, "sha256:abc", 100),
        Descriptor(INDEX, "md5:" + "1" * 32, 100),
        Descriptor(INDEX, "sha256:" + "G" * 64, 100),
        Descriptor(INDEX, D1, 0),
        Descriptor("", D1, 10),
    ],
)
async def test_invalid_target(store: SqlImageStore, ns: str, target: Descriptor) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.create(Image("img", target))
    assert await store.list() == []


async def test_empty_name(store: SqlImageStore, ns: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.create(image(""))


async def test_isolation(store: SqlImageStore) -> None:
    with namespaces.use("a"):
        await store.create(image("img"))
    with namespaces.use("b"):
        assert await store.list() == []
        with pytest.raises(NotFoundError):
            await store.delete("img")
    with namespaces.use("a"):
        assert [i.name for i in await store.list()] == ["img"]


async def test_list_filters(store: SqlImageStore, ns: str) -> None:
    await store.create(image("a", D1, labels={"k": "v"}))
    await store.create(image("b", D2, target=Descriptor("other", D2, 5, {"org.opencontainers.x": "y"})))

    async def names(*fs: str) -> list[str]:
        return [i.name for i in await store.list(*fs)]

    assert await names("name==a") == ["a"]
    assert await names(f"target.digest=={D2}") == ["b"]
    assert await names("target.mediatype==other") == ["b"]
    assert await names("labels.k==v") == ["a"]
    assert await names("annotations.org.opencontainers.x==y") == ["b"]
    assert await names("name~=^[ab]$") == ["a", "b"]
    with pytest.raises(InvalidArgumentError):
        await store.list("name===a")


async def test_update_field_paths(store: SqlImageStore, ns: str) -> None:
    await store.create(
        image("img", labels={"a": "1", "b": "2"}, target=Descriptor(INDEX, D1, 100, {"x": "1"}))
    )
    new = Image("img", Descriptor("m2", D2, 200, {"x": "9", "y": "8"}), labels={"a": "10"})
    got = await store.update(new, "labels.a", "labels.b", "annotations.y")
    assert got.labels == {"a": "10"}
    assert got.target == Descriptor(INDEX, D1, 100, {"x": "1", "y": "8"})
    got = await store.update(new, "target")
    assert got.target == Descriptor("m2", D2, 200, {"x": "9", "y": "8"})
    got = await store.update(Image("img", Descriptor("m2", D2, 200, {})), "annotations")
    assert got.target.annotations == {}
    with pytest.raises(InvalidArgumentError):
        await store.update(new, "name")
    with pytest.raises(InvalidArgumentError):
        await store.update(Image("img", Descriptor("m2", "bad", 200)), "target")
    full = await store.update(Image("img", Descriptor(INDEX, D1, 1), labels={"z": "z"}))
    assert (full.labels, full.target) == ({"z": "z"}, Descriptor(INDEX, D1, 1))
    assert await store.get("img") == full
    assert full.created_at is not None and full.updated_at is not None and full.updated_at >= full.created_at
    with pytest.raises(NotFoundError):
        await store.update(image("missing"))
    with pytest.raises(InvalidArgumentError):
        await store.update(image(""))


async def test_delete_with_target(store: SqlImageStore, ns: str) -> None:
    await store.create(image("img", D1))
    with pytest.raises(NotFoundError):
        await store.delete("img", target=Descriptor(INDEX, D2, 100))
    await store.get("img")
    await store.delete("img", target=Descriptor(INDEX, D1, 100))


async def test_expiring_image_joins_the_lease(db: Database, ns: str) -> None:
    hooks = Hooks()
    store = SqlImageStore(db, hooks)
    lm = SqlLeaseManager(db, hooks)
    await lm.create("l1")
    with leasectx.use("l1"):
        await store.create(image("plain"))
        await store.create(image("temp", labels={LABEL_EXPIRE: "2030-01-01T00:00:00Z"}))
        with pytest.raises(NotFoundError):
            with leasectx.use("no-such-lease"):
                await store.create(image("temp2", labels={LABEL_EXPIRE: "2030-01-01T00:00:00Z"}))
    assert await lm.list_resources("l1") == [Resource("temp", "images")]
    with leasectx.use("l1"):
        await store.delete("temp")
    assert await lm.list_resources("l1") == []
