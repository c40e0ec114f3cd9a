"""The add-on's Blender half, run in Blender's process: settings (properties.py, preferences.py), the sidebar
(panels.py), the operators (operators.py) with what they read from the scene (scene.py, rig.py) and what they make
of the engine's results (results.py, datablocks.py), and the running of jobs (runner.py).

Only the modules here import bpy; the engine is reached through ../engine.
"""

# The add-on's module name (bl_ext.<repository>.next3d_blender when installed): Blender keys its preferences and
# user folders by it.
ADDON_PACKAGE = __package__.rpartition(".")[0]
