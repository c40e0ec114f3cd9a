"""The generator's frames cached by what they are made of, so nothing stale is ever shown or written.

A frame's digest (`frame_digest`) covers everything its pixels depend on: the rig's vertices and landmarks, the
virtual camera's label, the model weights' digest, the avatar (seed, truncation, latent file digest), the frame's
depth-sample seed and the image side. Changing a keyframe changes the vertices of exactly the frames it affects;
moving the camera changes their labels; retraining the model changes every digest. Frames whose digest is in the
cache are read back instead of rendered (render_engine.py reports how many were kept).

On disk: `<folder>/<digest[:2]>/<digest>.npz` holding `rgb` [S, S, 3] float32 (0..1, the generator's sRGB) and
`depth` [R, R] float32 (the volume renderer's ray distance, generator units, at its own resolution); written atomically
(core/io/atomic.py) and read back with core/io/bounded_read.py, so a damaged or foreign file is a miss, never a
crash. `prune` keeps the folder under a size budget, oldest first. No bpy and no torch here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..core.io.atomic import write_bytes_atomic
from ..core.io.bounded_read import BoundedReadError, read_npz

# Bump when what a cached frame holds, or how it is made, changes: old entries then stop matching.
CACHE_VERSION = 1
ARRAYS = ("rgb", "depth")
DEFAULT_BUDGET = 2 << 30     # bytes kept in the cache folder


def default_folder() -> Path:
    """$NEXT3D_CACHE_DIR/frames, else the platform's user cache folder + next3d/frames."""
    env = os.environ.get("NEXT3D_CACHE_DIR")
    if env:
        return Path(env) / "frames"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "next3d" / "frames"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "next3d" / "frames"


def frame_digest(**parts) -> str:
    """SHA-256 over named parts: arrays by dtype, shape and bytes; everything else as canonical JSON."""
    h = hashlib.sha256(f"next3d-frame-v{CACHE_VERSION}".encode())
    for name in sorted(parts):
        value = parts[name]
        h.update(name.encode() + b"\0")
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            h.update(f"{a.dtype.str}{list(a.shape)}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\1")
    return h.hexdigest()


class FrameCache:
    """Cached generator frames by digest in `folder` (created on first store)."""

    def __init__(self, folder: os.PathLike | str):
        self.folder = Path(folder)

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npz"

    def load(self, digest: str) -> Optional[Dict[str, np.ndarray]]:
        """The cached arrays of `digest`, or None when absent or unreadable (then it is rendered again)."""
        path = self.path(digest)
        try:
            arrays = read_npz(path)
        except (OSError, BoundedReadError):
            return None
        if any(name not in arrays for name in ARRAYS):
            return None
        rgb, depth = arrays["rgb"], arrays["depth"]
        if rgb.ndim != 3 or rgb.shape[2] != 3 or depth.ndim != 2 or depth.shape[0] != depth.shape[1]:
            return None
        try:
            os.utime(path)      # recently used entries survive `prune`
        except OSError:
            pass
        # Copies in numpy's own memory: numpy's vector loops round sums differently on differently aligned
        # buffers, and a frame read back must give the very bytes the freshly rendered one gave.
        return {"rgb": np.array(rgb, dtype=np.float32, order="C"),
                "depth": np.array(depth, dtype=np.float32, order="C")}

    def store(self, digest: str, rgb: np.ndarray, depth: np.ndarray) -> None:
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, rgb=np.ascontiguousarray(rgb, np.float32), depth=np.ascontiguousarray(depth, np.float32))
        write_bytes_atomic(path, buf.getvalue())

    def prune(self, budget: int = DEFAULT_BUDGET) -> int:
        """Delete the least recently used entries until the folder holds at most `budget` bytes; returns how many
        were deleted."""
        entries = []
        for path in self.folder.glob("*/*.npz"):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(e[1] for e in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= budget:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            removed += 1
        return removed


__all__ = ["frame_digest", "FrameCache", "CACHE_VERSION", "default_folder"]
