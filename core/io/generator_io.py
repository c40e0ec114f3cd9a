"""Build a Next3DGenerator from a checkpoint (official pickle or project safetensors) and save one.

This is the one place that maps the official constructor arguments and pickled attributes onto our config.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import CheckpointError
from ..networks.next3d import Next3DConfig, Next3DGenerator
from ..rendering.volume import RenderingOptions
from .official_pickle import OfficialNetwork, load_official_pickle
from .restricted_pickle import one_line, short_repr
from .safetensors_format import checkpoint_kind, load_checkpoint, save_checkpoint

PathLike = Union[str, os.PathLike]
GENERATOR_KIND = "next3d-generator"
# Buffers the official training loop adds to the released generator; they do not affect synthesis.
IGNORED_OFFICIAL_KEYS = ("dataset_label_std",)

# Sane ranges of the config fields that size the network and its renders. The official FFHQ-512 generator has
# z_dim 512, c_dim 25, channel_base 32768, channel_max 512, 2 mapping layers, 256 px texture and planes, 64 px neural
# rendering (128 in Next3D++), 512 px images, 5023 vertices + 68 landmarks, 9976 faces, 5118 UVs, a 64 px mouth,
# 32 px blending and 48 + 48 depth samples; this project's small configs are narrower and smaller. A config
# outside these ranges is refused before anything is built.
_INT_RANGES = {
    "z_dim": (1, 2048), "c_dim": (0, 1024), "channel_base": (1, 1 << 20), "channel_max": (1, 2048),
    "mapping_layers": (1, 16), "texture_resolution": (8, 1024), "plane_resolution": (8, 1024),
    "neural_rendering_resolution": (8, 512), "image_resolution": (32, 2048), "n_vertices": (1, 1 << 20),
    "n_landmarks": (0, 1024), "n_faces": (1, 1 << 21), "n_uvcoords": (1, 1 << 21), "mouth_input_size": (8, 1024),
    "blend_final_size": (4, 512),
}
_RENDERING_INT_RANGES = {"depth_resolution": (1, 512), "depth_resolution_importance": (0, 512)}
_POSITIVE_FLOATS = ("orth_scale", "avg_camera_radius")
_FINITE_FLOATS = ("c_scale", "decoder_lr_mul", "orth_shift", "avg_camera_pivot")
_BUILD_SLACK = 1 << 20   # numbers a network may allocate beyond its weights while it is built (filters, indices)


def _bad_config(source: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{source} has an invalid generator config: {problem}. It is damaged or not a checkpoint "
                           "of this network; convert the official pickle again.")


def check_config(cfg: Next3DConfig, source: str) -> None:
    """Refuse a config whose sizes are outside the sane ranges, or whose numbers are NaN, infinite or of the wrong
    kind, before any module is built. `source` names the file in the CheckpointError."""
    def check_int(name: str, value: Any, lo: int, hi: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _bad_config(source, f"{name} = {short_repr(value, 40)} is outside {lo}..{hi}")

    for name, (lo, hi) in _INT_RANGES.items():
        check_int(name, getattr(cfg, name), lo, hi)
    r = cfg.rendering
    if not isinstance(r, RenderingOptions):
        raise _bad_config(source, "rendering is not a set of rendering options")
    for name, (lo, hi) in _RENDERING_INT_RANGES.items():
        check_int(f"rendering.{name}", getattr(r, name), lo, hi)
    floats = {name: getattr(cfg, name) for name in _POSITIVE_FLOATS + _FINITE_FLOATS}
    floats.update({f"rendering.{n}": getattr(r, n) for n in ("ray_start", "ray_end", "box_warp")})
    for name, value in floats.items():
        values = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e6
                   for v in values):
            raise _bad_config(source, f"{name} = {short_repr(value, 40)} is not a finite number")
    if not (cfg.orth_scale > 0 and cfg.avg_camera_radius > 0 and r.box_warp > 0 and 0 < r.ray_start < r.ray_end):
        raise _bad_config(source, "orth_scale, avg_camera_radius, rendering.box_warp and 0 < ray_start < ray_end "
                          "must be positive")


class _AllocationBudget(TorchFunctionMode):
    """While a network is built: counts the numbers that torch's factory functions (zeros, randn, empty, ...) are
    asked for, and refuses the call that would pass `limit` before it allocates anything."""

    _FACTORIES = frozenset({torch.randn, torch.rand, torch.zeros, torch.ones, torch.empty, torch.full, torch.randint,
                            torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty,
                            torch.Tensor.new_full})

    def __init__(self, limit: int, refuse: Any) -> None:
        super().__init__()
        self.limit = limit
        self.total = 0
        self.refuse = refuse

    @staticmethod
    def requested(func: Any, args: tuple, kwargs: dict) -> int:
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if func is torch.arange:   # arange(end), arange(start, end), arange(start, end, step)
            start, end, step = (([0] if len(numbers) == 1 else []) + numbers + [1, 1])[:3] if numbers else (0, 0, 1)
            return max(math.ceil((end - start) / step), 0) if step else 0
        if func is torch.eye:      # eye(n) or eye(n, m)
            return int(numbers[0]) * int(numbers[-1]) if numbers else 0
        if func not in _AllocationBudget._FACTORIES:
            return 0
        dims = kwargs.get("size")
        if dims is None:
            dims = next((a for a in args if isinstance(a, (tuple, list, torch.Size))), None)
        if dims is None:   # zeros(2, 3): the sizes are the leading ints (randint(low, high) always has a size)
            dims = [] if func is torch.randint else [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        return math.prod(int(d) for d in dims)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        self.total += self.requested(func, args, kwargs)
        if self.total > self.limit:
            raise self.refuse(self.total, self.limit)
        return func(*args, **kwargs)


def _build(cfg: Next3DConfig, state_dict: Dict[str, torch.Tensor], source: str) -> Next3DGenerator:
    """Next3DGenerator(cfg) after `check_config`, allocating at most what the checkpoint's own weights hold (plus
    the buffers that are not stored, and a little slack): a config claiming a larger network than its weights is
    refused before the memory is taken."""
    check_config(cfg, source)
    present = sum(t.numel() for t in state_dict.values())
    limit = present + 2 * cfg.texture_resolution ** 2 + _BUILD_SLACK

    def refuse(total: int, limit: int) -> CheckpointError:
        return CheckpointError(
            f"{source} claims a generator (channel_base {cfg.channel_base}, channel_max {cfg.channel_max}, "
            f"mapping_layers {cfg.mapping_layers}, {cfg.plane_resolution} px planes, {cfg.image_resolution} px "
            f"images) that needs more than {limit:,} numbers, but it holds {present:,}. It is damaged or not a "
            "checkpoint of this configuration; convert the official pickle again.")

    with _AllocationBudget(limit, refuse):
        return Next3DGenerator(cfg)


def config_from_official(net: OfficialNetwork) -> Next3DConfig:
    """Our config from the official `_init_kwargs`, `rendering_kwargs` and pickled attributes; a value of the wrong
    kind is a CheckpointError naming it."""
    try:
        return _official_config(net)
    except CheckpointError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"The official pickle's constructor arguments or rendering settings hold a value of the "
                              f"wrong kind ({one_line(exc)}); it is damaged or not a Next3D generator.") from None


def _official_config(net: OfficialNetwork) -> Next3DConfig:
    """Our config from the official `_init_kwargs`, `rendering_kwargs` and pickled attributes
    (docs/checkpoint_formats.md)."""
    kw = net.init_kwargs
    rk = dict(kw.get("rendering_kwargs") or net.attributes.get("rendering_kwargs") or {})
    sr_module = str(rk.get("superresolution_module", ""))
    if not sr_module.endswith("SuperresolutionHybrid8XDC"):
        raise CheckpointError(f"This generator uses the super-resolution module {sr_module!r}; only EG3D's "
                              "SuperresolutionHybrid8XDC (the Next3D FFHQ-512 model) is supported.")
    if rk.get("ray_start") == "auto" or rk.get("ray_end") == "auto":
        raise CheckpointError("This generator samples rays in an automatic box (ShapeNet-style ray_start='auto'); "
                              "Next3D head models use fixed ray_start/ray_end and are the only ones supported.")
    sd = net.state_dict
    try:
        n_faces = int(sd["faces"].shape[1])
        n_uv = int(sd["raw_uvcoords"].shape[1])
        texture_res = 2 ** (len([k for k in sd if k.startswith("texture_backbone.synthesis.b")
                                  and k.endswith(".torgb.bias")]) + 1)
    except KeyError as exc:
        raise CheckpointError(f"The checkpoint has no {exc.args[0]!r} weights: it is not a Next3D generator.") from None
    shift = net.attributes.get("orth_shift")
    scale = net.attributes.get("orth_scale")
    rendering = RenderingOptions(
        ray_start=float(rk.get("ray_start", 2.25)), ray_end=float(rk.get("ray_end", 3.3)),
        depth_resolution=int(rk.get("depth_resolution", 48)),
        depth_resolution_importance=int(rk.get("depth_resolution_importance", 48)),
        box_warp=float(rk.get("box_warp", 1)), white_back=bool(rk.get("white_back", False)))
    return Next3DConfig(
        z_dim=int(kw.get("z_dim", 512)), w_dim=int(kw.get("w_dim", 512)), c_dim=int(kw.get("c_dim", 25)),
        channel_base=int(kw.get("channel_base", 32768)), channel_max=int(kw.get("channel_max", 512)),
        mapping_layers=int((kw.get("mapping_kwargs") or {}).get("num_layers", 8)),
        texture_resolution=texture_res, plane_resolution=texture_res,
        neural_rendering_resolution=int(net.attributes.get("neural_rendering_resolution", 64)),
        image_resolution=int(kw.get("img_resolution", 512)),
        n_faces=n_faces, n_uvcoords=n_uv,
        c_gen_conditioning_zero=bool(rk.get("c_gen_conditioning_zero", False)),
        c_scale=float(rk.get("c_scale", 0.0)),  # the official mapping defaults a missing c_scale to 0
        sr_antialias=bool(rk.get("sr_antialias", True)),
        sr_noise_mode=str(rk.get("superresolution_noise_mode", "none")),
        decoder_lr_mul=float(rk.get("decoder_lr_mul", 1.0)),
        orth_scale=float(torch.as_tensor(scale).reshape(-1)[0]) if scale is not None else 5.0,
        orth_shift=tuple(float(x) for x in torch.as_tensor(shift).reshape(-1)) if shift is not None
        else (0.0, -0.01, -0.01),
        avg_camera_radius=float(rk.get("avg_camera_radius", 2.7)),
        avg_camera_pivot=tuple(float(x) for x in rk.get("avg_camera_pivot", (0.0, 0.0, 0.2))),
        rendering=rendering)


def _load_weights(generator: Next3DGenerator, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Strict load that reports missing and unexpected names (and shape mismatches) in one clear error."""
    state_dict = {k: v for k, v in state_dict.items() if k not in IGNORED_OFFICIAL_KEYS}
    own = generator.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        def show(items):
            return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weights ({show(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights ({show(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} weights of the wrong shape ({show(wrong)})")
        raise CheckpointError(f"{source} does not fit the Next3D generator: " + "; ".join(parts) +
                              ". It is a checkpoint of another network or configuration.")
    generator.load_state_dict(state_dict, strict=True)


def _set_extras(generator: Next3DGenerator, uv_face_mask: Optional[torch.Tensor],
                plane_axes: Optional[torch.Tensor], source: str = "The checkpoint") -> None:
    try:
        mask = None if uv_face_mask is None else torch.as_tensor(uv_face_mask, dtype=torch.float32)
        axes = None if plane_axes is None else torch.as_tensor(plane_axes, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"{source} holds a uv_face_mask or plane_axes that is not an array of numbers.") \
            from None
    if mask is not None and (mask.ndim < 2 or mask.numel() == 0 or mask.numel() != mask.shape[-1] * mask.shape[-2]):
        raise CheckpointError(f"{source} holds a uv_face_mask of shape {list(mask.shape)}; it must be one [H, W] "
                              "image.")
    if axes is not None and (axes.numel() != 27 or not bool(torch.isfinite(axes).all())):
        raise CheckpointError(f"{source} holds plane_axes of shape {list(axes.shape)}; they must be 3 finite 3x3 "
                              "matrices.")
    with torch.no_grad():
        if mask is not None:
            mask = mask.reshape(1, 1, *mask.shape[-2:])
            generator.uv_face_mask.copy_(F.interpolate(mask, size=generator.uv_face_mask.shape[-2:], mode="nearest"))
        if axes is not None:
            generator.plane_axes.copy_(axes.reshape(3, 3, 3))


def generator_from_official(net: OfficialNetwork) -> Next3DGenerator:
    if net.class_name != "TriPlaneGenerator" or not any(k.startswith("texture_backbone.") for k in net.state_dict):
        raise CheckpointError(f"The network in this pickle is a {net.class_name} without a neural-texture backbone: "
                              "it is not a Next3D generator (an EG3D pickle?). Use next3d_ffhq_512.pkl.")
    generator = _build(config_from_official(net), net.state_dict, "The official pickle")
    _load_weights(generator, net.state_dict, "The official pickle")
    _set_extras(generator, net.attributes.get("uv_face_mask"), net.attributes.get("plane_axes"), "The official pickle")
    return generator.eval().requires_grad_(False)


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the RuntimeError torch's
    CPU allocator raises."""
    return isinstance(exc, MemoryError) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


@contextlib.contextmanager
def memory_guard(path: PathLike, what: str = "the model"):
    """Turn an allocation failure while loading `path` into a one-line CheckpointError naming the file."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise CheckpointError(f"Not enough memory to load {what} {path}; close other programs, or load it on a "
                              "device with more memory.") from None


def load_generator(path: PathLike, device: Union[str, torch.device] = "cpu") -> Next3DGenerator:
    """Load a generator from an official Next3D pickle or a project .safetensors checkpoint, in eval mode; running
    out of memory is a CheckpointError naming the file."""
    with memory_guard(path):
        return _load_generator(Path(path), device)


def _load_generator(path: Path, device: Union[str, torch.device]) -> Next3DGenerator:
    if not path.is_file():
        raise CheckpointError(f"Model file {str(path)!r} does not exist. Give the path of next3d_ffhq_512.pkl or "
                              "of a .safetensors checkpoint written by next3d.")
    kind = checkpoint_kind(path)
    if kind == "official-pickle":
        generator = generator_from_official(load_official_pickle(path))
    elif kind == "next3d-safetensors":
        config, state_dict, extra = load_checkpoint(path, kind=GENERATOR_KIND)
        try:
            cfg = Next3DConfig.from_dict(config)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{path} has an invalid generator config: {one_line(exc)}") from None
        generator = _build(cfg, state_dict, str(path))
        _load_weights(generator, state_dict, str(path))
        _set_extras(generator, extra.get("uv_face_mask"), extra.get("plane_axes"), str(path))
        generator = generator.eval().requires_grad_(False)
    else:
        raise CheckpointError(f"{path} is neither an official Next3D pickle nor a next3d .safetensors checkpoint.")
    return generator.to(device)


def save_generator(path: PathLike, generator: Next3DGenerator) -> None:
    """Write the generator as one .safetensors file (weights + config JSON + UV mask and plane axes)."""
    extra = {"uv_face_mask": generator.uv_face_mask.detach().cpu(), "plane_axes": generator.plane_axes.detach().cpu()}
    save_checkpoint(path, {k: v.detach().cpu() for k, v in generator.state_dict().items()},
                    generator.config.to_dict(), extra_tensors=extra, kind=GENERATOR_KIND)


def convert_official(src: PathLike, dst: PathLike) -> Tuple[Next3DConfig, int]:
    """official .pkl -> project .safetensors; returns the config and the number of tensors written."""
    generator = load_generator(src)
    save_generator(dst, generator)
    return generator.config, len(generator.state_dict())
