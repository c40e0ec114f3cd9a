"""Meshes the engine can render without any licensed download."""
