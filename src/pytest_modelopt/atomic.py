"""Writes that never leave a half-written file behind, and a lock for read-merge-write.

A write goes to a temp file, is fsynced, then renamed into place, with the permissions an
ordinary ``open(path, "w")`` would give.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The lock file of a directory whose files are read, merged and rewritten by several processes.
DIRECTORY_LOCK_NAME = ".modelopt.lock"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a baseline directory shared by a team, a container's other uid or
        # a CI artifact needs the mode the user's umask asks for, as open() would give.
        os.fchmod(fd, 0o666 & ~process_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock across processes, for a read-merge-write of files in it.

    Two processes that each read, merge and write one file would otherwise lose one's update.
    """
    from filelock import FileLock

    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(directory / DIRECTORY_LOCK_NAME, mode=0o666 & ~process_umask()):
        yield


def process_umask() -> int:
    """Return this process's umask, read without changing it where Linux shows it.

    Setting and restoring it would race with any other thread that creates a file.
    """
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        status = ""
    if match := re.search(r"^Umask:\s*([0-7]+)$", status, re.MULTILINE):
        return int(match.group(1), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
