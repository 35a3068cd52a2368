from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arun.testing.registry import RegistryServer, registry


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[RegistryServer]:
    async with registry(tmp_path) as server:
        yield server
