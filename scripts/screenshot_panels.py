"""Screenshot of the Next3D sidebar for the README, taken from a real Blender window on a virtual screen.

    blender -b --factory-startup --python-expr "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/e.blend')"
    xvfb-run -s "-screen 0 1280x1700x24" blender --factory-startup /tmp/e.blend --python scripts/screenshot_panels.py

The bpy module (what the tests use) has no window, so this needs the Blender program (opening a file skips the
splash screen); any version the add-on's Python runs in works for a picture of the layout. Blender before 4.0
cannot switch sidebar tabs from Python, so there the script clicks the tab with xdotool. The add-on is registered straight from the checkout, a FLAME
head is added, the viewport's sidebar is opened on the Next3D tab with every panel expanded, and the window is
saved to docs/images/blender_panels.png; Blender then quits.
"""

import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "blender_panels.png"


def _view3d():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area
    raise RuntimeError("no 3D viewport in the default screen")


def _only_next3d_tab() -> None:
    """Blender before 4.0 cannot switch sidebar tabs from Python: in this throwaway session, unregister the other
    sidebar panels so that the Next3D tab is the one shown."""
    for cls in bpy.types.Panel.__subclasses__():
        if getattr(cls, "bl_space_type", "") == "VIEW_3D" and getattr(cls, "bl_region_type", "") == "UI" \
                and getattr(cls, "bl_category", "") != "Next3D" and getattr(cls, "is_registered", False):
            try:
                bpy.utils.unregister_class(cls)
            except RuntimeError:
                pass


def setup() -> None:
    sys.path.insert(0, str(ROOT))
    import next3d_blender

    next3d_blender.register()
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    window, area = _view3d()
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.next3d.add_head()
    space = area.spaces.active
    space.show_region_ui = True
    space.shading.type = "SOLID"
    _only_next3d_tab()
    for region in area.regions:
        if region.type == "UI" and hasattr(region, "active_panel_category"):
            region.active_panel_category = "Next3D"
    # Frame the head from the camera's side.
    space.region_3d.view_perspective = "CAMERA"
    bpy.app.timers.register(click_tab, first_interval=1.5)


def click_tab():
    """Click the Next3D tab at the sidebar's right edge (window coordinates have y down for xdotool)."""
    import subprocess

    window, area = _view3d()
    region = next(r for r in area.regions if r.type == "UI")
    if not hasattr(region, "active_panel_category"):
        x = area.x + area.width - 12   # the tab strip is the rightmost ~22 px of the area
        tab_y = window.height - (area.y + area.height) + 130   # the second tab, below 'Item'
        print(f"clicking the Next3D tab at {x}, {tab_y}", flush=True)
        subprocess.run(["xdotool", "mousemove", "--sync", str(x), str(tab_y)], check=False)
        bpy.app.timers.register(lambda: _click(area), first_interval=0.5)
    bpy.app.timers.register(shoot, first_interval=2.5)
    return None


def _click(area):
    import subprocess

    for step in (["mousedown", "1"], ["sleep", "0.2"], ["mouseup", "1"]):
        subprocess.run(["xdotool", *step], check=False)
    subprocess.run(["xwd", "-root", "-silent", "-out", "/tmp/next3d_root.xwd"], check=False)
    return None


def shoot():
    window, area = _view3d()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.screen.screenshot_area(filepath=str(OUT))
    print(f"wrote {OUT}", flush=True)
    bpy.ops.wm.quit_blender()
    return None


try:
    setup()
except Exception:
    import traceback

    traceback.print_exc()
    bpy.ops.wm.quit_blender()
