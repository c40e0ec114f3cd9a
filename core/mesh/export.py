"""Writing extracted meshes: binary PLY, OBJ and glTF 2.0 binary (.glb), chosen by the file suffix.

Every writer goes through a temporary file in the target folder and `os.replace`, so a reader never sees half a
file and an interrupted export leaves the previous file in place.

Coordinates are written as given (FLAME units for `extract_mesh`: x right, y up, z forward, metres), which is also
glTF's convention (+Y up, +Z forward).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..errors import InputError
from ..geometry.normals import vertex_normals
from ..io.atomic import atomic_write
from .extracted import ExtractedMesh

SUFFIXES = (".ply", ".obj", ".glb")

# glTF constants
_FLOAT = 5126
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_TRIANGLES = 4
_GLB_MAGIC = 0x46546C67      # "glTF"
_CHUNK_JSON = 0x4E4F534A     # "JSON"
_CHUNK_BIN = 0x004E4942      # "BIN\0"


def _check_mesh(mesh: ExtractedMesh):
    v = np.asarray(mesh.vertices)
    f = np.asarray(mesh.faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"mesh.vertices must be [N, 3], got shape {list(v.shape)}.")
    if f.ndim != 2 or f.shape[1] != 3:
        raise InputError(f"mesh.faces must be [M, 3], got shape {list(f.shape)}.")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise InputError("mesh.faces refers to vertices that do not exist.")
    if len(v) == 0 or len(f) == 0:
        raise InputError("The mesh is empty (no vertices or no faces); there is nothing to write.")
    if len(v) >= 2 ** 31 - 1:
        raise InputError(f"The mesh has {len(v)} vertices, more than these formats can index; lower the resolution.")
    if not np.isfinite(v).all():
        raise InputError("mesh.vertices contains NaN or infinite values.")
    c = None if mesh.colors is None else np.asarray(mesh.colors)
    if c is not None and (c.shape != (len(v), 3) or c.dtype != np.uint8):
        raise InputError(f"mesh.colors must be [N, 3] uint8 for N = {len(v)} vertices, got {list(c.shape)} "
                         f"{c.dtype}.")
    return np.ascontiguousarray(v, np.float32), np.ascontiguousarray(f, np.int64), c


def _write_atomic(path: Path, write: Callable) -> None:
    """core.io.atomic's write, with the folder checked first and OS errors as one-line InputErrors."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"Cannot write {str(path)!r}: {str(folder)!r} {what}; create the folder or choose another "
                         "one.")
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise InputError(f"Writing {str(path)!r} failed ({exc.strerror or exc}); check that you can write to "
                         f"{str(folder)!r} and the free disk space.") from None


def save_mesh(path: Union[str, os.PathLike], mesh: ExtractedMesh) -> Path:
    """Write `mesh` to `path`; the format follows the suffix: .ply (binary little-endian, with vertex colours),
    .obj (`v x y z r g b` with colours in 0..1, a common extension), .glb (glTF 2.0 binary). Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"Unknown mesh format {path.suffix or '(no suffix)'!r} for {path.name!r}; use one of "
                         f"{', '.join(SUFFIXES)}.")
    v, f, c = _check_mesh(mesh)
    writer = {".ply": _write_ply, ".obj": _write_obj, ".glb": _write_glb}[suffix]
    _write_atomic(path, lambda fh: writer(fh, v, f, c))
    return path


# ------------------------------------------------------------------------------------------------- PLY

def _write_ply(fh, v: np.ndarray, f: np.ndarray, c: Optional[np.ndarray]) -> None:
    header = ["ply", "format binary_little_endian 1.0", "comment next3d-blender extracted mesh",
              f"element vertex {len(v)}", "property float x", "property float y", "property float z"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if c is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    fh.write(("\n".join(header) + "\n").encode("ascii"))
    vert = np.empty(len(v), dtype=np.dtype(fields))
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if c is not None:
        vert["red"], vert["green"], vert["blue"] = c[:, 0], c[:, 1], c[:, 2]
    fh.write(vert.tobytes())
    face = np.empty(len(f), dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    face["n"] = 3
    face["i"] = f
    fh.write(face.tobytes())


# ------------------------------------------------------------------------------------------------- OBJ

def _write_obj(fh, v: np.ndarray, f: np.ndarray, c: Optional[np.ndarray]) -> None:
    fh.write(b"# next3d-blender extracted mesh (vertex colours as 'v x y z r g b', 0..1)\n")
    step = 1 << 15
    row = "v %.6f %.6f %.6f %.4f %.4f %.4f\n" if c is not None else "v %.6f %.6f %.6f\n"
    for s in range(0, len(v), step):
        rows = v[s:s + step].astype(np.float64)
        if c is not None:
            rows = np.concatenate([rows, c[s:s + step].astype(np.float64) / 255.0], 1)
        fh.write(((row * len(rows)) % tuple(rows.ravel().tolist())).encode("ascii"))
    for s in range(0, len(f), step):
        rows = f[s:s + step] + 1
        fh.write((("f %d %d %d\n" * len(rows)) % tuple(rows.ravel().tolist())).encode("ascii"))


# ------------------------------------------------------------------------------------------------- GLB

def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    x = c.astype(np.float64) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _pad4(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % 4)


def _write_glb(fh, v: np.ndarray, f: np.ndarray, c: Optional[np.ndarray]) -> None:
    views, accessors, blobs = [], [], []
    offset = 0

    def add(data: np.ndarray, target: int, component: int, kind: str, **extra) -> int:
        nonlocal offset
        raw = np.ascontiguousarray(data).tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(raw), "target": target})
        blobs.append(_pad4(raw))
        offset += len(blobs[-1])
        count = data.shape[0] if kind != "SCALAR" else data.size
        accessors.append({"bufferView": len(views) - 1, "byteOffset": 0, "componentType": component,
                          "count": int(count), "type": kind, **extra})
        return len(accessors) - 1

    lo = v.min(0) if len(v) else np.zeros(3, np.float32)
    hi = v.max(0) if len(v) else np.zeros(3, np.float32)
    attributes = {"POSITION": add(v.astype("<f4"), _ARRAY_BUFFER, _FLOAT, "VEC3",
                                  min=[float(x) for x in lo], max=[float(x) for x in hi])}
    if len(f):
        attributes["NORMAL"] = add(vertex_normals(v, f).astype("<f4"), _ARRAY_BUFFER, _FLOAT, "VEC3")
    if c is not None:
        # glTF vertex colours are linear; the uint8 colours are sRGB.
        attributes["COLOR_0"] = add(_srgb_to_linear(c).astype("<f4"), _ARRAY_BUFFER, _FLOAT, "VEC3")
    primitive = {"attributes": attributes, "mode": _TRIANGLES, "material": 0}
    if len(f):
        primitive["indices"] = add(f.astype("<u4").reshape(-1), _ELEMENT_ARRAY_BUFFER, _UNSIGNED_INT, "SCALAR")
    binary = b"".join(blobs)
    doc = {
        "asset": {"version": "2.0", "generator": "next3d-blender"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "next3d_head"}],
        "meshes": [{"name": "next3d_head", "primitives": [primitive]}],
        "materials": [{"name": "next3d_default", "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.8}}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    json_bytes = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(json_bytes) + 8 + len(binary)
    fh.write(struct.pack("<III", _GLB_MAGIC, 2, total))
    fh.write(struct.pack("<II", len(json_bytes), _CHUNK_JSON))
    fh.write(json_bytes)
    fh.write(struct.pack("<II", len(binary), _CHUNK_BIN))
    fh.write(binary)
