"""Pickles shaped like the official Next3D training snapshots (network-*.pkl, next3d_ffhq_512.pkl), written opcode
by opcode.

Nothing here imports torch_utils/dnnlib/training code or pickles real classes of those names: every global is written
as its (module, name) text, tensors are written the way PyTorch pickles them (`_rebuild_tensor_v2` of a
`torch.storage._load_from_bytes` call whose bytes are a legacy torch.save stream), and persistent networks as
`torch_utils.persistence._reconstruct_persistent_obj(meta)` calls (docs/checkpoint_formats.md). Used by the stand-in
generator (tools/official_standins) and by the tests, which write hostile variants with the same machinery
(tests/core/official_pickle_writer.py).
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from .pickle_nodes import NO_STATE as _NO_STATE  # noqa: F401 - for the tests' hostile variants
from .pickle_nodes import Call, Global, NewObj, OpcodeWriter

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TOP_BUFFERS = ("dense_faces", "faces", "raw_uvcoords", "uvcoords", "uvfaces", "face_uvcoords")
_BUFFER_SUFFIXES = ("resample_filter", "noise_const", "w_avg")
_STORAGE_CLASS = {torch.float32: "FloatStorage", torch.float64: "DoubleStorage", torch.float16: "HalfStorage",
                  torch.int64: "LongStorage", torch.int32: "IntStorage", torch.uint8: "ByteStorage",
                  torch.bool: "BoolStorage"}


# ----------------------------------------------------------------------------------------------------------------
# The intermediate nodes of this flavour (Global, Call and NewObj: pickle_nodes.py)

@dataclass(eq=False)
class PersId:
    """A persistent id (BINPERSID), as torch.save writes for storages."""
    pid: tuple


@dataclass(eq=False)
class Param:
    """A tensor pickled as an nn.Parameter."""
    tensor: torch.Tensor


@dataclass(eq=False)
class EasyDictNode:
    """A dnnlib.util.EasyDict (a dict subclass) holding `items`."""
    items: dict


@dataclass(eq=False)
class NumpyScalar:
    """A numpy scalar (e.g. a float64 `weight_gain`), pickled as numpy does."""
    value: float
    dtype: str = "f8"


# ----------------------------------------------------------------------------------------------------------------
# The emitter

class _Emitter(OpcodeWriter):
    """PyTorch's flavour: every container, call and global enters the memo (by identity), small ints BININT2,
    strings SHORT_BINUNICODE at protocol 4, STACK_GLOBAL at protocol 4."""

    def __init__(self, protocol: int, storage_location: str = "cpu") -> None:
        assert 2 <= protocol <= 4
        super().__init__(protocol)
        self.location = storage_location
        self.memo: dict[int, tuple[int, Any]] = {}
        self._storages: dict[int, Call] = {}
        self._dtypes: dict[str, Call] = {}

    def _memoize(self, obj: Any) -> None:
        idx = len(self.memo)
        self.memo[id(obj)] = (idx, obj)  # keeps obj alive so its id stays unique
        if self.protocol >= 4:
            self.out += pickle.MEMOIZE
        elif idx < 256:
            self.out += pickle.BINPUT + bytes([idx])
        else:
            self.out += pickle.LONG_BINPUT + struct.pack("<I", idx)

    def _get(self, obj: Any) -> bool:
        hit = self.memo.get(id(obj))
        if hit is None:
            return False
        idx = hit[0]
        self.out += pickle.BINGET + bytes([idx]) if idx < 256 else pickle.LONG_BINGET + struct.pack("<I", idx)
        return True

    def _str(self, s: str) -> None:
        raw = s.encode("utf-8")
        if self.protocol >= 4 and len(raw) < 256:
            self.out += pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw
        else:
            self.out += pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw

    def _bytes(self, b: bytes) -> None:
        if self.protocol < 3:
            raise ValueError("bytes need protocol 3 or higher in this writer")
        if len(b) < 256:
            self.out += pickle.SHORT_BINBYTES + bytes([len(b)]) + b
        else:
            self.out += pickle.BINBYTES + struct.pack("<I", len(b)) + b

    def special(self, obj: Any) -> bool:
        if isinstance(obj, OrderedDict):
            # As OrderedDict.__reduce__ does: OrderedDict() then SETITEMS.
            self.dump(Call(Global("collections", "OrderedDict"), (), items=list(obj.items())))
        elif isinstance(obj, (set, frozenset)):
            self.dump(Call(Global("builtins", "set"), (sorted(obj, key=repr),)))
        elif isinstance(obj, EasyDictNode):
            self.dump(Global("dnnlib.util", "EasyDict"))
            self.out += pickle.EMPTY_TUPLE + pickle.NEWOBJ
            self._memoize(obj)
            self._setitems(list(obj.items.items()))
        elif isinstance(obj, PersId):
            self.dump(obj.pid)
            self.out += pickle.BINPERSID
        elif isinstance(obj, Param):
            self.dump(Call(Global("torch._utils", "_rebuild_parameter"), (obj.tensor, False, OrderedDict())))
        elif isinstance(obj, torch.Tensor):
            self._tensor(obj)
        elif isinstance(obj, NumpyScalar):
            self._numpy_scalar(obj)
        else:
            return False
        return True

    def _int(self, x: int) -> None:
        if 0 <= x < 256:
            self.out += pickle.BININT1 + bytes([x])
        elif 0 <= x < 65536:
            self.out += pickle.BININT2 + struct.pack("<H", x)
        elif -2 ** 31 <= x < 2 ** 31:
            self.out += pickle.BININT + struct.pack("<i", x)
        else:
            raw = pickle.encode_long(x)
            self.out += pickle.LONG1 + bytes([len(raw)]) + raw

    def _global(self, g: Global) -> None:
        if self.protocol >= 4:
            self.dump(g.module)
            self.dump(g.name)
            self.out += pickle.STACK_GLOBAL
        else:
            self.out += pickle.GLOBAL + f"{g.module}\n{g.name}\n".encode("utf-8")
        self._memoize(g)

    def _tensor(self, t: torch.Tensor) -> None:
        t = t.detach()
        key = t.untyped_storage().data_ptr()
        storage = self._storages.get(key)
        if storage is None:
            # Keys numbered in order of appearance (torch uses an id): the same tensors give the same bytes.
            data = legacy_storage_bytes(t, self.location, key=str(len(self._storages)))
            storage = Call(Global("torch.storage", "_load_from_bytes"), (data,))
            self._storages[key] = storage
        call = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                    (storage, t.storage_offset(), tuple(t.shape), tuple(t.stride()), False, OrderedDict()))
        self.dump(call)

    def _numpy_scalar(self, s: NumpyScalar) -> None:
        dtype = self._dtypes.get(s.dtype)
        if dtype is None:
            # numpy.dtype('f8', False, True) + BUILD of its (version, byteorder, ...) state, as numpy pickles it.
            dtype = Call(Global("numpy", "dtype"), (s.dtype, False, True),
                         state=(3, "<", None, None, None, -1, -1, 0))
            self._dtypes[s.dtype] = dtype
        raw = np.array(s.value, dtype=np.dtype(s.dtype).newbyteorder("<")).tobytes()
        self.dump(Call(Global("numpy.core.multiarray", "scalar"), (dtype, raw)))


def dumps(obj: Any, protocol: int = 4, storage_location: str = "cpu") -> bytes:
    """Pickle `obj` (plain values and the intermediate nodes above) to bytes."""
    return _Emitter(protocol, storage_location).pickle(obj)


def legacy_storage_bytes(tensor: torch.Tensor, location: str = "cpu", key: str | None = None) -> bytes:
    """The bytes PyTorch passes to `torch.storage._load_from_bytes`: a legacy torch.save stream of the tensor's
    whole storage, written at protocol 2 with the given location tag ('cpu', 'cuda:0', ...)."""
    t = tensor.detach().cpu()
    nbytes = t.untyped_storage().nbytes()
    numel = nbytes // t.element_size()
    flat = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), 0, (numel,), (1,))
    arr = flat.numpy()
    raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    if key is None:
        key = str(0x5A000000 + (t.untyped_storage().data_ptr() & 0xFFFFFF))
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    pid = ("storage", Global("torch", _STORAGE_CLASS[t.dtype]), key, location, numel, None)
    return b"".join([
        dumps(LEGACY_MAGIC, protocol=2),
        dumps(1001, protocol=2),
        dumps(sys_info, protocol=2),
        dumps(PersId(pid), protocol=2),
        dumps([key], protocol=2),
        struct.pack("<q", numel),
        raw,
    ])


# ----------------------------------------------------------------------------------------------------------------
# Module trees

_SRC = {
    "networks_stylegan2": "# stand-in for training_avatar_texture/networks_stylegan2.py (never executed)\n",
    "styleunet": "# stand-in for training_avatar_texture/networks_stylegan2_styleunet.py (never executed)\n",
    "superresolution": "# stand-in for training_avatar_texture/superresolution.py (never executed)\n",
    "renderer": "# stand-in for training_avatar_texture/volumetric_rendering/renderer.py (never executed)\n",
}


@dataclass
class _Node:
    path: str
    params: OrderedDict = field(default_factory=OrderedDict)
    buffers: OrderedDict = field(default_factory=OrderedDict)
    children: OrderedDict = field(default_factory=OrderedDict)
    attrs: dict = field(default_factory=dict)
    non_persistent: set = field(default_factory=set)
    # persistent: (class_name, module_src); by reference: Global
    kind: Any = None


def _class_for(path: str, triplane_module: str, styleunet_roots: set[str]) -> Any:
    """A simple naming heuristic that mirrors the official module classes."""
    parts = path.split(".")
    last = parts[-1]
    in_unet = parts[0] in styleunet_roots
    gan_src = _SRC["styleunet"] if in_unet else _SRC["networks_stylegan2"]
    if path in ("texture_backbone", "mouth_backbone", "backbone", "neural_blending"):
        return ("Generator", gan_src)
    if path == "superresolution":
        return ("SuperresolutionHybrid8XDC", _SRC["superresolution"])
    if path == "decoder":
        return Global(triplane_module, "OSGDecoder")
    if last in ("encoder", "fusion"):
        return Global("torch.nn.modules.container", "ModuleList")
    if path == "decoder.net":
        return Global("torch.nn.modules.container", "Sequential")
    if last == "synthesis":
        return ("SynthesisNetwork", gan_src)
    if last == "mapping":
        return ("MappingNetwork", gan_src)
    if re.fullmatch(r"b\d+|block\d+", last):
        return ("SynthesisBlock", gan_src if not path.startswith("superresolution") else _SRC["superresolution"])
    if len(parts) >= 2 and parts[-2] == "encoder":
        return ("EncoderResBlock", gan_src)
    if last in ("conv0", "conv1") and not (len(parts) >= 3 and parts[-3] == "encoder"):
        return ("SynthesisLayer", gan_src)
    if last == "torgb":
        return ("ToRGBLayer", gan_src)
    if last in ("affine", "embed") or re.fullmatch(r"fc\d+", last) or path.startswith("decoder.net."):
        return ("FullyConnectedLayer", gan_src if not path.startswith("decoder") else _SRC["networks_stylegan2"])
    return ("Conv2dLayer", gan_src)


def _build_tree(state_dict: "OrderedDict[str, torch.Tensor]", buffer_names: Iterable[str]) -> _Node:
    buffers = set(buffer_names)
    root = _Node("")
    for name, tensor in state_dict.items():
        *mods, leaf = name.split(".")
        node = root
        for i, m in enumerate(mods):
            if m not in node.children:
                node.children[m] = _Node(".".join(mods[:i + 1]))
            node = node.children[m]
        if name in buffers:
            node.buffers[leaf] = tensor
        else:
            node.params[leaf] = tensor
    return root


def _module_dict(node: _Node, persistent: bool, init_kwargs: dict) -> dict:
    """An nn.Module __dict__ as torch 1.12 has it, plus custom attributes and persistence's _init_args/kwargs."""
    d: dict = {
        "training": False,
        "_parameters": OrderedDict((k, Param(v)) for k, v in node.params.items()),
        "_buffers": OrderedDict(node.buffers),
        "_non_persistent_buffers_set": set(node.non_persistent),
        "_backward_hooks": OrderedDict(),
        "_is_full_backward_hook": None,
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_load_state_dict_post_hooks": OrderedDict(),
        "_modules": OrderedDict(),  # filled by the caller
    }
    d.update(node.attrs)
    if persistent:
        d["_init_args"] = ()
        d["_init_kwargs"] = init_kwargs
    return d


def _node_to_ir(node: _Node, by_reference: str, top_kwargs: dict | None = None) -> Any:
    persistent = isinstance(node.kind, tuple)
    d = _module_dict(node, persistent, top_kwargs if top_kwargs is not None else {})
    for name, child in node.children.items():
        d["_modules"][name] = _node_to_ir(child, by_reference)
    if persistent:
        class_name, src = node.kind
        meta = {"type": "class", "version": 6, "module_src": src, "class_name": class_name, "state": d}
        return Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))
    if by_reference == "newobj":  # what pickle protocol >= 2 writes for plain objects
        return NewObj(node.kind, (), state=d)
    # what the brief and protocol 0/1 describe: copyreg._reconstructor(cls, object, None) + BUILD
    return Call(Global("copyreg", "_reconstructor"), (node.kind, Global("builtins", "object"), None), state=d)


def generator_ir(state_dict: "OrderedDict[str, torch.Tensor]", buffer_names: Iterable[str], init_kwargs: dict,
                 attributes: dict, *, triplane_module: str = "training_avatar_texture.triplane_next3d",
                 by_reference: str = "reconstructor", class_name: str = "TriPlaneGenerator",
                 top_source: str | None = None, non_persistent_buffers: dict | None = None) -> Call:
    """The pickle form of a persistent TriPlaneGenerator built from a flat state dict.

    `attributes` become plain attributes of the generator, except `plane_axes`, which goes to the by-reference
    `renderer` child. `non_persistent_buffers` (dotted name -> tensor) are registered as buffers that state_dict
    must skip.
    """
    root = _build_tree(OrderedDict(state_dict), buffer_names)
    attributes = dict(attributes)
    plane_axes = attributes.pop("plane_axes", None)
    for name, tensor in (non_persistent_buffers or {}).items():
        *mods, leaf = name.split(".")
        node = root
        for m in mods:
            node = node.children.setdefault(m, _Node(f"{node.path}.{m}".strip(".")))
        node.buffers[leaf] = tensor
        node.non_persistent.add(leaf)

    styleunet = {"mouth_backbone", "neural_blending"}
    stack = list(root.children.values())
    while stack:
        node = stack.pop()
        node.kind = _class_for(node.path, triplane_module, styleunet)
        if isinstance(node.kind, tuple) and node.kind[0] == "FullyConnectedLayer":
            # weight_gain = lr_multiplier / np.sqrt(in_features) is a numpy float64 in the official code.
            node.attrs.update(weight_gain=NumpyScalar(0.044194173824159216), bias_gain=1, lr_multiplier=1,
                              activation="linear", in_features=2, out_features=2)
        stack.extend(node.children.values())

    # decoder.net is Sequential(FC, Softplus, FC): the Softplus has no weights, so it is not in the state dict.
    net = root.children.get("decoder", _Node("")).children.get("net")
    if net is not None:
        for i in range(max((int(k) for k in net.children), default=-1)):
            if str(i) not in net.children:
                net.children[str(i)] = _Node(f"decoder.net.{i}", kind=Global("torch.nn.modules.activation",
                                                                            "Softplus"),
                                             attrs={"beta": 1, "threshold": 20})
        net.children = OrderedDict(sorted(net.children.items(), key=lambda kv: int(kv[0])))

    renderer_mod = triplane_module.rsplit(".", 1)[0] + ".volumetric_rendering"
    renderer = _Node("renderer", kind=Global(f"{renderer_mod}.renderer", "ImportanceRenderer"))
    renderer.children["ray_marcher"] = _Node("renderer.ray_marcher",
                                             kind=Global(f"{renderer_mod}.ray_marcher", "MipRayMarcher2"))
    if plane_axes is not None:
        renderer.attrs["plane_axes"] = plane_axes
    sampler = _Node("ray_sampler", kind=Global(f"{renderer_mod}.ray_sampler", "RaySampler"),
                    attrs={"ray_origins_h": None, "ray_directions": None, "depths": None, "image_coords": None,
                           "rendering_options": None})
    rasterizer = _Node("rasterizer", kind=("Pytorch3dRasterizer", _SRC["renderer"]),
                       attrs={"raster_settings": {"image_size": 256, "blur_radius": 0.0, "faces_per_pixel": 1,
                                                  "bin_size": None, "max_faces_per_bin": None,
                                                  "perspective_correct": False}})
    # Registration order of the official constructor: ..., backbone, renderer, ray_sampler, superresolution, ...
    children = list(root.children.items())
    at = next((i + 1 for i, (k, _) in enumerate(children) if k == "backbone"), len(children))
    children[at:at] = [("renderer", renderer), ("ray_sampler", sampler)]
    children.append(("rasterizer", rasterizer))
    root.children = OrderedDict(children)

    source = top_source if top_source is not None else (
        f"# stand-in for {triplane_module.replace('.', '/')}.py (never executed)\n"
        "class TriPlaneGenerator(torch.nn.Module):\n    pass\n")
    root.kind = (class_name, source)
    root.attrs.update(attributes)
    return _node_to_ir(root, by_reference, top_kwargs=init_kwargs)


def write_official_pickle(path: str | os.PathLike, state_dict: "OrderedDict[str, torch.Tensor]",
                          buffer_names: Iterable[str], init_kwargs: dict, attributes: dict,
                          storage_location: str = "cpu", extra_entries: dict | None = None, *, key: str = "G_ema",
                          protocol: int = 4, **generator_options: Any) -> None:
    """Write `{key: <persistent TriPlaneGenerator>, 'training_set_kwargs': EasyDict(...), **extra_entries}`.

    `init_kwargs` may contain `EasyDict(...)` nodes (see `easydict`). `storage_location` is the location tag
    written in every storage stream ('cpu' or 'cuda:0'). `extra_entries` values may be plain data or nodes
    (Call, NewObj, Global, ...), which is how the hostile variants are written. `generator_options` go to
    `generator_ir` (triplane_module, by_reference, class_name, top_source, non_persistent_buffers).
    """
    top: dict = {key: generator_ir(state_dict, buffer_names, init_kwargs, attributes, **generator_options),
                 "training_set_kwargs": easydict({"class_name": "training.dataset.ImageFolderDataset",
                                                  "path": "data/ffhq/images512x512", "resolution": 512,
                                                  "use_labels": True, "max_size": 140000, "xflip": True})}
    top.update(extra_entries or {})
    write_pickle(path, top, protocol=protocol, storage_location=storage_location)


def write_pickle(path: str | os.PathLike, obj: Any, protocol: int = 4, storage_location: str = "cpu") -> None:
    with open(path, "wb") as f:
        f.write(dumps(obj, protocol=protocol, storage_location=storage_location))


def easydict(d: dict) -> "EasyDictNode":
    """A `dnnlib.util.EasyDict` as protocol 2+ pickles it: NEWOBJ of the class, then SETITEMS of its items."""
    return EasyDictNode(dict(d))


def is_official_buffer(name: str) -> bool:
    """Whether an official G_ema state-dict entry is a buffer (the rest are parameters)."""
    return name.endswith(_BUFFER_SUFFIXES) or name in TOP_BUFFERS
