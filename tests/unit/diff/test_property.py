"""Property tests: random valid layers applied to an empty directory give exactly the expected tree,
and random tree edits survive the Diff → Apply round trip."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arun.content.local import LocalStore
from arun.core.mount import Mount
from arun.diff.walking import WalkingDiff
from arun.testing.layers import Entry, put_layer, tar_bytes
from arun.testing.suites.snapshotter import snapshot_tree

NAMES = st.sampled_from(["a", "b", "c", "d", "e", "lib", "f.txt", "ünï", "x y", ".hidden"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map(tuple)

Tree = dict[tuple[str, ...], tuple[str, int, bytes]]


@st.composite
def layers(draw: st.DrawFn) -> tuple[list[Entry], Tree]:
    """Entries and the tree they must produce (applied in order to an empty directory)."""
    tree: Tree = {}
    entries: list[Entry] = []
    for _ in range(draw(st.integers(1, 25))):
        path = draw(PATHS)
        kind = draw(st.sampled_from(["file", "dir", "symlink", "whiteout"]))
        # Parents must be directories in the model (archive parents are created implicitly).
        if any(tree.get(path[:i], ("dir",))[0] != "dir" for i in range(1, len(path))):
            continue
        name = "/".join(path)
        if kind == "whiteout":
            entries.append(Entry("/".join((*path[:-1], ".wh." + path[-1]))))
            for k in [k for k in tree if k[: len(path)] == path]:
                del tree[k]
            for i in range(1, len(path)):
                tree.setdefault(path[:i], ("dir", 0o755, b""))
            continue
        for i in range(1, len(path)):
            tree.setdefault(path[:i], ("dir", 0o755, b""))
        old = tree.get(path)
        if old is not None and not (old[0] == "dir" and kind == "dir"):
            for k in [k for k in tree if k[: len(path)] == path]:
                del tree[k]
        mode = draw(st.sampled_from([0o755, 0o700, 0o644, 0o600, 0o4755, 0o1777]))
        if kind == "file":
            data = draw(st.binary(max_size=3000))
            entries.append(Entry(name, data=data, mode=mode))
            tree[path] = ("file", mode, data)
        elif kind == "dir":
            entries.append(Entry(name + "/", "dir", mode=mode))
            tree[path] = ("dir", mode, b"")
        else:
            target = draw(st.sampled_from(["/etc/passwd", "../../x", "a/b", "."]))
            entries.append(Entry(name, "symlink", linkname=target))
            tree[path] = ("symlink", 0, target.encode())
    return entries, tree


def _actual(root: str) -> Tree:
    out: Tree = {}
    for rel, (kind, mode, content) in snapshot_tree(root).items():
        key = tuple(rel.split("/"))
        out[key] = (kind, mode, content.encode() if kind == "symlink" else b"")
        if kind == "file":
            out[key] = (kind, mode, Path(root, rel).read_bytes())
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_random_layer_applies_to_expected_tree(layer: tuple[list[Entry], Tree]) -> None:
    entries, expected = layer

    async def run(d: str) -> Tree:
        store = LocalStore(os.path.join(d, "content"))
        root = os.path.join(d, "root")
        os.mkdir(root)
        desc, _ = await put_layer(store, tar_bytes(entries))
        await WalkingDiff(store, tmp_root=d).apply(desc, [Mount("bind", root, ("rbind", "rw"))])
        return _actual(root)

    with tempfile.TemporaryDirectory() as d:
        got = asyncio.run(run(d))
    # Directories are compared by type and mode; implicit parents are 0755.
    assert got == expected


EDITS = st.lists(
    st.tuples(st.sampled_from(["write", "mkdir", "rm", "chmod", "symlink"]), PATHS, st.binary(max_size=200)),
    max_size=15,
)


def _edit(root: Path, edits: list[tuple[str, tuple[str, ...], bytes]]) -> None:
    for op, path, data in edits:
        p = root.joinpath(*path)
        try:
            if op == "write":
                p.parent.mkdir(parents=True, exist_ok=True)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.is_symlink():
                    p.unlink()
                p.write_bytes(data)
            elif op == "mkdir":
                p.mkdir(parents=True, exist_ok=True)
            elif op == "rm":
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
            elif op == "chmod" and os.path.lexists(p) and not p.is_symlink():
                os.chmod(p, 0o700 if stat.S_ISDIR(os.lstat(p).st_mode) else 0o600)
            elif op == "symlink":
                p.parent.mkdir(parents=True, exist_ok=True)
                if os.path.lexists(p):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                os.symlink(data.hex() or "t", p)
        except (NotADirectoryError, FileExistsError):
            continue  # a parent is a file or symlink: skip the edit


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS, EDITS)
def test_diff_apply_round_trip(
    base_edits: list[tuple[str, tuple[str, ...], bytes]], edits: list[tuple[str, tuple[str, ...], bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        lower, upper, target = Path(d, "lower"), Path(d, "upper"), Path(d, "target")
        lower.mkdir()
        _edit(lower, base_edits)
        shutil.copytree(lower, upper, symlinks=True)
        _edit(upper, edits)
        shutil.copytree(lower, target, symlinks=True)

        async def run() -> None:
            store = LocalStore(os.path.join(d, "content"))
            differ = WalkingDiff(store, tmp_root=d)
            desc = await differ.compare(
                [Mount("bind", str(lower), ("rbind", "ro"))], [Mount("bind", str(upper), ("rbind", "ro"))]
            )
            await differ.apply(desc, [Mount("bind", str(target), ("rbind", "rw"))])

        asyncio.run(run())
        assert snapshot_tree(str(target)) == snapshot_tree(str(upper))


def test_whiteout_forgets_the_mode_of_the_directory_it_removes() -> None:
    # Found by the property above: a directory whited out and then recreated implicitly in the
    # same layer must not get the removed directory's deferred mode.
    entries = [Entry("d/", "dir", mode=0o700), Entry(".wh.d"), Entry("d/a/", "dir", mode=0o755)]

    async def run(d: str) -> Tree:
        store = LocalStore(os.path.join(d, "content"))
        root = os.path.join(d, "root")
        os.mkdir(root)
        desc, _ = await put_layer(store, tar_bytes(entries))
        await WalkingDiff(store, tmp_root=d).apply(desc, [Mount("bind", root, ("rbind", "rw"))])
        return _actual(root)

    with tempfile.TemporaryDirectory() as d:
        got = asyncio.run(run(d))
    assert got == {("d",): ("dir", 0o755, b""), ("d", "a"): ("dir", 0o755, b"")}
