"""How a failed runtime command reads: the runtime's own logged error, prefixed once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arun import errdefs
from arun.shim.reaper import Reaper
from arun.shim.runc import RuncCli


@pytest.fixture
async def reaper() -> AsyncIterator[Reaper]:
    r = Reaper()
    r.install(asyncio.get_running_loop(), subreaper=False)
    try:
        yield r
    finally:
        r.uninstall()


def _fake_runtime(path: Path, message: str) -> Path:
    """A 'runc' that logs ``message`` as an error to its --log file (JSON) and exits 1."""
    path.write_text(
        "#!/bin/sh\n"
        'while [ "$1" != "--log" ]; do shift; done\n'
        f'printf \'%s\\n\' \'{{"level":"error","msg":"{message}"}}\' >> "$2"\n'
        "exit 1\n"
    )
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("logged", "want"),
    [
        # runc 1.1 prefixes its own message: it is not prefixed again.
        (
            "runc create failed: unable to start container process: exec: /x: no such file",
            "runc create failed: unable to start container process: exec: /x: no such file",
        ),
        ("container with id exists: c1", "runc create failed: container with id exists: c1"),
    ],
)
async def test_failure_message_has_one_prefix(reaper: Reaper, tmp_path: Path, logged: str, want: str) -> None:
    cli = RuncCli(
        reaper=reaper,
        root=str(tmp_path / "root"),
        log=str(tmp_path / "log.json"),
        binary=str(_fake_runtime(tmp_path / "runc", logged)),
    )
    with pytest.raises(errdefs.ArunError) as ei:
        await cli._run(["create", "--bundle", str(tmp_path), "c1"])
    assert str(ei.value) == want
