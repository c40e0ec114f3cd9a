"""Build a Next3DGenerator from a checkpoint (official pickle or project safetensors) and save one.

This is the one place that maps the official constructor arguments and pickled attributes onto our config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from ..networks.next3d import Next3DConfig, Next3DGenerator
from ..rendering.volume import RenderingOptions
from .official_pickle import OfficialNetwork, load_official_pickle
from .safetensors_format import checkpoint_kind, load_checkpoint, save_checkpoint

PathLike = Union[str, os.PathLike]
GENERATOR_KIND = "next3d-generator"
# Buffers the official training loop adds to the released generator; they do not affect synthesis.
IGNORED_OFFICIAL_KEYS = ("dataset_label_std",)


def config_from_official(net: OfficialNetwork) -> Next3DConfig:
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
                plane_axes: Optional[torch.Tensor]) -> None:
    with torch.no_grad():
        if uv_face_mask is not None:
            mask = torch.as_tensor(uv_face_mask, dtype=torch.float32).reshape(1, 1, *uv_face_mask.shape[-2:])
            generator.uv_face_mask.copy_(F.interpolate(mask, size=generator.uv_face_mask.shape[-2:], mode="nearest"))
        if plane_axes is not None:
            generator.plane_axes.copy_(torch.as_tensor(plane_axes, dtype=torch.float32).reshape(3, 3, 3))


def generator_from_official(net: OfficialNetwork) -> Next3DGenerator:
    if net.class_name != "TriPlaneGenerator" or not any(k.startswith("texture_backbone.") for k in net.state_dict):
        raise CheckpointError(f"The network in this pickle is a {net.class_name} without a neural-texture backbone: "
                              "it is not a Next3D generator (an EG3D pickle?). Use next3d_ffhq_512.pkl.")
    generator = Next3DGenerator(config_from_official(net))
    _load_weights(generator, net.state_dict, "The official pickle")
    _set_extras(generator, net.attributes.get("uv_face_mask"), net.attributes.get("plane_axes"))
    return generator.eval().requires_grad_(False)


def load_generator(path: PathLike, device: Union[str, torch.device] = "cpu") -> Next3DGenerator:
    """Load a generator from an official Next3D pickle or a project .safetensors checkpoint, in eval mode."""
    path = Path(path)
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
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} has an invalid generator config: {exc}") from None
        generator = Next3DGenerator(cfg)
        _load_weights(generator, state_dict, str(path))
        _set_extras(generator, extra.get("uv_face_mask"), extra.get("plane_axes"))
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
