"""The live viewport of the Next3D engine (Rendered shading): the current frame's neural render, computed off the UI
thread and drawn with the gpu module.

`view_draw` reads the heads from the viewport's depsgraph with the viewport's own view as the camera
(`viewport_camera`: the region's view and projection matrices as an OpenCV camera and a Blender lens), plans each
head's virtual camera (engine/compose.py, the same as a render, so a viewport looking through the scene camera
hits the frames a render cached) and asks `LiveRender` for the picture. LiveRender keys each request by a digest
of everything it is made of (engine/frame_cache.py): a picture it has already made is drawn at once; otherwise
the neural job goes to a worker process of its own, asynchronously, the last finished picture is drawn meanwhile,
and a timer polls the worker and tags the 3D views for redraw when the new one arrives. The worker's frame cache
is shared with renders.

bpy as a module has no window, so the drawing (`_draw_image`) runs only in Blender; tests drive LiveRender and
viewport_camera directly (tests/blender/test_render_engine.py), and bench/viewport.py measures the same path.
"""

from __future__ import annotations

import collections
import time
from typing import Dict, List, Optional, Tuple

import bpy
import numpy as np

from ..core.errors import Next3DError
from ..engine import compose, convert
from ..engine.frame_cache import frame_digest
from ..engine.job_specs import NeuralJob
from ..engine.worker import WorkerClient, WorkerError, exit_message
from . import runner
from .preferences import get_preferences

POLL_INTERVAL = 0.05
KEEP_PICTURES = 16          # finished pictures kept in memory (scrubbing back and forth redraws at once)


def viewport_camera(view_matrix, window_matrix, width: int, height: int
                    ) -> Tuple[np.ndarray, convert.CameraParams]:
    """A perspective viewport's view as (OpenCV cam2world in the world, CameraParams of a W x H render): the
    projection window_matrix @ view_matrix to pixels (x right, y down) expressed as a Blender lens with shift and
    pixel aspect. InputError for an orthographic view."""
    v = convert.matrix_to_numpy(view_matrix)
    p = convert.matrix_to_numpy(window_matrix)
    if abs(p[3, 2] + 1.0) > 1e-6 or abs(p[3, 3]) > 1e-6:
        raise Next3DError("The Next3D viewport needs a perspective view; switch the view to Perspective "
                          "(View > Perspective/Orthographic).")
    w, h = float(width), float(height)
    fx, fy = p[0, 0] * w / 2.0, p[1, 1] * h / 2.0
    cx, cy = w / 2.0 * (1.0 - p[0, 2]), h / 2.0 * (1.0 + p[1, 2])
    ycor = fx / fy
    sensor = 36.0
    params = convert.CameraParams(lens=fx * sensor / w, sensor_width=sensor, sensor_height=sensor,
                                  sensor_fit="HORIZONTAL", shift_x=(w / 2.0 - cx) / w,
                                  shift_y=(cy - h / 2.0) * ycor / w, width=int(width), height=int(height),
                                  pixel_aspect_x=1.0, pixel_aspect_y=ycor)
    return convert.opencv_cam2world(np.linalg.inv(v)), params


class LiveRender:
    """Pictures by request digest: made asynchronously in a worker, kept in memory, the latest one drawn."""

    def __init__(self):
        self.client: Optional[WorkerClient] = None
        self.pictures: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
        self.shown: Optional[Tuple[str, np.ndarray]] = None     # the last finished picture (key, rgba)
        self.pending: Optional[dict] = None                      # the request in the worker
        self.wanted: Optional[dict] = None                       # the newest request, sent when the worker is free
        self.error: str = ""
        self.jobs_sent = 0
        self.requested_at: Dict[str, float] = {}
        self.first_pixel_s: Optional[float] = None

    @staticmethod
    def key_of(shots: List[compose.HeadShot], jobs: List[NeuralJob]) -> str:
        parts = {}
        for k, (shot, job) in enumerate(zip(shots, jobs)):
            for name, a in shot.job_arrays.items():
                parts[f"{k}:{name}"] = a
            parts[f"{k}:to_scene"] = np.asarray(shot.view.to_scene)
            parts[f"{k}:job"] = job.to_dict()
        parts["size"] = [shots[0].width, shots[0].height] if shots else [0, 0]
        return frame_digest(**parts)

    def request(self, shots: List[compose.HeadShot], jobs: List[NeuralJob], python: str) -> Optional[np.ndarray]:
        """The picture for these shots when it is made already (else None: it is requested, and `poll` makes it)."""
        key = self.key_of(shots, jobs)
        if key in self.pictures:
            self.pictures.move_to_end(key)
            self.shown = (key, self.pictures[key])
            return self.pictures[key]
        if not shots:
            picture = compose.composite([], 1, 1)[0]
            self.shown = (key, picture)
            return picture
        if self.pending is not None and self.pending["key"] == key:
            return None
        self.requested_at.setdefault(key, time.perf_counter())
        self.wanted = {"key": key, "shots": shots, "jobs": jobs, "python": python, "replies": []}
        if self.pending is None:
            self._send_next()
        return None

    def _client(self, python: str) -> WorkerClient:
        if self.client is not None and (self.client.python != python or not self.client.alive):
            self.client.stop()
            self.client = None
        if self.client is None:
            self.client = WorkerClient(python)
        return self.client

    def _send_next(self) -> None:
        request = self.pending if self.pending is not None else self.wanted
        if request is None:
            return
        if self.pending is None:
            self.pending, self.wanted = request, None
        k = len(request["replies"])
        try:
            self._client(request["python"]).submit(request["jobs"][k].to_dict(), request["shots"][k].job_arrays)
            self.jobs_sent += 1
        except WorkerError as exc:
            self.error, self.pending = str(exc), None

    def poll(self) -> bool:
        """Take the worker's replies; True when a new picture was finished (redraw)."""
        if self.client is None or self.pending is None:
            return False
        new = False
        for header, arrays in self.client.poll():
            kind = header.get("type")
            request = self.pending
            if request is None:
                continue
            if kind == "image":
                request["replies"].append(arrays)
            elif kind == "error":
                self.error = str(header.get("message"))
            elif kind == "exit":
                self.error = exit_message(header.get("returncode"), header.get("stderr") or "", self.client.python)
                self.pending, self.client = None, None
            elif kind == "finished":
                if self.error or len(request["replies"]) < len(request["jobs"]):
                    if self.error:
                        self.pending = None
                    else:
                        self._send_next()
                        continue
                else:
                    self._finish(request)
                    new = True
                if self.pending is None and self.wanted is not None:
                    self._send_next()
        return new

    def _finish(self, request: dict) -> None:
        shots = request["shots"]
        rgba, _ = compose.composite([compose.place(s, r["rgb"], r["depth"]) for s, r in
                                     zip(shots, request["replies"])], shots[0].width, shots[0].height)
        key = request["key"]
        self.pictures[key] = rgba
        while len(self.pictures) > KEEP_PICTURES:
            self.pictures.popitem(last=False)
        self.shown = (key, rgba)
        self.pending = None
        self.error = ""
        started = self.requested_at.pop(key, None)
        if started is not None and self.first_pixel_s is None:
            self.first_pixel_s = time.perf_counter() - started

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()
        self.client, self.pending, self.wanted = None, None, None


LIVE = LiveRender()


def viewport_shots(depsgraph, region, region_data, prefs) -> Tuple[List[compose.HeadShot], List[NeuralJob]]:
    """The heads of the viewport's view layer seen by the viewport's view, and their neural jobs."""
    from .render_engine import neural_job, shots_of

    camera = viewport_camera(region_data.view_matrix, region_data.window_matrix, region.width, region.height)
    shots, _ = shots_of(depsgraph, prefs, camera=camera)
    return shots, [neural_job(depsgraph.scene, prefs, shot) for shot in shots]


def _tick() -> Optional[float]:
    if LIVE.poll():
        for window in getattr(bpy.context.window_manager, "windows", ()):
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()
    return POLL_INTERVAL if LIVE.pending is not None or LIVE.wanted is not None else None


def view_update(engine, context, depsgraph) -> None:
    """Something in the scene changed: the next draw plans again (the digest says whether anything is new)."""
    engine.tag_redraw()


def view_draw(engine, context, depsgraph) -> None:
    region, region_data = context.region, context.region_data
    prefs = get_preferences(context)
    picture = None
    try:
        shots, jobs = viewport_shots(depsgraph, region, region_data, prefs)
        picture = LIVE.request(shots, jobs, runner.worker_python(prefs))
    except Next3DError as exc:
        LIVE.error = str(exc)
    if picture is None and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_INTERVAL)
    if picture is None and LIVE.shown is not None:
        picture = LIVE.shown[1]
    status = LIVE.error or ("Next3D: rendering..." if LIVE.pending is not None else "")
    engine.update_stats("Next3D", status)
    if picture is not None and picture.shape[:2] == (region.height, region.width):
        _draw_image(engine, depsgraph.scene, picture)


def _draw_image(engine, scn, rgba: np.ndarray) -> None:
    """Draw a premultiplied scene-linear RGBA picture over the region, through the scene's display transform."""
    import gpu
    from gpu_extras.presets import draw_texture_2d

    h, w = rgba.shape[:2]
    buffer = gpu.types.Buffer("FLOAT", w * h * 4, compose.blender_rows(rgba).reshape(-1))
    texture = gpu.types.GPUTexture((w, h), format="RGBA16F", data=buffer)
    gpu.state.blend_set("ALPHA_PREMULT")
    engine.bind_display_space_shader(scn)
    draw_texture_2d(texture, (0, 0), w, h)
    engine.unbind_display_space_shader()
    gpu.state.blend_set("NONE")


def shutdown() -> None:
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    LIVE.stop()
