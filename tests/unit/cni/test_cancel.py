"""Cancellation of pod network setup: the undo still runs to the end and no plugin survives."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arun.cni.pod import PodNetwork, PodNetworkRequest

from .fakes import FakePlugins, write_conflist


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_call(fake_plugins: FakePlugins, plugin: str, command: str) -> None:
    for _ in range(500):
        if (plugin, command) in fake_plugins.commands():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{plugin} {command} never called")


@pytest.mark.parametrize("serially", [True, False])
async def test_cancelled_setup_is_undone(fake_plugins: FakePlugins, tmp_path: Path, serially: bool) -> None:
    conf_dir = tmp_path / "net.d"
    write_conflist(
        conf_dir,
        "10-n.conflist",
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "main"}, {"type": "slow"}]},
    )
    fake_plugins.add("main")
    fake_plugins.add("loopback")
    fake_plugins.add("slow", ADD={"sleep": 30})
    pn = PodNetwork(
        conf_dir=str(conf_dir),
        bin_dirs=[str(fake_plugins.bin_dir)],
        cache_dir=str(tmp_path / "cache"),
        setup_serially=serially,
    )
    task = asyncio.create_task(pn.setup(PodNetworkRequest("sb1"), "/nonexistent/ns"))
    await wait_for_call(fake_plugins, "slow", "ADD")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cmds = fake_plugins.commands()
    # the slow ADD was killed, then every network was deleted, chains in reverse
    assert cmds[-3:] == [("slow", "DEL"), ("main", "DEL"), ("loopback", "DEL")]
    slow_add = next(c for c in fake_plugins.calls() if c["plugin"] == "slow")
    assert not alive(slow_add["pid"])
    assert pn.cni.cache.attachments() == []
    assert pn._locks == {}


def netns_mounts(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(base))]


@pytest.mark.root
async def test_cancelled_create_removes_the_netns(fake_plugins: FakePlugins, tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    write_conflist(conf_dir, "10-n.conf", {"cniVersion": "1.0.0", "name": "n", "type": "slow"})
    fake_plugins.add("loopback")
    fake_plugins.add("slow", ADD={"sleep": 30})
    netns_dir = tmp_path / "netns"
    pn = PodNetwork(
        conf_dir=str(conf_dir),
        bin_dirs=[str(fake_plugins.bin_dir)],
        cache_dir=str(tmp_path / "cache"),
        netns_dir=str(netns_dir),
    )
    task = asyncio.create_task(pn.create(PodNetworkRequest("sb1")))
    await wait_for_call(fake_plugins, "slow", "ADD")
    assert len(netns_mounts(netns_dir)) == 1  # the namespace exists while the ADD runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert os.listdir(netns_dir) == []
    assert netns_mounts(netns_dir) == []
    assert ("slow", "DEL") in fake_plugins.commands()
