from __future__ import annotations

from pathlib import Path

import pytest

from arun.content.local import LocalStore
from arun.diff.walking import WalkingDiff


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content")


@pytest.fixture
def differ(store: LocalStore, tmp_path: Path) -> WalkingDiff:
    (tmp_path / "mnt").mkdir()
    return WalkingDiff(store, tmp_root=str(tmp_path / "mnt"))
