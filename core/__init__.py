"""next3d core: a pure-PyTorch Next3D engine (no bpy). Imports inside this package are relative so that the
Blender extension can vendor it under another name."""

__version__ = "0.1.0"
