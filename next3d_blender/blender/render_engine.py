"""The Next3D render engine: Blender's own render pipeline (F12, Ctrl+F12, `blender -b file.blend -a / -s -e / -f`,
Render Result, view-layer passes, the compositor) with Next3D heads.

Blender does what a render pipeline does around the engine: the frame range and step, the output path with its
`#` padding, the file format and colour depth, Overwrite and Placeholders, the video encoder. The engine renders
one frame of one view layer per `render` call, from the evaluated depsgraph it is given (never the active object):

1. every head of the view layer (scene.render_heads: meshes marked Next3D Head, else the scene's Head setting or
   the only head) is read at that frame (scene.read_head) and given a virtual camera (engine/compose.py,
   engine/framing.py) looking at it from the scene camera's direction;
2. the generator renders each head's square image and depth in the worker, or in this process under -b
   (runner.run_now; the neural job, engine/jobs.py), frames whose digest is in the frame cache
   (engine/frame_cache.py) being read back instead;
3. each image is placed in the scene camera's frame, matted by the rig's silhouette and the heads composited by
   depth: Combined (premultiplied, scene-linear, alpha 0 outside the heads) and Depth (view-layer pass Z).

Esc stops the worker's job (test_break); progress and statistics go through update_progress / update_stats.
Errors are one line (a Next3DError is reported as ERROR and the frame fails); render `STATS` counts the frames kept
from the cache and rendered since the render started (printed when it completes).
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import fields
from typing import Dict, List, Tuple

import bpy
import numpy as np
from bpy.app.handlers import persistent

from ..core.errors import Next3DError
from ..engine import compose, frame_cache
from ..engine.job_specs import NeuralJob
from . import runner, scene
from .preferences import get_preferences

ENGINE_ID = "NEXT3D"
SIDE = 512                      # the generator's square image side the frames are cached at
STATS = {"kept": 0, "rendered": 0, "frames": 0}
LAST_FRAME: dict = {}           # the last frame rendered: number, rgba (premultiplied, scene-linear), for previews


def frame_cache_dir() -> str:
    """The frame cache: frames/ in the extension's user cache folder (a development checkout: the engine's)."""
    import os

    base = scene.cache_dir()
    return os.path.join(base, "frames") if base else str(frame_cache.default_folder())


def shots_of(depsgraph, prefs, side: int = SIDE, camera=None) -> Tuple[List[compose.HeadShot], List[str]]:
    """The heads of the depsgraph's view layer at its frame, each with its virtual camera, seen by the scene camera
    or by `camera` (the viewport's view: scene.read_head)."""
    scn = depsgraph.scene
    spec = scene.head_spec(prefs)
    posing, topology = scene.mesh_head(spec, scene.cache_dir())
    label = scene.model_label(prefs)
    shots, warnings = [], []
    for head in scene.render_heads(scn, depsgraph.view_layer):
        inputs = scene.read_head(depsgraph, head, posing, topology, label, camera=camera)
        warnings += inputs.warnings
        shot = compose.plan_head(head.mesh.name, inputs.arrays, inputs.params, inputs.head_scale, side,
                                 skull=posing.skull)
        if shot is not None:
            shots.append(shot)
    warnings += compose.warnings_of(shots)
    return shots, warnings


def neural_job(scn, prefs, shot: compose.HeadShot) -> NeuralJob:
    """The neural job of one head's shot: the scene's avatar settings, at the shot's square side, cached."""
    avatar = scene.avatar_job(scn, prefs, shot.name)
    return NeuralJob(**{f.name: getattr(avatar, f.name) for f in fields(avatar)}, side=shot.view.side,
                     frame_cache=frame_cache_dir())


def neural_frames(shots: List[compose.HeadShot], scn, prefs, should_stop, in_process: bool,
                  on_head=None) -> Tuple[List[Dict[str, np.ndarray]], dict]:
    """The generator's reply (rgb, depth) per shot, from the cache where nothing changed; (replies, counts)."""
    replies, counts = [], {"kept": 0, "rendered": 0, "cancelled": False}
    for k, shot in enumerate(shots):
        job = neural_job(scn, prefs, shot)
        got: Dict[str, np.ndarray] = {}

        def on_reply(header, arrays, got=got):
            if header.get("type") == "image":
                got.update(arrays)
                counts["kept" if header.get("cached") else "rendered"] += 1
            elif header.get("type") == "warning":
                print(f"Next3D warning: {header.get('message')}", file=sys.stderr, flush=True)

        summary = runner.run_now(job, shot.job_arrays, prefs, on_reply, should_stop, in_process)
        if summary.get("cancelled") or "rgb" not in got:
            counts["cancelled"] = True
            return replies, counts
        replies.append(got)
        if on_head is not None:
            on_head(k + 1, len(shots))
    return replies, counts


def frame_image(shots: List[compose.HeadShot], replies: List[Dict[str, np.ndarray]], width: int, height: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    layers = [compose.place(shot, r["rgb"], r["depth"]) for shot, r in zip(shots, replies)]
    return compose.composite(layers, width, height)


class NEXT3D_RenderEngine(bpy.types.RenderEngine):
    """Next3D heads through Blender's render pipeline."""

    bl_idname = ENGINE_ID
    bl_label = "Next3D"
    bl_use_preview = False
    bl_use_postprocess = True
    bl_use_eevee_viewport = False

    def update_render_passes(self, scene=None, renderlayer=None):
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", "COLOR")
        if renderlayer.use_pass_z:
            self.register_pass(scene, renderlayer, "Depth", 1, "Z", "VALUE")

    def render(self, depsgraph):
        scn = depsgraph.scene
        width, height = scene.render_size(scn)
        try:
            prefs = get_preferences()
            self.update_stats("Next3D", f"Frame {scn.frame_current}: reading the heads")
            shots, warnings = shots_of(depsgraph, prefs)
            for w in warnings:
                self.report({"WARNING"}, w)
                print(f"Next3D warning: {w}", file=sys.stderr, flush=True)
            replies, counts = neural_frames(
                shots, scn, prefs, self.test_break, in_process=bpy.app.background,
                on_head=lambda done, total: (self.update_progress(done / max(total, 1)),
                                             self.update_stats("Next3D", f"Frame {scn.frame_current}: head "
                                                               f"{done}/{total}")))
        except Next3DError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug: its traceback for the report, one line for the user
            traceback.print_exc()
            self._fail(f"Next3D failed ({type(exc).__name__}: {exc}); the traceback is in the console.")
            return
        if counts["cancelled"]:
            return
        rgba, depth = frame_image(shots, replies, width, height)
        STATS["kept"] += counts["kept"]
        STATS["rendered"] += counts["rendered"]
        STATS["frames"] += 1
        LAST_FRAME.update(number=int(scn.frame_current), rgba=rgba)
        result = self.begin_result(0, 0, width, height, layer=depsgraph.view_layer.name)
        layer = result.layers[0]
        layer.passes["Combined"].rect = compose.blender_rows(rgba)
        if "Depth" in layer.passes:
            layer.passes["Depth"].rect = compose.blender_rows(depth)
        self.end_result(result)
        self.update_stats("Next3D", f"Frame {scn.frame_current}: {counts['rendered']} head image(s) rendered, "
                          f"{counts['kept']} kept from the cache")

    def _fail(self, message: str) -> None:
        """The frame fails with one line: an ERROR report fails the render (render.render raises it as a
        RuntimeError, `blender -b` reports it) and nothing is written."""
        print(f"Next3D: {message}", file=sys.stderr, flush=True)
        self.report({"ERROR"}, message)

    # The live viewport (Rendered shading): viewport.py.
    def view_update(self, context, depsgraph):
        from . import viewport

        viewport.view_update(self, context, depsgraph)

    def view_draw(self, context, depsgraph):
        from . import viewport

        viewport.view_draw(self, context, depsgraph)


def preview_pixels(rgba: np.ndarray) -> np.ndarray:
    """A rendered frame as display pixels [H, W, 4] uint8 (straight alpha, sRGB), for the sidebar's preview."""
    alpha = rgba[..., 3:4]
    straight = np.where(alpha > 0, rgba[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    c = np.clip(straight, 0.0, 1.0)
    srgb = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)
    return np.round(np.concatenate([srgb, alpha], axis=-1) * 255.0).astype(np.uint8)


@persistent
def _render_init(*_args) -> None:
    STATS.update(kept=0, rendered=0, frames=0)


@persistent
def _render_done(*_args) -> None:
    try:
        frame_cache.FrameCache(frame_cache_dir()).prune()
    except OSError:
        pass
    if STATS["frames"]:
        print(f"Next3D: {STATS['frames']} frame(s): {STATS['rendered']} head image(s) rendered, {STATS['kept']} "
              "kept from the cache (nothing they are made of changed)", flush=True)


HANDLERS = (("render_init", _render_init), ("render_complete", _render_done), ("render_cancel", _render_done))
# Panels that show for the engine: Blender's own output, format, frame range, colour management and passes.
COMPAT_PANELS = ("RENDER_PT_format", "RENDER_PT_frame_range", "RENDER_PT_output", "RENDER_PT_encoding",
                 "RENDER_PT_color_management", "RENDER_PT_color_management_curves", "RENDER_PT_film",
                 "VIEWLAYER_PT_layer_passes", "VIEWLAYER_PT_layer_passes_data", "DATA_PT_lens", "DATA_PT_camera",
                 "DATA_PT_camera_display", "RENDER_PT_format_presets", "RENDER_PT_post_processing",
                 "RENDER_PT_stamp", "RENDER_PT_dimensions", "RENDER_PT_time_stretching")


def register() -> None:
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn not in handlers:
            handlers.append(fn)
    for name in COMPAT_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister() -> None:
    for name, fn in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn in handlers:
            handlers.remove(fn)
    for name in COMPAT_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            panel.COMPAT_ENGINES.discard(ENGINE_ID)


CLASSES = (NEXT3D_RenderEngine,)
