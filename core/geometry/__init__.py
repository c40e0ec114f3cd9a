"""Geometry needing no licensed download: the ellipsoid stand-in head and numpy vertex normals."""
