from __future__ import annotations

import pytest

from arun import platforms
from arun.errdefs import InvalidArgumentError
from arun.platforms import Platform


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/amd64/v1", Platform("linux", "amd64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("linux/arm64/v9.0", Platform("linux", "arm64", "v9")),
        ("linux/arm", Platform("linux", "arm")),
        ("linux/armhf", Platform("linux", "arm")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("Linux/i386", Platform("linux", "386")),
        ("macos/arm64", Platform("darwin", "arm64")),
        ("arm64", Platform("linux", "arm64")),
        ("windows(10.0.17763+win32k)/amd64", Platform("windows", "amd64", "", "10.0.17763", ("win32k",))),
    ],
)
def test_parse(spec: str, want: Platform) -> None:
    assert platforms.parse(spec) == want


def test_parse_os_only_uses_host_arch() -> None:
    p = platforms.parse("linux")
    assert p.os == "linux"
    assert p.architecture == platforms.default_spec().architecture


@pytest.mark.parametrize("bad", ["linux/*", "lin ux/amd64", "linux/amd64/v2/x", "linux/am d64", "nonsense"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        platforms.parse(bad)


def test_format() -> None:
    assert platforms.format(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert platforms.format(Platform("", "amd64")) == "unknown"
    assert str(Platform("linux", "amd64")) == "linux/amd64"


def test_only_amd64_accepts_386_but_prefers_amd64() -> None:
    m = platforms.only(Platform("linux", "amd64"))
    cands = [Platform("linux", "386"), Platform("linux", "arm64"), Platform("linux", "amd64")]
    assert [c for c in cands if m.match(c)] == [cands[0], cands[2]]
    assert sorted(cands, key=m.sort_key)[0] == Platform("linux", "amd64")
    assert not m.match(Platform("linux", "amd64", "v2"))
    assert not m.match(Platform("windows", "amd64"))


def test_only_amd64_v3_accepts_lower_levels_in_order() -> None:
    m = platforms.only(platforms.parse("linux/amd64/v3"))
    cands = [platforms.parse(s) for s in ("linux/386", "linux/amd64", "linux/amd64/v2", "linux/amd64/v4")]
    ranked = [platforms.format(c) for c in sorted(cands, key=m.sort_key) if m.match(c)]
    assert ranked == ["linux/amd64/v2", "linux/amd64", "linux/386"]


def test_only_arm() -> None:
    m = platforms.only(platforms.parse("linux/arm/v7"))
    assert m.match(platforms.parse("linux/arm/v6"))
    assert m.match(platforms.parse("linux/arm/v5"))
    assert not m.match(platforms.parse("linux/arm/v8"))
    m64 = platforms.only(platforms.parse("linux/arm64"))
    for ok in ("linux/arm64", "linux/arm64/v8", "linux/arm/v8", "linux/arm/v7", "linux/arm/v5"):
        assert m64.match(platforms.parse(ok)), ok
    assert not m64.match(platforms.parse("linux/arm64/v8.1"))
    m9 = platforms.only(platforms.parse("linux/arm64/v9.2"))
    for ok in ("linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.7", "linux/arm64/v8", "linux/arm/v6"):
        assert m9.match(platforms.parse(ok)), ok
    assert not m9.match(platforms.parse("linux/arm64/v8.8"))


def test_strict_and_ordered_and_any() -> None:
    strict = platforms.only_strict(Platform("linux", "amd64"))
    assert not strict.match(Platform("linux", "386"))
    o = platforms.ordered(Platform("linux", "arm64"), Platform("linux", "amd64"))
    cands = [Platform("linux", "amd64"), Platform("linux", "arm64")]
    assert sorted(cands, key=o.sort_key)[0].architecture == "arm64"
    a = platforms.any_of(Platform("linux", "arm64"), Platform("linux", "amd64"))
    assert sorted(cands, key=a.sort_key)[0].architecture == "amd64"  # stable: no preference
    assert platforms.ALL.match(Platform("plan9", "mips"))


def test_os_features_must_be_offered() -> None:
    m = platforms.only(Platform("windows", "amd64", os_features=("win32k",)))
    assert m.match(Platform("windows", "amd64", os_features=("win32k",)))
    assert m.match(Platform("windows", "amd64"))
    assert not m.match(Platform("windows", "amd64", os_features=("other",)))
    cands = [Platform("windows", "amd64"), Platform("windows", "amd64", os_features=("win32k",))]
    assert sorted(cands, key=m.sort_key)[0].os_features == ("win32k",)


def test_default_is_host() -> None:
    assert platforms.default().match(platforms.default_spec())
    assert platforms.Platform.of(platforms.default_spec()) == platforms.default_spec()
    assert Platform("linux", "arm", "v7").to_json() == {"architecture": "arm", "os": "linux", "variant": "v7"}
