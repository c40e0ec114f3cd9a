"""Check the Next3D render engine's interactive path in a real Blender window: what the bpy module cannot test,
because it has no window (its timers never fire, modal operators and render jobs never run, and the viewport is
never drawn).

    xvfb-run -a -s "-screen 0 1280x1024x24" blender --factory-startup \\
        --python scripts/check_interactive.py -- /work/main/.venv/bin/python [--bundled]

(Debian: `apt-get install -y blender xvfb xdotool`; the argument after `--` is the Worker Python, a
Python with torch and numpy; default: the checkout's .venv.) Blender 4.2 or newer is what the add-on supports;
Debian 12 ships 3.4.1, which runs this check too: the add-on is registered straight from the checkout (no
manifest, no stored preferences: the worker Python and the model are set as the preferences' defaults), and when
Blender's own Python has no numpy (Debian's blender package does not depend on python3-numpy) the Worker Python's
numpy is put on sys.path through a temporary folder that links to it (same Python version needed: 3.11 in both).

The scene: the built-in head (Add FLAME Head, with its camera) rendered by a tiny random generator saved by the
Worker Python (a green blob where the head is; --bundled: the bundled default model, a face, slower), with a new
seed per run and a fresh frame cache folder in NEXT3D_CACHE_DIR, so that nothing comes
from an earlier run), the jaw keyed open over frames 1-8, 64 x 64 px, Standard view transform, PNG RGBA, no
metadata stamps (so files are comparable byte for byte), Preferences > Interface > Render In: Keep User Interface
(the render window would cover the 3D view that step 4 takes screenshots of). Steps, driven by a bpy.app timer
so that Blender's event loop runs between them:
  1. F12 as the UI does it: render.render('INVOKE_DEFAULT') returns at once, the timer keeps firing while the
     worker renders, and Render Result (saved with save_render) has alpha 1 on the face and 0 in the corners.
  2. Ctrl+F12: the animation (8 frames) stopped by a real Esc key press (xdotool, XTEST) once the second file is
     written: it ends cancelled with some files and not all; again with Overwrite off: the files on disk are kept
     (same bytes, same mtime) and the rest written; again with Overwrite on: every frame comes from the frame cache
     (render_engine.STATS: 0 rendered) and the files are byte-identical.
  3. The sidebar's Render Frame (next3d.render_frame invoked) starts the same render: it returns at once and Render
     Result is pixel-identical to step 1's, served by the frame cache.
  4. The live viewport: a 3D View in Rendered shading looking through the scene camera; once the viewport's worker
     answered (viewport.LIVE), the window is redrawn and a screenshot taken (screen.screenshot): the 3D View's
     region must show the viewport's picture (where its alpha is 1, within a few levels of its sRGB value) and
     differ there from a screenshot in Solid shading; after a frame change and after a jaw key change, new
     pictures are made and the region shows them.
Prints one line `NEXT3D-INTERACTIVE {json}` (named checks, notes, screenshot paths) and exits 0 when every check
passed, 1 otherwise. Screenshots and renders stay in the temporary folder named in the JSON (key "work").
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]
ARGS = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
WORKER_PYTHON = next((a for a in ARGS if not a.startswith("--")), str(ROOT / ".venv" / "bin" / "python"))
BUNDLED = "--bundled" in ARGS             # the bundled default model instead of a tiny random one (slower: a face)
WORK = Path(tempfile.mkdtemp(prefix="next3d-interactive-"))
os.environ["NEXT3D_CACHE_DIR"] = str(WORK / "cache")      # before the add-on is imported: a fresh frame cache
FRAMES = 8
ANIM = WORK / "anim"
TIMEOUT = 900
results = {"checks": {}, "notes": [], "work": str(WORK), "blender": bpy.app.version_string, "screenshots": {}}
events = []                                                 # (name, time, frame) from the render handlers
state = {"ticks": 0}


def check(name: str, ok, detail=None) -> None:
    results["checks"][name] = bool(ok)
    if detail is not None:
        results["notes"].append(f"{name}: {detail}")


def note(text: str) -> None:
    results["notes"].append(text)
    print(f"check_interactive: {text}", flush=True)


def ensure_numpy() -> None:
    """Blender's Python without numpy (Debian's package): link the Worker Python's numpy into a folder on sys.path."""
    try:
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    site = subprocess.run([WORKER_PYTHON, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname("
                           "numpy.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    folder = WORK / "numpy-link"
    folder.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (Path(site) / name).exists():
            (folder / name).symlink_to(Path(site) / name)
    sys.path.insert(0, str(folder))
    note(f"Blender's Python has no numpy: using the Worker Python's from {site}")


def make_tiny_model(path: Path, seed: int) -> None:
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from core.default_model import tiny_builtin_generator\n"
            "from core.io.generator_io import save_generator\n"
            "save_generator(%r, tiny_builtin_generator(32, seed=%d))\n") % (str(ROOT), str(path), seed)
    subprocess.run([WORKER_PYTHON, "-c", code], check=True)


def view3d():
    window = bpy.context.window_manager.windows[0]
    for area in window.screen.areas:
        if area.type == "VIEW_3D":
            region = next(r for r in area.regions if r.type == "WINDOW")
            return {"window": window, "screen": window.screen, "area": area, "region": region}
    raise RuntimeError("no 3D viewport in the window")


def call(op, *args, **kwargs):
    with bpy.context.temp_override(**view3d()):
        return op(*args, **kwargs)


def _on(name):
    def handler(scene, *_args):
        events.append((name, time.time(), scene.frame_current if scene is not None else None))
    handler.__name__ = f"check_interactive_{name}"
    return handler


HANDLERS = {name: _on(name) for name in ("render_init", "render_complete", "render_cancel", "render_write")}


def wait(cond, seconds: float, what: str):
    """Yield ticks until cond() is true; TimeoutError naming what did not happen."""
    end = time.time() + seconds
    while not cond():
        if time.time() > end:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        yield


def render_ended(since: int):
    """The render started after events[since] has ended and its job is gone (a new render.render('INVOKE_DEFAULT')
    is refused while the last one's job still runs, which outlives render_complete by a moment)."""
    return lambda: (any(e[0] in ("render_complete", "render_cancel") for e in events[since:])
                    and not bpy.app.is_job_running("RENDER"))


def read_png(path: Path):
    """A PNG as float RGBA [H, W, 4] with row 0 at the bottom (as Blender stores pixels), values as in the file."""
    import numpy as np

    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = image.size
        pixels = np.empty(w * h * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(h, w, 4)
    finally:
        bpy.data.images.remove(image)


def save_render_result(path: Path):
    bpy.data.images["Render Result"].save_render(str(path), scene=bpy.context.scene)
    return read_png(path)


def files():
    return sorted(p.name for p in ANIM.glob("*.png")) if ANIM.is_dir() else []


def snapshot():
    return {n: ((ANIM / n).stat().st_mtime_ns, (ANIM / n).read_bytes()) for n in files()}


def press_escape() -> str:
    """A real Esc key press (XTEST, as a keyboard would) into Blender's window, the pointer over it."""
    try:
        wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "Blender"], capture_output=True,
                             text=True, check=True).stdout.split()[0]
        subprocess.run(["xdotool", "mousemove", "--window", wid, "300", "300"], check=True)
        subprocess.run(["xdotool", "key", "Escape"], check=True)
        return "xdotool"
    except (OSError, subprocess.CalledProcessError, IndexError) as exc:
        note(f"xdotool failed ({exc})")
        return ""


# ------------------------------------------------------------------------------------------------------- steps

def setup():
    ensure_numpy()
    sys.path.insert(0, str(ROOT))
    import next3d_blender
    from next3d_blender.blender import preferences

    next3d_blender.register()
    for name, fn in HANDLERS.items():
        getattr(bpy.app.handlers, name).append(fn)
    preferences._Defaults.python_path = WORKER_PYTHON
    if BUNDLED:
        preferences._Defaults.model_source = "DEFAULT"
    else:
        model = WORK / "tiny.safetensors"
        make_tiny_model(model, seed=int(time.time()) % 100000)
        preferences._Defaults.model_source = "PROJECT"
        preferences._Defaults.project_path = str(model)
    results["model"] = "bundled" if BUNDLED else "tiny"
    bpy.context.preferences.view.render_display_type = "NONE"
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    assert call(bpy.ops.next3d.add_head) == {"FINISHED"}
    arm = bpy.data.objects["FLAME"]
    jaw = arm.pose.bones["jaw"]
    jaw.rotation_mode = "XYZ"
    for frame, value in ((1, 0.0), (FRAMES, 0.35)):
        jaw.rotation_euler = (value, 0.0, 0.0)
        jaw.keyframe_insert("rotation_euler", frame=frame)
    r = scene.render
    r.engine = "NEXT3D"
    r.resolution_x = r.resolution_y = 64
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.use_stamp_date = r.use_stamp_render_time = r.use_stamp_filename = False
    scene.view_settings.view_transform = "Standard"
    scene.frame_start, scene.frame_end, scene.frame_step = 1, FRAMES, 1
    scene.frame_set(1)
    return arm


def step_f12():
    import numpy as np
    from next3d_blender.blender import render_engine

    n = len(events)
    t = time.time()
    ret = call(bpy.ops.render.render, "INVOKE_DEFAULT")
    took = time.time() - t
    check("f12_returns_at_once", ret == {"RUNNING_MODAL"} and took < 2.0, f"{ret} in {took:.2f} s")
    ticks = state["ticks"]
    yield from wait(render_ended(n), 300, "the F12 render")
    seconds = time.time() - t
    check("f12_ui_timer_kept_firing", state["ticks"] - ticks >= 5,
          f"{state['ticks'] - ticks} timer ticks during the {seconds:.1f} s render")
    check("f12_completed", any(e[0] == "render_complete" for e in events[n:]), [e[0] for e in events[n:]])
    rgba = save_render_result(WORK / "f12.png")
    h, w = rgba.shape[:2]
    corners = rgba[[0, 0, -1, -1], [0, -1, 0, -1], 3]
    centre = rgba[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2, 3]
    check("f12_render_result_alpha", (w, h) == (64, 64) and np.all(corners == 0.0) and np.all(centre == 1.0),
          f"{w}x{h}, corner alpha {corners.tolist()}, centre alpha min {float(centre.min()):.3f}, "
          f"STATS {dict(render_engine.STATS)}")
    state["f12"] = rgba


def step_animation():
    from next3d_blender.blender import render_engine

    scene = bpy.context.scene
    scene.render.filepath = str(ANIM / "f_####")
    scene.render.use_overwrite, scene.render.use_placeholder = True, False
    n = len(events)
    t = time.time()
    ret = call(bpy.ops.render.render, "INVOKE_DEFAULT", animation=True)
    check("animation_returns_at_once", ret == {"RUNNING_MODAL"} and time.time() - t < 2.0, ret)
    yield from wait(lambda: len(files()) >= 2 or render_ended(n)(), 300, "two files of the animation")
    how = press_escape() if not render_ended(n)() else ""
    yield from wait(render_ended(n), 120, "the animation to stop after Esc")
    kept = snapshot()
    cancelled = any(e[0] == "render_cancel" for e in events[n:])
    check("esc_stops_animation", how == "xdotool" and cancelled and 1 <= len(kept) < FRAMES,
          f"Esc by {how or 'nothing'}, events {[e[0] for e in events[n:]]}, files {sorted(kept)}")

    scene.render.use_overwrite = False
    n = len(events)
    ret = call(bpy.ops.render.render, "INVOKE_DEFAULT", animation=True)
    check("animation_again_starts", ret == {"RUNNING_MODAL"}, ret)
    yield from wait(render_ended(n), 300, "the second animation render")
    after = snapshot()
    stats = dict(render_engine.STATS)
    check("overwrite_off_keeps_files", all(after.get(k) == v for k, v in kept.items()),
          f"{len(kept)} kept files unchanged")
    check("overwrite_off_writes_the_rest", len(after) == FRAMES and stats["frames"] == FRAMES - len(kept),
          f"{len(after)} files, STATS {stats}")

    scene.render.use_overwrite = True
    n = len(events)
    ret = call(bpy.ops.render.render, "INVOKE_DEFAULT", animation=True)
    check("animation_third_starts", ret == {"RUNNING_MODAL"}, ret)
    yield from wait(render_ended(n), 300, "the third animation render")
    again = snapshot()
    stats = dict(render_engine.STATS)
    check("frame_cache_serves_unchanged_frames", stats["rendered"] == 0 and stats["kept"] == FRAMES,
          f"Overwrite on, nothing changed: STATS {stats}")
    check("cached_frames_byte_identical", sorted(again) == sorted(after) and
          all(again[k][1] == after[k][1] for k in after), f"{len(again)} files compared")


def step_sidebar():
    import numpy as np
    from next3d_blender.blender import render_engine

    scene = bpy.context.scene
    scene.frame_set(1)
    n = len(events)
    t = time.time()
    ret = call(bpy.ops.next3d.render_frame, "INVOKE_DEFAULT")
    check("sidebar_render_frame_returns_at_once", "CANCELLED" not in ret and time.time() - t < 2.0, ret)
    yield from wait(render_ended(n), 300, "the sidebar's Render Frame")
    rgba = save_render_result(WORK / "sidebar.png")
    stats = dict(render_engine.STATS)
    check("sidebar_renders_through_the_engine", any(e[0] == "render_complete" for e in events[n:]) and
          stats["frames"] == 1 and np.array_equal(rgba, state["f12"]),
          f"events {[e[0] for e in events[n:]]}, STATS {stats}, same pixels as F12: "
          f"{np.array_equal(rgba, state['f12'])}")


def screenshot(name: str):
    """Redraw the window now, save it with screen.screenshot and return (pixels, region box)."""
    ov = view3d()
    ov["area"].tag_redraw()
    call(bpy.ops.wm.redraw_timer, type="DRAW_WIN_SWAP", iterations=1)
    path = WORK / f"{name}.png"
    call(bpy.ops.screen.screenshot, filepath=str(path))
    results["screenshots"][name] = str(path)
    region = ov["region"]
    return read_png(path), (region.x, region.y, region.width, region.height)


def region_of(pixels, box):
    x, y, w, h = box
    return pixels[y:y + h, x:x + w]


def compare_with_picture(name: str, pixels, box, picture):
    """The region against the viewport's picture: where its alpha is 1, the sRGB levels the screen should show."""
    import numpy as np
    from next3d_blender.blender.render_engine import preview_pixels

    shown = region_of(pixels, box)[..., :3] * 255.0
    expected = preview_pixels(picture)[::-1]                   # top-down -> bottom-up, as the screenshot
    mask = expected[..., 3] == 255
    if shown.shape[:2] != expected.shape[:2] or mask.sum() < 100:
        check(f"viewport_{name}_shows_the_picture", False, f"region {shown.shape}, picture {expected.shape}, "
              f"{int(mask.sum())} opaque pixels")
        return mask
    diff = np.abs(shown[mask] - expected[..., :3][mask].astype(np.float32))
    check(f"viewport_{name}_shows_the_picture", float(diff.mean()) < 3.0,
          f"{int(mask.sum())} opaque pixels, mean |screen - picture| {diff.mean():.2f} levels, "
          f"99th pct {np.percentile(diff, 99):.1f}")
    return mask


def step_viewport(arm):
    import numpy as np
    from next3d_blender.blender import viewport

    scene = bpy.context.scene
    scene.frame_set(1)
    ov = view3d()
    space = ov["area"].spaces.active
    space.region_3d.view_perspective = "CAMERA"
    space.overlay.show_overlays = False
    space.show_gizmo = False
    space.shading.type = "SOLID"
    yield from wait(lambda: True, 1, "")
    yield
    solid, box = screenshot("viewport_solid")

    live = viewport.LIVE

    def settled(after_key=None):
        return lambda: (live.jobs_sent > 0 and live.pending is None and live.wanted is None and live.shown is not
                        None and live.shown[0] != after_key and not live.error) or bool(live.error)

    t = time.time()
    space.shading.type = "RENDERED"
    ov["area"].tag_redraw()
    yield from wait(settled(), 300, "the viewport's first picture")
    check("viewport_worker_answered", not live.error, live.error or f"first picture after {time.time() - t:.1f} s "
          f"(worker start included)")
    yield
    rendered, box = screenshot("viewport_rendered_f1")
    mask = compare_with_picture("frame1", rendered, box, live.shown[1])
    head = np.abs(region_of(rendered, box)[..., :3] - region_of(solid, box)[..., :3])[mask]
    check("viewport_differs_from_solid", head.size and float(head.mean()) * 255 > 10,
          f"mean |rendered - solid| on the head {float(head.mean()) * 255 if head.size else 0:.1f} levels")

    key = live.shown[0]
    scene.frame_set(FRAMES)
    yield from wait(settled(key), 120, "the viewport's picture of the last frame")
    yield
    frame_end, box = screenshot(f"viewport_rendered_f{FRAMES}")
    compare_with_picture(f"frame{FRAMES}", frame_end, box, live.shown[1])
    moved = np.abs(region_of(frame_end, box) - region_of(rendered, box))[..., :3].max(axis=-1)
    check("viewport_updates_on_frame_change", live.shown[0] != key and (moved > 0.02).sum() > 20,
          f"{int((moved > 0.02).sum())} pixels changed")

    key = live.shown[0]
    jaw = arm.pose.bones["jaw"]
    jaw.rotation_euler = (0.0, 0.0, 0.0)
    jaw.keyframe_insert("rotation_euler", frame=FRAMES)
    yield from wait(settled(key), 120, "the viewport's picture after the jaw change")
    yield
    closed, box = screenshot("viewport_rendered_jaw")
    compare_with_picture("jaw", closed, box, live.shown[1])
    moved = np.abs(region_of(closed, box) - region_of(frame_end, box))[..., :3].max(axis=-1)
    check("viewport_updates_on_jaw_change", live.shown[0] != key and (moved > 0.02).sum() > 20,
          f"{int((moved > 0.02).sum())} pixels changed; first pixel {live.first_pixel_s}")


def scenario():
    # --factory-startup shows the splash (Quick Setup) over the 3D View; Esc closes it as it would for a user.
    press_escape()
    yield from wait(lambda: True, 0, "")
    arm = setup()
    yield
    yield from step_f12()
    yield from step_animation()
    yield from step_sidebar()
    yield from step_viewport(arm)


def finish():
    ok = bool(results["checks"]) and all(results["checks"].values()) and "error" not in results
    results["passed"] = ok
    print("NEXT3D-INTERACTIVE " + json.dumps(results), flush=True)
    try:
        from next3d_blender.blender import runner, viewport

        viewport.shutdown()
        runner.shutdown()
    except Exception:  # noqa: BLE001 - quitting anyway
        pass
    os._exit(0 if ok else 1)


state["run"] = scenario()
state["t0"] = time.time()


def tick():
    state["ticks"] += 1
    try:
        next(state["run"])
    except StopIteration:
        return finish()
    except Exception as exc:  # noqa: BLE001 - report and quit, never leave a window open on a virtual screen
        results["error"] = "".join(traceback.format_exception(exc))
        return finish()
    if time.time() - state["t0"] > TIMEOUT:
        results["error"] = f"timed out after {TIMEOUT} s"
        return finish()
    return 0.1


bpy.app.timers.register(tick, first_interval=1.0)
