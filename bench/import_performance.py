"""Import Performance's keying time in Blender (docs/capture.md#in-blender): an animation .npz of N frames at 30 fps
keyed onto the built-in head's rig (16 Exp keys, 5 bones) and onto a FLAME-layout rig (100 Exp keys, 18 Pose keys,
5 bones), at a 24 fps and a 30 fps scene. The extension is built and installed into a temporary Blender user folder,
as tests/blender/conftest.py does. Timings depend on the machine's load: the uptime line says what it was. Never
asserts.

    .venv/bin/python bench/import_performance.py [--frames 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER = Path(tempfile.mkdtemp(prefix="next3d-bench-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(USER)
os.environ.setdefault("NEXT3D_CACHE_DIR", str(USER / "cache"))
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "blender")]

import bpy  # noqa: E402
import numpy as np  # noqa: E402


def animation(path: Path, frames: int, n_shape: int, n_expr: int) -> Path:
    from core.flame import FlameParams, FlameSequence, save_sequence

    rng = np.random.default_rng(0)
    t = np.arange(frames)[:, None] / 30.0

    def wave(n: int, amplitude: float) -> np.ndarray:
        return amplitude * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, (1, n)) * t + rng.uniform(0, 6, (1, n)))

    params = FlameParams(shape=np.tile(rng.normal(size=(1, n_shape)) * 0.5, (frames, 1)), expression=wave(n_expr, 0.8),
                         jaw=np.abs(wave(3, 0.15)), neck=wave(3, 0.05), global_rotation=wave(3, 0.3),
                         eyes=wave(6, 0.2))
    return save_sequence(path, FlameSequence(params, 30.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    import build_addon
    from n3d_helpers import MODULE, enable, flame_addon_rig

    work = Path(tempfile.mkdtemp(prefix="next3d-bench-"))
    try:
        zip_path = build_addon.build(work / "dist", quiet=True)
        assert bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                        enable_on_install=True) == {"FINISHED"}
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 minutes)")
        from core.flame.builtin_head import BUILTIN_HEAD_PATH
        from core.flame.model_data import load_model_data

        flame_like = {k: v for k, v in load_model_data(BUILTIN_HEAD_PATH).to_arrays().items() if k != "name"}
        for layout in ("built-in", "FLAME-layout"):
            for fps in (24, 30):
                bpy.ops.wm.read_factory_settings(use_empty=True)
                enable(MODULE)
                scene = bpy.context.scene
                scene.render.fps, scene.render.fps_base = fps, 1.0
                if layout == "built-in":
                    assert bpy.ops.next3d.add_head() == {"FINISHED"}
                    target, n_shape, n_expr = "FLAME", 26, 16
                else:
                    arrays = dict(flame_like)
                    # The FLAME add-on's key counts: 100 expression keys (the built-in head's 16, repeated).
                    arrays["exprdirs"] = np.tile(arrays["exprdirs"], (1, 1, 7))[:, :, :100]
                    arm, _ = flame_addon_rig(arrays)
                    target, n_shape, n_expr = arm.name, 26, 100
                anim = animation(work / f"anim_{n_expr}.npz", args.frames, n_shape, n_expr)
                start = time.perf_counter()
                assert bpy.ops.next3d.import_performance(filepath=str(anim), target=target) == {"FINISHED"}
                seconds = time.perf_counter() - start
                keyed = scene.frame_end - scene.frame_start + 1
                print(f"{layout:13s} {n_expr:3d} Exp keys, {args.frames} frames at 30 fps -> {keyed} at {fps} fps: "
                      f"{seconds:.2f} s ({seconds / keyed * 1000:.1f} ms per scene frame)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main()
