"""FLAME's official file formats, written opcode by opcode without chumpy or scipy.

The official FLAME 2020 `generic_model.pkl` is a Python 2 protocol-2 pickle: chumpy arrays are `chumpy.ch.Ch`
objects (NEWOBJ + a state dict holding the numpy value under 'x'), the joint regressor a
`scipy.sparse.csc.csc_matrix` with its csc state, numpy arrays `numpy.core.multiarray._reconstruct` calls whose
state carries the raw bytes, strings BINSTRING (read back through encoding='latin1'). The landmark files: FLAME's
static embedding (.pkl), FLAME's dynamic embedding and DECA's landmark_embedding.npy (.npy files whose payload is a
pickled 0-d object array). Layouts: ../shared/spec/flame_files.md and docs/flame.md.

Used by the stand-in generator (tools/official_standins) and by the tests, which also write hostile variants with
the same emitter (tests/core/flame_fixtures.py).
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT_PARENT = 4294967295  # how FLAME's kintree_table stores the root's parent
FLAME_KINTREE = np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)


@dataclass
class FlameArrays:
    """What the official FLAME files hold, as plain arrays (V vertices, 5 joints).

    v_template [V, 3], f [F, 3], shapedirs [V, 3, S+E], posedirs [V, 3, 36], J_regressor [5, V] (dense here,
    written sparse), weights [V, 5], kintree_table [2, 5], J [5, 3]; the landmark embeddings: static (FLAME's 51
    points) idx [51] / bary [51, 3], dynamic (jaw contour by neck yaw) idx [79, 17] / bary [79, 17, 3], and DECA's
    'full' 68 points idx [68] / bary [68, 3]."""
    v_template: np.ndarray
    f: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    kintree_table: np.ndarray
    J: np.ndarray
    static_idx: np.ndarray
    static_bary: np.ndarray
    dynamic_idx: np.ndarray
    dynamic_bary: np.ndarray
    full_idx: np.ndarray
    full_bary: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# A tiny intermediate form and the opcode emitter

@dataclass(frozen=True)
class Global:
    module: str
    name: str


_NO_STATE = object()


@dataclass(eq=False)
class Reduce:
    """`func(*args)`, then BUILD with `state` when given."""
    func: Any
    args: tuple
    state: Any = _NO_STATE


@dataclass(eq=False)
class NewObj:
    """`cls.__new__(cls, *args)` (protocol-2 NEWOBJ), then BUILD with `state`."""
    cls: Global
    args: tuple = ()
    state: Any = _NO_STATE


def chumpy(value: Any, cls: str = "Ch", module: str = "chumpy.ch", **extra: Any) -> NewObj:
    """A chumpy object as Python 2 pickled it: NEWOBJ of the class, then its __dict__ (value under 'x')."""
    state = {"x": value} if value is not None else {}
    state.update(extra)
    return NewObj(Global(module, cls), (), state)


def numpy_dtype(code: str) -> Reduce:
    order = "|" if np.dtype(code).itemsize == 1 or code.startswith("O") else "<"
    flags = 63 if code.startswith("O") else 0
    return Reduce(Global("numpy", "dtype"), (code, False, True), (3, order, None, None, None, -1, -1, flags))


@dataclass(eq=False)
class Raw:
    """Bytes spliced into the stream as they are."""
    data: bytes


class Emitter:
    """Writes protocol 2 (Python 2 flavour: str -> BINSTRING) or protocol 3 (Python 3: str -> BINUNICODE)."""

    def __init__(self, py2: bool = True) -> None:
        self.py2 = py2
        self.protocol = 2 if py2 else 3
        self.out = bytearray()
        self.memo: dict[Any, int] = {}

    def pickle(self, obj: Any) -> bytes:
        self.out += pickle.PROTO + bytes([self.protocol])
        self.dump(obj)
        self.out += pickle.STOP
        return bytes(self.out)

    def _put(self, key: Any) -> None:
        idx = len(self.memo)
        self.memo[key] = idx
        self.out += pickle.BINPUT + bytes([idx]) if idx < 256 else pickle.LONG_BINPUT + struct.pack("<I", idx)

    def _raw_string(self, data: bytes) -> None:
        if self.py2:
            if len(data) < 256:
                self.out += pickle.SHORT_BINSTRING + bytes([len(data)]) + data
            else:
                self.out += pickle.BINSTRING + struct.pack("<i", len(data)) + data
        else:
            if len(data) < 256:
                self.out += pickle.SHORT_BINBYTES + bytes([len(data)]) + data
            else:
                self.out += pickle.BINBYTES + struct.pack("<I", len(data)) + data

    def dump(self, obj: Any) -> None:
        out = self.out
        if obj is None:
            out += pickle.NONE
        elif obj is True or obj is False:
            out += pickle.NEWTRUE if obj else pickle.NEWFALSE
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                out += pickle.BININT1 + bytes([obj])
            elif -2 ** 31 <= obj < 2 ** 31:
                out += pickle.BININT + struct.pack("<i", obj)
            else:
                data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                out += pickle.LONG1 + bytes([len(data)]) + data
        elif isinstance(obj, float):
            out += pickle.BINFLOAT + struct.pack(">d", obj)
        elif isinstance(obj, str):
            if self.py2:
                self._raw_string(obj.encode("latin1"))
            else:
                data = obj.encode("utf-8")
                out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data
        elif isinstance(obj, bytes):
            self._raw_string(obj)
        elif isinstance(obj, tuple):
            if not obj:
                out += pickle.EMPTY_TUPLE
            elif len(obj) <= 3:
                for x in obj:
                    self.dump(x)
                out += (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(obj) - 1]
            else:
                out += pickle.MARK
                for x in obj:
                    self.dump(x)
                out += pickle.TUPLE
        elif isinstance(obj, list):
            out += pickle.EMPTY_LIST
            if obj:
                out += pickle.MARK
                for x in obj:
                    self.dump(x)
                out += pickle.APPENDS
        elif isinstance(obj, dict):
            out += pickle.EMPTY_DICT
            if obj:
                out += pickle.MARK
                for k, v in obj.items():
                    self.dump(k)
                    self.dump(v)
                out += pickle.SETITEMS
        elif isinstance(obj, Global):
            key = ("global", obj.module, obj.name)
            if key in self.memo:
                out += pickle.BINGET + bytes([self.memo[key]])
            else:
                out += pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii")
                self._put(key)
        elif isinstance(obj, Reduce):
            self.dump(obj.func)
            self.dump(tuple(obj.args))
            out += pickle.REDUCE
            if obj.state is not _NO_STATE:
                self.dump(obj.state)
                out += pickle.BUILD
        elif isinstance(obj, NewObj):
            self.dump(obj.cls)
            self.dump(tuple(obj.args))
            out += pickle.NEWOBJ
            if obj.state is not _NO_STATE:
                self.dump(obj.state)
                out += pickle.BUILD
        elif isinstance(obj, np.ndarray):
            self.dump(self._ndarray(obj))
        elif isinstance(obj, Raw):
            out += obj.data
        else:
            raise TypeError(f"cannot emit {type(obj).__name__}")

    def _ndarray(self, arr: np.ndarray) -> Reduce:
        typecode = "b" if self.py2 else b"b"
        if arr.dtype.hasobject:
            dtype, data = numpy_dtype("O8"), list(arr.ravel())
        else:
            arr = np.ascontiguousarray(arr)
            dtype, data = numpy_dtype(arr.dtype.str[1:]), arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        return Reduce(Global("numpy.core.multiarray", "_reconstruct"), (Global("numpy", "ndarray"), (0,), typecode),
                      (1, tuple(arr.shape), dtype, False, data))


def pickle_bytes(obj: Any, py2: bool = True) -> bytes:
    return Emitter(py2).pickle(obj)


# ----------------------------------------------------------------------------------------------------------------
# Files in the official layouts

def sparse_csc(dense: np.ndarray, module: str = "scipy.sparse.csc", reconstructor: bool = False) -> Any:
    """A scipy.sparse csc_matrix as pickled by scipy (state: data, indices, indptr, _shape, maxprint, format)."""
    cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
    indices = np.concatenate(cols).astype(np.int32)
    data = np.concatenate([dense[c, j] for j, c in enumerate(cols)]).astype(np.float64)
    state = {"_shape": tuple(dense.shape), "maxprint": 50, "format": "csc", "data": data, "indices": indices,
             "indptr": indptr}
    cls = Global(module, "csc_matrix")
    if reconstructor:   # protocol 0/1 style: copy_reg._reconstructor(cls, object, None) + BUILD
        return Reduce(Global("copy_reg", "_reconstructor"), (cls, Global("__builtin__", "object"), None), state)
    return NewObj(cls, (), state)


def flame_model_tree(m: FlameArrays, *, use_chumpy: bool = True, nested: bool = False,
                     sparse_module: str = "scipy.sparse.csc", reconstructor: bool = False) -> dict:
    """The dict the official FLAME pickle holds, with chumpy objects for the Ch-valued keys."""
    def ch(arr: np.ndarray) -> Any:
        if not use_chumpy:
            return arr
        inner = chumpy(arr, _dirty_vars=Reduce(Global("__builtin__", "set"), ([],)))
        return chumpy(inner) if nested else inner

    return {
        "f": m.f,
        "v_template": ch(m.v_template),
        "shapedirs": ch(m.shapedirs),
        "posedirs": m.posedirs,
        "J_regressor": sparse_csc(m.J_regressor, sparse_module, reconstructor),
        "weights": ch(m.weights),
        "kintree_table": m.kintree_table,
        # 'J' as a chumpy selection of the stored joints (never needed by the converter, but must not break it)
        "J": chumpy(None, "Select", "chumpy.reordering", a=chumpy(m.J), idxs=np.arange(15, dtype=np.int64),
                    preferred_shape=(5, 3)) if use_chumpy else m.J,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pickle(path: Path, m: FlameArrays, *, py2: bool = True, **kw: Any) -> Path:
    Path(path).write_bytes(pickle_bytes(flame_model_tree(m, **kw), py2))
    return Path(path)


def npy_object_bytes(obj: Any, py2: bool = False) -> bytes:
    """An .npy file holding a 0-d object array (what np.save writes for a dict): header, then the pickled array."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    pad = 64 - (10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    wrapped = Reduce(Global("numpy.core.multiarray", "_reconstruct"),
                     (Global("numpy", "ndarray"), (0,), "b" if py2 else b"b"),
                     (1, (), numpy_dtype("O8"), False, [obj]))
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + pickle_bytes(wrapped, py2)


def write_static_embedding(path: Path, m: FlameArrays) -> Path:
    Path(path).write_bytes(pickle_bytes({"lmk_face_idx": m.static_idx, "lmk_b_coords": m.static_bary}, py2=True))
    return Path(path)


def write_dynamic_embedding(path: Path, m: FlameArrays) -> Path:
    Path(path).write_bytes(npy_object_bytes({"lmk_face_idx": m.dynamic_idx, "lmk_b_coords": m.dynamic_bary},
                                            py2=True))
    return Path(path)


def write_deca_embedding(path: Path, m: FlameArrays) -> Path:
    Path(path).write_bytes(npy_object_bytes({
        "static_lmk_faces_idx": m.static_idx.astype(np.int64), "static_lmk_bary_coords": m.static_bary,
        "dynamic_lmk_faces_idx": m.dynamic_idx, "dynamic_lmk_bary_coords": m.dynamic_bary,
        "full_lmk_faces_idx": m.full_idx[None], "full_lmk_bary_coords": m.full_bary[None],
    }, py2=False))
    return Path(path)


def write_official_set(folder: Path, m: FlameArrays, **kw: Any) -> dict:
    """generic_model.pkl + flame_static_embedding.pkl + flame_dynamic_embedding.npy + landmark_embedding.npy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "model": write_flame_pickle(folder / "generic_model.pkl", m, **kw),
        "static": write_static_embedding(folder / "flame_static_embedding.pkl", m),
        "dynamic": write_dynamic_embedding(folder / "flame_dynamic_embedding.npy", m),
        "deca": write_deca_embedding(folder / "landmark_embedding.npy", m),
    }
