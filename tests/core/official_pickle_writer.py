"""Test helper: official-format network pickles with tiny shapes, and the hostile variants the reader must refuse.

The format itself (persistent objects, legacy torch storages, the generator's module tree) is written by
tools/official_formats/network_pickle.py, re-exported here.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any

import torch

from tools.official_formats.network_pickle import *  # noqa: F401,F403 - the emitter and the generator tree
from tools.official_formats.network_pickle import (  # noqa: F401 - names used below and by the tests
    _BUFFER_SUFFIXES, _NO_STATE, LEGACY_MAGIC, TOP_BUFFERS, Call, Global, PersId, dumps, easydict, is_official_buffer,
    write_official_pickle, write_pickle)

SPEC_KEYS = os.environ.get("NEXT3D_SPEC_STATE_DICT", "/work/shared/spec/official_g_ema_state_dict.txt")


# ----------------------------------------------------------------------------------------------------------------
# The official key list with tiny shapes

def official_entries(path: str = SPEC_KEYS) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) for every line of official_g_ema_state_dict.txt."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            name, shape, dtype = line.rstrip("\n").split("\t")
            dims = tuple(int(x) for x in re.findall(r"\d+", shape))
            out.append((name, dims, dtype))
    return out


def tiny_official_state_dict(seed: int = 0, path: str = SPEC_KEYS
                             ) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    """The official G_ema key list with every dimension cut to min(dim, 2), random values; and the buffer names."""
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, dims, dtype in official_entries(path):
        shape = tuple(min(d, 2) for d in dims)
        if dtype == "int64":
            sd[name] = torch.randint(0, 5000, shape, generator=g, dtype=torch.int64)
        else:
            sd[name] = torch.randn(shape, generator=g, dtype=torch.float32)
    return sd, [n for n in sd if is_official_buffer(n)]


def official_attributes(seed: int = 1) -> dict:
    """Plain attributes like the official generator's (small uv_face_mask)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "uv_face_mask": (torch.rand((1, 1, 4, 4), generator=g) > 0.5).float(),
        "orth_scale": torch.tensor([[5.0]]),
        "orth_shift": torch.tensor([[0.0, -0.01, -0.01]]),
        "neural_rendering_resolution": 64,
        "rendering_kwargs": {"depth_resolution": 48, "depth_resolution_importance": 48, "ray_start": 2.25,
                             "ray_end": 3.3, "box_warp": 1, "avg_camera_radius": 2.7,
                             "avg_camera_pivot": [0, 0, 0.2], "clamp_mode": "softplus",
                             "superresolution_module":
                                 "training_avatar_texture.superresolution.SuperresolutionHybrid8XDC",
                             "c_gen_conditioning_zero": False, "c_scale": 1.0,
                             "superresolution_noise_mode": "none", "sr_antialias": True, "gen_exp_cond": True},
        "load_lms": True,
        "fill_mouth": True,
        "uv_resolution": 256,
        "topology_path": "data/demo/head_template.obj",
        "plane_axes": torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                    [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                                    [[0, 0, 1], [0, 1, 0], [1, 0, 0]]], dtype=torch.float32),
    }


def official_init_kwargs() -> dict:
    """Constructor kwargs like those the FFHQ training command builds, with EasyDict sub-dicts."""
    return {
        "z_dim": 512, "w_dim": 512, "c_dim": 25, "img_resolution": 512, "img_channels": 3,
        "topology_path": "data/demo/head_template.obj", "sr_num_fp16_res": 4,
        "mapping_kwargs": easydict({"num_layers": 2}),
        "rendering_kwargs": {"depth_resolution": 48, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1},
        "sr_kwargs": easydict({"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"}),
        "channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": None,
        "fused_modconv_default": "inference_only",
    }


# ----------------------------------------------------------------------------------------------------------------
# Hostile variants

def write_malicious_reduce_pickle(path: str | os.PathLike, marker: str | os.PathLike, module: str = "os",
                                  name: str = "system", nested: bool = False) -> None:
    """A pickle whose loading by plain pickle.load would run `echo pwned > marker` through `module.name`.

    With `nested`, the call hides as an attribute inside an otherwise valid generator; otherwise it is the
    'G_ema' entry itself."""
    cmd = f"echo pwned > {os.fspath(marker)}"
    args = (["sh", "-c", cmd],) if name == "Popen" else (cmd,)
    payload = Call(Global(module, name), args)
    if nested:
        sd, bufs = tiny_official_state_dict()
        attrs = official_attributes()
        attrs["evil"] = payload
        write_official_pickle(path, sd, bufs, official_init_kwargs(), attrs)
    else:
        write_pickle(path, {"G_ema": payload})


def write_exec_module_src_pickle(path: str | os.PathLike, marker: str | os.PathLike) -> None:
    """A generator whose embedded module_src would create `marker` if it were exec'd (the stock loader does)."""
    src = (f"import os\nos.system('echo pwned > {os.fspath(marker)}')\n"
           "class TriPlaneGenerator:\n    pass\n")
    sd, bufs = tiny_official_state_dict()
    write_official_pickle(path, sd, bufs, official_init_kwargs(), official_attributes(), top_source=src)


def write_exec_reduce_pickle(path: str | os.PathLike, marker: str | os.PathLike) -> None:
    """A REDUCE of builtins.exec on code that would create `marker`."""
    code = f"open({os.fspath(marker)!r}, 'w').write('pwned')"
    write_pickle(path, {"G_ema": Call(Global("builtins", "exec"), (code,))})


def write_bad_meta_pickle(path: str | os.PathLike, meta: Any) -> None:
    """`_reconstruct_persistent_obj(meta)` with a meta that is not the dict persistence writes."""
    write_pickle(path, {"G_ema": Call(Global("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))})


def write_persistent_id_pickle(path: str | os.PathLike) -> None:
    """An outer pickle that uses a persistent id (only torch.save's inner streams do)."""
    write_pickle(path, {"G_ema": PersId(("storage", "x"))})


def write_hostile_storage_pickle(path: str | os.PathLike, marker: str | os.PathLike) -> None:
    """A tensor whose storage bytes hide an os.system REDUCE in the legacy torch.save sub-stream."""
    inner = b"".join([dumps(LEGACY_MAGIC, protocol=2), dumps(1001, protocol=2), dumps({}, protocol=2),
                      dumps(Call(Global("os", "system"), (f"echo pwned > {os.fspath(marker)}",)), protocol=2)])
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                  (Call(Global("torch.storage", "_load_from_bytes"), (inner,)), 0, (1,), (1,), False,
                   OrderedDict()))
    write_pickle(path, {"G_ema": tensor})
