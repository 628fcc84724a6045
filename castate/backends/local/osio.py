"""The operating-system calls through which the local backend writes, in one place.

Every write, flush, rename and directory change of a local store goes through these
names, so a test can replace one of them to make any step of a save fail as a full or
failing disk would (ENOSPC, EIO, a failed fsync, a short write) without mocking castate
itself. Production code pays one module attribute lookup per call.
"""

from __future__ import annotations

import os

open_fd = os.open
write = os.write
fsync = os.fsync
fdatasync = os.fdatasync
replace = os.replace
link = os.link
unlink = os.unlink
mkdir = os.mkdir

__all__ = ["fdatasync", "fsync", "link", "mkdir", "open_fd", "replace", "unlink", "write"]
