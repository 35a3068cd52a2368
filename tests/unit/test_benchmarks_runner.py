"""The benchmark registry: modules are found and described without being imported."""

from __future__ import annotations

from arun.benchmarks.__main__ import CHECKS, discover, main


def test_discover_reads_requires_and_summary() -> None:
    mods = {m.name: m for m in discover()}
    assert "lifecycle_bench" in mods
    life = mods["lifecycle_bench"]
    assert set(life.requires) <= set(CHECKS) and "containerd" in life.requires
    assert life.summary.startswith("CRI pod lifecycle")
    assert all(m.name.endswith("_bench") for m in mods.values())
    assert all(m.summary for m in mods.values())


def test_list_and_no_match(capsys: object) -> None:
    assert main(["--list"]) == 0
    assert main(["no-such-benchmark"]) == 2
