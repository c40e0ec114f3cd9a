"""The worker process outside Blender, through its queue protocol (a real subprocess), and the Blender side's
handling of its replies: results, cancellation, a crash."""

import os
import signal
import sys

import bpy
import numpy as np
import pytest

from next3d_blender.engine.worker import WorkerClient, encode, iter_until_finished, read_message
from n3d_helpers import submodule


def _frontal_frames(numbers):
    """The built-in head at rest, seen by the frontal FFHQ camera, as the Blender side sends it."""
    from core.default_model import builtin_head_mesh_input
    from core.flame.builtin_head import load_builtin_head_data

    n = len(numbers)
    c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    c2w[:, :3, :3] = np.diag([1.0, -1.0, -1.0])
    c2w[:, :3, 3] = (0.0, -0.01, 1.08)
    k = np.tile(np.array([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], np.float32), (n, 1, 1))
    v = builtin_head_mesh_input()[0].numpy()
    return {"numbers": np.asarray(numbers, np.int64), "vertices": np.tile(v[:5023], (n, 1, 1)),
            "landmarks": np.tile(v[5023:], (n, 1, 1)), "cam2world": c2w, "intrinsics": k,
            "faces": load_builtin_head_data()["faces"].astype(np.int32)}


JOB = {"head": {"kind": "default"}, "seed": 1, "truncation_psi": 0.7, "sample_seed": 0, "side": 32, "threads": 2}


def test_wire_format_round_trip(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64),
              "empty": np.zeros((0, 3), np.uint8)}
    path = tmp_path / "msg"
    path.write_bytes(encode({"type": "x", "n": 1}, arrays) + encode({"type": "y"}))
    with open(path, "rb") as fh:
        h1, a1 = read_message(fh)
        h2, a2 = read_message(fh)
        assert read_message(fh) is None
    assert h1 == {"type": "x", "n": 1} and h2 == {"type": "y"} and a2 == {}
    for k in arrays:
        assert a1[k].dtype == arrays[k].dtype and np.array_equal(a1[k], arrays[k])


def _job(model_path, **kw):
    return dict(JOB, model={"source": "project", "path": str(model_path), "device": "cpu"}, **kw)


def test_worker_runs_jobs_end_to_end(tiny_model, tmp_path):
    client = WorkerClient(sys.executable)
    try:
        client.submit({"kind": "ping"})
        replies = [h["type"] for h, _ in iter_until_finished(client, 120)]
        assert replies == ["ready", "pong", "finished"]
        cache = tmp_path / "cache"
        client.submit(_job(tiny_model, kind="neural", frame_cache=str(cache)), _frontal_frames([7]))
        got = {h["type"]: (h, a) for h, a in iter_until_finished(client, 300)}
        assert "error" not in got, got.get("error")
        header, arrays = got["image"]
        assert header["number"] == 7 and not header["cached"] and arrays["rgb"].shape == (32, 32, 3)
        assert arrays["rgb"].dtype == np.float32 and arrays["rgb"].std() > 0 and arrays["depth"].ndim == 2
        # The same frame again comes from the frame cache, the very same pixels.
        client.submit(_job(tiny_model, kind="neural", frame_cache=str(cache)), _frontal_frames([7]))
        again = {h["type"]: (h, a) for h, a in iter_until_finished(client, 300)}
        assert again["image"][0]["cached"] and np.array_equal(again["image"][1]["rgb"], arrays["rgb"])
        assert again["done"][0]["kept"] == 1 and again["done"][0]["rendered"] == 0
        # A user error comes back as a message, and the worker carries on.
        client.submit(dict(JOB, kind="neural", model={"source": "project", "path": str(tmp_path / "no.st")}),
                      _frontal_frames([1]))
        got = {h["type"]: h for h, _ in iter_until_finished(client, 120)}
        assert got["error"]["user"] and "does not exist" in got["error"]["message"]
        # Cancelling stops the job between frames.
        client.submit(_job(tiny_model, kind="neural"), _frontal_frames(list(range(1, 7))))
        types = []
        for header, _ in iter_until_finished(client, 300):
            types.append(header["type"])
            if header["type"] == "frame":
                client.cancel()
        assert "cancelled" in types and "done" not in types
        assert 1 <= types.count("image") < 6
    finally:
        client.stop()
    assert not client.alive


def test_a_model_file_replaced_in_place_is_reloaded_and_not_mixed_with_its_old_frames(addon, tiny_model, tmp_path):
    """A user who retrains into the same file: the job loads the new weights (not the cached ones), and frames
    cached with the old weights are not used (the weights' digest is part of each frame's digest)."""
    from core.default_model import tiny_builtin_generator
    from core.io.generator_io import save_generator

    jobs = submodule("engine.jobs")
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model.read_bytes())
    job = _job(model, kind="neural", frame_cache=str(tmp_path / "cache"))

    def run():
        replies = []
        jobs.run_job(job, _frontal_frames([1, 2]), lambda kind, h, a: replies.append((kind, h, a)))
        images = [(h["cached"], a["rgb"]) for kind, h, a in replies if kind == "image"]
        return [c for c, _ in images], [rgb for _, rgb in images]

    cached, old = run()
    assert cached == [False, False]
    assert run()[0] == [True, True]
    save_generator(model, tiny_builtin_generator(32, seed=7))
    assert model.stat().st_size == tiny_model.stat().st_size
    cached, new = run()
    assert cached == [False, False] and not np.array_equal(new[0], old[0])


def test_the_engine_checks_the_rigs_topology_against_the_generators(addon, tiny_model):
    """The generator's own triangles decide: the same triangles in another order render, other ones are refused
    with the one-line message naming both, before anything is rendered."""
    jobs = submodule("engine.jobs")
    InputError = submodule("core.errors").InputError
    frames = _frontal_frames([3])
    frames["faces"] = np.ascontiguousarray(frames["faces"][::-1, [1, 2, 0]])
    replies = []
    jobs.run_job(_job(tiny_model, kind="neural", rig_name="Head"), frames, lambda *a: replies.append(a[0]))
    assert "image" in replies
    frames["faces"][0, 2] = (frames["faces"][0, 2] + 7) % 5023
    with pytest.raises(InputError, match=r"^The model \(tiny.safetensors\) expects the built-in head \(5023 "
                                         r"vertices, 10034 triangles\); the mesh 'Head' has its 5023 vertices but "
                                         r"other triangles .*: choose Official Next3D"):
        jobs.run_job(_job(tiny_model, kind="neural", rig_name="Head"), frames, lambda *a: None)


def test_worker_crash_is_an_error_report_not_a_crash(installed, tiny_model, tmp_path):
    client = WorkerClient(sys.executable)
    try:
        client.submit(_job(tiny_model, kind="neural"), _frontal_frames(list(range(1, 41))))
        for header, _ in iter_until_finished(client, 300):
            if header["type"] == "begin":
                os.kill(client.proc.pid, signal.SIGKILL)
            last = header
        assert last["type"] == "exit" and last["returncode"] != 0
    finally:
        client.stop()
    runner = submodule("blender.runner")
    task = runner.Task(None, {}, "test")
    task.handle(last, {})
    assert task.finished and not task.error_is_user and "stopped unexpectedly" in task.error
    with pytest.raises(runner.WorkerFailure):
        task.raise_error()


def test_background_mode_runs_synchronously(addon, use_tiny, tmp_path):
    """In background mode the render engine runs the generator in this process: no worker, no timer."""
    from n3d_helpers import make_scene

    make_scene(tmp_path)
    runner = submodule("blender.runner")
    assert bpy.app.background
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    assert not bpy.app.timers.is_registered(runner.drain)
    assert runner._state["client"] is None and runner._state["render_client"] is None
    assert submodule("blender.render_engine").STATS["frames"] == 1


def test_a_worker_python_without_numpy_is_one_line(installed, tmp_path):
    """A Worker Python that lacks a package the engine imports: one sentence naming it, no traceback."""
    import venv

    venv.create(tmp_path / "bare", with_pip=False)        # the base interpreter, no site packages: no numpy
    python = tmp_path / "bare" / "bin" / "python"
    client = WorkerClient(str(python))
    try:
        client.submit({"kind": "ping"})
        for header, _ in iter_until_finished(client, 120):
            last = header
    finally:
        client.stop()
    runner = submodule("blender.runner")
    task = runner.Task(None, {}, "test")
    task.handle(last, {})
    assert task.error == (f"The worker's Python ({python}) cannot import numpy: set 'Worker Python' in the Next3D "
                          "add-on preferences to an environment with torch and the engine's requirements (e.g. the "
                          "project's .venv/bin/python), or install numpy there.")


def test_bad_worker_python_is_reported(addon, prefs, tmp_path):
    from n3d_helpers import make_scene

    make_scene(tmp_path)
    prefs.python_path = str(tmp_path / "no-python")
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.next3d.render_frame(mode="ASYNC")
    assert runner_state_clean()


def runner_state_clean():
    runner = submodule("blender.runner")
    return not runner.is_busy() and not bpy.app.timers.is_registered(runner.drain)
