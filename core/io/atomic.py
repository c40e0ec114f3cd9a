"""Atomic file writing: into a temporary file in the target folder, then renamed over the target, so a crash or
Ctrl-C never leaves a half-written file under the real name. The temporary name is `.<stem>-XXXX<suffix>`
(core.sequence.render clears stale `.frame_*-*.png` ones it finds)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

import numpy as np

__all__ = ["atomic_write", "write_bytes_atomic", "npy_bytes", "new_file_mode"]

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    mask = os.umask(0o022)   # the only way to read it is to set it; done once, at import, and put back at once
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def new_file_mode() -> int:
    """The permissions an ordinary new file gets (0o666 less the umask). mkstemp makes its files 0o600, which a
    rename would keep: frames and models would then be unreadable to the other users of a shared folder."""
    return 0o666 & ~_UMASK


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call write(binary file) on a temporary file beside `path`, flush it to disk, then rename it to `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of an .npy file (no pickled objects)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()
