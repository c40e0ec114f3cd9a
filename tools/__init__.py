"""Developer tools run from the repository root. Not part of the installed engine (pyproject packages core* only)
nor of the Blender extension (build_addon.py vendors core/ and addon_assets/ only)."""
