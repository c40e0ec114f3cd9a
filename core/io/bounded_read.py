"""Reading the JSON and numpy files users give (animations, meshes, landmarks, FLAME embeddings, configs) within
bounds: nothing a file claims (a nesting depth, an array shape, a zip member's size) is followed or allocated before
it is checked against what the file holds.

Errors are `BoundedReadError` (a ValueError) whose message says what is wrong without naming the file; the callers
add the file name and raise their own one-line error. numpy only: the Blender side may import this.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

__all__ = ["BoundedReadError", "MAX_JSON_DEPTH", "json_loads", "read_npy", "read_npy_header", "load_npy", "read_npz",
           "npz_budget", "text_numbers", "read_text_array", "READ_ERRORS",
           "read_error_text"]

MAX_JSON_DEPTH = 32         # configs and landmark files nest 3 levels; animations are checked field by field
_PLAIN_KINDS = "biufcUS"    # bool, signed, unsigned, float, complex, fixed-size text
_MAX_NPZ_MEMBERS = 256
# Errors of the zip and zlib layers on a damaged or truncated archive.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class BoundedReadError(ValueError):
    """A file does not hold what it claims (or claims too much); the message names the problem, not the file."""


# What reading a user's file may raise besides BoundedReadError: the callers turn these into one line naming the
# file (MemoryError: a file within bounds that still does not fit in the memory left).
READ_ERRORS = (BoundedReadError, OSError, ValueError, UnicodeDecodeError, MemoryError)


def read_error_text(exc: BaseException) -> str:
    """One line saying why a file could not be read, for an error that names the file."""
    if isinstance(exc, MemoryError):
        return "not enough memory to read it; close other programs"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# ----------------------------------------------------------------------------------------------------------------
# JSON

def _depth_within(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return True


def json_loads(text: str | bytes, *, max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """json.loads, with nesting that would exhaust the parser's stack (or, with `max_depth`, nesting deeper than
    `max_depth` levels) a BoundedReadError. json.JSONDecodeError (a ValueError) passes through, with its line."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BoundedReadError(f"it nests deeper than {max_depth} levels" if max_depth else
                               "it nests deeper than the JSON parser can follow") from None
    if max_depth is not None and not _depth_within(value, max_depth):
        raise BoundedReadError(f"it nests deeper than {max_depth} levels")
    return value


# ----------------------------------------------------------------------------------------------------------------
# .npy

def _left(fh: BinaryIO, size: int | None) -> int:
    if size is None:
        try:
            size = os.fstat(fh.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            pos = fh.tell()
            size = fh.seek(0, os.SEEK_END)
            fh.seek(pos)
    return size - fh.tell()


def read_npy_header(fh: BinaryIO, size: int | None = None) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy file at `fh` (`size`: its length, when `fh` cannot tell), leaving
    `fh` at the data. A numeric array must fit in the bytes that follow the header."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise BoundedReadError(f"it is an .npy file of version {version[0]}.{version[1]}, which is not read")
    except BoundedReadError:
        raise
    except (ValueError, SyntaxError, EOFError, OSError) as exc:   # numpy's header parser raises these
        raise BoundedReadError(f"its .npy header is malformed ({' '.join(str(exc).split())[:200]})") from None
    if any(n < 0 for n in shape):
        raise BoundedReadError(f"its .npy header claims the shape {list(shape)}")
    if not dtype.hasobject:
        count = math.prod(shape)
        need, have = count * dtype.itemsize, _left(fh, size)
        if need > have:
            raise BoundedReadError(f"its .npy header claims an array of shape {list(shape)} ({need:,} bytes) but "
                                   f"only {have:,} bytes follow; it is truncated or damaged")
    return shape, fortran, dtype


def read_npy(fh: BinaryIO, size: int | None = None) -> np.ndarray:
    """A numeric (or fixed-size text) array from the .npy file at `fh`; pickled (object) arrays and structured
    dtypes are refused."""
    shape, fortran, dtype = read_npy_header(fh, size)
    if dtype.hasobject:
        raise BoundedReadError("it holds pickled Python objects, which are never read from this kind of file")
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise BoundedReadError(f"it holds an array of {dtype}, not numbers")
    buf = bytearray(math.prod(shape) * dtype.itemsize)
    if fh.readinto(buf) != len(buf):
        raise BoundedReadError("it ends inside its array data; it is truncated")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """read_npy of the file at `path` (a missing file is an OSError)."""
    with open(path, "rb") as fh:
        return read_npy(fh)


# ----------------------------------------------------------------------------------------------------------------
# .npz

def npz_budget(size: int) -> int:
    """How many bytes the members of an .npz file of `size` bytes may unpack to: np.savez stores them as they are;
    compressed files get 16x their size (64 MiB at least) and no more, so a zip bomb stays small."""
    return max(16 * size, 64 << 20)


def read_npz(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The plain arrays of an .npz file, by name (without '.npy'). Member sizes are checked against `max_bytes`
    (default `npz_budget` of the file's size) and every array's header against its member before anything is
    unpacked. A damaged or truncated archive, a member that is not a numeric .npy, or more than 256 members are a
    BoundedReadError naming the member; a missing file is an OSError."""
    max_bytes = npz_budget(os.path.getsize(path)) if max_bytes is None else max_bytes
    name = ""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > _MAX_NPZ_MEMBERS:
                raise BoundedReadError(f"it has {len(members)} members; an .npz of this kind has a few")
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                raise BoundedReadError(f"its members unpack to {total:,} bytes, more than a file of this size may "
                                       f"({max_bytes:,})")
            arrays = {}
            for member in members:
                name = member.filename
                with archive.open(member) as fh:
                    arrays[name[:-4] if name.endswith(".npy") else name] = read_npy(fh, member.file_size)
            return arrays
    except BoundedReadError as exc:
        raise BoundedReadError(f"member '{name}': {exc}" if name else str(exc)) from None
    except ZIP_ERRORS as exc:
        where = f" (member '{name}')" if name else ""
        raise BoundedReadError(f"it is not a readable .npz archive{where}: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]}; it is truncated or damaged") from None


# ----------------------------------------------------------------------------------------------------------------
# Text

def _shown(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


def text_numbers(line: str, number: int, *, skip: int = 0, count: int | None = None) -> list:
    """The numbers of one text line (after `skip` leading words; exactly `count` of them when given, further ones
    ignored). `number` is the line's number for the BoundedReadError ('line 12: ...')."""
    words = line.split()[skip:]
    if count is not None:
        words = words[:count]
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise BoundedReadError(f"line {number}: expected numbers, got {_shown(line)}") from None
    if count is not None and len(values) != count:
        raise BoundedReadError(f"line {number}: expected {count} numbers, got {_shown(line)}")
    return values


def read_text_array(path: str | os.PathLike) -> np.ndarray:
    """Rows of numbers separated by spaces ('#' starts a comment; blank lines are skipped), all of one length, as
    float32 [N, C] (what np.loadtxt reads); a malformed line is a BoundedReadError naming it."""
    rows: list = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            row = text_numbers(line.split("#", 1)[0], number)
            if not row:
                continue
            if rows and len(row) != len(rows[0]):
                raise BoundedReadError(f"line {number}: {len(row)} numbers where the lines before have "
                                       f"{len(rows[0])}")
            rows.append(row)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(rows[0]) if rows else 0)
