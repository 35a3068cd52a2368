"""Fixtures for the CNI unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fakes import FakePlugins


@pytest.fixture
def fake_plugins(tmp_path: Path) -> FakePlugins:
    d = tmp_path / "bin"
    d.mkdir()
    return FakePlugins(d)
