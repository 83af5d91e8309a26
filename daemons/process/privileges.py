"""Dropping root for `--user`/`--group`: resolve the account, hand it files, drop for good."""
from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


class PrivilegeError(Exception):
    """The account can't be used or the drop failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Credentials:
    """The user and group a daemon started as root runs as."""

    user: str
    uid: int
    gid: int

    @classmethod
    def resolve(cls, user: str | None, group: str | None) -> Credentials | None:
        """Look up `user`/`group`; None when neither is given. Raises PrivilegeError."""
        if user is None and group is None:
            return None
        if os.geteuid() != 0:
            raise PrivilegeError(f"--user/--group need root; this process runs as uid {os.geteuid()}")
        try:
            entry = pwd.getpwnam(user) if user is not None else pwd.getpwuid(0)
        except KeyError:
            raise PrivilegeError(f"unknown user {user!r}") from None
        gid = entry.pw_gid
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise PrivilegeError(f"unknown group {group!r}") from None
        return cls(entry.pw_name, entry.pw_uid, gid)

    def hand_over(self, path: Path, kind: int) -> None:
        """Give the file at `path` to these credentials without following a symbolic link.

        `kind` is the `stat.S_IF*` type the path must still have (a socket we just bound,
        say): anything else there, a symlink put in its place included, is refused.
        """
        try:
            os.lchown(path, self.uid, self.gid)
            mode = os.lstat(path).st_mode
        except OSError as exc:
            raise PrivilegeError(f"cannot hand {path} to {self.user}: {exc.strerror}") from None
        if stat.S_IFMT(mode) != kind:
            raise PrivilegeError(f"refusing to hand {path} to {self.user}: it was replaced by something else")

    def apply(self) -> None:
        """Drop to these credentials for good; a failed drop raises PrivilegeError."""
        try:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
        except OSError as exc:
            raise PrivilegeError(f"cannot drop privileges to {self.user}: {exc.strerror}") from None
        if self.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise PrivilegeError(f"dropping privileges to {self.user} did not stick")
        if os.getuid() != self.uid or os.geteuid() != self.uid or os.getegid() != self.gid:
            raise PrivilegeError(f"dropping privileges to {self.user} did not stick")
