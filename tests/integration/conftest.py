"""Fixtures for tests against a real ``arun daemon`` subprocess (see arun.testing.daemon)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arun.testing.daemon import Daemon


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    """Start daemons with ``daemon_factory(**Daemon.start kwargs)``; each must exit 0 on SIGTERM."""
    started: list[Daemon] = []

    def start(**kwargs: Any) -> Daemon:
        d = Daemon.start(**kwargs)
        started.append(d)
        return d

    yield start
    failures = []
    for d in started:
        if d.returncode is not None:
            d.cleanup()
            continue
        code = d.stop()
        if code != 0:
            failures.append(f"daemon {d.base} exited {code} on SIGTERM:\n{d.logs()}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A daemon with the embedded defaults on temporary root, state and socket."""
    return daemon_factory()
