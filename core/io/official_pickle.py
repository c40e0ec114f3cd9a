"""Restricted reader of the official Next3D (and EG3D) network pickles, without running any code from them.

The official `next3d_ffhq_512.pkl` is a plain pickle of `dict(G=..., D=..., G_ema=..., ...)` whose networks are
`torch_utils.persistence` objects: each one pickles as a call of `_reconstruct_persistent_obj(meta)`, and the stock
loader `exec`s `meta['module_src']` (docs/checkpoint_formats.md#persistent-objects). Here every global the pickle
names goes through an explicit whitelist of inert stand-ins: persistent objects and by-reference classes become
records, tensors are rebuilt by a parser of the legacy `torch.save` storage format (so storages saved on CUDA load on
a CPU-only machine), and anything else is refused with a CheckpointError before it can run
(docs/checkpoint_formats.md#tensors-and-storages).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .restricted_pickle import (BoundedUnpickler, InertObject, NumpyArray, NumpyDType, NumpyStandIns, PickleRules,
                                cheap_to_hash, inert_class, one_line, short_repr)
from .safetensors_format import describe_file_format

__all__ = ["OfficialNetwork", "load_official_pickle", "describe_official_pickle"]

log = logging.getLogger(__name__)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of every legacy (non-zip) torch.save stream
_LEGACY_PROTOCOL = 1001
_MAX_DEPTH = 200  # module trees and attribute values nest a few levels; deeper means a hostile file
_REFUSED = ("The file is not a Next3D network pickle or may be malicious; nothing from it was run. "
            "Use the official next3d_ffhq_512.pkl, or a .safetensors checkpoint written by this project.")

# Legacy storage class name -> (little-endian numpy dtype used to read the raw bytes, torch dtype).
# bfloat16 has no numpy dtype: its bytes are read as int16 and reinterpreted.
_STORAGE_DTYPES: dict[str, tuple[str, torch.dtype]] = {
    "FloatStorage": ("<f4", torch.float32),
    "DoubleStorage": ("<f8", torch.float64),
    "HalfStorage": ("<f2", torch.float16),
    "BFloat16Storage": ("<i2", torch.bfloat16),
    "LongStorage": ("<i8", torch.int64),
    "IntStorage": ("<i4", torch.int32),
    "ShortStorage": ("<i2", torch.int16),
    "CharStorage": ("i1", torch.int8),
    "ByteStorage": ("u1", torch.uint8),
    "BoolStorage": ("?", torch.bool),
    "UntypedStorage": ("u1", torch.uint8),
}

# Non-persistent classes that official generators pickle by reference (docs/checkpoint_formats.md). They become
# inert records; nothing is imported. The EG3D spellings are accepted so that an EG3D pickle can be recognised and
# named.
_BY_REFERENCE_CLASSES = frozenset({
    ("training_avatar_texture.triplane_next3d", "OSGDecoder"),
    ("training_avatar_texture.triplane_v13_neural_blending", "OSGDecoder"),
    ("training_avatar_texture.volumetric_rendering.renderer", "ImportanceRenderer"),
    ("training_avatar_texture.volumetric_rendering.ray_sampler", "RaySampler"),
    ("training_avatar_texture.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
    ("training.triplane", "OSGDecoder"),
    ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
    ("training.volumetric_rendering.ray_sampler", "RaySampler"),
    ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
})

# Numpy dtypes a weight_gain-like scalar or a small array may carry; object arrays and the Python 2 layouts of
# FLAME's pickles are refused.
_RULES = PickleRules(refusal=_REFUSED, dtypes=frozenset({"b1", "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8",
                                                         "f2", "f4", "f8", "c8", "c16"}))

_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float", "double", "half", "long", "int", "short")}

# The next3d-specific children of TriPlaneGenerator; EG3D's generator has none of them.
_NEXT3D_CHILDREN = ("texture_backbone", "mouth_backbone", "neural_blending")
_NEXT3D_REQUIRED = ("texture_backbone", "mouth_backbone", "backbone", "neural_blending", "superresolution",
                    "decoder")

# nn.Module bookkeeping that is never a generator attribute.
_MODULE_INTERNALS = frozenset({"training"})


# ----------------------------------------------------------------------------------------------------------------
# Public result

@dataclass(frozen=True)
class OfficialNetwork:
    """A network read from an official pickle, as plain data.

    Fields:
        class_name: the persistent class name of the network (`TriPlaneGenerator`).
        init_kwargs: the constructor keyword arguments saved with it (`_init_kwargs`), EasyDicts turned into dicts.
        state_dict: name -> CPU tensor, in the order and with the names `nn.Module.state_dict()` gives; floating
            tensors are float32, integer tensors int64.
        attributes: plain top-level attributes that are not in the state dict (`uv_face_mask`, `orth_scale`,
            `orth_shift`, `neural_rendering_resolution`, `rendering_kwargs`, ...) plus `plane_axes` read from the
            `renderer` child. Tensors are on the CPU with their stored dtype.
        module_sources: persistent class name -> the module source embedded in the pickle, as text (never run).
            When two classes share a name but not a source (StyleGAN2 and StyleUNet `Generator`), the later ones
            are keyed `"<class> (<module path>)"`.
        module_classes: dotted module path ('' for the network itself) -> class: the bare class name for
            persistent modules, `module.Class` for modules pickled by reference (OSGDecoder, ImportanceRenderer...).
    """

    class_name: str
    init_kwargs: dict
    state_dict: "OrderedDict[str, torch.Tensor]"
    attributes: dict
    module_sources: dict
    module_classes: dict


# ----------------------------------------------------------------------------------------------------------------
# Inert stand-ins for what the pickle names

class _StorageType:
    """Stand-in for a `torch.<X>Storage` class named inside a storage sub-stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.np_dtype = np.dtype(_STORAGE_DTYPES[name][0])
        self.torch_dtype = _STORAGE_DTYPES[name][1]


class _Storage:
    """A storage from a legacy torch.save stream: a read-only window on the pickle's bytes (no copy)."""

    def __init__(self, stype: _StorageType, location: str, numel: int) -> None:
        self.stype = stype
        self.location = location
        self.numel = numel
        self.buffer: bytes | None = None
        self.byte_offset = 0


class _LazyTensor:
    """A tensor whose bytes stay in the pickle until `materialize`, so unused networks (G, D) cost no copies.

    `problem` is None, or why the tensor cannot be read (it asks for more than its storage holds); it is raised,
    with the tensor's name, when the tensor is used."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, is_parameter: bool = False):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.is_parameter = is_parameter
        self.problem = _tensor_problem(storage, offset, size, stride)

    def pickled_weight(self) -> int:
        # A tensor with a problem is never copied (using it raises), so it costs nothing however large it claims.
        return 1 if self.problem else 1 + self.numel() * self.storage.stype.np_dtype.itemsize

    def check(self, name: str = "") -> None:
        if self.problem is not None:
            raise CheckpointError(f"The tensor {repr(name) + ' ' if name else ''}{self.problem}. " + _REFUSED)

    def numel(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n

    def materialize(self, name: str = "") -> torch.Tensor:
        self.check(name)
        st = self.storage
        dtype = st.stype.torch_dtype
        if self.numel() == 0:
            return torch.empty(self.size, dtype=dtype)
        extent = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if st.buffer is None or extent > st.numel:
            raise CheckpointError(f"A tensor of shape {list(self.size)} reaches element {extent} of a storage that "
                                  f"holds {st.numel}; the pickle is corrupted. Download it again.")
        itemsize = st.stype.np_dtype.itemsize
        arr = np.frombuffer(st.buffer, dtype=st.stype.np_dtype, count=extent - self.offset,
                            offset=st.byte_offset + self.offset * itemsize)
        # astype copies into native byte order and a writable buffer torch can own.
        arr = arr.astype(st.stype.np_dtype.newbyteorder("="), copy=True)
        flat = torch.from_numpy(arr)
        if dtype == torch.bfloat16:
            flat = flat.view(torch.bfloat16)
        return flat.as_strided(self.size, self.stride).contiguous()


class _PersistentRecord:
    """What `torch_utils.persistence._reconstruct_persistent_obj(meta)` becomes: the class name, its module
    source as text, and the object's `__dict__`."""

    def __init__(self, class_name: str, module_src: str, state: dict, version: int) -> None:
        self.class_name = class_name
        self.module_src = module_src
        self.state = state
        self.version = version

    def pickled_parts(self) -> tuple:
        return (self.state,)   # the module source is kept as text, never expanded


class _InertObject(InertObject):
    """Base of the stand-ins for classes a network pickle holds by reference (torch.nn containers, OSGDecoder...)."""

    refusal = _REFUSED


class _EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access); read back as a plain dict."""

    def __init__(self, items: Any = None) -> None:
        super().__init__()
        self.__setstate__(items)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


def _checked_items(items: Any, what: str) -> Any:
    """The arguments of a set, frozenset or OrderedDict call: a list or tuple whose items (or keys) hash cheaply."""
    if isinstance(items, dict):
        return items   # its keys were checked when it was filled
    if not isinstance(items, (list, tuple)):
        raise CheckpointError(f"The pickle builds a {what} from a {type(items).__name__}. " + _REFUSED)
    keys = [pair[0] if what == "OrderedDict" and isinstance(pair, tuple) and len(pair) == 2 else pair
            for pair in items]
    if not all(cheap_to_hash(k) for k in keys):
        raise CheckpointError(f"The pickle builds a {what} from items that are not plain values. " + _REFUSED)
    return items


def _set(items: Any = ()) -> set:
    return set(_checked_items(items, "set"))


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_checked_items(items, "frozenset"))


def _ordered_dict(items: Any = ()) -> OrderedDict:
    return OrderedDict(_checked_items(items, "OrderedDict"))


def _bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    # bytearray(bytes) (protocol 3+) or bytearray(str, 'latin-1') (protocol 2): never bytearray(n), which would
    # allocate n bytes that the file does not hold.
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin1"))
    raise CheckpointError(f"The pickle builds a bytearray from a {type(data).__name__}; only bytes are read. "
                          + _REFUSED)


def _torch_device(*args: Any) -> str:
    # torch.device('cuda', 0) -> 'cuda:0'; kept as text, the device is never touched.
    if not args or not all(isinstance(a, (str, int)) for a in args):
        raise CheckpointError("The pickle builds a torch.device from unexpected arguments. " + _REFUSED)
    return ":".join(str(a) for a in args)


def _torch_size(dims: Any = ()) -> tuple:
    return tuple(int(d) for d in dims)


def _check_hooks(hooks: Any) -> None:
    if hooks is not None and not isinstance(hooks, dict):
        raise CheckpointError("A pickled tensor carries unexpected backward hooks. " + _REFUSED)
    if hooks:
        raise CheckpointError("A pickled tensor carries backward hooks; network pickles never do. " + _REFUSED)


_MAX_DIM = 2 ** 48   # no dimension, stride or offset of a real tensor comes near this


def _tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> tuple[_Storage, int, tuple, tuple]:
    if not isinstance(storage, _Storage):
        raise CheckpointError("A pickled tensor is not built on a storage. " + _REFUSED)
    if not (isinstance(offset, int) and 0 <= offset < _MAX_DIM):
        raise CheckpointError("A pickled tensor has an invalid storage offset. " + _REFUSED)
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) <= 32):
        raise CheckpointError("A pickled tensor has an invalid size or stride. " + _REFUSED)
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise CheckpointError("A pickled tensor has an invalid size or stride. " + _REFUSED) from None
    if len(size) != len(stride) or any(not 0 <= s < _MAX_DIM for s in size + stride):
        raise CheckpointError("A pickled tensor has an invalid size or stride. " + _REFUSED)
    return storage, offset, size, stride


def _tensor_problem(storage: _Storage, offset: int, size: tuple, stride: tuple) -> str | None:
    """Why a tensor asks for more than its storage holds, or None. Checked when it is rebuilt, before anything
    is allocated: a stride of 0 or overlapping strides would expand a few stored numbers into any number."""
    numel = 1
    for n in size:
        numel *= n
    if numel == 0:
        return None
    if any(s == 0 and n > 1 for n, s in zip(size, stride)):
        return f"of shape {list(size)} repeats its stored numbers (a stride of 0)"
    if numel > storage.numel:
        return f"of shape {list(size)} asks for {numel:,} numbers from a storage of {storage.numel:,}"
    extent = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if extent > storage.numel:
        return f"of shape {list(size)} reaches number {extent:,} of a storage of {storage.numel:,}"
    return None


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
    _check_hooks(backward_hooks)
    return _LazyTensor(*_tensor_args(storage, storage_offset, size, stride))


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _LazyTensor:
    return _LazyTensor(*_tensor_args(storage, storage_offset, size, stride))


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> _LazyTensor:
    if not isinstance(data, _LazyTensor):
        raise CheckpointError("A pickled parameter does not hold a tensor. " + _REFUSED)
    _check_hooks(backward_hooks)
    data.is_parameter = True
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                                  state: Any = None) -> _LazyTensor:
    # The extra Python state of a Parameter subclass is irrelevant to the weights.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


class _TensorTypeMarker:
    """Stand-in for the torch.Tensor / nn.Parameter classes, only meaningful inside `_rebuild_from_type_v2`."""


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> _LazyTensor:
    # What torch pickles for a tensor carrying Python attributes: the plain rebuild, then the type and the
    # attributes, which are irrelevant to the weights.
    if func not in (_rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state) \
            or not (isinstance(new_type, type) and issubclass(new_type, _TensorTypeMarker)) \
            or not isinstance(args, tuple):
        raise CheckpointError("The pickle rebuilds a tensor in an unexpected way. " + _REFUSED)
    return func(*args)


def _reconstruct_persistent_obj(meta: Any) -> _PersistentRecord:
    """Inert stand-in for torch_utils.persistence._reconstruct_persistent_obj: keeps module_src as text."""
    ok = (type(meta) is dict and meta.get("type") == "class" and isinstance(meta.get("version"), int)
          and isinstance(meta.get("module_src"), str) and isinstance(meta.get("class_name"), str)
          and meta["class_name"].isidentifier() and isinstance(meta.get("state"), dict))
    if not ok:
        shown = sorted(map(str, meta)) if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            "A torch_utils.persistence object in the pickle does not carry the metadata dict that "
            "torch_utils.persistence writes (type='class', version, module_src, class_name, state); got "
            f"{shown}. " + _REFUSED)
    if meta["version"] != 6:
        log.warning("Persistent object %s has persistence version %s (expected 6); reading it anyway.",
                    meta["class_name"], meta["version"])
    return _PersistentRecord(meta["class_name"], meta["module_src"], meta["state"], meta["version"])


_NUMPY = NumpyStandIns(_RULES, _InertObject)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Stand-in for copyreg._reconstructor, used by protocol-0/1 pickles of by-reference objects."""
    if cls is _EasyDict and base is dict:
        return _EasyDict(state or {})
    return _NUMPY.copyreg_reconstructor(cls, base, state)


# Globals the outer pickle may name, mapped to what they become. Nothing here imports or runs pickle content.
# numpy arrays, dtypes and scalars, _codecs.encode and object come from `_NUMPY`; copyreg._reconstructor is its
# version plus EasyDict. (find_class maps the Python 2 module names first, so copy_reg is never looked up.)
_OUTER_ALLOWED: dict[tuple[str, str], Any] = {
    **_NUMPY.globals(),
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): _TensorTypeMarker,
    ("torch", "Tensor"): _TensorTypeMarker,
    ("torch.nn.parameter", "Parameter"): _TensorTypeMarker,
    ("torch", "device"): _torch_device,
    ("torch", "Size"): _torch_size,
}
_OUTER_ALLOWED.update({("torch", name): dtype for name, dtype in _TORCH_DTYPES.items()})


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _refuse(path: str, what: str, where: str = "") -> CheckpointError:
    return CheckpointError(f"Refused to load '{path}': the pickle{where} asks for the global '{what}', which no "
                           f"Next3D network pickle uses. " + _REFUSED)


# ----------------------------------------------------------------------------------------------------------------
# The two restricted unpicklers

class _StorageStreamUnpickler(BoundedUnpickler):
    """Reads the object pickle of a legacy torch.save stream: the only global allowed is a storage class, and
    each persistent id becomes a `_Storage` whose bytes are attached afterwards."""

    def __init__(self, file: io.BytesIO, path: str) -> None:
        super().__init__(file, _RULES, f"'{path}' (inside a tensor's storage bytes)", max_depth=_MAX_DEPTH)
        self._path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise _refuse(self._path, f"{module}.{name}", " (inside a tensor's storage bytes)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[3], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"'{self._path}' holds a tensor storage with an unexpected persistent id "
                                  f"{short_repr(pid, 200)}. " + _REFUSED)
        _, stype, key, location, numel, view = pid
        if view is not None:
            raise CheckpointError(f"'{self._path}' holds a storage view (a pre-PyTorch-1.0 format), which is not "
                                  "supported. Re-save the network with a recent PyTorch, or use the official "
                                  "next3d_ffhq_512.pkl.")
        if key not in self.storages:
            self.storages[key] = _Storage(stype, location, numel)
        return self.storages[key]


class _PlainUnpickler(BoundedUnpickler):
    """For the small header pickles of a storage stream (ints, dicts, lists of str): no globals at all."""

    def __init__(self, file: io.BytesIO, path: str) -> None:
        super().__init__(file, _RULES, f"'{path}' (inside a tensor's storage bytes)", max_depth=_MAX_DEPTH)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        raise _refuse(self._path, f"{module}.{name}", " (inside a tensor's storage bytes)")


def _parse_legacy_storage(data: Any, path: str) -> _Storage:
    """Parse the bytes given to `torch.storage._load_from_bytes`: a legacy torch.save stream of one storage
    (magic, protocol, sys-info, object pickle, key list, then per key an int64 count and the raw bytes)."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"'{path}' passes {type(data).__name__} to _load_from_bytes instead of bytes. "
                              + _REFUSED)
    data = bytes(data)
    f = io.BytesIO(data)
    try:
        magic = _PlainUnpickler(f, path).load()
        protocol = _PlainUnpickler(f, path).load()
        sys_info = _PlainUnpickler(f, path).load()
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise CheckpointError(f"'{path}' holds tensor bytes that are not a legacy torch.save stream; the file "
                                  "is corrupted or was not written by the official training code.")
        unpickler = _StorageStreamUnpickler(f, path)
        obj = unpickler.load()
        keys = _PlainUnpickler(f, path).load()
    except CheckpointError:
        raise
    except Exception as exc:  # malformed sub-stream: report it as a damaged file, not a crash
        raise CheckpointError(f"'{path}' holds damaged tensor bytes ({one_line(exc)}). The file is corrupted or "
                              "truncated; download it again.") from exc
    if not isinstance(obj, _Storage) or not isinstance(keys, list):
        raise CheckpointError(f"'{path}' holds tensor bytes whose object is not a storage. " + _REFUSED)
    # Raw data follows in key order. torch writes the counts and bytes little-endian on every platform.
    pos = f.tell()
    for key in keys:
        if not isinstance(key, str) or key not in unpickler.storages:
            raise CheckpointError(f"'{path}' lists tensor data for an unknown storage key; the file is corrupted.")
        storage = unpickler.storages[key]
        if pos + 8 > len(data):
            raise CheckpointError(f"'{path}' ends inside a tensor's data; the file is truncated. Download it again.")
        (count,) = struct.unpack_from("<q", data, pos)
        pos += 8
        nbytes = count * storage.stype.np_dtype.itemsize
        if count < 0 or pos + nbytes > len(data):
            raise CheckpointError(f"'{path}' ends inside a tensor's data; the file is truncated. Download it again.")
        if count != storage.numel:
            log.warning("Storage %s declares %d elements but holds %d; using the data.", key, storage.numel, count)
        storage.buffer, storage.byte_offset, storage.numel = data, pos, count
        pos += nbytes
    if obj.buffer is None:
        raise CheckpointError(f"'{path}' holds a storage without data; the file is corrupted. Download it again.")
    return obj


class _NetworkUnpickler(BoundedUnpickler):
    """The outer unpickler: `find_class` answers only from the whitelist above, so nothing outside it is ever
    imported or called, and BoundedUnpickler keeps its work and result proportional to the file."""

    build_targets = (InertObject, NumpyArray, NumpyDType, _EasyDict)

    def __init__(self, file: Any, path: str) -> None:
        super().__init__(file, _RULES, f"'{path}'", max_depth=_MAX_DEPTH)
        self._path = path
        self.locations: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _refuse(self._path, f"{module!r}.{name!r}")
        # Protocol 0-2 pickles written by Python 3 spell some modules the Python 2 way (fix_imports).
        module = _PY2_MODULES.get(module, module)
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_from_bytes
        if (module, name) in _OUTER_ALLOWED:
            return _OUTER_ALLOWED[(module, name)]
        # Any torch.nn container/activation pickled by reference (Sequential, ModuleList, Softplus, ...).
        if ((module, name) in _BY_REFERENCE_CLASSES
                or (module.startswith("torch.nn.modules.") and module[17:].isidentifier() and name.isidentifier())):
            return inert_class(_InertObject, module, name)
        raise _refuse(self._path, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"Refused to load '{self._path}': the pickle uses a persistent id "
                              f"({short_repr(pid)}), which network pickles written by the training loop never do. "
                              + _REFUSED)

    def _load_from_bytes(self, data: Any) -> _Storage:
        storage = _parse_legacy_storage(data, self._path)
        self.locations.add(storage.location)
        return storage


# ----------------------------------------------------------------------------------------------------------------
# Reading the file

def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint file not found: '{path}'. Check the path (the official generator is "
                              "distributed as next3d_ffhq_512.pkl).")
    if os.path.isdir(path):
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file. Choose the .pkl file itself.")
    with open(path, "rb") as f:
        head = f.read(2)
    if not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise CheckpointError(f"'{path}' is not a Python pickle: it looks like {describe_file_format(path)}. "
                              "Choose the official Next3D network pickle (next3d_ffhq_512.pkl), or open a "
                              ".safetensors file as a converted checkpoint instead.")


def _read_top_level(path: str) -> tuple[Any, set[str]]:
    _check_file(path)
    try:
        with open(path, "rb") as f:
            unpickler = _NetworkUnpickler(f, path)
            top = unpickler.load()
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"Not enough memory to read '{path}'. Close other programs and try again.") from None
    except Exception as exc:  # every callable reachable here is ours, so this is a damaged or foreign file
        raise CheckpointError(f"'{path}' could not be read as a Next3D network pickle ({type(exc).__name__}: "
                              f"{one_line(exc)}). The file may be truncated (an interrupted download) or corrupted; "
                              "download it again.") from exc
    if isinstance(top, int) and top == _LEGACY_MAGIC:
        raise CheckpointError(f"'{path}' is a legacy torch.save file, not a network pickle written by the Next3D "
                              "training loop. Use the official next3d_ffhq_512.pkl.")
    if not isinstance(top, dict):
        raise CheckpointError(f"'{path}' holds a pickled {type(top).__name__}, not the dict of networks (G, D, "
                              "G_ema, ...) that the Next3D training loop writes. Use the official "
                              "next3d_ffhq_512.pkl.")
    return top, unpickler.locations


def _entry_name(value: Any) -> str:
    if isinstance(value, _PersistentRecord):
        return value.class_name
    if isinstance(value, _InertObject):
        return value.qualified_name()
    return type(value).__name__


def _select(top: dict, key: str, path: str) -> _PersistentRecord:
    if key not in top:
        present = ", ".join(repr(k) for k in top) or "nothing"
        raise CheckpointError(f"'{path}' has no '{key}' entry; it holds {present}. The official Next3D pickle holds "
                              "the generator under 'G_ema'.")
    net = top[key]
    if not isinstance(net, _PersistentRecord):
        raise CheckpointError(f"The '{key}' entry of '{path}' is a {_entry_name(net)}, not a network saved by "
                              "torch_utils.persistence. This is not a Next3D network pickle.")
    return net


def _variant(net: _PersistentRecord) -> str:
    """'next3d', 'eg3d' (a TriPlaneGenerator without Next3D's dynamic-texture children) or 'other'."""
    if net.class_name != "TriPlaneGenerator":
        return "other"
    modules = net.state.get("_modules")
    names = set(modules) if isinstance(modules, dict) else set()
    if not names & set(_NEXT3D_CHILDREN):
        return "eg3d"
    return "next3d" if names >= set(_NEXT3D_REQUIRED) else "other"


def _check_next3d(net: _PersistentRecord, key: str, path: str) -> None:
    variant = _variant(net)
    if variant == "next3d":
        return
    if net.class_name != "TriPlaneGenerator":
        raise CheckpointError(f"The '{key}' network in '{path}' is a {net.class_name}, not a Next3D "
                              "TriPlaneGenerator. Use the official Next3D generator pickle (next3d_ffhq_512.pkl).")
    if variant == "eg3d":
        raise CheckpointError(f"'{path}' holds an EG3D TriPlaneGenerator (it has no texture_backbone, "
                              "mouth_backbone or neural_blending), not a Next3D one. EG3D checkpoints cannot drive "
                              "a FLAME mesh; use the official Next3D pickle (next3d_ffhq_512.pkl).")
    modules = net.state.get("_modules")
    missing = [n for n in _NEXT3D_REQUIRED if not (isinstance(modules, dict) and n in modules)]
    raise CheckpointError(f"'{path}' holds a TriPlaneGenerator of another avatar model (it lacks "
                          f"{', '.join(missing)}), for example InvertAvatar's Next3D++. Only the released Next3D "
                          "generator (next3d_ffhq_512.pkl) is supported.")


# ----------------------------------------------------------------------------------------------------------------
# Walking the module tree

def _module_state(node: Any, where: str) -> dict:
    state = node.state if isinstance(node, (_PersistentRecord, _InertObject)) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"Module '{where or '<network>'}' is a {type(node).__name__}, not a torch module. "
                              + _REFUSED)
    for field in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(field), dict):
            raise CheckpointError(f"Module '{where or '<network>'}' has no {field} dict; it is not a torch module. "
                                  + _REFUSED)
    return state


def _walk_modules(node: Any, prefix: str = "", _seen: tuple = ()) -> Any:
    """Yield (dotted path, module record) depth-first in `_modules` registration order, as nn.Module does."""
    if id(node) in _seen or len(_seen) > _MAX_DEPTH:
        raise CheckpointError(f"The module tree loops back on itself at '{prefix}'. " + _REFUSED)
    state = _module_state(node, prefix)
    yield prefix, node
    for name, child in state["_modules"].items():
        if child is None:  # nn.Module allows registering None; state_dict skips it
            continue
        if not isinstance(name, str):
            raise CheckpointError(f"Module '{prefix}' has a child with a non-text name. " + _REFUSED)
        yield from _walk_modules(child, f"{prefix}.{name}" if prefix else name, _seen + (id(node),))


def _lazy_state_dict(net: _PersistentRecord) -> "OrderedDict[str, tuple[_LazyTensor, bool]]":
    """name -> (lazy tensor, is_parameter) in nn.Module.state_dict() order: own parameters, own persistent
    buffers, then children recursively."""
    out: OrderedDict[str, tuple[_LazyTensor, bool]] = OrderedDict()
    for path, node in _walk_modules(net):
        state = node.state
        skip = state.get("_non_persistent_buffers_set") or set()
        if not isinstance(skip, (set, frozenset)):
            raise CheckpointError(f"Module '{path}' has a malformed _non_persistent_buffers_set. " + _REFUSED)
        prefix = f"{path}." if path else ""
        for group, is_param in (("_parameters", True), ("_buffers", False)):
            for name, value in state[group].items():
                if value is None or (not is_param and name in skip):
                    continue
                if not isinstance(value, _LazyTensor):
                    raise CheckpointError(f"'{prefix}{name}' is a {type(value).__name__}, not a tensor. " + _REFUSED)
                value.check(prefix + name)
                out[prefix + name] = (value, is_param)
    return out


def _state_dict_tensor(lazy: _LazyTensor, name: str) -> torch.Tensor:
    t = lazy.materialize(name)
    # The port runs in float32; official weights are float32 already, this only normalises odd dumps.
    if t.is_floating_point():
        return t.float()
    if t.dtype != torch.bool:
        return t.long()
    return t


class _NotPlain(Exception):
    pass


def _key_path(where: str, key: Any) -> str:
    key = key if isinstance(key, str) else short_repr(key, 40)
    return f"{where}.{key}" if where else key


def _to_plain(value: Any, depth: int = 0, where: str = "") -> Any:
    """Turn a pickled value into plain Python/torch/numpy data, or raise _NotPlain (modules, unknown records).
    `where` names the value in errors (its dotted path)."""
    if depth > _MAX_DEPTH:
        raise CheckpointError("A pickled value nests too deeply. " + _REFUSED)
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype)):
        return value
    if isinstance(value, NumpyArray):
        if value.value is None:
            raise _NotPlain
        return value.value
    if isinstance(value, _LazyTensor):
        return value.materialize(where)
    if isinstance(value, dict):  # dict, OrderedDict and EasyDict all become plain dicts
        return {_to_plain(k, depth + 1, where): _to_plain(v, depth + 1, _key_path(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_to_plain(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (set, frozenset)):
        return {_to_plain(v, depth + 1, where) for v in value}
    raise _NotPlain


def _plain_attributes(state: dict) -> dict:
    out = {}
    for name, value in state.items():
        if not isinstance(name, str) or name.startswith("_") or name in _MODULE_INTERNALS:
            continue
        try:
            out[name] = _to_plain(value, where=name)
        except _NotPlain:
            continue
    return out


def _module_sources(net: _PersistentRecord) -> tuple[dict, dict]:
    sources: dict[str, str] = {}
    classes: dict[str, str] = {}
    known: set[str] = set()   # the texts in `sources`, for a look-up that does not compare every text
    for path, node in _walk_modules(net):
        if isinstance(node, _PersistentRecord):
            classes[path] = node.class_name
            key = node.class_name
            if key in sources and sources[key] != node.module_src:
                if node.module_src in known:
                    continue
                key = f"{node.class_name} ({path})"
            if key not in sources:
                sources[key] = node.module_src
                known.add(node.module_src)
        else:
            classes[path] = node.qualified_name()
    return sources, classes


def _plain_kwargs(net: _PersistentRecord, what: str) -> Any:
    try:
        return _to_plain(net.state.get(what, {} if what == "_init_kwargs" else ()), where=what)
    except _NotPlain:
        raise CheckpointError(f"The {what} saved with {net.class_name} hold something other than plain values. "
                              + _REFUSED) from None


# ----------------------------------------------------------------------------------------------------------------
# Public API

def load_official_pickle(path: str | os.PathLike, key: str = "G_ema") -> OfficialNetwork:
    """Read the Next3D generator stored under `key` in an official network pickle, without running its code.

    Raises CheckpointError when the file is missing, is not a pickle, lacks `key`, holds another network (EG3D,
    StyleGAN, InvertAvatar), or names any global outside the whitelist (a foreign or malicious pickle).
    """
    path = os.fspath(path)
    top, _ = _read_top_level(path)
    net = _select(top, key, path)
    _check_next3d(net, key, path)

    state_dict = OrderedDict((name, _state_dict_tensor(lazy, name))
                             for name, (lazy, _) in _lazy_state_dict(net).items())
    init_kwargs = _plain_kwargs(net, "_init_kwargs")
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(f"The _init_kwargs saved with {net.class_name} are not a dict. " + _REFUSED)
    if _plain_kwargs(net, "_init_args"):
        log.warning("%s was constructed with positional arguments %r; only keyword arguments are used.",
                    net.class_name, net.state.get("_init_args"))

    attributes = _plain_attributes(net.state)
    renderer = net.state["_modules"].get("renderer")
    if renderer is not None:
        axes = _module_state(renderer, "renderer").get("plane_axes")
        if isinstance(axes, _LazyTensor):
            attributes["plane_axes"] = axes.materialize("renderer.plane_axes")
    if "plane_axes" not in attributes:
        log.warning("'%s' has no renderer.plane_axes attribute.", path)
    sources, classes = _module_sources(net)
    return OfficialNetwork(class_name=net.class_name, init_kwargs=init_kwargs, state_dict=state_dict,
                           attributes=attributes, module_sources=sources, module_classes=classes)


def _describe_network(net: _PersistentRecord) -> dict:
    entries = _lazy_state_dict(net)
    params = [lazy for lazy, is_param in entries.values() if is_param]
    buffers = [lazy for lazy, is_param in entries.values() if not is_param]
    try:
        init_kwargs = _plain_kwargs(net, "_init_kwargs")
    except CheckpointError:
        init_kwargs = None
    return {
        "class_name": net.class_name,
        "variant": _variant(net),
        "num_tensors": len(entries),
        "num_parameter_tensors": len(params),
        "num_buffer_tensors": len(buffers),
        "num_parameters": sum(t.numel() for t in params),
        "num_buffer_elements": sum(t.numel() for t in buffers),
        "init_kwargs": init_kwargs,
    }


def describe_official_pickle(path: str | os.PathLike) -> dict:
    """Summarise an official network pickle for an `info` command, without materialising any weights.

    Returns a dict with `path`, `format` ('official-pickle'), `keys` (the top-level entries), `storage_locations`
    (e.g. ['cpu', 'cuda:0']), `networks` (entry -> class_name, variant 'next3d'/'eg3d'/'other', num_tensors,
    num_parameter_tensors, num_buffer_tensors, num_parameters, num_buffer_elements) and, when a 'G_ema' network
    is present, the same fields plus its `init_kwargs` at the top level.
    Raises CheckpointError like `load_official_pickle` for missing, foreign or malicious files.
    """
    path = os.fspath(path)
    top, locations = _read_top_level(path)
    networks: dict[str, Any] = {}
    for k, v in top.items():
        if isinstance(v, _PersistentRecord):
            try:
                networks[str(k)] = _describe_network(v)
            except CheckpointError as exc:  # one odd entry (say an augment pipe) should not hide the others
                if k == "G_ema":   # but the generator is what the file is for
                    raise CheckpointError(f"'{path}': the G_ema generator cannot be read: {exc}") from None
                networks[str(k)] = {"class_name": v.class_name, "error": str(exc)}
    out: dict[str, Any] = {
        "path": path,
        "format": "official-pickle",
        "keys": [str(k) for k in top],
        "storage_locations": sorted(locations),
        "networks": networks,
    }
    if "G_ema" in networks and "error" not in networks["G_ema"]:
        out.update(networks["G_ema"])
    for summary in networks.values():  # init kwargs only once, at the top level, to keep `info` readable
        summary.pop("init_kwargs", None)
    return out
