from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arun import namespaces
from arun.metadata.db import Database
from arun.testing.events import RecordingPublisher


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(tmp_path / "meta.db")
    await d.open()
    yield d
    await d.close()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def ns() -> Iterator[str]:
    with namespaces.use("testing") as n:
        yield n
