"""An OS-level lock on an output folder, so that two processes never write one folder's files at once.

The lock is the file `.next3d.lock` in the folder, locked with flock (POSIX) or msvcrt.locking (Windows) for as
long as the work runs. The kernel drops the lock when the process ends, however it ends, so a killed run never
leaves the folder locked; the file itself is removed by the last holder. Each holder writes a line with its pid
and command into the file, so a refused run can name who holds the folder.

Holders are exclusive, or shared: renders of one sequence with the same settings may share a folder (each with
its own --frames range), while a run that changes what the folder holds (its settings record) needs it alone.
Windows has no shared locks here; every holder is exclusive there. A file system that refuses locks (some network
mounts) gets a note on stderr and no lock.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = ["LOCK_NAME", "FolderLock", "FolderBusy", "command_line"]

LOCK_NAME = ".next3d.lock"
_WIN_OFFSET = 1 << 30          # Windows locks a byte far past the holder lines, so they stay readable
_HELD: Dict[str, "FolderLock"] = {}   # folders this process holds, by real path (a nested user is a no-op)
_HELD_GUARD = threading.Lock()
PathLike = Union[str, os.PathLike]


class FolderBusy(InputError):
    """Another process holds the folder."""


def command_line() -> str:
    """This process's command, as a user would type it (`next3d ...` for the console script and `-m core.cli`)."""
    argv = list(sys.argv) or ["python"]
    name = Path(argv[0]).name
    if name in ("__main__.py", "next3d", "next3d.exe") or argv[0].endswith(os.path.join("cli", "__main__.py")):
        name = "next3d"
    text = shlex.join([name] + argv[1:])
    return text if len(text) <= 160 else text[:157] + "..."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    if os.name == "nt":
        return True   # os.kill would end the process there, not probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True   # it exists (another user's), or we cannot tell: name it
    return True


class FolderLock:
    """The lock of `folder` for this process: acquire(shared=...) refuses at once (after `wait` seconds) with a
    FolderBusy naming the holders; downgrade() turns an exclusive hold into a shared one; release() ends it."""

    def __init__(self, folder: PathLike, what: str = "render", command: Optional[str] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.command = command or command_line()
        self.fd: Optional[int] = None
        self.shared = False
        self.nested = False   # this process held the folder already (an outer caller owns the lock)
        self.unlocked = False  # the file system refused locks; running without one

    # ------------------------------------------------------------------------------------------------ queries

    @property
    def exclusive(self) -> bool:
        """This process is the folder's only user (an exclusive or nested hold; also when locks are refused)."""
        return self.nested or self.unlocked or (self.fd is not None and not self.shared)

    def holders(self) -> List[dict]:
        """The other live processes named in the lock file (pid, command, started), newest last."""
        try:
            with open(self.path, "rb") as fh:
                text = fh.read(64 * 1024).decode("utf-8", "replace")
        except OSError:
            return []
        seen, out = set(), []
        for line in text.splitlines():
            try:
                record = json.loads(line)
                pid = int(record["pid"])
            except (ValueError, KeyError, TypeError):
                continue
            if pid not in seen and _alive(pid):
                seen.add(pid)
                out.append(record)
        return out

    def describe_holders(self) -> str:
        holders, deadline = self.holders(), time.monotonic() + 1.0
        while not holders and time.monotonic() < deadline:  # a holder writes its line just after it locks
            time.sleep(0.05)
            holders = self.holders()
        if not holders:
            return "another process, which has not said which yet"
        return "; ".join(f"pid {h.get('pid')}: {h.get('command', '?')}" for h in holders[:3])

    # ------------------------------------------------------------------------------------------------ locking

    def acquire(self, shared: bool = False, wait: float = 0.0) -> "FolderLock":
        with _HELD_GUARD:
            key = os.path.realpath(self.folder)
            if key in _HELD and _HELD[key] is not self:
                self.nested = True
                return self
        deadline = time.monotonic() + wait
        shared = shared and fcntl is not None
        while True:
            fd = self._try_lock(shared)
            if fd is not None or self.unlocked:
                break
            if time.monotonic() >= deadline:
                raise self.busy()
            time.sleep(0.05)
        self.fd, self.shared = fd, shared
        if fd is not None:
            self._write_holder(truncate=not shared)
        with _HELD_GUARD:
            _HELD[os.path.realpath(self.folder)] = self
        return self

    def busy(self) -> FolderBusy:
        return FolderBusy(f"{self.folder} is in use ({self.describe_holders()}); wait for it to finish, or choose "
                          "another output folder.")

    def _open(self) -> int:
        # Read-only where flock allows it: a held descriptor open for writing would keep the folder's file system
        # from being remounted read-only. Windows locks only what it may write to.
        flags = (os.O_RDONLY if fcntl is not None else os.O_RDWR) | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | \
            getattr(os, "O_BINARY", 0)
        try:
            return os.open(self.path, flags, 0o666)
        except OSError as exc:
            raise InputError(f"Cannot write to the output folder {str(self.folder)!r} ({exc.strerror}). Choose a "
                             "folder you can write to, or fix its permissions.") from None

    def _try_lock(self, shared: bool) -> Optional[int]:
        """A descriptor of the lock file locked as asked, or None when another process holds it."""
        while True:
            fd = self._open()
            try:
                if fcntl is not None:
                    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                elif msvcrt is not None:
                    os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except (BlockingIOError, PermissionError):
                os.close(fd)
                return None
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                    os.close(fd)
                    return None
                os.close(fd)
                self._no_locks(exc)
                return None
            # The last holder removes the file when it lets go: a lock on a file that is no longer the folder's
            # would lock nothing, so try again on the new one.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    return fd
            except OSError:
                pass
            os.close(fd)

    def _no_locks(self, exc: OSError) -> None:
        self.unlocked = True
        try:
            os.write(2, (f"note: {self.folder} cannot be locked ({exc.strerror}); make sure no other {self.what} "
                         "writes to it at the same time.\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def _write_holder(self, truncate: bool) -> None:
        line = json.dumps({"pid": os.getpid(), "command": self.command,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
        flags = os.O_WRONLY | (os.O_TRUNC if truncate else os.O_APPEND) | getattr(os, "O_BINARY", 0)
        try:
            if fcntl is None:   # Windows: the locked descriptor is the only way in
                os.lseek(self.fd, 0, os.SEEK_SET)
                os.write(self.fd, line.encode("utf-8"))
                return
            fd = os.open(self.path, flags)
            try:
                os.write(fd, line.encode("utf-8"))   # O_APPEND, one write: shared holders' lines do not mix
            finally:
                os.close(fd)
        except OSError:
            pass   # the holder line is a courtesy: the lock holds without it

    def downgrade(self, wait: float = 5.0) -> None:
        """Exclusive -> shared, so that renders with the same settings may join (flock converts by releasing
        first, so another process may slip in: it is then named in the FolderBusy)."""
        if self.nested or self.unlocked or self.fd is None or self.shared or fcntl is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                self.shared = True
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    raise self.busy() from None
                time.sleep(0.05)

    def release(self) -> None:
        if self.nested:
            return
        with _HELD_GUARD:
            if _HELD.get(os.path.realpath(self.folder)) is self:
                del _HELD[os.path.realpath(self.folder)]
        self.unlocked = False
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # the last holder removes the file
            os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        if self.fd is None and not self.nested and not self.unlocked:
            self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
