from __future__ import annotations

import json

import pytest

from arun import platforms
from arun.errdefs import InvalidArgumentError, UnimplementedError
from arun.images import mediatypes as mt
from arun.images.manifest import (
    Descriptor,
    chain_ids,
    children_labels,
    descriptor_from_json,
    descriptor_to_json,
    parse_config,
    parse_index,
    parse_manifest,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def manifest(**kw: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20, "annotations": {"a": "b"}}],
    }
    doc.update(kw)
    return json.dumps(doc).encode()


def test_parse_manifest() -> None:
    m = parse_manifest(manifest(), mt.OCI_MANIFEST)
    assert m.config == Descriptor(mt.OCI_CONFIG, D1, 10)
    assert m.layers[0].annotations == {"a": "b"}
    assert [c.digest for c in m.children()] == [D1, D2]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>", "not valid JSON"),
        (b"[]", "must be an object"),
        (manifest(schemaVersion=3), "schemaVersion must be 2"),
        (manifest(mediaType=mt.DOCKER_MANIFEST), "does not match"),
        (manifest(manifests=[]), "is it an index"),
        (manifest(layers={}), "layers must be a list"),
        (manifest(config={"mediaType": "x", "digest": "sha256:abc", "size": 1}), "invalid digest"),
        (manifest(config={"mediaType": "x", "digest": D1, "size": -1}), "invalid size"),
        (manifest(config={"mediaType": "x", "digest": D1, "size": True}), "invalid size"),
        (manifest(config={"mediaType": 3, "digest": D1, "size": 1}), "mediaType must be a string"),
        (manifest(annotations={"a": 1}), "must be an object of strings"),
    ],
)
def test_parse_manifest_rejects(body: bytes, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_schema1_is_unimplemented() -> None:
    with pytest.raises(UnimplementedError):
        parse_manifest(json.dumps({"schemaVersion": 1}).encode())


def test_parse_index_and_select() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": D1,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": D2,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "386"},
                },
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": D3,
                    "size": 1,
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    idx = parse_index(body, mt.OCI_INDEX)
    m = platforms.only(platforms.Platform("linux", "amd64"))
    assert [d.digest for d in idx.select(m, limit=None)] == [D3, D2]
    assert [d.digest for d in idx.select(m)] == [D3]
    assert [d.digest for d in idx.select(platforms.ALL, limit=None)] == [D1, D2, D3]
    with pytest.raises(InvalidArgumentError, match="is it a manifest"):
        parse_index(manifest(manifests=[]))


def test_parse_config() -> None:
    cfg = parse_config(
        json.dumps(
            {
                "architecture": "arm",
                "os": "linux",
                "variant": "v7",
                "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
            }
        ).encode()
    )
    assert cfg.diff_ids == (D1, D2)
    assert platforms.Platform.of(cfg.platform) == platforms.Platform("linux", "arm", "v7")
    for bad in (
        {"rootfs": {"type": "nope", "diff_ids": []}},
        {},
        {"rootfs": {"type": "layers", "diff_ids": ["x"]}},
    ):
        with pytest.raises(InvalidArgumentError):
            parse_config(json.dumps(bad).encode())


def test_chain_ids() -> None:
    import hashlib

    c = chain_ids([D1, D2, D3])
    assert c[0] == D1
    assert c[1] == "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    assert c[2] == "sha256:" + hashlib.sha256(f"{c[1]} {D3}".encode()).hexdigest()
    assert chain_ids([]) == []


def test_children_labels() -> None:
    kids = [
        Descriptor(mt.OCI_CONFIG, D1, 1),
        Descriptor(mt.OCI_LAYER_GZIP, D2, 1),
        Descriptor(mt.DOCKER_LAYER_ZSTD, D3, 1),
        Descriptor(mt.OCI_MANIFEST, D1, 1),
        Descriptor(mt.OCI_INDEX, D2, 1),
    ]
    assert children_labels(kids) == {
        "containerd.io/gc.ref.content.config": D1,
        "containerd.io/gc.ref.content.l.0": D2,
        "containerd.io/gc.ref.content.l.1": D3,
        "containerd.io/gc.ref.content.m.0": D1,
        "containerd.io/gc.ref.content.0": D2,
    }


def test_descriptor_json_round_trip() -> None:
    obj = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": D1,
        "size": 5,
        "urls": ["https://x"],
        "annotations": {"k": "v"},
        "platform": {"architecture": "amd64", "os": "linux", "os.features": ["f"]},
    }
    d = descriptor_from_json(obj, "t")
    assert descriptor_to_json(d) == obj


def test_mediatypes() -> None:
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) is mt.Compression.ZSTD
    assert mt.layer_compression(mt.OCI_LAYER + "+encrypted") is None
    assert mt.is_layer(mt.OCI_LAYER_GZIP + "+encrypted")
    assert mt.is_layer(mt.DOCKER_FOREIGN_LAYER_GZIP)
    assert not mt.is_layer(mt.OCI_CONFIG)
    assert mt.is_non_distributable(mt.DOCKER_FOREIGN_LAYER_GZIP)
