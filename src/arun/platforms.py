"""Platforms: parse, format, normalise and match ``os/arch[/variant]``, as containerd's
``platforms`` package does.

The matching rules are containerd's: ``only(linux/amd64)`` also accepts ``linux/386``;
``only(linux/arm64)`` accepts the arm64 minor variants below the host's and then 32-bit
``arm/v8`` down to ``arm/v5``; ``only(linux/arm/v7)`` accepts v6 and v5. A matcher is
also a comparer: ``sort_key`` ranks the candidates so the best one comes first, which is
how an index entry is chosen.
"""

from __future__ import annotations

import platform as _host
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from arun.errdefs import InvalidArgumentError

__all__ = [
    "Matcher",
    "Platform",
    "PlatformLike",
    "any_of",
    "default",
    "default_spec",
    "format",
    "normalize",
    "only",
    "only_strict",
    "ordered",
    "parse",
    "parse_all",
]

_SPECIFIER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_OS_RE = re.compile(r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$")

_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
    "solaris windows zos".split()
)
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 mips64le "
    "mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)

# arm64 variant → (majors, highest minor per major) it is compatible with, newest first.
_ARM64_VERSIONS: dict[str, tuple[tuple[int, int], ...]] = {
    **{f"v8.{m}": ((8, m),) for m in range(10)},
    "v8": ((8, 0),),
    "v9": ((9, 0), (8, 5)),
    **{f"v9.{m}": ((9, m), (8, min(m + 5, 9))) for m in range(8)},
}


class PlatformLike(Protocol):
    """Anything with the OCI platform fields (core descriptors' platforms qualify)."""

    @property
    def os(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def os_version(self) -> str: ...


@dataclass(frozen=True)
class Platform:
    """An OCI platform; ``os_features`` is kept sorted and de-duplicated by ``normalize``."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return format(self)

    @classmethod
    def of(cls, p: PlatformLike) -> Platform:
        feats = tuple(getattr(p, "os_features", ()) or ())
        return cls(p.os, p.architecture, p.variant or "", p.os_version or "", feats)

    def to_json(self) -> dict[str, object]:
        """The OCI JSON form (``architecture``, ``os``, ``variant`` …)."""
        out: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out


def _normalize_os(os_: str) -> str:
    if not os_:
        return "linux"
    os_ = os_.lower()
    return "darwin" if os_ == "macos" else os_


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: PlatformLike) -> Platform:
    arch, variant = _normalize_arch(p.architecture, p.variant or "")
    feats = tuple(sorted(set(getattr(p, "os_features", ()) or ())))
    return Platform(_normalize_os(p.os), arch, variant, p.os_version or "", feats)


def _host_arch() -> tuple[str, str]:
    machine = _host.machine() or "amd64"
    arch, variant = _normalize_arch(machine, "")
    if arch == "arm64":
        return "arm64", ""
    if arch == "arm":
        # /proc/cpuinfo's "CPU architecture" is the ISA version (7, 8); fall back to v7.
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.lower().startswith("cpu architecture"):
                        v = line.split(":", 1)[1].strip()
                        return "arm", "v8" if v in ("8", "AArch64") else f"v{v}"
        except OSError:
            pass
        return "arm", variant or "v7"
    return arch, ""


def default_spec() -> Platform:
    """The platform of this host (``linux/amd64`` here)."""
    arch, variant = _host_arch()
    return Platform("linux", arch, variant)


def _decode_os_option(v: str) -> str:
    from urllib.parse import unquote

    return unquote(v) if "%" in v else v


def parse(specifier: str) -> Platform:
    """``linux``, ``amd64``, ``linux/arm64``, ``linux/arm/v7``, ``windows(10.0.17763)/amd64``."""
    if "*" in specifier:
        raise InvalidArgumentError(f"{specifier!r}: wildcards not yet supported")
    parts = specifier.split("/", 3)
    if len(parts) > 3:
        raise InvalidArgumentError(f"{specifier!r}: cannot parse platform specifier")
    m = _OS_RE.match(parts[0])
    if m is None:
        raise InvalidArgumentError(f"{parts[0]!r} is an invalid OS component of {specifier!r}")
    os_ = _normalize_os(m.group(1))
    os_version = _decode_os_option(m.group(2) or "")
    feats: tuple[str, ...] = ()
    if m.group(3):
        feats = tuple(sorted({_decode_os_option(f) for f in m.group(3)[1:].split("+") if f}))
    for part in parts[1:]:
        if not _SPECIFIER_RE.match(part):
            raise InvalidArgumentError(f"{part!r} is an invalid component of {specifier!r}")
    if len(parts) == 1:
        if os_ in _KNOWN_OS:
            arch, variant = _host_arch()
            if arch == "arm" and variant == "v7":
                variant = ""
            return Platform(os_, arch, variant, os_version, feats)
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise InvalidArgumentError(f"{specifier!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(os_, arch, variant, os_version, feats)
    arch, variant = _normalize_arch(parts[1], parts[2])
    if arch == "arm64" and not variant:
        variant = "v8"
    return Platform(os_, arch, variant, os_version, feats)


def parse_all(specifiers: Iterable[str]) -> list[Platform]:
    return [parse(s) for s in specifiers]


def format(p: PlatformLike) -> str:
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def _match_one(want: Platform, got: PlatformLike) -> bool:
    n = normalize(got)
    if (n.os, n.architecture, n.variant) != (want.os, want.architecture, want.variant):
        return False
    if want.os == "windows" and want.os_version and n.os_version:
        # Windows images must share major.minor.build with the host.
        if want.os_version.split(".")[:3] != n.os_version.split(".")[:3]:
            return False
    # Every feature the candidate requires must be offered by the wanted platform.
    return set(n.os_features) <= set(want.os_features)


class Matcher:
    """Matches platforms against an ordered list of acceptable ones (containerd's
    ``Ordered`` comparer): earlier entries rank higher; among equals, more matching
    OS features rank higher."""

    def __init__(self, wanted: Sequence[Platform], *, ranked: bool = True) -> None:
        self.wanted = [normalize(w) for w in wanted]
        self.ranked = ranked

    def match(self, p: PlatformLike) -> bool:
        return any(_match_one(w, p) for w in self.wanted)

    def sort_key(self, p: PlatformLike) -> tuple[int, int]:
        """Smaller is better; non-matching platforms sort last."""
        feats = len(getattr(p, "os_features", ()) or ())
        for i, w in enumerate(self.wanted):
            if _match_one(w, p):
                return (i if self.ranked else 0, -feats)
        return (len(self.wanted), 0)

    def __repr__(self) -> str:
        return f"Matcher({[format(w) for w in self.wanted]!r})"


class _All(Matcher):
    def __init__(self) -> None:
        super().__init__([])

    def match(self, p: PlatformLike) -> bool:
        return True

    def sort_key(self, p: PlatformLike) -> tuple[int, int]:
        return (0, 0)


ALL: Matcher = _All()


def _vector(p: Platform) -> list[Platform]:
    """The platforms ``p`` can run, best first (containerd's ``platformVector``)."""
    out = [p]
    if p.architecture == "amd64":
        try:
            level = int(p.variant.removeprefix("v")) if p.variant else 1
        except ValueError:
            level = 1
        out += [replace(p, variant=f"v{v}") for v in range(level - 1, 1, -1)]
        if level > 1:
            out.append(replace(p, variant=""))
        out.append(replace(p, architecture="386", variant=""))
    elif p.architecture == "arm":
        try:
            level = int(p.variant.removeprefix("v"))
        except ValueError:
            level = 0
        out += [replace(p, variant=f"v{v}") for v in range(level - 1, 4, -1)]
    elif p.architecture == "arm64":
        variant = p.variant or "v8"
        out = []
        for major, top in _ARM64_VERSIONS.get(variant, ()):
            for minor in range(top, -1, -1):
                v = f"v{major}" if minor == 0 else f"v{major}.{minor}"
                out.append(replace(p, variant="" if v == "v8" else v))
        if not out:
            return [p]
        arm = replace(p, architecture="arm", variant="v8")
        out += _vector(arm)
    return out


def only(p: PlatformLike) -> Matcher:
    """Matches ``p`` and the platforms it can also run, preferring the closest."""
    return Matcher(_vector(normalize(p)))


def only_strict(p: PlatformLike) -> Matcher:
    return Matcher([normalize(p)])


def ordered(*ps: PlatformLike) -> Matcher:
    return Matcher([normalize(p) for p in ps])


def any_of(*ps: PlatformLike) -> Matcher:
    """Matches any of ``ps`` with no preference among them."""
    return Matcher([normalize(p) for p in ps], ranked=False)


def default() -> Matcher:
    """The host's matcher (``only(default_spec())``)."""
    return only(default_spec())
