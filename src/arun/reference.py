"""Image references: Docker's normalised names and containerd's locator/object split.

Two views of the same string, as in the Go world:

* ``parse_normalized`` follows the docker/distribution grammar and its "familiar" name
  rules: ``busybox`` means ``docker.io/library/busybox``, ``index.docker.io`` is
  ``docker.io``, repository paths are lower case, a bare 64-hex string is refused
  (it would be an image id, not a name).
* ``parse_docker_ref`` is what kubelet's images go through (CRI ``PullImage``): normalise,
  drop the tag when a digest is present, and add ``:latest`` when there is neither.
* ``Spec`` is containerd's ``reference.Spec``: a ``locator`` (``host/path``) and an
  ``object`` (``tag``, ``tag@digest`` or ``@digest``) with no normalisation; ``ctr``
  and the transfer service pass such strings through unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from arun.errdefs import InvalidArgumentError

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "LEGACY_DEFAULT_DOMAIN",
    "OFFICIAL_REPO_PREFIX",
    "Reference",
    "Spec",
    "parse_docker_ref",
    "parse_normalized",
    "parse_spec",
    "split_object",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# The grammar of docker/distribution's reference package, written out from its BNF.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _validate_digest(digest: str, ref: str) -> None:
    alg, _, hex_ = digest.partition(":")
    want = _DIGEST_ALGORITHMS.get(alg)
    if want is None:
        raise InvalidArgumentError(f"invalid reference {ref!r}: unsupported digest algorithm {alg!r}")
    if len(hex_) != want or hex_ != hex_.lower():
        raise InvalidArgumentError(f"invalid reference {ref!r}: invalid digest {digest!r}")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised named reference (``domain/path[:tag][@digest]``)."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path``: the repository, fully qualified."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def familiar(self) -> str:
        """The short form users type: ``busybox:latest`` for ``docker.io/library/busybox:latest``."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            if name.startswith(OFFICIAL_REPO_PREFIX) and "/" not in name[len(OFFICIAL_REPO_PREFIX) :]:
                name = name[len(OFFICIAL_REPO_PREFIX) :]
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def with_tag(self, tag: str) -> Reference:
        if not re.fullmatch(_TAG, tag):
            raise InvalidArgumentError(f"invalid tag {tag!r}")
        return Reference(self.domain, self.path, tag, self.digest)

    def spec(self) -> Spec:
        return parse_spec(str(self))


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's ``splitDockerDomain``: the part before the first ``/`` is a registry only
    if it looks like one (has a ``.`` or ``:``, is ``localhost``, or has upper case)."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized(s: str) -> Reference:
    """Parse ``s`` as users type it (``busybox``, ``localhost:5000/a/b:1``, ``x@sha256:…``).

    Raises InvalidArgumentError with the reason for anything docker would refuse.
    """
    if not s:
        raise InvalidArgumentError(
            "invalid reference format: repository name must have at least one component"
        )
    if _IDENTIFIER_RE.match(s):
        raise InvalidArgumentError(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(s)
    # The remote name ends at the tag or digest separator.
    remote = remainder.split("@", 1)[0]
    if ":" in remote:
        remote = remote.rsplit(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidArgumentError(f"invalid reference format: repository name ({remote}) must be lowercase")
    full = f"{domain}/{remainder}"
    m = _REFERENCE_RE.match(full)
    if m is None:
        raise InvalidArgumentError(f"invalid reference format: {s!r}")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgumentError(
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters: {s!r}"
        )
    nm = _ANCHORED_NAME_RE.match(name)
    if nm is None or nm.group(1) is None:  # pragma: no cover - _REFERENCE_RE already matched
        raise InvalidArgumentError(f"invalid reference format: {s!r}")
    if digest:
        _validate_digest(digest, s)
    return Reference(nm.group(1), nm.group(2), tag, digest)


def parse_docker_ref(s: str) -> Reference:
    """Normalise as containerd's CRI does (``docker.ParseDockerRef``): a digest wins over a
    tag, and a reference with neither gets ``:latest``."""
    ref = parse_normalized(s)
    if ref.digest:
        return Reference(ref.domain, ref.path, "", ref.digest)
    if not ref.tag:
        return Reference(ref.domain, ref.path, DEFAULT_TAG, "")
    return ref


def split_object(obj: str) -> tuple[str, str]:
    """``tag@digest`` → ``(tag, digest)``; either part may be empty."""
    tag, sep, digest = obj.partition("@")
    if not sep:
        return obj, ""
    return tag, digest


@dataclass(frozen=True)
class Spec:
    """containerd's reference: ``locator`` is ``host/path``, ``object`` the tag and/or digest."""

    locator: str
    object: str = ""

    @property
    def hostname(self) -> str:
        return self.locator.split("/", 1)[0]

    @property
    def repository(self) -> str:
        """The path within the registry (``library/busybox``)."""
        return self.locator.split("/", 1)[1] if "/" in self.locator else ""

    @property
    def tag(self) -> str:
        return split_object(self.object)[0]

    @property
    def digest(self) -> str:
        return split_object(self.object)[1]

    def __str__(self) -> str:
        if not self.object:
            return self.locator
        if self.object.startswith("@"):
            return f"{self.locator}{self.object}"
        return f"{self.locator}:{self.object}"


_LOCATOR_HOST_RE = re.compile(rf"^{_DOMAIN}$")


def parse_spec(s: str) -> Spec:
    """Parse a fully qualified reference the way containerd's ``reference.Parse`` does:
    the host is required and nothing is normalised."""
    if not s:
        raise InvalidArgumentError("invalid reference: empty")
    if "://" in s:
        raise InvalidArgumentError(f"invalid reference {s!r}: a scheme is not allowed")
    host, sep, path = s.partition("/")
    if not host or not sep or not path:
        raise InvalidArgumentError(f"invalid reference {s!r}: hostname required")
    # The object starts at the first ':' or '@' of the path (the host's port is not part of the path).
    m = re.search(r"[:@]", path)
    obj = ""
    if m is not None:
        obj = path[m.start() :]
        path = path[: m.start()]
        if obj.startswith(":"):
            obj = obj[1:]
    if not _LOCATOR_HOST_RE.match(host):
        raise InvalidArgumentError(f"invalid reference {s!r}: invalid hostname {host!r}")
    # path.Join semantics: clean repeated and trailing slashes.
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts or ".." in parts:
        raise InvalidArgumentError(f"invalid reference {s!r}: invalid repository path")
    tag, digest = split_object(obj)
    if digest:
        _validate_digest(digest, s)
        if tag and not re.fullmatch(_TAG, tag):
            raise InvalidArgumentError(f"invalid reference {s!r}: invalid tag {tag!r}")
    elif obj and not re.fullmatch(_TAG, obj):
        raise InvalidArgumentError(f"invalid reference {s!r}: invalid tag {obj!r}")
    return Spec("/".join([host, *parts]), obj)
