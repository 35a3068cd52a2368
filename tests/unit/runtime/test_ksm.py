"""The daemon's half of kernel same-page merging: the setting, and starting the scanner."""

from __future__ import annotations

from pathlib import Path

import pytest

from arun.errdefs import InvalidArgumentError
from arun.runtime import ksm


@pytest.mark.parametrize("mode", ["on", "mark", "off"])
def test_modes(mode: str) -> None:
    assert ksm.check_mode(mode) == mode


@pytest.mark.parametrize("mode", ["", "yes", "ON", "true"])
def test_bad_mode_is_invalid_argument(mode: str) -> None:
    with pytest.raises(InvalidArgumentError, match="ksm"):
        ksm.check_mode(mode)


def test_switch_on_starts_a_stopped_scanner(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.write_text("0\n")
    assert ksm.switch_on(str(run)) is True
    assert run.read_text() == "1\n"


def test_switch_on_leaves_a_running_scanner(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.write_text("1\n")
    run.chmod(0o444)  # not written: a write would fail (and root ignores modes, so check the text)
    assert ksm.switch_on(str(run)) is True
    assert run.read_text() == "1\n"


def test_switch_on_leaves_other_host_choices_alone(tmp_path: Path) -> None:
    # 2: the administrator asked for every merged page to be split and the scanner stopped.
    run = tmp_path / "run"
    run.write_text("2\n")
    assert ksm.switch_on(str(run)) is False
    assert run.read_text() == "2\n"


def test_switch_on_without_ksm_is_quiet(tmp_path: Path) -> None:
    assert ksm.switch_on(str(tmp_path / "missing")) is False
