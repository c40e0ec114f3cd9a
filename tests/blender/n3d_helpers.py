"""Helpers shared by the Blender tests (imported by name: tests/ has no packages)."""

import os
import sys
from pathlib import Path

import bpy

MODULE = "bl_ext.user_default.next3d_blender"


def enable(module: str = MODULE):
    import addon_utils

    if module not in bpy.context.preferences.addons:
        addon_utils.enable(module, default_set=True)
    return sys.modules[module]


def submodule(name: str):
    """A module of the installed extension (imported if no operator has needed it yet)."""
    import importlib

    return importlib.import_module(f"{MODULE}.{name}")


def make_scene(out_dir: Path, size=(64, 64)):
    """Add a FLAME head (with its camera) and set a small render size and the output folder."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(out_dir) + os.sep
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    return bpy.data.objects["FLAME"]
