"""Blender tests: the real bpy module (5.0.1), the extension built by build_addon.py and installed offline into a
temporary Blender user folder. A missing bpy is a set-up failure, not a skip.

Every test gets a factory-fresh, empty scene (wm.read_factory_settings(use_empty=True)); that also resets the
preferences and so disables add-ons, and the fixture enables the installed extension again.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_DIR = Path(tempfile.mkdtemp(prefix="next3d-blender-user-"))
# Blender reads its user folder once, when bpy is imported: isolate it before that.
os.environ["BLENDER_USER_RESOURCES"] = str(USER_DIR)
os.environ["NEXT3D_CACHE_DIR"] = str(USER_DIR / "next3d-cache")

try:
    import bpy  # noqa: E402
except ImportError as exc:  # a set-up failure: make test installs bpy==5.0.1 (requirements-dev.txt)
    raise RuntimeError(f"tests/blender need the bpy module (pip install bpy==5.0.1, see requirements-dev.txt): {exc}")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from n3d_helpers import MODULE, enable  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    try:
        import addon_utils

        if MODULE in bpy.context.preferences.addons:
            addon_utils.disable(MODULE, default_set=True)
    finally:
        shutil.rmtree(USER_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory) -> Path:
    import build_addon

    return build_addon.build(tmp_path_factory.mktemp("dist"), quiet=True)


@pytest.fixture(scope="session")
def installed(built_zip) -> str:
    """Install the built zip into the temporary user repository and enable it; returns the module name."""
    result = bpy.ops.extensions.package_install_files(filepath=str(built_zip), repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    assert MODULE in bpy.context.preferences.addons
    return MODULE


@pytest.fixture
def addon(installed):
    """A factory-fresh empty scene with the installed extension enabled; yields the add-on's package."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    pkg = enable(installed)
    yield pkg
    sys.modules[f"{installed}.blender.runner"].shutdown()


@pytest.fixture
def prefs(addon):
    return bpy.context.preferences.addons[MODULE].preferences




@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random generator on the built-in head (the default rig), saved as a project .safetensors model: the
    engine path of a real model file at a fraction of the default model's cost (64 px planes, 32 px images)."""
    from core.default_model import tiny_builtin_generator
    from core.io.generator_io import save_generator

    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_generator(path, tiny_builtin_generator(32, seed=1))
    return path


@pytest.fixture
def use_tiny(prefs, tiny_model):
    prefs.model_source = "PROJECT"
    prefs.project_path = str(tiny_model)
    return tiny_model
