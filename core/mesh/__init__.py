"""Mesh extraction from the Next3D density field (extract.py, torch) and mesh file export (export.py, numpy only).
Names are imported from their module on first use."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "extract": ["DEFAULT_MARGIN", "OFFICIAL_LEVEL", "dense_sigma", "extract_mesh", "flame_to_world", "head_region",
                "mesh_from_grid", "official_padding", "sigma_quantile", "surface_level", "world_to_flame"],
    "extracted": ["ExtractedMesh"],
    "export": ["SUFFIXES", "save_mesh", "vertex_normals"],
})
