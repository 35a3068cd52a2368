"""Markers of the CLI tests: which daemons serve what a test needs (see test_cli.py)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_tasks: runs tasks (only daemons serving the tasks service)")
    config.addinivalue_line("markers", "needs_cri: uses the CRI runtime service (only daemons serving it)")
