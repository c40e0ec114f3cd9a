"""Reading the official FLAME model files without chumpy and without running code from them.

The official `generic_model.pkl` (FLAME 2020) and the FLAME 2023 pickles hold chumpy objects (`chumpy.ch.Ch`, whose
pickled state keeps the numpy value under 'x'), a scipy.sparse `J_regressor` and numpy arrays. chumpy does not work
with current numpy, and a plain `pickle.load` would run whatever the file names. Here every global the pickle names
goes through a whitelist of inert stand-ins: chumpy objects become records whose stored array is read back, sparse
matrices are rebuilt as dense arrays, numpy arrays are rebuilt from their raw bytes, and anything else is refused
with a CheckpointError before it can run.

The landmark embeddings users have are read the same way: FLAME's `flame_static_embedding.pkl` (51 points) and
`flame_dynamic_embedding.npy` (17 contour points for each neck yaw), or DECA's `landmark_embedding.npy`. The .npy
files hold a pickled dict; their header is parsed here and the payload goes through the same restricted unpickler
(never `np.load(allow_pickle=True)`).

`convert_official_flame` turns these into the plain-array layout of `model_data.py`; `load_or_convert` does it
once per set of input files and keeps the .npz in the user's cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import CheckpointError, InputError
from ..io.bounded_read import BoundedReadError, read_npy, read_npy_header
from ..io.restricted_pickle import (BoundedUnpickler, InertObject, NumpyArray, NumpyStandIns, ObjectArray,
                                    PickleRules, cheap_to_hash, inert_class, one_line, short_repr)
from .model_data import (FLAME_PARENTS, N_CONTOUR_LANDMARKS, N_DYNAMIC_YAWS, N_JOINTS, N_LANDMARKS, FlameModelData,
                         load_model_data, save_model_data)

__all__ = ["read_flame_pickle", "read_pickled_file", "read_static_embedding", "read_dynamic_embedding",
           "read_deca_embedding", "LandmarkEmbedding", "read_official_flame", "convert_official_flame",
           "load_or_convert", "default_cache_dir", "read_obj_uvs"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CONVERTER_VERSION = 1   # part of the cache key: bump when the converted layout or its contents change
_MAX_DEPTH = 64         # chumpy expressions and containers nest a few levels; deeper means a hostile file
_MIN_DENSE_BYTES = 1 << 20   # a sparse matrix may unpack to the file's size in float64, or to this much
_REFUSED = ("The file is not an official FLAME model or landmark file, or may be malicious; nothing from it "
            "was run. Use the official FLAME files (generic_model.pkl / flame2023.pkl, flame_static_embedding.pkl, "
            "flame_dynamic_embedding.npy) or DECA's landmark_embedding.npy.")

# Plain numeric numpy dtype names a FLAME file may use; object arrays only for the pickled dict inside an .npy file.
# Python 2 pickles (the FLAME 2020 release) keep array bytes in str payloads and may use 4-tuple array states.
_RULES = PickleRules(
    refusal=_REFUSED, object_arrays=True, legacy_arrays=True,
    dtypes=frozenset({"b1", "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "int8", "int16",
                      "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
                      "bool"}))

# Number of times an official pickle was actually parsed (diagnostics; the cache tests read it).
pickle_reads = 0


# ----------------------------------------------------------------------------------------------------------------
# Inert stand-ins for what the pickles name

class _Inert(InertObject):
    """Base of the stand-ins for classes a FLAME file pickles by reference (chumpy objects, sparse matrices)."""

    refusal = _REFUSED


class _Chumpy(_Inert):
    """A chumpy object (`chumpy.ch.Ch`, `chumpy.reordering.Select`, ...): only its state is kept."""


class _Sparse(_Inert):
    """A scipy.sparse csc/csr matrix: data, indices, indptr and shape are kept and turned into a dense array."""


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise _RULES.error("The pickle builds a set from unexpected arguments")
    return set(x for x in items if isinstance(x, (str, int, float, bytes, tuple)) and cheap_to_hash(x))


_SAFE_GLOBALS: dict[tuple[str, str], Any] = NumpyStandIns(_RULES, _Inert).globals(frombuffer=True)
for _m in ("builtins", "__builtin__"):
    _SAFE_GLOBALS[(_m, "set")] = _set
    _SAFE_GLOBALS[(_m, "frozenset")] = _set
_SPARSE_MODULES = frozenset({"scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                             "scipy.sparse.compressed", "scipy.sparse._compressed", "scipy.sparse._arrays"})
_SPARSE_CLASSES = frozenset({"csc_matrix", "csr_matrix", "csc_array", "csr_array"})


class _RestrictedUnpickler(BoundedUnpickler):
    """Unpickler whose globals are the inert stand-ins above; everything else raises CheckpointError, and
    BoundedUnpickler keeps its work and result proportional to the file."""

    def __init__(self, fh: Any, source: str) -> None:
        super().__init__(fh, _RULES, source, max_depth=_MAX_DEPTH, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            return inert_class(_Chumpy, module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return inert_class(_Sparse, module, name)
        raise _RULES.error(f"{self.source} refers to {module}.{name}, which a FLAME model or landmark file never "
                           "holds")

    def persistent_load(self, pid: Any) -> Any:
        raise _RULES.error(f"{self.source} uses persistent ids, which FLAME files never do")


# ----------------------------------------------------------------------------------------------------------------
# From stand-ins to plain values

def _plain(obj: Any, depth: int = 0) -> Any:
    """Turn the unpickled structure into dicts, lists and numpy arrays; chumpy and sparse records stay records."""
    if depth > _MAX_DEPTH:
        raise _RULES.error("The pickle nests deeper than any FLAME file does")
    if isinstance(obj, NumpyArray):
        obj = obj.value
    if isinstance(obj, ObjectArray):
        items = [_plain(x, depth + 1) for x in obj.items]
        return items[0] if obj.shape == () else items
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(x, depth + 1) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(x, depth + 1) for x in obj)
    if isinstance(obj, _Inert):
        obj.state = _plain(obj.state, depth + 1)
    return obj


def _dense_limit(path: Path) -> int:
    """How many bytes a sparse matrix of the file at `path` may unpack to (float64): the file's size, 1 MiB at
    least. FLAME's joint regressor (5 x 5023) is a small part of its model file."""
    return max(path.stat().st_size, _MIN_DENSE_BYTES)


def _as_array(obj: Any, key: str, source: str, depth: int = 0, limit: int = _MIN_DENSE_BYTES) -> np.ndarray:
    """The numeric array a FLAME pickle stores under `key`: a numpy array, a chumpy object's stored value (possibly
    nested, or a `Select` of one), or a sparse matrix made dense (at most `limit` bytes)."""
    if depth > _MAX_DEPTH:
        raise _RULES.error(f"{source}: '{key}' nests chumpy objects too deeply")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise CheckpointError(f"{source}: '{key}' is a numpy array of {obj.dtype}, not numbers.")
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return np.asarray(obj)
    if isinstance(obj, _Sparse):
        return _sparse_to_dense(obj, key, source, limit)
    if isinstance(obj, _Chumpy):
        st = obj.state
        if "x" in st:
            return _as_array(st["x"], key, source, depth + 1, limit)
        if obj.pickle_name == "Select" and "a" in st and "idxs" in st:
            base = _as_array(st["a"], key, source, depth + 1, limit).ravel()
            idxs = np.asarray(_as_array(st["idxs"], key, source, depth + 1, limit)).astype(np.int64).ravel()
            if idxs.size and (idxs.min() < -base.size or idxs.max() >= base.size):
                raise CheckpointError(f"{source}: the chumpy selection '{key}' indexes outside its array.")
            out = base[idxs]
            shape = st.get("preferred_shape")
            if shape is not None:
                try:
                    out = out.reshape(tuple(int(s) for s in shape))
                except (TypeError, ValueError):
                    raise CheckpointError(f"{source}: the chumpy selection '{key}' has an invalid shape.") from None
            return out
        raise CheckpointError(f"{source}: '{key}' is a chumpy {obj.qualified_name()} expression without a "
                              "stored value; only stored chumpy arrays (Ch) and selections can be read without "
                              "chumpy. Use the official FLAME release files.")
    raise CheckpointError(f"{source}: '{key}' is a {type(obj).__name__}, not an array; the file is not a FLAME "
                          "model in the official layout.")


def _sparse_to_dense(obj: _Sparse, key: str, source: str, limit: int) -> np.ndarray:
    st = obj.state
    shape = st.get("_shape", st.get("shape"))
    try:
        rows, cols = (int(s) for s in shape)
        if rows < 0 or cols < 0 or rows * cols * 8 > limit:
            raise CheckpointError(f"{source}: the sparse matrix '{key}' claims the shape {rows}x{cols}, which would "
                                  f"unpack to more than a file of this size may ({limit:,} bytes). " + _REFUSED)
        data = np.asarray(_as_array(st["data"], key, source), dtype=np.float64)
        indices = np.asarray(_as_array(st["indices"], key, source)).astype(np.int64)
        indptr = np.asarray(_as_array(st["indptr"], key, source)).astype(np.int64)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: the sparse matrix '{key}' lacks data, indices, indptr or its shape; "
                              "the file is corrupted.") from None
    csc = obj.pickle_name.startswith("csc")
    major, minor = (cols, rows) if csc else (rows, cols)
    ok = (indptr.shape == (major + 1,) and indptr[0] == 0 and indptr[-1] == data.size == indices.size
          and np.all(np.diff(indptr) >= 0) and (indices.size == 0 or (indices.min() >= 0 and indices.max() < minor)))
    if not ok:
        raise CheckpointError(f"{source}: the sparse matrix '{key}' is inconsistent (indptr/indices do not match "
                              f"its shape {rows}x{cols}); the file is corrupted.")
    dense = np.zeros((major, minor), dtype=np.float64)
    major_idx = np.repeat(np.arange(major), np.diff(indptr))
    np.add.at(dense, (major_idx, indices), data)
    return dense.T.copy() if csc else dense


# ----------------------------------------------------------------------------------------------------------------
# Files

def _check_file(path: PathLike, what: str, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} {str(path)!r} does not exist. {hint}")
    return path


def _unpickle_bytes(data: bytes, source: str) -> Any:
    try:
        return _plain(_RestrictedUnpickler(io.BytesIO(data), source).load())
    except CheckpointError:
        raise
    except RecursionError:
        raise _RULES.error(f"{source} nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of a corrupted or foreign file
        raise CheckpointError(f"{source} is not a readable pickle ({type(exc).__name__}: {one_line(exc)}); it is "
                              "corrupted or not a FLAME file. Download it again.") from None


def read_pickled_file(path: PathLike) -> Any:
    """Read a FLAME-related pickle (.pkl) or an .npy file holding a pickled object, with the restricted unpickler.

    Numeric .npy files are read with numpy (allow_pickle=False). Returns dicts / lists / numpy arrays, with chumpy
    and sparse objects as inert records (use `_as_array` semantics through the public readers below)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(6)
        fh.seek(0)
        if head == b"\x93NUMPY":
            return _read_npy(fh, str(path))
        return _unpickle_bytes(fh.read(), str(path))


def _read_npy(fh: Any, source: str) -> Any:
    try:
        shape, fortran, dtype = read_npy_header(fh)
        if not dtype.hasobject:
            fh.seek(0)
            return read_npy(fh)
    except BoundedReadError as exc:
        raise CheckpointError(f"{source} cannot be read: {exc}. Download it again.") from None
    return _unpickle_bytes(fh.read(), source)


def read_flame_pickle(path: PathLike) -> dict:
    """The official FLAME model pickle as a dict of plain numpy arrays (and strings).

    Keys read: v_template [V,3], f [F,3], shapedirs [V,3,S+E], posedirs [V,3,36], J_regressor [5,V] (dense),
    weights [V,5], kintree_table [2,5], plus bs_style / bs_type when present. Raises CheckpointError for a file
    that names anything but numpy, scipy.sparse and chumpy classes (nothing from it is run)."""
    global pickle_reads
    path = _check_file(path, "FLAME model file", "Download FLAME 2020 (generic_model.pkl) or FLAME 2023 from "
                       "https://flame.is.tue.mpg.de (free registration) and give its path.")
    raw = read_pickled_file(path)
    pickle_reads += 1
    source = str(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source} holds a {type(raw).__name__}, not the dict of a FLAME model. Give the "
                              "model file (generic_model.pkl or flame2023.pkl), not a landmark file.")
    required = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
    missing = [k for k in required if k not in raw]
    if missing and any("lmk" in str(k) for k in raw):
        raise CheckpointError(f"{source} is a landmark embedding, not a FLAME model. Give the model file "
                              "(generic_model.pkl or flame2023.pkl) as the model and this file as the landmark "
                              "embedding.")
    if missing:
        raise CheckpointError(f"{source} is not a FLAME model: it lacks {', '.join(missing)}. Give the model file "
                              "(generic_model.pkl or flame2023.pkl).")
    limit = _dense_limit(path)
    out: dict = {key: _as_array(raw[key], key, source, limit=limit) for key in required}
    for key in ("bs_style", "bs_type"):
        if isinstance(raw.get(key), (str, bytes)):
            out[key] = raw[key].decode("latin1") if isinstance(raw[key], bytes) else raw[key]
    return out


@dataclass(frozen=True)
class LandmarkEmbedding:
    """68 static landmarks (iBUG order) and optionally the 17-point contour look-up by neck yaw [79, 17]."""

    faces_idx: np.ndarray                          # [68] int64
    bary_coords: np.ndarray                        # [68, 3] float32
    dynamic_faces_idx: Optional[np.ndarray] = None  # [79, 17] int64
    dynamic_bary_coords: Optional[np.ndarray] = None  # [79, 17, 3] float32


def _dict_arrays(raw: Any, keys: tuple, source: str, what: str) -> list:
    if not isinstance(raw, dict):
        raise InputError(f"{source} holds a {type(raw).__name__}, not the dict of {what}; check that you gave the "
                         "right file.")
    missing = [k for k in keys if k not in raw]
    if missing:
        raise InputError(f"{source} is not {what}: it lacks {', '.join(missing)}. Check that you gave the right "
                         "file.")
    return [_as_array(raw[k], k, source) for k in keys]


def _embedding_shapes(source: str, idx: np.ndarray, bary: np.ndarray, shape: tuple) -> tuple:
    idx = np.asarray(idx)
    bary = np.asarray(bary)
    if idx.shape != shape or bary.shape != shape + (3,):
        raise InputError(f"{source} holds landmark faces {list(idx.shape)} and barycentric coordinates "
                         f"{list(bary.shape)}; expected {list(shape)} and {list(shape + (3,))}.")
    return idx.astype(np.int64), bary.astype(np.float32)


def read_static_embedding(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's `flame_static_embedding.pkl` -> (face indices [51], barycentric coordinates [51, 3]): the iBUG
    landmarks 17..67 (brows, nose, eyes, mouth)."""
    path = _check_file(path, "FLAME static landmark embedding", "It is flame_static_embedding.pkl from the FLAME "
                       "release (FLAME_PyTorch / TF_FLAME 'model' folder).")
    raw = read_pickled_file(path)
    idx, bary = _dict_arrays(raw, ("lmk_face_idx", "lmk_b_coords"), str(path), "FLAME's static landmark embedding")
    return _embedding_shapes(str(path), idx, bary, (N_LANDMARKS - N_CONTOUR_LANDMARKS,))


def read_dynamic_embedding(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's `flame_dynamic_embedding.npy` -> (face indices [79, 17], barycentric coordinates [79, 17, 3]): the
    jaw contour (iBUG 0..16) for neck yaw 0..39 degrees then -1..-39."""
    path = _check_file(path, "FLAME dynamic landmark embedding", "It is flame_dynamic_embedding.npy from the FLAME "
                       "release (FLAME_PyTorch / TF_FLAME 'model' folder).")
    raw = read_pickled_file(path)
    idx, bary = _dict_arrays(raw, ("lmk_face_idx", "lmk_b_coords"), str(path), "FLAME's dynamic landmark embedding")
    return _embedding_shapes(str(path), idx, bary, (N_DYNAMIC_YAWS, N_CONTOUR_LANDMARKS))


def read_deca_embedding(path: PathLike) -> LandmarkEmbedding:
    """DECA's `landmark_embedding.npy` -> the 68-point embedding DECA's `landmarks2d` use at zero neck yaw (the
    51 static points after the 17 contour points of the zero-yaw row) plus the contour look-up.

    DECA's `full_lmk_*` (68 points with a fixed 3-D jawline) are the `landmarks3d` set, not what Next3D's
    `*_kpt2d.txt` files hold; they are used only when the file has no dynamic contour."""
    path = _check_file(path, "DECA landmark embedding", "It is data/landmark_embedding.npy from the DECA release.")
    raw = read_pickled_file(path)
    source = str(path)
    if isinstance(raw, dict) and "dynamic_lmk_faces_idx" in raw and "static_lmk_faces_idx" in raw:
        s_idx, s_bary, d_idx, d_bary = _dict_arrays(
            raw, ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
                  "dynamic_lmk_bary_coords"), source, "DECA's landmark embedding")
        s_idx, s_bary = _embedding_shapes(source, s_idx, s_bary, (N_LANDMARKS - N_CONTOUR_LANDMARKS,))
        d_idx, d_bary = _embedding_shapes(source, d_idx, d_bary, (N_DYNAMIC_YAWS, N_CONTOUR_LANDMARKS))
        return _combine(s_idx, s_bary, d_idx, d_bary)
    f_idx, f_bary = _dict_arrays(raw, ("full_lmk_faces_idx", "full_lmk_bary_coords"), source,
                                 "DECA's landmark embedding")
    f_idx, f_bary = _embedding_shapes(source, np.asarray(f_idx).reshape(-1), np.asarray(f_bary).reshape(-1, 3),
                                      (N_LANDMARKS,))
    return LandmarkEmbedding(f_idx, f_bary)


def _combine(s_idx: np.ndarray, s_bary: np.ndarray, d_idx: np.ndarray, d_bary: np.ndarray) -> LandmarkEmbedding:
    # Row 0 of the look-up is zero yaw: the contour the generator's training data had (global pose zeroed, neck 0).
    return LandmarkEmbedding(np.concatenate([d_idx[0], s_idx]), np.concatenate([d_bary[0], s_bary]), d_idx, d_bary)


def _landmarks(static_embedding: Optional[PathLike], dynamic_embedding: Optional[PathLike],
               deca_embedding: Optional[PathLike]) -> LandmarkEmbedding:
    if deca_embedding is not None and (static_embedding is not None or dynamic_embedding is not None):
        raise InputError("Give either FLAME's landmark files (flame_static_embedding.pkl and "
                         "flame_dynamic_embedding.npy) or DECA's landmark_embedding.npy, not both.")
    if deca_embedding is not None:
        return read_deca_embedding(deca_embedding)
    if static_embedding is None and dynamic_embedding is None:
        raise InputError("The 68 FLAME landmarks need a landmark embedding file: give FLAME's "
                         "flame_static_embedding.pkl together with flame_dynamic_embedding.npy, or DECA's "
                         "landmark_embedding.npy.")
    if static_embedding is None:
        raise InputError("The FLAME static landmark embedding (flame_static_embedding.pkl, landmarks 17-67) is "
                         "missing; give it together with flame_dynamic_embedding.npy, or give DECA's "
                         "landmark_embedding.npy instead.")
    if dynamic_embedding is None:
        raise InputError("The FLAME dynamic landmark embedding (flame_dynamic_embedding.npy, the 17 jaw-contour "
                         "landmarks) is missing; give it together with flame_static_embedding.pkl, or give DECA's "
                         "landmark_embedding.npy instead.")
    s_idx, s_bary = read_static_embedding(static_embedding)
    d_idx, d_bary = read_dynamic_embedding(dynamic_embedding)
    return _combine(s_idx, s_bary, d_idx, d_bary)


def read_obj_uvs(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates of a FLAME-topology OBJ (e.g. DECA's head_template.obj): (uvs [U, 2], uv_faces [F, 3])."""
    path = _check_file(path, "UV template OBJ", "It is head_template.obj from DECA's data folder.")
    uvs, uv_faces = [], []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if line.startswith("vt "):
                try:
                    uv = [float(x) for x in line.split()[1:3]]
                except ValueError:
                    uv = []
                if len(uv) != 2:
                    raise InputError(f"{path}, line {number}: a 'vt' line needs two numbers, got "
                                     f"{short_repr(line.strip(), 60)}.")
                uvs.append(uv)
            elif line.startswith("f "):
                corners = line.split()[1:]
                try:
                    if len(corners) != 3 or any(c.count("/") < 1 for c in corners):
                        raise ValueError
                    uv_faces.append([int(c.split("/")[1]) - 1 for c in corners])
                except ValueError:
                    raise InputError(f"{path}, line {number}: a face that is not a triangle with texture "
                                     f"coordinates ({short_repr(line.strip(), 60)}); give a FLAME-topology OBJ with "
                                     "UVs.") from None
    if not uvs or not uv_faces:
        raise InputError(f"{path} has no texture coordinates ('vt' lines and 'f v/vt' faces).")
    return np.asarray(uvs, dtype=np.float32), np.asarray(uv_faces, dtype=np.int64)


def _model_name(path: Path, n_total: int) -> str:
    stem = path.stem.lower()
    if "2023" in stem:
        return "FLAME2023"
    if "2020" in stem or (stem == "generic_model" and n_total == 400):
        return "FLAME2020"
    return "FLAME"


def read_official_flame(model_pkl: PathLike, static_embedding: Optional[PathLike] = None,
                        dynamic_embedding: Optional[PathLike] = None, deca_embedding: Optional[PathLike] = None,
                        *, n_shape: int = 300, uv_template_obj: Optional[PathLike] = None,
                        name: Optional[str] = None) -> FlameModelData:
    """Read an official FLAME model pickle and its landmark embedding into the converted layout (no file written).

    n_shape: how many of the pickle's blend shapes are identity components; the rest are expression components
    (FLAME 2020 and 2023: 400 = 300 shape + 100 expression)."""
    landmarks = _landmarks(static_embedding, dynamic_embedding, deca_embedding)
    model_pkl = Path(model_pkl)
    raw = read_flame_pickle(model_pkl)
    source = str(model_pkl)
    blend = raw["shapedirs"]
    if blend.ndim != 3 or blend.shape[1] != 3 or not 0 < n_shape < blend.shape[2]:
        raise CheckpointError(f"{source}: 'shapedirs' has shape {list(blend.shape)}; expected [V, 3, S+E] with more "
                              f"than n_shape={n_shape} components (FLAME 2020/2023: 300 shape + 100 expression).")
    kintree = np.asarray(raw["kintree_table"])
    if kintree.shape != (2, N_JOINTS):
        raise CheckpointError(f"{source}: 'kintree_table' has shape {list(kintree.shape)}; FLAME has 2x{N_JOINTS}.")
    parents = kintree[0].astype(np.int64)
    parents[0] = -1   # the root's parent is stored as the largest uint32
    if tuple(parents.tolist()) != FLAME_PARENTS:
        log.warning("%s has the kinematic tree %s instead of FLAME's %s.", source, parents.tolist(), FLAME_PARENTS)
    uvs = uv_faces = None
    if uv_template_obj is not None:
        uvs, uv_faces = read_obj_uvs(uv_template_obj)
    try:
        return FlameModelData(
            v_template=raw["v_template"], faces=np.asarray(raw["f"]).astype(np.int64),
            shapedirs=blend[:, :, :n_shape], exprdirs=blend[:, :, n_shape:], posedirs=raw["posedirs"],
            J_regressor=raw["J_regressor"], weights=raw["weights"], parents=parents,
            lmk_faces_idx=landmarks.faces_idx, lmk_bary_coords=landmarks.bary_coords,
            dynamic_lmk_faces_idx=landmarks.dynamic_faces_idx, dynamic_lmk_bary_coords=landmarks.dynamic_bary_coords,
            uvs=uvs, uv_faces=uv_faces, name=name or _model_name(model_pkl, blend.shape[2]), source=source)
    except InputError as exc:
        raise CheckpointError(f"The FLAME files do not fit together or are corrupted: {exc}") from None


def convert_official_flame(model_pkl: PathLike, out_npz: PathLike, static_embedding: Optional[PathLike] = None,
                           dynamic_embedding: Optional[PathLike] = None, deca_embedding: Optional[PathLike] = None,
                           *, n_shape: int = 300, uv_template_obj: Optional[PathLike] = None,
                           name: Optional[str] = None) -> FlameModelData:
    """Convert an official FLAME model + landmark embedding to the plain .npz layout at `out_npz` (atomic write).

    Landmarks: FLAME's flame_static_embedding.pkl + flame_dynamic_embedding.npy, or DECA's landmark_embedding.npy.
    Returns the converted data."""
    data = read_official_flame(model_pkl, static_embedding, dynamic_embedding, deca_embedding, n_shape=n_shape,
                               uv_template_obj=uv_template_obj, name=name)
    save_model_data(out_npz, data)
    log.info("Converted %s to %s.", model_pkl, out_npz)
    return data


def default_cache_dir() -> Path:
    """Where converted models are kept: $NEXT3D_CACHE_DIR, else the platform's user cache folder + next3d/flame."""
    env = os.environ.get("NEXT3D_CACHE_DIR")
    if env:
        return Path(env) / "flame"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "next3d" / "flame"


def _cache_key(paths: list, n_shape: int, name: Optional[str]) -> str:
    h = hashlib.sha256(f"v{CONVERTER_VERSION};n_shape={n_shape};name={name}".encode())
    for p in paths:
        if p is None:
            h.update(b";-")
            continue
        st = Path(p).stat()
        h.update(f";{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_or_convert(model_pkl: PathLike, static_embedding: Optional[PathLike] = None,
                    dynamic_embedding: Optional[PathLike] = None, deca_embedding: Optional[PathLike] = None,
                    *, cache_dir: Optional[PathLike] = None, n_shape: int = 300,
                    uv_template_obj: Optional[PathLike] = None, name: Optional[str] = None) -> FlameModelData:
    """The converted model for these files, converting only the first time.

    The cached .npz in `cache_dir` (default `default_cache_dir()`) is keyed by the input files' paths, sizes and
    modification times and by the converter version, so replacing a file converts again."""
    inputs = [model_pkl, static_embedding, dynamic_embedding, deca_embedding, uv_template_obj]
    _check_file(model_pkl, "FLAME model file", "Download FLAME 2020 (generic_model.pkl) or FLAME 2023 from "
                "https://flame.is.tue.mpg.de (free registration) and give its path.")
    for p, what in zip(inputs[1:], ("FLAME static landmark embedding", "FLAME dynamic landmark embedding",
                                    "DECA landmark embedding", "UV template OBJ")):
        if p is not None:
            _check_file(p, what, "Check the path.")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{Path(model_pkl).stem}-{_cache_key(inputs, n_shape, name)}.npz"
    if cached.is_file():
        try:
            return load_model_data(cached)
        except InputError as exc:
            log.warning("Cached FLAME model %s is unreadable (%s); converting again.", cached, exc)
    data = read_official_flame(model_pkl, static_embedding, dynamic_embedding, deca_embedding, n_shape=n_shape,
                               uv_template_obj=uv_template_obj, name=name)
    try:
        save_model_data(cached, data)
        log.info("Converted %s to %s.", model_pkl, cached)
    except OSError as exc:   # an unwritable cache only costs speed
        log.warning("Could not write the converted FLAME model to %s (%s); it will be converted again next time.",
                    cached, exc)
    return data
