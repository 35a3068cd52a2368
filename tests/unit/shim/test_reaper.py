"""The reaper: every child's exit is reaped once and fanned out to every subscriber."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest

from arun.shim.reaper import Exit, Reaper, exit_status


@pytest.fixture
async def reaper() -> AsyncIterator[Reaper]:
    r = Reaper()
    r.install(asyncio.get_running_loop(), subreaper=False)
    try:
        yield r
    finally:
        r.uninstall()


def _is_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return int(fields[1]) == os.getpid()


async def test_exits_fan_out_once_to_every_subscriber(reaper: Reaper) -> None:
    seen_by_callback: list[Exit] = []
    cb = reaper.subscribe(seen_by_callback.append)
    with reaper.subscribe() as sub:
        pids = {reaper.spawn(["/bin/true"]): 0 for _ in range(5)}
        pids.update({reaper.spawn(["/bin/false"]): 1 for _ in range(5)})
        pids[reaper.spawn(["/bin/sh", "-c", "exit 7"])] = 7
        results = await asyncio.wait_for(asyncio.gather(*(sub.wait(p) for p in pids)), 10)
    cb.close()
    assert {e.pid: e.status for e in results} == pids
    # the callback subscriber saw each exit exactly once, and nothing else of ours
    ours = [e for e in seen_by_callback if e.pid in pids]
    assert sorted(e.pid for e in ours) == sorted(pids)
    # and the children are gone: no zombie left behind
    assert not any(_is_child(p) for p in pids)


async def test_exit_before_wait_is_kept(reaper: Reaper) -> None:
    with reaper.subscribe() as sub:
        pid = reaper.spawn(["/bin/sh", "-c", "kill -TERM $$"])
        # let it die and be reaped before anyone asks
        for _ in range(200):
            if sub.exited(pid) is not None:
                break
            await asyncio.sleep(0.01)
        assert sub.exited(pid) is not None
        e = await sub.wait(pid)
    assert e.status == 128 + 15
    assert e.timestamp_ns > 0


async def test_unsubscribed_receives_nothing(reaper: Reaper) -> None:
    got: list[Exit] = []
    sub = reaper.subscribe(got.append)
    sub.close()
    with reaper.subscribe() as mine:
        pid = reaper.spawn(["/bin/true"])
        await asyncio.wait_for(mine.wait(pid), 10)
    assert got == []


async def test_spawn_passes_fds_and_stdio(reaper: Reaper, tmp_path: object) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    extra_r, extra_w = os.pipe2(os.O_CLOEXEC)
    with reaper.subscribe() as sub:
        pid = reaper.spawn(["/bin/sh", "-c", "echo out; echo extra >&3"], stdout=w, pass_fds={3: extra_w})
        os.close(w)
        os.close(extra_w)
        e = await asyncio.wait_for(sub.wait(pid), 10)
    assert e.status == 0
    assert os.read(r, 100) == b"out\n"
    assert os.read(extra_r, 100) == b"extra\n"
    os.close(r)
    os.close(extra_r)


def test_exit_status() -> None:
    assert exit_status(0) == 0
    assert exit_status(3 << 8) == 3
    assert exit_status(9) == 137


def test_subreaper_reaps_orphans() -> None:
    """In a child Python (the test process must not become a subreaper): a grandchild orphaned
    by its parent is re-parented to the reaper and reaped by it."""
    script = textwrap.dedent(
        """
        import asyncio
        from arun.shim.reaper import Reaper

        async def main():
            r = Reaper()
            seen = []
            r.install(asyncio.get_running_loop())
            sub = r.subscribe(seen.append)
            with r.subscribe() as mine:
                pid = r.spawn(["/bin/sh", "-c", "sleep 0.3 & echo $!"], stdout=None)
                await mine.wait(pid)
            for _ in range(300):
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.01)
            print(len(seen), sorted(e.status for e in seen))

        asyncio.run(main())
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "[0,", "0]"]
