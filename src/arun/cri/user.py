"""Users and groups of a container, resolved in its image's /etc/passwd and /etc/group.

The rules are containerd's ``WithUser``/``WithAdditionalGIDs``:

* ``uid``: the gid is the user's in /etc/passwd, 0 if the uid is not listed;
* ``name``: must be in /etc/passwd (NotFoundError otherwise);
* ``user:group``: numeric parts are taken as they are, names looked up;
* the primary gid is always among the additional gids;
* supplementary groups of the image (``Merge`` policy): every group listing the user by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arun.errdefs import InvalidArgumentError, NotFoundError

MAX_ID = 2**31 - 1


def _entries(text: bytes | None, min_fields: int) -> list[list[str]]:
    if not text:
        return []
    out = []
    for line in text.decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= min_fields:
            out.append(parts)
    return out


@dataclass
class Passwd:
    users: list[tuple[str, int, int]] = field(default_factory=list)  # name, uid, gid
    groups: list[tuple[str, int, list[str]]] = field(default_factory=list)  # name, gid, members

    @classmethod
    def parse(cls, passwd: bytes | None, group: bytes | None) -> Passwd:
        users = []
        for e in _entries(passwd, 4):
            try:
                users.append((e[0], int(e[2]), int(e[3])))
            except ValueError:
                continue
        groups = []
        for e in _entries(group, 3):
            try:
                members = [m for m in (e[3].split(",") if len(e) > 3 else []) if m]
                groups.append((e[0], int(e[2]), members))
            except ValueError:
                continue
        return cls(users, groups)

    def user_by_uid(self, uid: int) -> tuple[str, int, int] | None:
        return next((u for u in self.users if u[1] == uid), None)

    def user_by_name(self, name: str) -> tuple[str, int, int] | None:
        return next((u for u in self.users if u[0] == name), None)

    def gid_by_name(self, name: str) -> int | None:
        return next((g[1] for g in self.groups if g[0] == name), None)


def _parse_id(text: str, what: str, userstr: str) -> int | None:
    if not text.isdigit():
        if text.lstrip("-").isdigit():
            raise InvalidArgumentError(f"invalid USER value {userstr!r}: {what} out of range")
        return None
    v = int(text)
    if v > MAX_ID:
        raise InvalidArgumentError(f"invalid USER value {userstr!r}: {what} out of range")
    return v


def needs_files(userstr: str) -> bool:
    """Whether resolving ``userstr`` reads /etc/passwd or /etc/group."""
    parts = userstr.split(":")
    return not (len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit())


def resolve(userstr: str, db: Passwd) -> tuple[int, int]:
    """(uid, gid) for an image/CRI user string."""
    parts = userstr.split(":")
    if len(parts) == 1:
        uid = _parse_id(parts[0], "uid", userstr)
        if uid is None:
            u = db.user_by_name(parts[0])
            if u is None:
                raise NotFoundError(f"no users found for {parts[0]!r} in the image's /etc/passwd")
            return u[1], u[2]
        found = db.user_by_uid(uid)
        return uid, found[2] if found else 0
    if len(parts) != 2:
        raise InvalidArgumentError(f"invalid USER value {userstr!r}")
    uid = _parse_id(parts[0], "uid", userstr)
    gid = _parse_id(parts[1], "gid", userstr)
    if uid is None:
        u = db.user_by_name(parts[0])
        if u is None:
            raise NotFoundError(f"no users found for {parts[0]!r} in the image's /etc/passwd")
        uid = u[1]
    if gid is None:
        g = db.gid_by_name(parts[1])
        if g is None:
            raise NotFoundError(f"no groups found for {parts[1]!r} in the image's /etc/group")
        gid = g
    return uid, gid


def image_groups(userstr: str, db: Passwd) -> list[int]:
    """Groups of /etc/group listing the user (by name) as a member, its own group excluded."""
    name = userstr.split(":")[0]
    uid = _parse_id(name, "uid", userstr) if name else None
    if uid is not None:
        u = db.user_by_uid(uid)
        if u is None:
            return []
        name = u[0]
    return sorted({g[1] for g in db.groups if g[0] != name and name in g[2]})


def user_string(username: str, uid: int | None, gid: int | None) -> str:
    """containerd's GenerateUserString: ``user[:group]`` from CRI fields ("" if none)."""
    userstr = str(uid) if uid is not None else ""
    if username:
        userstr = username
    groupstr = str(gid) if gid is not None else ""
    if not userstr:
        if groupstr:
            raise InvalidArgumentError(f"user group {groupstr!r} is specified without user")
        return ""
    return f"{userstr}:{groupstr}" if groupstr else userstr
