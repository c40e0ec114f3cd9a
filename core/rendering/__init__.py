"""Mesh rasterisation for the Next3D generator: a vectorised pytorch3d-equivalent rasteriser and the four
orthographic views of the official generator (docs/flame.md#orthographic-views)."""
