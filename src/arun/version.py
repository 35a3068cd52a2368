"""arun's version and the source revision it was built from.

The revision is ``ARUN_REVISION`` when set (packagers), else the commit of the
git checkout the package runs from (development trees), else empty — read
from the files under ``.git`` so no ``git`` binary is needed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from arun import __version__

VERSION = __version__
PACKAGE = "github.com/arun/arun"


def _git_dir(package: Path) -> Path | None:
    """The git directory of a source checkout running arun from ``<checkout>/src/arun``."""
    if package.parent.name != "src":
        return None
    checkout = package.parent.parent
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree: "gitdir: <path>"
        text = dot_git.read_text().strip()
        if text.startswith("gitdir:"):
            return (checkout / text.removeprefix("gitdir:").strip()).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return ""


@functools.cache
def revision() -> str:
    env = os.environ.get("ARUN_REVISION")
    if env is not None:
        return env
    try:
        git_dir = _git_dir(Path(__file__).resolve().parent)
        if git_dir is None:
            return ""
        head = (git_dir / "HEAD").read_text().strip()
        if head.startswith("ref:"):
            return _resolve_ref(git_dir, head.removeprefix("ref:").strip())
        return head
    except OSError:
        return ""
