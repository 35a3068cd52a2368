"""Images the pull/push tests share."""

from __future__ import annotations

import random

from arun.testing import images as im


def rich_layers() -> list[im.Layer]:
    """Four layers, gzip/zstd/none/gzip, with replacements, whiteouts, an opaque directory,
    symlinks, a hard link, modes and owners."""
    rnd = random.Random(7)
    l0 = im.busybox_layer("gzip")
    l0.entries += [
        im.file("etc/os-release", "NAME=base\n"),
        im.dir_("usr"),
        im.dir_("usr/share"),
        im.dir_("usr/share/data"),
        im.file("usr/share/data/blob.bin", rnd.randbytes(300_000)),
        im.file("usr/share/data/notes.txt", "keep out\n"),
        im.dir_("opt"),
        im.dir_("opt/app"),
        im.file("opt/app/old.conf", "old=1\n"),
    ]
    l1 = im.Layer(
        [
            im.dir_("etc"),
            im.file("etc/os-release", "NAME=arun-test\nVERSION=2\n"),
            im.whiteout("etc/passwd"),
            im.symlink("etc/motd", "/etc/os-release"),
            im.dir_("opt"),
            im.dir_("opt/app"),
            im.file("opt/app/run.sh", "#!/bin/sh\necho hi\n", 0o755),
            im.hardlink("opt/app/run-again.sh", "opt/app/run.sh"),
        ],
        "zstd",
    )
    l2 = im.Layer(
        [
            im.dir_("opt"),
            im.opaque("opt/app"),
            im.dir_("opt/app"),
            im.file("opt/app/new.conf", "new=1\n"),
            im.dir_("usr"),
            im.dir_("usr/share"),
            im.whiteout("usr/share/data"),
        ],
        "none",
    )
    l3 = im.Layer(
        [
            im.dir_("home", 0o755),
            im.dir_("home/user", 0o700, uid=1000, gid=1000),
            im.file("home/user/secret", "s3cret\n", 0o600, uid=1000, gid=1000),
            im.file("home/user/empty", b""),
            im.file("bin/extra", rnd.randbytes(50_000), 0o755),
        ],
        "gzip",
    )
    return [l0, l1, l2, l3]


def two_platform_index(flavour: im.Flavour = "oci") -> tuple[im.BuiltIndex, im.BuiltImage, im.BuiltImage]:
    amd = im.build_image(rich_layers(), flavour=flavour)
    arm = im.build_image(
        [im.Layer([im.dir_("etc"), im.file("etc/arch", "arm64\n")], "gzip")],
        flavour=flavour,
        architecture="arm64",
        variant="v8",
    )
    return im.build_index([amd, arm], flavour=flavour), amd, arm
