"""Mesh extraction from the Next3D density field and mesh file export (spec section 7)."""

from .export import SUFFIXES, save_mesh, vertex_normals
from .extract import (OFFICIAL_LEVEL, ExtractedMesh, dense_sigma, extract_mesh, extract_sequence, flame_to_world,
                      mesh_from_grid, official_padding, sigma_quantile, surface_level, world_to_flame)

__all__ = ["ExtractedMesh", "extract_mesh", "dense_sigma", "mesh_from_grid", "sigma_quantile", "surface_level",
           "extract_sequence", "world_to_flame", "flame_to_world", "official_padding", "OFFICIAL_LEVEL", "save_mesh",
           "vertex_normals", "SUFFIXES"]
