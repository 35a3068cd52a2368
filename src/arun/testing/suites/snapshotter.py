"""Contract suite for ``arun.core.snapshots.Snapshotter`` implementations.

Each check is an async function taking a ``SuiteContext``: a fresh, empty
snapshotter, a scratch directory, and a way to *mount* a list of mount specs
(a real ``temp_mount`` for root tests; ``direct_binds`` for snapshotters whose
mounts are all binds, so that they run without root). ``CHECKS`` hold for
every snapshotter; ``MOUNT_CHECKS`` need real mounts (read-only enforcement,
128 layers), so tests run them only with a real mounter::

    @pytest.mark.parametrize("check", snapshotter.CHECKS.values(), ids=list(snapshotter.CHECKS))
    async def test_native(check, tmp_path):
        ctx = SuiteContext(await NativeSnapshotter.create(tmp_path / "root"), tmp_path / "work", direct_binds)
        try:
            await check(ctx)
        finally:
            await ctx.snapshotter.close()

The checks follow containerd's ``snapshots/testsuite`` in substance.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from arun.core.mount import Mount
from arun.core.snapshots import Info, Kind, Snapshotter, Usage
from arun.errdefs import (
    AlreadyExistsError,
    ArunError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

__all__ = ["CHECKS", "MOUNT_CHECKS", "SuiteContext", "direct_binds", "snapshot_tree"]

MountFn = Callable[[Sequence[Mount]], AbstractAsyncContextManager[str]]


@dataclass
class SuiteContext:
    snapshotter: Snapshotter
    work: Path
    mount: MountFn
    # Opens a second snapshotter on the same root (a restart); None if not supported.
    reopen: Callable[[], Awaitable[Snapshotter]] | None = None
    # Set by checks that need the snapshotter's root directory (for cleanup checks).
    root: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def direct_binds(mounts: Sequence[Mount]) -> AsyncIterator[str]:
    """A stand-in for mounting when every mount is one bind: yield its source directory.

    It cannot enforce ``ro``; checks that depend on that are in MOUNT_CHECKS.
    """
    if len(mounts) != 1 or mounts[0].type != "bind":
        raise AssertionError(f"direct_binds can only stand in for a single bind mount, got {mounts}")
    yield mounts[0].source


Check = Callable[[SuiteContext], Awaitable[None]]
CHECKS: dict[str, Check] = {}
MOUNT_CHECKS: dict[str, Check] = {}


def _check(fn: Check) -> Check:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def _mount_check(fn: Check) -> Check:
    MOUNT_CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


async def _expect(exc: type[ArunError], aw: Awaitable[object]) -> ArunError:
    try:
        await aw
    except exc as e:
        return e
    except ArunError as e:
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc.__name__}, got success")


# ----------------------------------------------------------------- tree helpers


def snapshot_tree(root: str) -> dict[str, tuple[str, int, str]]:
    """``{relpath: (type, mode bits, content-or-link-target)}`` of a tree (root itself excluded)."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, "")
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", mode, f.read().decode(errors="replace"))
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[rel] = ("whiteout", 0, "")
            else:
                out[rel] = ("other", mode, oct(stat.S_IFMT(st.st_mode)))
    return out


def _move(src: str, dst: str) -> None:
    """rename, or copy and delete as mv(1) does when overlayfs answers EXDEV (no redirect_dir)."""
    import shutil

    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copytree(src, dst, symlinks=True)
        shutil.rmtree(src)


def _write(root: str, rel: str, content: str, mode: int = 0o644) -> None:
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(content)
    os.chmod(p, mode)


async def _layer(
    ctx: SuiteContext,
    name: str,
    parent: str,
    change: Callable[[str], None],
    *,
    labels: dict[str, str] | None = None,
) -> None:
    """Prepare on ``parent``, apply ``change`` to the mounted tree, commit as ``name``."""
    key = f"{name}-active"
    mounts = await ctx.snapshotter.prepare(key, parent)
    async with ctx.mount(mounts) as d:
        change(d)
    await ctx.snapshotter.commit(name, key, labels=labels)


async def _view_tree(
    ctx: SuiteContext, parent: str, key: str | None = None
) -> dict[str, tuple[str, int, str]]:
    key = key or f"view-of-{parent}"
    mounts = await ctx.snapshotter.view(key, parent)
    try:
        async with ctx.mount(mounts) as d:
            return snapshot_tree(d)
    finally:
        await ctx.snapshotter.remove(key)


async def _keys(ctx: SuiteContext) -> dict[str, Info]:
    return {i.name: i async for i in ctx.snapshotter.walk()}


# ----------------------------------------------------------------- checks


@_check
async def check_basic(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    mounts = await sn.prepare("prepare-1")
    assert mounts, "prepare returned no mounts"
    async with ctx.mount(mounts) as d:
        _write(d, "foo", "foo\n")
        _write(d, "a/b", "b\n", 0o600)
        os.symlink("../foo", os.path.join(d, "a", "link"))
    await sn.commit("committed-1", "prepare-1", labels={"l": "1"})
    info = await sn.stat("committed-1")
    assert (info.name, info.kind, info.parent, info.labels) == ("committed-1", Kind.COMMITTED, "", {"l": "1"})
    await _expect(NotFoundError, sn.stat("prepare-1"))

    mounts = await sn.prepare("prepare-2", "committed-1")
    async with ctx.mount(mounts) as d:
        assert snapshot_tree(d)["foo"] == ("file", 0o644, "foo\n")
        _write(d, "bar", "bar\n")
        os.remove(os.path.join(d, "foo"))
    await sn.commit("committed-2", "prepare-2")
    info = await sn.stat("committed-2")
    assert (info.kind, info.parent) == (Kind.COMMITTED, "committed-1")

    tree = await _view_tree(ctx, "committed-2")
    assert tree == {
        "a": ("dir", 0o755, ""),
        "a/b": ("file", 0o600, "b\n"),
        "a/link": ("symlink", 0, "../foo"),
        "bar": ("file", 0o644, "bar\n"),
    }, tree
    # The parent is unchanged.
    assert "foo" in await _view_tree(ctx, "committed-1")
    assert set(await _keys(ctx)) == {"committed-1", "committed-2"}


@_check
async def check_stat_active_and_view(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await sn.prepare("active-1", labels={"a": "b"})
    info = await sn.stat("active-1")
    assert (info.name, info.kind, info.parent, info.labels) == ("active-1", Kind.ACTIVE, "", {"a": "b"})
    assert info.created is not None and info.updated is not None
    await _layer(ctx, "base", "", lambda d: _write(d, "x", "x"))
    await sn.view("view-1", "base")
    info = await sn.stat("view-1")
    assert (info.kind, info.parent) == (Kind.VIEW, "base")
    await _expect(NotFoundError, sn.stat("nope"))


@_check
async def check_transitivity(ctx: SuiteContext) -> None:
    await _layer(ctx, "l1", "", lambda d: _write(d, "foo", "from l1"))
    await _layer(ctx, "l2", "l1", lambda d: _write(d, "foo", "from l2"))
    await _layer(ctx, "l3", "l2", lambda d: _write(d, "bar", "from l3"))
    tree = await _view_tree(ctx, "l3")
    assert tree["foo"][2] == "from l2" and tree["bar"][2] == "from l3"
    assert (await _view_tree(ctx, "l1"))["foo"][2] == "from l1"


@_check
async def check_create_errors(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await sn.prepare("dup")
    await _expect(AlreadyExistsError, sn.prepare("dup"))
    await _expect(AlreadyExistsError, sn.view("dup"))
    await _expect(NotFoundError, sn.prepare("child", "missing-parent"))
    await _expect(InvalidArgumentError, sn.prepare("child", "dup"))  # parent not committed
    await _expect(InvalidArgumentError, sn.view("child", "dup"))
    await _expect(InvalidArgumentError, sn.prepare(""))
    # Nothing half-created.
    assert set(await _keys(ctx)) == {"dup"}


@_check
async def check_commit_errors(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "base", "", lambda d: _write(d, "f", "1"))
    await sn.prepare("act", "base")
    await _expect(AlreadyExistsError, sn.commit("base", "act"))
    await _expect(NotFoundError, sn.commit("x", "missing"))
    await _expect(FailedPreconditionError, sn.commit("x", "base"))  # already committed
    await sn.view("v", "base")
    await _expect(FailedPreconditionError, sn.commit("x", "v"))  # views cannot be committed
    await _expect(FailedPreconditionError, sn.mounts("base"))  # committed snapshots have no mounts
    assert set(await _keys(ctx)) == {"base", "act", "v"}
    await sn.commit("ok", "act")
    assert (await sn.stat("ok")).parent == "base"


def _own(labels: dict[str, str]) -> dict[str, str]:
    """Labels without the ones a snapshotter adds itself (``containerd.io/snapshot/…``)."""
    return {k: v for k, v in labels.items() if not k.startswith("containerd.io/snapshot/")}


@_check
async def check_update(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await sn.prepare("u", labels={"keep": "1", "drop": "2"})
    before = await sn.stat("u")
    info = Info("u", Kind.ACTIVE, labels={"drop": "", "new": "3"})
    got = await sn.update(info, ["labels.drop", "labels.new"])
    assert _own(got.labels) == {"keep": "1", "new": "3"}
    assert got.updated is not None and before.updated is not None and got.updated >= before.updated
    got = await sn.update(Info("u", Kind.ACTIVE, labels={"only": "x"}))
    assert {k: v for k, v in got.labels.items() if not k.startswith("containerd.io/snapshot/")} == {
        "only": "x"
    }
    got = await sn.update(Info("u", Kind.ACTIVE, labels={}), ["labels"])
    assert _own(got.labels) == {}
    await _expect(InvalidArgumentError, sn.update(Info("u", Kind.COMMITTED, parent="x"), ["parent"]))
    await _expect(InvalidArgumentError, sn.update(Info("u", Kind.COMMITTED), ["kind"]))
    await _expect(NotFoundError, sn.update(Info("missing", Kind.ACTIVE)))
    # Update never changes kind or parent.
    info2 = await sn.stat("u")
    assert (info2.kind, info2.parent) == (Kind.ACTIVE, "")


@_check
async def check_remove(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "p", "", lambda d: _write(d, "f", "1"))
    await sn.prepare("c", "p")
    await _expect(FailedPreconditionError, sn.remove("p"))
    assert "p" in await _keys(ctx)
    await sn.remove("c")
    await sn.remove("p")
    await _expect(NotFoundError, sn.remove("p"))
    await _expect(NotFoundError, sn.stat("p"))
    assert await _keys(ctx) == {}


@_check
async def check_remove_intermediate(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "base", "", lambda d: _write(d, "a", "a"))
    await _layer(ctx, "mid", "base", lambda d: _write(d, "b", "b"))
    await _layer(ctx, "top", "mid", lambda d: _write(d, "c", "c"))
    await _expect(FailedPreconditionError, sn.remove("mid"))
    await _expect(FailedPreconditionError, sn.remove("base"))
    for k in ("top", "mid", "base"):
        await sn.remove(k)
    assert await _keys(ctx) == {}


@_check
async def check_walk(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "w1", "", lambda d: None, labels={"type": "base"})
    await sn.prepare("w2", "w1")
    await sn.view("w3", "w1")
    infos = await _keys(ctx)
    assert {k: (i.kind, i.parent) for k, i in infos.items()} == {
        "w1": (Kind.COMMITTED, ""),
        "w2": (Kind.ACTIVE, "w1"),
        "w3": (Kind.VIEW, "w1"),
    }
    assert infos["w1"].labels.get("type") == "base"


@_check
async def check_layer_file_update(ctx: SuiteContext) -> None:
    await _layer(ctx, "l1", "", lambda d: _write(d, "etc/conf", "v1"))
    await _layer(ctx, "l2", "l1", lambda d: _write(d, "etc/conf", "v2-longer"))
    await _layer(ctx, "l3", "l2", lambda d: _write(d, "etc/conf", "3"))
    assert (await _view_tree(ctx, "l1"))["etc/conf"][2] == "v1"
    assert (await _view_tree(ctx, "l2"))["etc/conf"][2] == "v2-longer"
    assert (await _view_tree(ctx, "l3"))["etc/conf"][2] == "3"


@_check
async def check_remove_directory_in_lower_layer(ctx: SuiteContext) -> None:
    def base(d: str) -> None:
        _write(d, "lib/a", "a")
        _write(d, "lib/sub/b", "b")

    def rm(d: str) -> None:
        import shutil

        shutil.rmtree(os.path.join(d, "lib"))

    await _layer(ctx, "base", "", base)
    await _layer(ctx, "rm", "base", rm)
    await _layer(ctx, "re", "rm", lambda d: _write(d, "lib/c", "c"))
    assert not any(k.startswith("lib") for k in await _view_tree(ctx, "rm"))
    tree = await _view_tree(ctx, "re")
    assert {k for k in tree if k.startswith("lib")} == {"lib", "lib/c"}, tree


@_check
async def check_deleted_files_in_child(ctx: SuiteContext) -> None:
    def base(d: str) -> None:
        for i in range(3):
            _write(d, f"f{i}", str(i))

    await _layer(ctx, "base", "", base)
    await _layer(ctx, "del", "base", lambda d: os.remove(os.path.join(d, "f1")))
    assert set(await _view_tree(ctx, "del")) == {"f0", "f2"}
    assert set(await _view_tree(ctx, "base")) == {"f0", "f1", "f2"}


@_check
async def check_rename(ctx: SuiteContext) -> None:
    def base(d: str) -> None:
        _write(d, "dir1/f", "content")
        _write(d, "file1", "one")

    def ren(d: str) -> None:
        _move(os.path.join(d, "dir1"), os.path.join(d, "dir2"))
        _move(os.path.join(d, "file1"), os.path.join(d, "file2"))

    await _layer(ctx, "base", "", base)
    await _layer(ctx, "ren", "base", ren)
    tree = await _view_tree(ctx, "ren")
    assert set(tree) == {"dir2", "dir2/f", "file2"}, tree
    assert tree["dir2/f"][2] == "content" and tree["file2"][2] == "one"


@_check
async def check_directory_permission_on_commit(ctx: SuiteContext) -> None:
    def base(d: str) -> None:
        os.mkdir(os.path.join(d, "private"), 0o700)
        os.chmod(os.path.join(d, "private"), 0o700)
        os.mkdir(os.path.join(d, "sticky"))
        os.chmod(os.path.join(d, "sticky"), 0o1777)

    await _layer(ctx, "perm", "", base)
    await _layer(ctx, "perm2", "perm", lambda d: _write(d, "private/x", "x"))
    tree = await _view_tree(ctx, "perm2")
    assert tree["private"][1] == 0o700
    mounts = await ctx.snapshotter.view("perm-check", "perm")
    async with ctx.mount(mounts) as d:
        assert stat.S_IMODE(os.lstat(os.path.join(d, "sticky")).st_mode) == 0o1777


@_check
async def check_move_file_from_lower_layer(ctx: SuiteContext) -> None:
    def base(d: str) -> None:
        _write(d, "a/f", "f")
        _write(d, "b/keep", "k")

    await _layer(ctx, "base", "", base)
    await _layer(ctx, "mv", "base", lambda d: _move(os.path.join(d, "a/f"), os.path.join(d, "b/f")))
    tree = await _view_tree(ctx, "mv")
    assert "a/f" not in tree and tree["b/f"][2] == "f", tree


@_check
async def check_usage(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    mounts = await sn.prepare("use")
    empty = await sn.usage("use")
    async with ctx.mount(mounts) as d:
        with open(os.path.join(d, "big"), "wb") as f:
            f.write(os.urandom(1 << 20))
        os.link(os.path.join(d, "big"), os.path.join(d, "big-link"))
    grown = await sn.usage("use")
    assert grown.inodes == empty.inodes + 1, (empty, grown)  # the hard link is one inode
    assert grown.size >= empty.size + (1 << 20), (empty, grown)
    await sn.commit("used", "use")
    assert await sn.usage("used") == grown
    await _expect(NotFoundError, sn.usage("nope"))
    assert isinstance(grown, Usage)


@_check
async def check_view_does_not_see_later_changes(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "base", "", lambda d: _write(d, "f", "base"))
    await sn.prepare("child", "base")
    mounts = await sn.view("v", "base")
    async with ctx.mount(await sn.mounts("child")) as d:
        _write(d, "f", "changed in child")
    async with ctx.mount(mounts) as d:
        assert snapshot_tree(d)["f"][2] == "base"
    assert await sn.mounts("v") == mounts


@_check
async def check_reopen(ctx: SuiteContext) -> None:
    if ctx.reopen is None:
        raise AssertionError("check_reopen needs SuiteContext.reopen")
    await _layer(ctx, "persist", "", lambda d: _write(d, "f", "data"), labels={"k": "v"})
    await ctx.snapshotter.prepare("persist-child", "persist")
    await ctx.snapshotter.close()
    ctx.snapshotter = await ctx.reopen()
    info = await ctx.snapshotter.stat("persist")
    assert (info.kind, info.labels) == (Kind.COMMITTED, {"k": "v"})
    assert (await ctx.snapshotter.stat("persist-child")).parent == "persist"
    assert (await _view_tree(ctx, "persist"))["f"][2] == "data"
    # New snapshots never reuse an id (their directories would collide).
    await ctx.snapshotter.prepare("after-reopen")


@_check
async def check_cleanup(ctx: SuiteContext) -> None:
    if ctx.root is None:
        raise AssertionError("check_cleanup needs SuiteContext.root")
    sn = ctx.snapshotter
    await _layer(ctx, "keep", "", lambda d: _write(d, "f", "keep"))
    orphans = [ctx.root / "snapshots" / n for n in ("999999", "new-crashed", "rm-12")]
    for o in orphans:
        (o / "fs").mkdir(parents=True)
        (o / "fs" / "junk").write_text("junk")
    cleaner = getattr(sn, "cleanup", None)
    assert cleaner is not None, "snapshotter has no cleanup()"
    await cleaner()
    for o in orphans:
        assert not o.exists(), o
    assert (await _view_tree(ctx, "keep"))["f"][2] == "keep"


@_mount_check
async def check_view_is_read_only(ctx: SuiteContext) -> None:
    sn = ctx.snapshotter
    await _layer(ctx, "ro-base", "", lambda d: _write(d, "f", "x"))
    await _layer(ctx, "ro-top", "ro-base", lambda d: _write(d, "g", "y"))
    for parent in ("ro-base", "ro-top"):
        mounts = await sn.view(f"ro-view-{parent}", parent)
        async with ctx.mount(mounts) as d:
            try:
                _write(d, "new", "nope")
            except OSError as e:
                assert e.errno == errno.EROFS, e
            else:
                raise AssertionError(f"wrote into a read-only view of {parent}")


@_mount_check
async def check_128_layers(ctx: SuiteContext) -> None:
    parent = ""
    for i in range(128):
        name = f"layer-{i:03d}"
        await _layer(ctx, name, parent, lambda d, i=i: _write(d, f"layer-{i:03d}", str(i)))  # type: ignore[misc]
        parent = name
    mounts = await ctx.snapshotter.prepare("on-top", parent)
    async with ctx.mount(mounts) as d:
        tree = snapshot_tree(d)
        assert len(tree) == 128 and tree["layer-127"][2] == "127", len(tree)
        _write(d, "top", "writable")
