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

from .pickle_nodes import NO_STATE as _NO_STATE  # noqa: F401 - for the tests' hostile variants
from .pickle_nodes import Call, Global, NewObj, OpcodeWriter

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
# Python 2's pickle, as FLAME's files were written

Reduce = Call  # `func(*args)`, then BUILD with `state` when given


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


class Emitter(OpcodeWriter):
    """Writes protocol 2 (Python 2 flavour: str -> BINSTRING) or protocol 3 (Python 3: str -> BINUNICODE); only
    globals enter the memo."""

    def __init__(self, py2: bool = True) -> None:
        super().__init__(2 if py2 else 3)
        self.py2 = py2
        self.memo: dict[Any, int] = {}

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

    def _int(self, x: int) -> None:
        if 0 <= x < 256:
            self.out += pickle.BININT1 + bytes([x])
        elif -2 ** 31 <= x < 2 ** 31:
            self.out += pickle.BININT + struct.pack("<i", x)
        else:
            data = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
            self.out += pickle.LONG1 + bytes([len(data)]) + data

    def _str(self, s: str) -> None:
        if self.py2:
            self._raw_string(s.encode("latin1"))
        else:
            data = s.encode("utf-8")
            self.out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def _bytes(self, b: bytes) -> None:
        self._raw_string(b)

    def _global(self, g: Global) -> None:
        key = ("global", g.module, g.name)
        if key in self.memo:
            self.out += pickle.BINGET + bytes([self.memo[key]])
            return
        self.out += pickle.GLOBAL + f"{g.module}\n{g.name}\n".encode("ascii")
        idx = len(self.memo)
        self.memo[key] = idx
        self.out += pickle.BINPUT + bytes([idx]) if idx < 256 else pickle.LONG_BINPUT + struct.pack("<I", idx)

    def special(self, obj: Any) -> bool:
        if isinstance(obj, np.ndarray):
            self.dump(self._ndarray(obj))
        elif isinstance(obj, Raw):
            self.out += obj.data
        else:
            return False
        return True

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
