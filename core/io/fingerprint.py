"""A short content digest of a weights file, so that renders made with different weights stored under the same
name (a model retrained in place, a replaced bundled default) are told apart when a render resumes."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Union

__all__ = ["file_fingerprint"]

PathLike = Union[str, Path]


@lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def file_fingerprint(path: PathLike) -> str:
    """'sha256:' and the first 16 hex digits of the file's SHA-256. Cached per (path, size, mtime), so a file that
    is replaced is read again."""
    p = Path(path).resolve()
    st = p.stat()
    return _digest(str(p), st.st_size, st.st_mtime_ns)
