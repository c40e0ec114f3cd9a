"""Check the interactive path of the extension in a real Blender window: what the bpy module cannot test, because it
has no event loop (its timers never fire and modal operators never run).

    blender -b --factory-startup --python-expr "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/e.blend')"
    xvfb-run -a -s "-screen 0 1280x1024x24" blender --factory-startup /tmp/e.blend \\
        --python scripts/check_interactive.py -- /path/to/python-with-torch

Steps, driven by a bpy.app timer so that Blender's event loop keeps running between them:
  1. "Render Frame" invoked as from a button: it must return RUNNING_MODAL at once (the engine runs in a worker
     process), the UI timers must keep firing while the worker renders, and the image 'Next3D Render' must arrive.
  2. "Render Animation" of frames 1-40 into a temporary output folder, stopped with a real Esc key press (xdotool)
     after the second frame: it must end cancelled with some frames on disk and not all.
  3. "Render Animation" again: it must resume, keep the frames already on disk (same bytes, same mtime), and write
     the rest plus the MP4.
The add-on is registered straight from the checkout (so it has no stored preferences: the worker Python comes from
the command line) and renders a tiny model on the built-in head, to keep the check short. Prints one JSON line
of results and quits with exit code 0 when every check passed, 1 otherwise.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKER_PYTHON = sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else str(ROOT / ".venv" / "bin" / "python")
WORK = Path(tempfile.mkdtemp(prefix="next3d-interactive-"))
FRAMES = (1, 40)
results = {"checks": {}, "notes": []}
state = {"step": "start", "ticks": 0, "t0": time.time()}


def check(name: str, ok: bool, detail=None) -> None:
    results["checks"][name] = bool(ok)
    if detail is not None:
        results["notes"].append(f"{name}: {detail}")


def make_tiny_model(path: Path) -> None:
    """A small random generator on the built-in head, saved by the worker's Python (it has torch)."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from core.default_model import tiny_builtin_generator\n"
            "from core.io.generator_io import save_generator\n"
            "save_generator(%r, tiny_builtin_generator(64, seed=1))\n") % (str(ROOT), str(path))
    subprocess.run([WORKER_PYTHON, "-c", code], check=True)


def view3d_override():
    window = bpy.context.window_manager.windows[0]
    for area in window.screen.areas:
        if area.type == "VIEW_3D":
            region = next(r for r in area.regions if r.type == "WINDOW")
            return {"window": window, "area": area, "region": region, "screen": window.screen}
    raise RuntimeError("no 3D viewport")


def invoke(op, **kwargs):
    with bpy.context.temp_override(**view3d_override()):
        return op("INVOKE_DEFAULT", **kwargs)


def setup() -> None:
    import next3d_blender
    from next3d_blender.blender import preferences

    next3d_blender.register()
    model = WORK / "tiny.safetensors"
    make_tiny_model(model)
    # Registered from the checkout, the add-on has no stored preferences: set the defaults it falls back to.
    preferences._Defaults.python_path = WORKER_PYTHON
    preferences._Defaults.model_source = "PROJECT"
    preferences._Defaults.project_path = str(model)
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    with bpy.context.temp_override(**view3d_override()):
        bpy.ops.next3d.add_head()
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(WORK / "frames") + os.sep
    scene.frame_start, scene.frame_end = FRAMES


def frames_on_disk():
    folder = WORK / "frames"
    return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith(".")) if folder.is_dir() else []


def press_escape() -> bool:
    """A real Esc key press into Blender's window, as a user would."""
    try:
        wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "Blender"], capture_output=True,
                             text=True, check=True).stdout.split()[0]
        subprocess.run(["xdotool", "windowactivate", "--sync", wid], check=False)
        subprocess.run(["xdotool", "mousemove", "--window", wid, "400", "400"], check=False)
        subprocess.run(["xdotool", "key", "--window", wid, "Escape"], check=True)
        return True
    except (OSError, subprocess.CalledProcessError, IndexError) as exc:
        results["notes"].append(f"xdotool failed ({exc}); cancelled through the operator instead")
        with bpy.context.temp_override(**view3d_override()):
            bpy.ops.next3d.cancel_job()
        return False


def tick():
    state["ticks"] += 1
    step = state["step"]
    try:
        from next3d_blender.blender import runner

        task = runner.active_task()
        if step == "start":
            setup()
            ret = invoke(bpy.ops.next3d.render_frame)
            check("render_frame returns at once (RUNNING_MODAL)", ret == {"RUNNING_MODAL"}, ret)
            state.update(step="preview", ticks_at_start=state["ticks"], since=time.time())
        elif step == "preview":
            if task is not None and task.finished:
                image = bpy.data.images.get("Next3D Render")
                check("preview ended without error", not task.error, task.error)
                check("image 'Next3D Render' arrived", image is not None and tuple(image.size) == (64, 64),
                      None if image is None else tuple(image.size))
                ticks = state["ticks"] - state["ticks_at_start"]
                seconds = time.time() - state["since"]
                check("UI timers kept firing while the worker rendered", ticks >= 3,
                      f"{ticks} ticks in {seconds:.1f} s")
                ret = invoke(bpy.ops.next3d.render_animation)
                check("render_animation returns at once (RUNNING_MODAL)", ret == {"RUNNING_MODAL"}, ret)
                state.update(step="animate", pressed=False)
        elif step == "animate":
            if not state["pressed"] and len(frames_on_disk()) >= 2:
                state["pressed"] = True
                state["escape_by_key"] = press_escape()
            if task is not None and task.finished:
                on_disk = frames_on_disk()
                check("Esc stopped the render", task.cancelled, task.status)
                check("some frames kept, not all", 1 <= len(on_disk) < FRAMES[1] - FRAMES[0] + 1, on_disk)
                results["notes"].append(f"Esc sent as a key press: {state.get('escape_by_key')}")
                state["kept"] = {n: ((WORK / "frames" / n).stat().st_mtime_ns, (WORK / "frames" / n).read_bytes())
                                 for n in on_disk}
                ret = invoke(bpy.ops.next3d.render_animation)
                check("resumed render returns at once", ret == {"RUNNING_MODAL"}, ret)
                state["step"] = "resume"
        elif step == "resume":
            if task is not None and task.finished:
                on_disk = frames_on_disk()
                check("resume finished without error", not task.error and not task.cancelled, task.error or
                      task.status)
                check("every frame on disk", len(on_disk) == FRAMES[1] - FRAMES[0] + 1, on_disk)
                same = all((WORK / "frames" / n).stat().st_mtime_ns == mtime and
                           (WORK / "frames" / n).read_bytes() == data for n, (mtime, data) in state["kept"].items())
                check("frames from before the Esc were kept untouched", same)
                check("video written", (WORK / "frames" / "video.mp4").is_file())
                return finish()
        if time.time() - state["t0"] > 600:
            results["notes"].append(f"timed out in step {step}")
            return finish()
    except Exception as exc:  # report and quit instead of leaving a window open on a virtual screen
        import traceback

        results["notes"].append("".join(traceback.format_exception(exc)))
        return finish()
    return 0.2


def finish():
    ok = bool(results["checks"]) and all(results["checks"].values()) and not any(
        n.startswith("timed out") or "Traceback" in n for n in results["notes"])
    results["passed"] = ok
    print("NEXT3D-INTERACTIVE " + json.dumps(results), flush=True)
    from next3d_blender.blender import runner

    try:
        runner.shutdown()
    except Exception:
        pass
    os._exit(0 if ok else 1)


bpy.app.timers.register(tick, first_interval=1.0)
