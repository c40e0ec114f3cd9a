"""The render engine's picture of one frame, without bpy: each head's virtual camera (framing.py), then the
generator's square image placed in the scene camera's frame, matted and composited by depth.

`plan_head` turns one head's frame as Blender sees it (blender/scene.py read_head: the scene camera in head space,
its projection) into the neural job's arrays (the virtual camera) and what placing needs. `place` takes the job's
reply (the generator's sRGB image at the square side and its volume-rendered depth) to a premultiplied,
scene-linear RGBA layer and its depth in the scene render; `composite` stacks the heads by depth. The pixels are
scene-linear because Blender's colour management turns the Combined pass into the written file: with the view
transform Standard the file holds the generator's own colours. Everything is float32 numpy in a fixed order, so
two processes give the same bytes. render_engine.py and bench/viewport.py call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import convert, framing

EMPTY_DEPTH = 1e10     # Blender's Depth pass where nothing is (Cycles writes the same)


@dataclass
class HeadShot:
    """One head at one frame, ready for the neural job and for placing its reply."""

    name: str
    job_arrays: Dict[str, np.ndarray]     # one-frame job arrays, cam2world/intrinsics of the virtual camera
    view: framing.VirtualView
    pixels: np.ndarray                    # [V, 2] the rig's vertices in scene pixels (the matte)
    faces: np.ndarray                     # [T, 3]
    width: int
    height: int


def plan_head(name: str, arrays: Dict[str, np.ndarray], params: convert.CameraParams, head_scale: float = 1.0,
              side: int = framing.DEFAULT_SIDE, config=None, skull: Optional[np.ndarray] = None
              ) -> Optional[HeadShot]:
    """The shot of a head from one-frame arrays whose cam2world is the scene camera in head space; None when the
    head is wholly behind the camera (nothing of it shows). `skull` (vertex indices of the rigid part,
    core/flame/mesh_pose.py skull_region): the 2-D placement is fitted on it alone, so an opening jaw or a smile
    does not move the whole picture."""
    c2w, vertices = arrays["cam2world"][0], arrays["vertices"][0]
    fit_on = vertices[np.asarray(skull)] if skull is not None and len(skull) >= 3 else vertices
    try:
        view = framing.virtual_view(c2w, params, fit_on, side=side, config=config, head_scale=head_scale)
    except framing.HeadOutOfView:
        return None
    job_arrays = dict(arrays, cam2world=view.cam2world[None].astype(np.float32),
                      intrinsics=view.intrinsics[None].astype(np.float32))
    pixels = framing.head_pixels(vertices, c2w, params)
    return HeadShot(name=name, job_arrays=job_arrays, view=view, pixels=pixels,
                    faces=np.asarray(arrays["faces"]), width=int(params.width), height=int(params.height))


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def place(shot: HeadShot, rgb: np.ndarray, depth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(premultiplied scene-linear RGBA [H, W, 4], depth [H, W] with inf where the head is not) of one head:
    framing.head_layer (warp, matte cut to the generator's square, depth) of the linearised image."""
    # Copies in numpy's own memory, whatever gave them (see frame_cache.load): the same bytes in every process.
    rgb = np.array(rgb, dtype=np.float32, order="C")
    depth = np.array(depth, dtype=np.float32, order="C")
    rgba, z = framing.head_layer(srgb_to_linear(rgb), depth, shot.view, shot.pixels, shot.faces, shot.width,
                                 shot.height)
    return np.asarray(rgba, np.float32), np.asarray(z, np.float32)


def composite(layers: Sequence[Tuple[np.ndarray, np.ndarray]], width: int, height: int
              ) -> Tuple[np.ndarray, np.ndarray]:
    """The heads' layers stacked by depth; an empty frame (transparent, EMPTY_DEPTH) when there are none."""
    if not layers:
        return np.zeros((height, width, 4), np.float32), np.full((height, width), EMPTY_DEPTH, np.float32)
    rgba, depth = framing.composite_by_depth(list(layers))
    depth = np.where(np.isfinite(depth), depth, EMPTY_DEPTH).astype(np.float32)
    return np.asarray(rgba, np.float32), depth


def blender_rows(image: np.ndarray) -> np.ndarray:
    """[H, W, C] with row 0 at the top -> [H * W, C] rows bottom to top, as RenderPass.rect and gpu buffers take."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    return np.ascontiguousarray(a[::-1]).reshape(-1, a.shape[2])


def warnings_of(shots: List[HeadShot]) -> List[str]:
    return [f"{s.name}: {s.view.warning}" for s in shots if s.view.warning]


__all__ = ["HeadShot", "plan_head", "place", "composite", "srgb_to_linear", "blender_rows", "warnings_of",
           "EMPTY_DEPTH"]
