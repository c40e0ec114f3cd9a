"""The fuzz corpus: hostile and corrupt files for every reader, generated deterministically into a folder with a
manifest (corpus.json) saying how each file is read and what must come out.

    python tests/fuzz/make_corpus.py OUT_DIR

Each case of the manifest: name; kind (the family of files, whose legitimate baseline the memory is compared with:
network-pickle, safetensors, flame, animation, mesh, landmarks); front (how it is read: the `next3d info` and
`next3d convert` commands, or the reader a render calls: load, flame, animation, mesh, mesh-sequence, landmarks,
uv-obj); args (paths relative to OUT_DIR); expect: 'ok', 'error' (exit code 2 and one line on stderr matching the
regex `match`, which names the entry) or 'any' (bit flips: either, but never a traceback); legit: the baselines.
run_corpus.py runs them; tests/core/test_hostile_files.py asserts the results.

The legitimate files and most hostile ones come from the stand-in writers of the tests (official_pickle_writer,
flame_fixtures); the rest are written opcode by opcode here.
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT, ROOT / "tests" / "core"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import flame_fixtures as ff  # noqa: E402
import official_pickle_writer as w  # noqa: E402
from official_pickle_writer import Call, Global  # noqa: E402

REFUSED = r"malicious|nothing from it was run"
_PREFIX = {"network-pickle": "net", "safetensors": "st", "flame": "flame", "animation": "anim", "mesh": "mesh",
           "landmarks": "lm", "sequence": "seq"}


# ----------------------------------------------------------------------------------------------------------------
# Opcode helpers (protocol 2 unless said)

def proto(n: int = 2) -> bytes:
    return b"\x80" + bytes([n])


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def integer(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def top_entry(value: bytes, key: str = "G_ema", protocol: int = 2) -> bytes:
    """{key: value} as a whole pickle."""
    return proto(protocol) + b"}" + text(key) + value + b"s."


# Shared-reference bombs: each level holds the previous one twice, so `depth` levels of ~12 bytes expand to 2**depth
# references. Every level is memoized and popped; the last one is left on the stack.

def list_bomb(depth: int, base: int = 1000) -> bytes:
    out = b"]" + put(base) + b"0"
    for i in range(1, depth + 1):
        out += b"](" + get(base + i - 1) + get(base + i - 1) + b"e" + put(base + i) + b"0"
    return out + get(base + depth)


def tuple_bomb(depth: int, base: int = 2000) -> bytes:
    out = b"N" + put(base) + b"0"
    for i in range(1, depth + 1):
        out += get(base + i - 1) + get(base + i - 1) + b"\x86" + put(base + i) + b"0"
    return out + get(base + depth)


def dict_bomb(depth: int, base: int = 3000) -> bytes:
    out = b"}" + put(base) + b"0"
    for i in range(1, depth + 1):
        out += b"}(" + text("a") + get(base + i - 1) + text("b") + get(base + i - 1) + b"u" + put(base + i) + b"0"
    return out + get(base + depth)


def deep_lists(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


def numpy_array() -> bytes:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), 'b'), left on the stack for BUILD."""
    return glob("numpy.core.multiarray", "_reconstruct") + glob("numpy", "ndarray") + b"K\x00\x85U\x01b\x87R"


def numpy_state(shape: tuple, data: bytes) -> bytes:
    """The BUILD state of a float64 array: (1, shape, dtype('f8'), False, data)."""
    dims = b"(" + b"".join(integer(d) for d in shape) + b"t"
    return (b"(K\x01" + dims + glob("numpy", "dtype") + text("f8") + b"\x89\x88\x87R" + b"\x89"
            + b"B" + struct.pack("<I", len(data)) + data + b"t")


# ----------------------------------------------------------------------------------------------------------------
# The corpus

class Corpus:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "out").mkdir(exist_ok=True)
        self.cases: list[dict] = []

    def path(self, name: str) -> Path:
        p = self.folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write(self, name: str, data: bytes | str) -> str:
        p = self.path(name)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return name

    def add(self, name: str, kind: str, fronts: tuple, args: list, expect: str = "error", match: str = "",
            legit: bool = False) -> None:
        name = f"{_PREFIX[kind]}/{name}"
        for front in fronts:
            case_args = list(args)
            if front == "convert":
                case_args.append(f"out/{name.replace('/', '_')}.safetensors")
            self.cases.append({"name": f"{name}@{front}", "kind": kind, "front": front, "args": case_args,
                               "expect": expect, "match": match, "legit": legit})

    def save(self) -> Path:
        manifest = self.folder / "corpus.json"
        manifest.write_text(json.dumps({"cases": self.cases}, indent=1))
        return manifest


def _flip_bits(data: bytes, seed: int, n: int, lo: int = 0, hi: int | None = None) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    hi = len(out) if hi is None else hi
    for _ in range(n):
        i = rng.randrange(max(lo, 2), hi)
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


# -- official network pickles

def _tiny_generator_pickle(c: Corpus) -> bytes:
    """A legitimate official-format pickle of a small generator that builds (the TINY config, 5.7 M numbers)."""
    from core.default_model import TINY_CONFIG, random_generator

    g = random_generator(TINY_CONFIG, seed=11)
    sd = g.state_dict()
    buffers = [k for k in sd if k in w.TOP_BUFFERS or w.is_official_buffer(k)]
    attributes = w.official_attributes()
    attributes["uv_face_mask"] = g.uv_face_mask
    attributes["neural_rendering_resolution"] = TINY_CONFIG.neural_rendering_resolution
    kwargs = _official_kwargs(TINY_CONFIG)
    w.write_official_pickle(c.path("net/legit_tiny.pkl"), sd, buffers, kwargs, attributes, storage_location="cuda:0")
    return c.path("net/legit_tiny.pkl").read_bytes()


def _official_kwargs(config: Any) -> dict:
    rendering = w.official_attributes()["rendering_kwargs"]
    return {"z_dim": 512, "w_dim": 512, "c_dim": 25, "img_resolution": config.image_resolution, "img_channels": 3,
            "topology_path": "data/demo/head_template.obj", "sr_num_fp16_res": 4,
            "mapping_kwargs": w.easydict({"num_layers": config.mapping_layers}), "rendering_kwargs": rendering,
            "channel_base": config.channel_base, "channel_max": config.channel_max, "num_fp16_res": 0,
            "conv_clamp": None, "fused_modconv_default": "inference_only"}


def _storage(t: torch.Tensor) -> Call:
    return Call(Global("torch.storage", "_load_from_bytes"), (w.legacy_storage_bytes(t),))


def _tensor(storage: Any, offset: int, size: tuple, stride: tuple, state: Any = w._NO_STATE) -> Call:
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), (storage, offset, size, stride, False, OrderedDict()),
                state=state)


def network_pickles(c: Corpus) -> None:
    kind = "network-pickle"
    both = ("info", "convert")
    legit = _tiny_generator_pickle(c)
    c.add("legit_tiny", kind, both, ["net/legit_tiny.pkl"], expect="ok", legit=True)
    sd, buffers = w.tiny_official_state_dict(seed=0)
    from core.default_model import TINY_CONFIG

    def tiny_official(name: str, sd=sd, kwargs=None, attributes=None, **kw) -> str:
        p = c.path(f"net/{name}.pkl")
        w.write_official_pickle(p, sd, buffers, kwargs if kwargs is not None else _official_kwargs(TINY_CONFIG),
                                attributes if attributes is not None else w.official_attributes(), **kw)
        return f"net/{name}.pkl"

    # -- allocations a few bytes can ask for
    c.add("bytearray_2GB", kind, both, [c.write("net/bytearray_2GB.pkl", top_entry(
        glob("builtins", "bytearray") + integer(2 ** 31 - 1) + b"\x85R"))], match=r"bytearray.*" + REFUSED)
    one = torch.zeros(1)
    for name, tensor, match in (
            ("stride0_weight", one.expand(2 ** 31), r"'backbone.mapping.fc0.weight'.*stride of 0"),
            ("overlapping_strides", torch.zeros(2 ** 15).as_strided((2 ** 14, 2 ** 14), (1, 1)),
             r"'backbone.mapping.fc0.weight'.*asks for"),
    ):
        bad = OrderedDict(sd)
        bad["backbone.mapping.fc0.weight"] = tensor
        c.add(name, kind, both, [tiny_official(name, bad)], match=match)
    small = _storage(torch.zeros(4))
    for name, tensor, match in (
            ("huge_claimed_shape", _tensor(small, 0, (2 ** 40,), (1,)), r"'backbone.mapping.w_avg'.*asks for"),
            ("offset_past_storage", _tensor(small, 3, (4,), (1,)), r"'backbone.mapping.w_avg'.*reaches number"),
            ("negative_stride", _tensor(small, 3, (4,), (-1,)), r"invalid size or stride"),
            ("build_rewrites_tensor_shape", _tensor(small, 0, (4,), (1,), state={"size": (2 ** 40,)}),
             r"sets the state of a _LazyTensor"),
    ):
        bad = OrderedDict(sd)
        bad["backbone.mapping.w_avg"] = tensor
        c.add(name, kind, both, [tiny_official(name, bad)], match=match)
    kwargs = _official_kwargs(TINY_CONFIG)
    kwargs["layer_kwargs"] = w.easydict({"noise": one.expand(2 ** 31)})   # the audit's 8.45 GB `info`
    c.add("stride0_in_init_kwargs", kind, ("convert",), [tiny_official("stride0_in_init_kwargs", kwargs=kwargs)],
          match=r"'_init_kwargs.layer_kwargs.noise'.*stride of 0")
    c.add("stride0_in_init_kwargs", kind, ("info",), ["net/stride0_in_init_kwargs.pkl"], expect="ok")

    # -- shared references that expand beyond the file, deep nesting, loops
    for depth in (24, 40):
        c.add(f"list_bomb_{depth}", kind, both, [c.write(f"net/list_bomb_{depth}.pkl",
                                                         top_entry(list_bomb(depth)))],
              match=r"expands its shared references in 'G_ema\[0\]\[0\]")
    c.add("tuple_bomb_40", kind, both, [c.write("net/tuple_bomb_40.pkl", top_entry(tuple_bomb(40)))],
          match=r"expands its shared references in 'G_ema")
    c.add("dict_bomb_40", kind, both, [c.write("net/dict_bomb_40.pkl", top_entry(dict_bomb(40)))],
          match=r"expands its shared references in 'G_ema\.a\.a")
    key_bomb = proto() + b"}" + tuple_bomb(60) + b"Ns."
    c.add("tuple_bomb_as_dict_key", kind, both, [c.write("net/tuple_bomb_as_dict_key.pkl", key_bomb)],
          match=r"uses a tuple as a dict key")
    c.add("tuple_bomb_in_set", kind, both, [c.write("net/tuple_bomb_in_set.pkl", top_entry(
        glob("builtins", "set") + b"]" + b"(" + tuple_bomb(60) + b"e\x85R"))], match=r"builds a set from items")
    c.add("deep_lists_100k", kind, both, [c.write("net/deep_lists_100k.pkl", top_entry(deep_lists(100_000)))],
          match=r"nests deeper than 200 levels")
    c.add("self_loop", kind, both, [c.write("net/self_loop.pkl", top_entry(b"]" + put(7) + get(7) + b"a"))],
          match=r"refers back to itself")
    bomb_kwargs = _official_kwargs(TINY_CONFIG)
    x: Any = [0.5]
    for _ in range(24):
        x = [x, x]
    bomb_kwargs["augment"] = x          # a bomb where a real generator keeps its arguments
    c.add("list_bomb_in_init_kwargs", kind, both, [tiny_official("list_bomb_in_init_kwargs", kwargs=bomb_kwargs)],
          match=r"expands its shared references in 'G_ema._init_kwargs.augment\[0\]")
    attrs = w.official_attributes()
    attrs["rendering_kwargs"]["cache"] = x
    c.add("list_bomb_in_attributes", kind, both, [tiny_official("list_bomb_in_attributes", attributes=attrs)],
          match=r"expands its shared references in 'G_ema.rendering_kwargs.cache")

    # -- BUILD and other state-setting opcodes
    for name, payload, match in (
            ("build_sets_class_attribute", glob("dnnlib.util", "EasyDict") + b"N}" + text("__setstate__")
             + glob("builtins", "set") + b"s\x86b", r"sets the state of a type"),
            ("build_sets_function_defaults", glob("torch._utils", "_rebuild_tensor_v2") + b"N}"
             + text("__defaults__") + b")s\x86b", r"sets the state of a function"),
            ("build_twice_numpy_array", numpy_array() + numpy_state((1,), b"\x00" * 8) + b"b"
             + numpy_state((2,), b"\x00" * 16) + b"b", r"sets the state of the same NumpyArray twice"),
            ("setitems_into_record", glob("torch_utils.persistence", "_reconstruct_persistent_obj") + b"}(" +
             text("type") + text("class") + text("version") + b"K\x06" + text("module_src") + text("")
             + text("class_name") + text("TriPlaneGenerator") + text("state") + b"}u\x85R" + text("x") + b"Ns",
             r"adds dict items to a _PersistentRecord"),
            ("reduce_with_list_args", glob("builtins", "set") + b"]R", r"calls _set with a list of arguments"),
    ):
        c.add(name, kind, both, [c.write(f"net/{name}.pkl", top_entry(payload))], match=match)

    # -- length fields that claim more than the file holds
    for name, data in (
            ("binbytes8_1TB", proto(4) + b"}" + text("G_ema") + b"\x8e" + struct.pack("<Q", 2 ** 40) + b"xs."),
            ("bytearray8_1TB", proto(5) + b"}" + text("G_ema") + b"\x96" + struct.pack("<Q", 2 ** 40) + b"xs."),
            ("frame_1TB", proto(4) + b"\x95" + struct.pack("<Q", 2 ** 40) + b"}."),
            ("long4_2GB", proto(2) + b"}" + text("G_ema") + b"\x8b" + struct.pack("<i", 2 ** 31 - 1) + b"s."),
            ("binunicode_4GB", proto(2) + b"}" + text("G_ema") + b"X" + struct.pack("<I", 2 ** 32 - 1) + b"s."),
    ):
        c.add(name, kind, both, [c.write(f"net/{name}.pkl", data)], match=r"truncated")
    c.write("net/memo_index_4G.pkl", proto() + b"}" + put(2 ** 32 - 1) + b".")
    c.add("memo_index_4G", kind, ("convert",), ["net/memo_index_4G.pkl"], match=r"has no 'G_ema' entry")
    c.add("memo_index_4G", kind, ("info",), ["net/memo_index_4G.pkl"], expect="ok")
    c.add("storage_claims_more_than_it_holds", kind, both, [c.write(
        "net/storage_claims_more_than_it_holds.pkl", top_entry(
            glob("torch.storage", "_load_from_bytes") + b"C\x10" + w.legacy_storage_bytes(torch.zeros(4))[:16]
            + b"\x85R"))], match=r"damaged tensor bytes|truncated")
    inner = (w.dumps(w.LEGACY_MAGIC, protocol=2) + w.dumps(1001, protocol=2) + w.dumps({}, protocol=2)
             + w.dumps(w.PersId(("storage", Global("torch", "FloatStorage"), "k", "cpu", 4, None)), protocol=2)
             + w.dumps(["k"], protocol=2) + struct.pack("<q", 2 ** 40) + b"\x00" * 16)
    c.add("storage_count_1T", kind, both, [c.write("net/storage_count_1T.pkl", top_entry(
        glob("torch.storage", "_load_from_bytes") + b"B" + struct.pack("<I", len(inner)) + inner + b"\x85R",
        protocol=3))], match=r"ends inside a tensor's data")

    # -- configs outside the sane ranges (checked before anything is built)
    for name, change, match in (
            ("mapping_layers_2500", {"mapping_kwargs": w.easydict({"num_layers": 2500})}, r"mapping_layers = 2500"),
            ("channel_base_2e9", {"channel_base": 2 ** 31}, r"channel_base = 2147483648"),
            ("img_resolution_1M", {"img_resolution": 2 ** 20}, r"image_resolution = 1048576"),
            ("c_dim_text", {"c_dim": "many"}, r"wrong kind"),
            ("ffhq_claim_tiny_weights", {"channel_base": 32768, "channel_max": 512}, r"claims a generator"),
    ):
        kwargs = _official_kwargs(TINY_CONFIG)
        kwargs.update(change)
        c.add(name, kind, ("convert",), [tiny_official(name, kwargs=kwargs)], match=match)
    for name, change, match in (
            ("depth_samples_1M", {"depth_resolution": 10 ** 6}, r"rendering.depth_resolution = 1000000"),
            ("ray_start_nan", {"ray_start": math.nan}, r"rendering.ray_start = nan"),
            ("neural_resolution_65536", {}, r"neural_rendering_resolution = 65536"),
    ):
        attrs = w.official_attributes()
        attrs["rendering_kwargs"].update(change)
        if not change:
            attrs["neural_rendering_resolution"] = 2 ** 16
        kwargs = _official_kwargs(TINY_CONFIG)
        kwargs["rendering_kwargs"] = attrs["rendering_kwargs"]
        c.add(name, kind, ("convert",), [tiny_official(name, kwargs=kwargs, attributes=attrs)], match=match)

    # -- truncations and bit flips of the legitimate file
    for frac in (0.001, 0.1, 0.5, 0.999):
        name = f"truncated_{frac:g}"
        c.add(name, kind, both, [c.write(f"net/{name}.pkl", legit[:int(len(legit) * frac)])],
              match=r"truncated|corrupted")
    # Bit flips: in the tiny-shaped official file they mostly hit the structure (module dicts, storage streams), in
    # the generator's file mostly weights.
    dense = c.path(tiny_official("structure")).read_bytes()
    for seed in range(8):
        name = f"bitflips_{seed}"
        data = _flip_bits(dense, seed, 4) if seed < 6 else _flip_bits(legit, seed, 64)
        c.add(name, kind, ("info",) if seed < 6 else ("convert",), [c.write(f"net/{name}.pkl", data)], expect="any")


# -- our .safetensors checkpoints

def _safetensors_bytes(tensors: dict, metadata: dict | str, header_extra: str = "", shapes: dict | None = None
                       ) -> bytes:
    header: dict = {"__metadata__": metadata} if isinstance(metadata, dict) else {}
    data = b""
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        shape = (shapes or {}).get(name, list(arr.shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text_header = json.dumps(header) if isinstance(metadata, dict) else metadata
    text_header += header_extra
    raw_header = text_header.encode()
    raw_header += b" " * (-len(raw_header) % 8)
    return struct.pack("<Q", len(raw_header)) + raw_header + data


def safetensors_files(c: Corpus) -> None:
    from core.default_model import TINY_CONFIG, random_generator
    from core.io.generator_io import save_generator

    kind = "safetensors"
    g = random_generator(TINY_CONFIG, seed=5)
    save_generator(c.path("st/legit_tiny.safetensors"), g)
    c.add("legit_tiny", kind, ("info", "load"), ["st/legit_tiny.safetensors"], expect="ok", legit=True)
    legit = c.path("st/legit_tiny.safetensors").read_bytes()
    config = TINY_CONFIG.to_dict()
    small = {"backbone.mapping.w_avg": np.zeros(512), "extra/plane_axes": np.eye(3)[None].repeat(3, 0)}

    def meta(cfg: Any, **over: str) -> dict:
        out = {"format": "next3d-blender", "kind": "next3d-generator", "format_version": "1",
               "config": cfg if isinstance(cfg, str) else json.dumps(cfg)}
        out.update(over)
        return out

    for name, change, match in (
            ("mapping_layers_2500", {"mapping_layers": 2500}, r"mapping_layers = 2500 is outside"),
            ("channel_max_1M", {"channel_max": 2 ** 20}, r"channel_max = 1048576 is outside"),
            ("texture_1M", {"texture_resolution": 2 ** 20, "plane_resolution": 2 ** 20}, r"texture_resolution ="),
            ("ffhq_claim_small_weights", {"channel_base": 32768, "channel_max": 512, "texture_resolution": 256,
                                          "plane_resolution": 256, "image_resolution": 512,
                                          "neural_rendering_resolution": 64}, r"claims a generator"),
            ("z_dim_list", {"z_dim": [512]}, r"z_dim = \[512\] is outside"),
            ("depth_samples_1M", {"rendering": dict(config["rendering"], depth_resolution=10 ** 6)},
             r"rendering.depth_resolution = 1000000"),
    ):
        cfg = dict(config, **change)
        c.add(name, kind, ("load",), [c.write(f"st/{name}.safetensors", _safetensors_bytes(small, meta(cfg)))],
              match=match)
    nan_config = json.dumps(config).replace('"c_scale": 1.0', '"c_scale": NaN')
    c.add("c_scale_nan", kind, ("load",), [c.write("st/c_scale_nan.safetensors",
                                                   _safetensors_bytes(small, meta(nan_config)))],
          match=r"c_scale = nan is not a finite number")
    c.add("mapping_layers_2500_info", kind, ("info",), ["st/mapping_layers_2500.safetensors"], expect="ok")
    deep = "[" * 100_000 + "]" * 100_000
    c.add("deep_config", kind, ("info", "load"), [c.write("st/deep_config.safetensors",
                                                          _safetensors_bytes(small, meta(deep)))],
          match=r"damaged config.*nests deeper")
    c.write("st/config_not_text.safetensors", _safetensors_bytes(small, dict(meta(config), config=7)))
    c.add("config_not_text", kind, ("info", "load"), ["st/config_not_text.safetensors"], match=r"damaged config")
    deep_header = '{"__metadata__": ' + json.dumps(meta(config))[:-1] + ', "x": ' + deep + "}}"
    c.add("deep_header", kind, ("load",), [c.write("st/deep_header.safetensors",
                                                          _safetensors_bytes({}, deep_header))],
          match=r"neither an official Next3D pickle|not a .safetensors checkpoint")
    lying = _safetensors_bytes(small, meta(config), shapes={"backbone.mapping.w_avg": [2 ** 31]})
    c.add("tensor_claims_8GB", kind, ("info", "load"), [c.write("st/tensor_claims_8GB.safetensors", lying)],
          match=r"could not be read|damaged or truncated")
    c.add("header_length_1TB", kind, ("load",), [c.write(
        "st/header_length_1TB.safetensors", struct.pack("<Q", 2 ** 40) + legit[8:4096])],
        match=r"neither an official Next3D pickle|not a .safetensors checkpoint")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(c.path("st/legit_tiny.safetensors")), framework="pt") as f:
        legit_meta = f.metadata()
    tensors = load_file(str(c.path("st/legit_tiny.safetensors")))
    for name, extra, match in (("uv_mask_1d", {"extra/uv_face_mask": torch.zeros(7)}, r"uv_face_mask of shape \[7\]"),
                               ("plane_axes_nan", {"extra/plane_axes": torch.full((3, 3, 3), math.nan)},
                                r"plane_axes of shape \[3, 3, 3\]")):
        save_file(dict(tensors, **extra), str(c.path(f"st/{name}.safetensors")), metadata=legit_meta)
        c.add(name, kind, ("load",), [f"st/{name}.safetensors"], match=match)
    for frac in (0.001, 0.5, 0.999):
        name = f"truncated_{frac:g}"
        c.add(name, kind, ("load",) if frac < 0.01 else ("info", "load"),
              [c.write(f"st/{name}.safetensors", legit[:int(len(legit) * frac)])],
              match=r"truncated|damaged|neither|not a .safetensors")
    header_len = struct.unpack("<Q", legit[:8])[0]
    for seed in range(2):
        name = f"bitflips_{seed}"
        c.add(name, kind, ("load",), [c.write(f"st/{name}.safetensors", _flip_bits(legit, seed, 3, 8,
                                                                                  8 + header_len))], expect="any")


# -- FLAME model files and landmark embeddings

def flame_files(c: Corpus) -> None:
    kind = "flame"
    m = ff.make_synthetic_flame()
    files = ff.write_official_set(c.path("flame/legit"), m)
    rel = {k: str(Path(v).relative_to(c.folder)) for k, v in files.items()}
    c.add("legit_flame", kind, ("flame",), [rel["model"], rel["static"], rel["dynamic"]], expect="ok", legit=True)
    c.add("legit_deca", kind, ("flame",), [rel["model"], "", "", rel["deca"]], expect="ok")
    legit = Path(files["model"]).read_bytes()

    def model(name: str, data: bytes, match: str, expect: str = "error") -> None:
        c.add(name, kind, ("flame",), [c.write(f"flame/{name}.pkl", data), rel["static"], rel["dynamic"]],
              expect=expect, match=match)

    tree = ff.flame_model_tree(m)
    big = ff.sparse_csc(m.J_regressor)
    big.state["_shape"] = (5, 10 ** 8)          # the audit's 45 KB file that reached 2.5 GB
    big.state["indptr"] = np.zeros(10 ** 8 + 1, dtype=np.int32)[:6]
    tree_sparse = dict(tree, J_regressor=big)
    model("sparse_5x1e8", ff.pickle_bytes(tree_sparse), r"sparse matrix 'J_regressor' claims the shape 5x100000000")
    square = ff.sparse_csc(m.J_regressor)
    square.state["_shape"] = (2 ** 20, 2 ** 20)
    model("sparse_1Mx1M", ff.pickle_bytes(dict(tree, J_regressor=square)), r"claims the shape 1048576x1048576")

    def splice(payload: bytes, key: str = "bs_style") -> bytes:
        return ff.pickle_bytes(dict(tree, **{key: ff.Raw(payload)}))

    model("list_bomb_40", splice(list_bomb(40, base=100_000)), r"expands its shared references in 'bs_style\[0\]")
    model("dict_bomb_30", splice(dict_bomb(30, base=100_000)), r"expands its shared references in 'bs_style")
    model("deep_lists_100k", splice(deep_lists(100_000)), r"nests deeper than 64 levels")
    # FLAME's set stand-in keeps only plain items: the bomb is dropped without being hashed.
    model("tuple_bomb_in_set", splice(glob("__builtin__", "set") + b"](" + tuple_bomb(60, base=100_000) + b"e\x85R"),
          "", expect="ok")
    model("tuple_bomb_as_key", splice(b"}" + tuple_bomb(60, base=100_000) + b"Ns"), r"uses a tuple as a dict key")
    model("build_twice_chumpy", splice(glob("chumpy.ch", "Ch") + b")\x81" + b"}b" + b"}b"),
          r"sets the state of the same Ch twice")
    model("build_on_class", splice(glob("chumpy.ch", "Ch") + b"N}" + text("refusal") + text("") + b"s\x86b"),
          r"sets the state of a type")
    model("numpy_claims_1e12", splice(numpy_array() + numpy_state((10 ** 6, 10 ** 6), b"\x00" * 8) + b"b"),
          r"holds 8 bytes instead of 8000000000000")
    model("memo_index_4G", splice(b"N" + put(2 ** 32 - 1)), "", expect="ok")
    model("binstring_2GB", splice(b"T" + struct.pack("<i", 2 ** 31 - 1) + b"abc"), r"truncated")
    for frac in (0.01, 0.5, 0.99):
        model(f"truncated_{frac:g}", legit[:int(len(legit) * frac)], r"not a readable pickle|truncated")
    for seed in range(4):
        model(f"bitflips_{seed}", _flip_bits(legit, seed, 4), "", expect="any")

    # landmark embeddings: an .npy header claiming a huge numeric array, a pickled bomb inside an object .npy
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64
    c.add("dynamic_npy_claims_8TB", kind, ("flame",), [rel["model"], rel["static"],
                                                         c.write("flame/dynamic_npy_claims_8TB.npy", npy)],
          match=r"claims an array of shape \[1000000000, 1000\]")
    bomb = ff.npy_object_bytes({"lmk_face_idx": ff.Raw(list_bomb(40, base=100_000)), "lmk_b_coords": 0})
    c.add("dynamic_npy_bomb", kind, ("flame",), [rel["model"], rel["static"], c.write("flame/dynamic_npy_bomb.npy",
                                                                                      bomb)],
          match=r"expands its shared references")
    static = Path(files["static"]).read_bytes()
    c.add("static_truncated", kind, ("flame",), [rel["model"], c.write("flame/static_truncated.pkl",
                                                                      static[:len(static) // 2]), rel["dynamic"]],
          match=r"not a readable pickle|truncated")


# -- animation files

def animation_files(c: Corpus) -> None:
    from core.flame.animation import FlameSequence, save_sequence
    from core.flame.params import FlameParams

    kind = "animation"
    rng = np.random.default_rng(0)
    n = 300
    seq = FlameSequence(FlameParams(expression=rng.normal(0, 0.5, (n, 50)).astype(np.float32),
                                    jaw=np.abs(rng.normal(0, 0.1, (n, 3))).astype(np.float32)), fps=30.0)
    save_sequence(c.path("anim/legit.npz"), seq)
    save_sequence(c.path("anim/legit.json"), seq)
    c.add("legit_npz", kind, ("animation",), ["anim/legit.npz"], expect="ok", legit=True)
    c.add("legit_json", kind, ("animation",), ["anim/legit.json"], expect="ok")
    npz = c.path("anim/legit.npz").read_bytes()
    for frac in (0.001, 0.3, 0.9, 0.999):
        name = f"truncated_{frac:g}"
        c.add(name, kind, ("animation",), [c.write(f"anim/{name}.npz", npz[:int(len(npz) * frac)])],
              match=r"not an animation .npz.*(truncated|damaged)")

    def npz_of(members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=compress) as z:
            for name, data in members.items():
                z.writestr(name, data)
        return buf.getvalue()

    def npy_bytes(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 100), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    claims = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 400
    c.add("member_claims_400GB", kind, ("animation",), [c.write("anim/member_claims_400GB.npz", npz_of(
        {"expression.npy": claims}))], match=r"member 'expression.npy'.*claims an array of shape \[1000000000, 100\]")
    # A real zip bomb: 128 MiB of zeros deflated to ~130 KB, written a chunk at a time.
    rows = (128 << 20) // 200
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 50), }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with zipfile.ZipFile(c.path("anim/zip_bomb_128MB.npz"), "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("expression.npy", "w", force_zip64=True) as fh:
            fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
            chunk = bytes(1 << 20)
            for _ in range(rows * 200 // len(chunk)):
                fh.write(chunk)
    c.add("zip_bomb_128MB", kind, ("animation",), ["anim/zip_bomb_128MB.npz"], match=r"unpack to .* bytes, more than")
    lying = bytearray(npz_of({"expression.npy": npy_bytes(np.zeros((3, 50), np.float32))}))
    at = lying.rfind(b"PK\x01\x02") + 24   # the central directory's uncompressed size
    lying[at:at + 4] = struct.pack("<I", 2 ** 32 - 1)
    c.add("declared_size_4GB", kind, ("animation",), [c.write("anim/declared_size_4GB.npz", bytes(lying))],
          match=r"unpack to|not a readable .npz")
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    c.add("pickled_member", kind, ("animation",), [c.write("anim/pickled_member.npz", npz_of(
        {"expression.npy": obj.getvalue()}))], match=r"pickled Python objects")
    base = {k: npy_bytes(v) for k, v in (("expression", np.zeros((3, 5), np.float32)),)}
    c.add("fps_array", kind, ("animation",), [c.write("anim/fps_array.npz", npz_of(
        {"expression.npy": base["expression"], "fps.npy": npy_bytes(np.ones(1000))}))],
        match=r"'fps' is an array")
    c.add("fps_1e308", kind, ("animation",), [c.write("anim/fps_1e308.npz", npz_of(
        {"expression.npy": base["expression"], "fps.npy": npy_bytes(np.array(1e308))}))], match=r"fps is 1e\+308")

    def json_case(name: str, text_: str | bytes, match: str) -> None:
        c.add(name, kind, ("animation",), [c.write(f"anim/{name}.json", text_)], match=match)

    def frames(*items: str) -> str:
        return '{"frames": [' + ", ".join(items) + "]}"

    json_case("json_deep_100k", "[" * 100_000 + "]" * 100_000, r"nests deeper")
    json_case("json_deep_in_frame", frames('{"jaw": ' + "[" * 500 + "]" * 500 + "}"),
              r'frame 0: "jaw" must be a list of numbers')
    # One long row padded onto many empty frames, and a million frames of defaults: budgets checked before building.
    json_case("json_padding_bomb", frames('{"expression": [' + ",".join(["0"] * 200_000) + "]}", *["{}"] * 20_000),
              r"padding every frame")
    json_case("json_empty_frames_1M", frames(*["{}"] * 1_000_000), r"frames of \d+ numbers each are more than")
    json_case("json_int_400_digits", frames('{"jaw": [1' + "0" * 400 + ", 0, 0]}"),
              r'frame 0: "jaw" holds a number beyond')
    json_case("json_int_5000_digits", frames('{"jaw": [1' + "0" * 5000 + ", 0, 0]}"), r"not valid JSON .*digits")
    json_case("json_nan_last_of_50k", frames(*['{"jaw": [0.1, 0, 0]}'] * 49_999, '{"jaw": [NaN, 0, 0]}'),
              r"frame 49999: FlameParams.jaw contains NaN")
    json_case("json_malformed", '{"frames": [{"jaw": [0, 0,', r"not valid JSON.*line 1")
    json_case("json_not_utf8", b'{"frames": [\xff\xfe]}', r"not a UTF-8 text file")
    legit_json = c.path("anim/legit.json").read_bytes()
    json_case("json_truncated", legit_json[:len(legit_json) // 2], r"not valid JSON")


# -- mesh inputs (OBJ + landmark text, .npy arrays), reenactment folders, landmark files, UV templates

def mesh_files(c: Corpus) -> None:
    kind = "mesh"
    rng = np.random.default_rng(1)
    verts = rng.normal(0, 0.1, (5023, 3))
    lms = rng.normal(0, 0.1, (68, 3))
    obj = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts) + "f 1 2 3\n"
    kpt = "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in lms)
    c.write("mesh/legit.obj", obj)
    c.write("mesh/legit_kpt2d.txt", kpt)
    c.add("legit_obj", kind, ("mesh",), ["mesh/legit.obj", "mesh/legit_kpt2d.txt"], expect="ok", legit=True)
    lines = obj.splitlines(keepends=True)
    c.add("obj_bad_vertex", kind, ("mesh",), [c.write("mesh/obj_bad_vertex.obj", "".join(
        lines[:1000] + ["v 0.1 nope 0.3\n"] + lines[1000:])), "mesh/legit_kpt2d.txt"],
        match=r"obj_bad_vertex.obj, line 1001: expected numbers")
    c.add("obj_short_vertex", kind, ("mesh",), [c.write("mesh/obj_short_vertex.obj", "".join(
        lines[:10] + ["v 0.1\n"] + lines[10:])), "mesh/legit_kpt2d.txt"], match=r"line 11: expected 3 numbers")
    klines = kpt.splitlines(keepends=True)
    c.add("kpt_bad_number", kind, ("mesh",), ["mesh/legit.obj", c.write("mesh/kpt_bad_number.txt", "".join(
        klines[:40] + ["0.1 0.2 x\n"] + klines[41:]))], match=r"kpt_bad_number.txt: line 41: expected numbers")
    c.add("kpt_ragged", kind, ("mesh",), ["mesh/legit.obj", c.write("mesh/kpt_ragged.txt", "".join(
        klines[:5] + ["0.1 0.2\n"] + klines[6:]))], match=r"line 6: 2 numbers where the lines before have 3")
    c.add("kpt_two_columns", kind, ("mesh",), ["mesh/legit.obj", c.write("mesh/kpt_two_columns.txt", "".join(
        f"{x} {y}\n" for x, y, _ in lms))], match=r"2 numbers per line")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 3), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    c.add("npy_claims_12GB", kind, ("mesh",), [c.write("mesh/npy_claims_12GB.npy", b"\x93NUMPY\x01\x00"
                                                       + struct.pack("<H", len(header)) + header.encode()
                                                       + b"\x00" * 120)],
          match=r"claims an array of shape \[1000000000, 3\]")
    c.write("mesh/npy_bad_header.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}\n")
    c.add("npy_bad_header", kind, ("mesh",), ["mesh/npy_bad_header.npy"], match=r"header is malformed")
    for t in range(3):
        c.write(f"mesh/seq/{t:04d}.obj", obj)
        c.write(f"mesh/seq/{t:04d}_kpt2d.txt", kpt if t != 2 else "".join(klines[:30] + ["1 2 3 4 5\n"]
                                                                          + klines[31:]))
    c.add("sequence_bad_frame", kind, ("mesh-sequence",), ["mesh/seq"],
          match=r"Frame 2 \(0002.obj\).*line 31: 5 numbers")

    kind = "landmarks"
    pix = rng.uniform(100, 400, (68, 2))
    c.write("lm/legit.txt", "".join(f"{x:.3f} {y:.3f}\n" for x, y in pix))
    c.add("legit_txt", kind, ("landmarks",), ["lm/legit.txt"], expect="ok", legit=True)
    c.write("lm/legit.json", json.dumps({"landmarks": pix.tolist()}))
    c.add("legit_json", kind, ("landmarks",), ["lm/legit.json"], expect="ok")
    c.add("txt_bad_line", kind, ("landmarks",), [c.write("lm/txt_bad_line.txt", "1 2\n3 four\n")],
          match=r"line 2: expected numbers")
    c.add("json_deep", kind, ("landmarks",), [c.write("lm/json_deep.json", "[" * 100_000 + "]" * 100_000)],
          match=r"nests deeper")
    c.add("json_deep_500", kind, ("landmarks",), [c.write("lm/json_deep_500.json", "[" * 500 + "]" * 500)],
          match=r"nests deeper than 32 levels")
    c.add("json_huge_int", kind, ("landmarks",), [c.write("lm/json_huge_int.json", "[[1" + "0" * 400 + ", 2]]")],
          match=r"cannot be read|shape|NaN or infinite")
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (68000000000, 2), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    c.add("npy_claims_1TB", kind, ("landmarks",), [c.write("lm/npy_claims_1TB.npy", b"\x93NUMPY\x01\x00"
                                                           + struct.pack("<H", len(header)) + header.encode())],
          match=r"claims an array of shape \[68000000000, 2\]")
    c.write("lm/template.obj", "vt 0.1 0.2\nvt 0.3 0.4\nvt 0.5 0.6\nf 1/1 2/2 3/3\n")
    c.add("uv_obj_legit", kind, ("uv-obj",), ["lm/template.obj"], expect="ok")
    c.add("uv_obj_bad_vt", kind, ("uv-obj",), [c.write("lm/uv_obj_bad_vt.obj", "vt 0.1 0.2\nvt 0.3 x\n")],
          match=r"line 2: a 'vt' line needs two numbers")
    c.add("uv_obj_bad_face", kind, ("uv-obj",), [c.write("lm/uv_obj_bad_face.obj",
                                                          "vt 0.1 0.2\nf 1/1 2/b 3/1\n")],
          match=r"line 2: a face that is not a triangle")


# -- what a render reads besides the model: vertex sequences, camera labels, a converted FLAME model

def sequence_files(c: Corpus) -> None:
    from core.flame.builtin_head import BUILTIN_HEAD_PATH
    from core.geometry.ellipsoid_head import ellipsoid_head

    kind = "sequence"
    v = ellipsoid_head().mesh_input()[0].numpy()
    frames = np.stack([v * (1 + 0.01 * k) for k in range(100)]).astype(np.float32)   # 6 MB
    np.save(c.path("seq/legit.npy"), frames)
    np.savez(c.path("seq/legit.npz"), v=frames)
    c.add("legit_npy", kind, ("vertex-seq",), ["seq/legit.npy"], expect="ok", legit=True)
    c.add("legit_npz", kind, ("vertex-seq",), ["seq/legit.npz"], expect="ok")
    for suffix in ("npy", "npz"):
        data = c.path(f"seq/legit.{suffix}").read_bytes()
        for frac in (0.001, 0.5, 0.999):
            name = f"truncated_{suffix}_{frac:g}"
            c.add(name, kind, ("vertex-seq",), [c.write(f"seq/{name}.{suffix}", data[:int(len(data) * frac)])],
                  match=r"cannot be read as a numeric array .*(truncated|damaged|malformed)")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 5091, 3), }"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    claims = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 4000
    c.add("npy_claims_6TB", kind, ("vertex-seq",), [c.write("seq/npy_claims_6TB.npy", claims)],
          match=r"claims an array of shape \[100000000, 5091, 3\]")
    cams = np.zeros((100, 25), np.float32)
    np.save(c.path("seq/cams.npy"), cams)
    c.add("legit_cameras", kind, ("camera",), ["seq/cams.npy"], expect="ok")
    cam_bytes = c.path("seq/cams.npy").read_bytes()
    c.add("cameras_truncated", kind, ("camera",), [c.write("seq/cams_truncated.npy", cam_bytes[:-100])],
          match=r"not a plain numeric .npy array .*truncated")
    c.add("cameras_json_deep", kind, ("camera",), [c.write("seq/cams_deep.json", "[" * 100_000 + "]" * 100_000)],
          match=r"not valid JSON .*nests deeper")
    head = BUILTIN_HEAD_PATH.read_bytes()
    c.write("seq/flame_legit.npz", head)
    c.add("flame_npz_legit", kind, ("flame-npz",), ["seq/flame_legit.npz"], expect="ok")
    for frac in (0.01, 0.5, 0.99):
        name = f"flame_npz_truncated_{frac:g}"
        c.add(name, kind, ("flame-npz",), [c.write(f"seq/{name}.npz", head[:int(len(head) * frac)])],
              match=r"is not a readable .npz file .*truncated or damaged")


def make_corpus(folder: str | Path) -> Path:
    """Write the corpus into `folder`; returns the manifest's path."""
    c = Corpus(Path(folder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network_pickles(c)
        safetensors_files(c)
        flame_files(c)
        animation_files(c)
        mesh_files(c)
        sequence_files(c)
    return c.save()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(make_corpus(sys.argv[1]))
