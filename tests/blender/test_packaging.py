"""Packaging: the built zip, Blender's own validator, our manifest checks, registration leaving nothing behind."""

import re
import subprocess
import sys
import tomllib
import zipfile

import bpy

import build_addon

from n3d_helpers import MODULE, enable


def test_zip_layout_and_manifest(built_zip):
    assert built_zip.name == "next3d_blender-0.1.0.zip"
    with zipfile.ZipFile(built_zip) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        sources = {n: zf.read(n).decode() for n in names if n.endswith(".py")}
    for required in ("__init__.py", "blender/operators.py", "blender/panels.py", "blender/scene.py",
                     "blender/results.py", "blender/rig.py", "engine/worker.py", "engine/jobs.py",
                     "engine/job_specs.py", "engine/convert.py", "engine/heads.py", "core/__init__.py",
                     "core/networks/next3d.py", "core/default_model.py"):
        assert required in names, required
    assert any(n.startswith("addon_assets/") for n in names)
    # The documentation: every docs/*.md of the repository, without its images.
    docs = sorted(p.name for p in build_addon.DOCS.glob("*.md"))
    assert docs and {f"docs/{d}" for d in docs} <= names
    assert not any(n.startswith("docs/images") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["blender_version_min"] == "4.2.0"
    assert all(lic.startswith("SPDX:") for lic in manifest["license"])
    assert manifest["permissions"]["files"]
    # Only relative imports of the add-on's own code (it is loaded as bl_ext.<repo>.next3d_blender).
    absolute = re.compile(r"^\s*(from|import)\s+(core|next3d_blender)\b", re.M)
    offenders = [n for n, text in sources.items() if absolute.search(text)]
    assert offenders == []


def test_blender_validator_accepts_the_zip(built_zip):
    ext = build_addon.find_blender_ext()
    proc = subprocess.run([sys.executable, str(ext), "validate", str(built_zip)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_our_manifest_checks():
    manifest = build_addon.read_manifest()
    assert build_addon.check_manifest(manifest, build_addon.core_version()) == []
    bad = dict(manifest, platforms=["linux-x86_64"])   # Blender's validator lets this through
    assert any("linux-x86_64" in p for p in build_addon.check_manifest(bad))
    assert build_addon.check_manifest(dict(manifest, platforms=["linux-x64", "windows-x64"])) == []
    assert any("permissions" in p for p in build_addon.check_manifest(
        {k: v for k, v in manifest.items() if k != "permissions"}))


def _leftovers():
    left = []
    for owner in (bpy.types.Scene, bpy.types.Object):
        if hasattr(owner, "next3d"):
            left.append(f"{owner.__name__}.next3d")
    for base in (bpy.types.Operator, bpy.types.Panel, bpy.types.PropertyGroup, bpy.types.AddonPreferences):
        for name in ("NEXT3D_OT_add_head", "NEXT3D_OT_render_animation", "NEXT3D_PT_render", "NEXT3D_PG_scene",
                     "NEXT3D_AddonPreferences"):
            if base.bl_rna_get_subclass_py(name) is not None:
                left.append(name)
    if hasattr(bpy.types, "NEXT3D_OT_add_head"):
        left.append("bpy.types.NEXT3D_OT_add_head")
    return sorted(set(left))


def test_register_unregister_reregister(addon):
    import addon_utils

    runner = sys.modules[f"{MODULE}.blender.runner"]
    for _ in range(2):
        assert _leftovers() != []
        assert bpy.ops.next3d.add_head.poll()
        addon_utils.disable(MODULE, default_set=True)
        assert _leftovers() == []
        assert not bpy.app.timers.is_registered(runner.drain)
        assert runner.active_task() is None
        enable()
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    assert abs(bpy.context.scene.next3d.truncation_psi - 0.7) < 1e-6
