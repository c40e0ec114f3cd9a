"""Mesh extraction (coarse to fine, docs/mesh_extraction.md) and mesh export: analytic densities, the random
generator, files."""

import json
import struct

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from core.default_model import default_model, random_generator
from core.errors import InputError
from core.geometry.ellipsoid_head import ellipsoid_head
from core.mesh import (DEFAULT_MARGIN, ExtractedMesh, dense_sigma, extract_mesh, flame_to_world, head_region,
                       mesh_from_grid, save_mesh, sigma_quantile, surface_level, world_to_flame)
from core.rendering.camera import ffhq_camera
from core.sampling import latent_from_seed

LEVEL = 10.0


def sphere_density(centre=(0.0, 0.0, 0.0), radius=0.3, slope=50.0):
    c = torch.tensor(centre, dtype=torch.float32)

    def fn(p):
        return LEVEL + slope * (radius - (p - c).norm(dim=1))
    return fn


def two_blobs(p):
    a = torch.exp(-((p - torch.tensor([-0.15, 0.05, 0.0])) ** 2).sum(1) / (2 * 0.08 ** 2))
    b = torch.exp(-((p - torch.tensor([0.17, -0.1, 0.05])) ** 2).sum(1) / (2 * 0.06 ** 2))
    return 30 * a + 25 * b


def thin_capsule(p):
    """A capsule 1.5 voxels thick (at N = 72) through one coarse node, much thinner than a coarse cell: only the
    cells around that node straddle the level; the rest is found by following the surface."""
    node = torch.full((3,), -0.5 + 38 / 71)
    d = torch.tensor([1.0, 0.7, 0.4])
    d = d / d.norm()
    t = ((p - node) @ d).clamp(-0.3, 0.3)
    dist = (p - node - t[:, None] * d).norm(dim=1)
    return LEVEL + 400 * (1.5 / 71 - dist)


# ------------------------------------------------------------------------------------------------ helpers

def edge_counts(faces):
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.unique(np.sort(e, 1), axis=0, return_counts=True)[1]
    directed = np.unique(e, axis=0, return_counts=True)[1]
    return e, undirected, directed


def assert_closed_oriented(mesh, euler):
    e, undirected, directed = edge_counts(mesh.faces)
    assert (undirected == 2).all(), "every edge must be shared by exactly two faces"
    assert (directed == 1).all(), "neighbouring faces must be oriented consistently"
    n_edges = len(undirected)
    assert mesh.n_vertices - n_edges + mesh.n_faces == euler
    assert len(np.unique(mesh.faces)) == mesh.n_vertices        # no unreferenced vertices


def signed_volume(v, f):
    v = v.astype(np.float64)
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6)


def assert_same_mesh(a: ExtractedMesh, b: ExtractedMesh, tol):
    assert a.n_vertices == b.n_vertices and a.n_faces == b.n_faces
    dist, idx = cKDTree(b.vertices).query(a.vertices)
    assert dist.max() <= tol
    assert len(np.unique(idx)) == b.n_vertices                   # a one-to-one match
    fa = np.sort(idx[a.faces], 1)
    fb = np.sort(b.faces, 1)
    assert np.array_equal(np.unique(fa, axis=0), np.unique(fb, axis=0))


# ------------------------------------------------------------------------------------------- analytic fields

def test_sphere_radius_watertight_outward():
    n = 64
    mesh = extract_mesh(density_fn=sphere_density(), resolution=n, level=LEVEL, coarse_resolution=16, units="world")
    voxel = 1.0 / (n - 1)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(r - 0.3).max() < 0.5 * voxel
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int64
    assert mesh.colors is None and mesh.level == LEVEL and mesh.resolution == n
    assert_closed_oriented(mesh, euler=2)
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.einsum("ij,ij->i", normals, v[f].mean(1)) > 0).all()      # outward, counter-clockwise from outside
    assert abs(signed_volume(v, f) - 4 / 3 * np.pi * 0.3 ** 3) < 0.01 * 4 / 3 * np.pi * 0.3 ** 3
    assert mesh.evaluated_points < 0.5 * n ** 3


@pytest.mark.parametrize("case", ["sphere", "two_blobs", "clipped_by_border", "thin_capsule"])
def test_coarse_to_fine_equals_dense(case):
    n = 72
    fn = {"sphere": sphere_density((0.03, -0.02, 0.01)), "two_blobs": two_blobs,
          "clipped_by_border": sphere_density(radius=0.45), "thin_capsule": thin_capsule}[case]
    fine = extract_mesh(density_fn=fn, resolution=n, level=LEVEL, coarse_resolution=12, units="world")
    dense = mesh_from_grid(dense_sigma(density_fn=fn, resolution=n, chunk=50_000), level=LEVEL, units="world")
    assert_same_mesh(fine, dense, tol=1e-6)
    assert_closed_oriented(fine, euler=4 if case == "two_blobs" else 2)
    assert fine.evaluated_points < 0.6 * n ** 3


def test_no_border_trim_leaves_an_open_surface():
    fn = sphere_density(radius=0.55)
    n = 40
    fine = extract_mesh(density_fn=fn, resolution=n, level=LEVEL, coarse_resolution=8, padding_voxels=0,
                        units="world")
    dense = mesh_from_grid(dense_sigma(density_fn=fn, resolution=n), level=LEVEL, padding_voxels=0, units="world")
    assert_same_mesh(fine, dense, tol=1e-6)
    _, undirected, _ = edge_counts(fine.faces)
    assert (undirected == 1).any()                               # cut open by the box


def test_flame_units_conversion():
    centre = np.array([0.1, -0.05, 0.08])
    fn = sphere_density(tuple(centre), radius=0.2)
    mesh = extract_mesh(density_fn=fn, resolution=48, level=LEVEL, coarse_resolution=12)
    assert mesh.units == "flame"
    expected = centre / 2.5 - np.array([0.0, 0.01, 0.0])
    v = mesh.vertices.astype(np.float64)
    assert np.allclose((v.min(0) + v.max(0)) / 2, expected, atol=0.5 / 47 / 2.5)
    assert np.abs(np.linalg.norm(v - expected, axis=1) - 0.2 / 2.5).max() < 0.5 / 47 / 2.5
    world = extract_mesh(density_fn=fn, resolution=48, level=LEVEL, coarse_resolution=12, units="world")
    assert np.allclose(flame_to_world(mesh.vertices), world.vertices, atol=1e-5)
    assert np.allclose(world_to_flame(flame_to_world(v)), v, atol=1e-12)
    assert signed_volume(v, mesh.faces) > 0


def test_progress_and_errors():
    calls = []
    extract_mesh(density_fn=sphere_density(), resolution=32, level=LEVEL, coarse_resolution=8,
                 progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1
    with pytest.raises(InputError, match="no surface at level 100"):
        extract_mesh(density_fn=sphere_density(), resolution=32, level=100.0)
    with pytest.raises(InputError, match="either a generator"):
        extract_mesh(resolution=32)
    with pytest.raises(InputError, match="padding_voxels"):
        extract_mesh(density_fn=sphere_density(), resolution=32, padding_voxels=20)
    with pytest.raises(InputError, match="resolution"):
        extract_mesh(density_fn=sphere_density(), resolution=4)
    with pytest.raises(InputError, match="one density per point"):
        extract_mesh(density_fn=lambda p: torch.zeros(3), resolution=32)


# ---------------------------------------------------------------------------------------------- generator

@pytest.fixture(scope="module")
def frame():
    head = ellipsoid_head()
    generator = random_generator(head=head)
    with torch.no_grad():
        ws = generator.mapping(latent_from_seed(0), ffhq_camera()[None])
        identity = generator.make_identity(ws)
        planes = generator.build_planes(identity, head.mesh_input())
    return generator, identity, planes, head


def test_lattice_decoder_matches_decode_points(frame):
    generator, _, planes, _ = frame
    slow = dense_sigma(generator, planes, 20, chunk=3000)
    fast = dense_sigma(generator, planes, 20, chunk=3000, fast=True)
    assert np.abs(slow - fast).max() <= 1e-4 * max(1.0, float(np.abs(slow).max()))


def test_surface_level_is_the_official_one_when_the_density_reaches_it():
    assert surface_level(density_fn=sphere_density(), resolution=24) == LEVEL
    # A field that stays below 10 everywhere gets the quantile, whose surface is a smaller sphere.
    def low(p):
        return sphere_density()(p) - 25.0
    level = surface_level(density_fn=low, resolution=24)
    assert level == sigma_quantile(density_fn=low, resolution=24) < LEVEL
    radius = 0.3 - (level - LEVEL + 25.0) / 50.0      # where low() crosses the level
    assert 0.1 < radius < 0.3
    mesh = extract_mesh(density_fn=low, resolution=32, level=level, coarse_resolution=8, units="world")
    assert mesh.n_faces > 100


def test_generator_extraction(frame):
    generator, _, planes, _ = frame
    n = 56
    level = surface_level(generator, planes, resolution=24)
    assert level == sigma_quantile(generator, planes, 0.9, resolution=24) != LEVEL
    mesh = extract_mesh(generator, planes, resolution=n, level=level, coarse_resolution=16)
    assert mesh.n_faces > 100 and np.isfinite(mesh.vertices).all()
    assert mesh.colors is not None and mesh.colors.shape == (mesh.n_vertices, 3) and mesh.colors.dtype == np.uint8
    # inside the box, in FLAME units
    assert np.abs(flame_to_world(mesh.vertices)).max() <= 0.5 + 1e-5
    e, undirected, directed = edge_counts(mesh.faces)
    assert (undirected == 2).all() and (directed == 1).all()        # closed by the border trim
    dense = mesh_from_grid(dense_sigma(generator, planes, n, fast=True), level=level)
    h = 1.0 / (n - 1) / 2.5
    a = cKDTree(mesh.vertices).query(dense.vertices)[0] / h
    b = cKDTree(dense.vertices).query(mesh.vertices)[0] / h
    assert 0.5 * (a.mean() + b.mean()) < 0.5
    with pytest.raises(InputError, match="planes"):
        extract_mesh(generator, planes[0], resolution=n, level=level)
    with pytest.raises(InputError, match="one mesh at a time"):
        extract_mesh(generator, planes.expand(2, -1, -1, -1, -1), resolution=n, level=level)


# ------------------------------------------------------------------------------------------------ head region

def surface_distance(points, mesh, samples=6):
    """Distance from each point to the mesh's surface (to dense samples of its triangles)."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    w = np.random.RandomState(0).dirichlet([1.0, 1.0, 1.0], size=(len(tri), samples))
    pts = np.concatenate([np.einsum("fkj,fjc->fkc", w, tri).reshape(-1, 3), mesh.vertices])
    return cKDTree(pts).query(points)[0]


def test_head_region_drops_what_is_far_and_keeps_the_head_exactly():
    """A "head" (a sphere, 0.06 FLAME units in radius) beside a "background" slab 6 cm beyond it: with the head's
    points as `near`, the slab is gone and the head's mesh is the one extracted without any slab."""
    sphere = sphere_density(radius=0.15)

    def with_slab(p):
        slab = LEVEL + 50.0 * (0.05 - (p[:, 0] - 0.35).abs())          # world x in [0.30, 0.40]
        return torch.maximum(sphere(p), slab)

    d = np.random.RandomState(1).normal(size=(400, 3))
    near = world_to_flame(0.15 * d / np.linalg.norm(d, axis=1, keepdims=True))     # points on the head
    kw = dict(resolution=48, level=LEVEL, coarse_resolution=12)
    everything = extract_mesh(density_fn=with_slab, **kw)
    assert everything.vertices[:, 0].max() > 0.3 / 2.5                 # the slab is there without a region
    kept = extract_mesh(density_fn=with_slab, near=near, **kw)
    alone = extract_mesh(density_fn=sphere, **kw)
    assert_same_mesh(kept, alone, 1e-6)
    assert kept.evaluated_points < everything.evaluated_points        # points outside it are not decoded
    # the region: the head's convex hull grown by the margin (2.5 world units per FLAME unit)
    normals, offsets = head_region(near, DEFAULT_MARGIN)
    world = flame_to_world(near)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert np.allclose((world @ normals.T).max(0), offsets - 2.5 * DEFAULT_MARGIN)
    with pytest.raises(InputError, match="flat"):
        head_region(near * [1.0, 1.0, 0.0])
    with pytest.raises(InputError, match="near must be"):
        extract_mesh(density_fn=with_slab, near=near[:, :2], **kw)
    with pytest.raises(InputError, match="margin"):
        extract_mesh(density_fn=with_slab, near=near, margin=-0.01, **kw)


@pytest.fixture(scope="module")
def bundled_frame():
    model = default_model()
    assert model.trained, "the bundled default model is part of the repository (addon_assets/)"
    generator = model.generator
    with torch.no_grad():
        ws = generator.mapping(latent_from_seed(0), ffhq_camera()[None])
        planes = generator.build_planes(generator.make_identity(ws), model.mesh_input)
    return generator, planes, model.mesh_input[0].numpy()


def test_bundled_model_mesh_keeps_the_head_only(bundled_frame):
    """The trained model puts background density beside and behind the head (the FFHQ backdrop); the default
    extraction of the command and the add-on (near = the frame's head) keeps a mesh the size of the head, with no
    component away from it, and the face on it."""
    generator, planes, head = bundled_frame
    n = 64
    voxel = 1.0 / (n - 1) / 2.5                                          # FLAME units
    everything = extract_mesh(generator, planes, resolution=n, level=LEVEL, with_colors=False)
    kept = extract_mesh(generator, planes, resolution=n, level=LEVEL, with_colors=False, near=head)
    lo, hi = head.min(0), head.max(0)
    width = hi[0] - lo[0]
    assert np.ptp(everything.vertices[:, 0]) > 1.4 * width              # the backdrop, without the region
    slack = DEFAULT_MARGIN + voxel
    assert (kept.vertices >= lo - slack).all() and (kept.vertices <= hi + slack).all()
    assert np.ptp(kept.vertices[:, 0]) <= width + 2 * slack
    # nothing away from the head: no vertex further than the margin outside the head's convex hull (a lower bound
    # of the distance to it: the largest distance to its faces' planes), as there is without the region
    from scipy.spatial import ConvexHull
    planes_ = ConvexHull(head).equations

    def outside(v):
        return (v @ planes_[:, :3].T + planes_[:, 3]).max(1)
    assert outside(everything.vertices).max() > 0.05
    assert outside(kept.vertices).max() <= slack
    # and the face is on the surface: the landmarks (the last 68 points) lie within a few millimetres of it
    dist = surface_distance(head[-68:], kept)
    assert np.median(dist) < 0.006 and np.percentile(dist, 90) < 0.012, np.round(dist * 1000, 1)


# ------------------------------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def small_mesh():
    mesh = extract_mesh(density_fn=sphere_density(), resolution=24, level=LEVEL, coarse_resolution=8)
    rng = np.random.RandomState(0)
    return ExtractedMesh(vertices=mesh.vertices, faces=mesh.faces, level=mesh.level, resolution=mesh.resolution,
                         colors=rng.randint(0, 256, (mesh.n_vertices, 3)).astype(np.uint8))


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element")}
    props = [line.split()[-1] for line in header if line.startswith("property") and "list" not in line]
    assert props == ["x", "y", "z", "red", "green", "blue"]
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    verts = np.frombuffer(data, vdt, counts["vertex"], end)
    fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
    faces = np.frombuffer(data, fdt, counts["face"], end + vdt.itemsize * counts["vertex"])
    assert end + vdt.itemsize * counts["vertex"] + fdt.itemsize * counts["face"] == len(data)
    assert (faces["n"] == 3).all()
    return verts, faces["i"]


def read_glb(path):
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0
    assert 28 + json_len + bin_len == len(data)
    binary = data[28 + json_len:]
    assert doc["buffers"][0]["byteLength"] == bin_len == len(binary)
    return doc, binary


def test_ply_roundtrip(small_mesh, tmp_path):
    path = save_mesh(tmp_path / "head.ply", small_mesh)
    verts, faces = read_ply(path)
    assert np.array_equal(np.stack([verts["x"], verts["y"], verts["z"]], 1), small_mesh.vertices)
    assert np.array_equal(np.stack([verts["r"], verts["g"], verts["b"]], 1), small_mesh.colors)
    assert np.array_equal(faces, small_mesh.faces)
    assert list(tmp_path.iterdir()) == [path]                    # no temporary file left behind


def test_obj_counts(small_mesh, tmp_path):
    path = save_mesh(tmp_path / "head.OBJ", small_mesh)
    lines = path.read_text().splitlines()
    v = [line.split() for line in lines if line.startswith("v ")]
    f = [line.split() for line in lines if line.startswith("f ")]
    assert len(v) == small_mesh.n_vertices and len(f) == small_mesh.n_faces
    assert all(len(x) == 7 for x in v)
    assert np.allclose(np.array([x[1:4] for x in v], float), small_mesh.vertices, atol=1e-6)
    assert np.allclose(np.array([x[4:] for x in v], float), small_mesh.colors / 255, atol=1e-4)
    assert np.array_equal(np.array([x[1:] for x in f], int) - 1, small_mesh.faces)


def test_glb_structure(small_mesh, tmp_path):
    path = save_mesh(tmp_path / "head.glb", small_mesh)
    doc, binary = read_glb(path)
    assert doc["asset"]["version"] == "2.0"
    prim = doc["meshes"][0]["primitives"][0]
    acc = doc["accessors"]
    views = doc["bufferViews"]
    pos = acc[prim["attributes"]["POSITION"]]
    assert pos["count"] == small_mesh.n_vertices and pos["type"] == "VEC3" and pos["componentType"] == 5126
    assert np.allclose(pos["min"], small_mesh.vertices.min(0)) and np.allclose(pos["max"], small_mesh.vertices.max(0))
    col = acc[prim["attributes"]["COLOR_0"]]
    assert col["count"] == small_mesh.n_vertices and col["type"] in ("VEC3", "VEC4")
    ind = acc[prim["indices"]]
    assert ind["count"] == 3 * small_mesh.n_faces and ind["componentType"] == 5125
    assert doc["materials"] and prim["material"] == 0
    sizes = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
    for a in acc:
        view = views[a["bufferView"]]
        assert view["byteOffset"] % 4 == 0
        item = {5126: 4, 5125: 4, 5121: 1}[a["componentType"]]
        assert a["count"] * sizes[a["type"]] * item <= view["byteLength"]
        assert view["byteOffset"] + view["byteLength"] <= len(binary)
    p = np.frombuffer(binary, "<f4", 3 * pos["count"], views[pos["bufferView"]]["byteOffset"]).reshape(-1, 3)
    i = np.frombuffer(binary, "<u4", ind["count"], views[ind["bufferView"]]["byteOffset"]).reshape(-1, 3)
    assert np.array_equal(p, small_mesh.vertices) and np.array_equal(i, small_mesh.faces)


def test_export_errors(small_mesh, tmp_path):
    with pytest.raises(InputError, match="Unknown mesh format"):
        save_mesh(tmp_path / "head.stl", small_mesh)
    with pytest.raises(InputError, match="does not exist"):
        save_mesh(tmp_path / "missing" / "head.ply", small_mesh)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        save_mesh(blocker / "head.glb", small_mesh)


def test_mesh_command_keeps_the_head_unless_asked_for_everything(tmp_path):
    """`next3d mesh` with the bundled model: by default the mesh is about the head's width; --keep-background
    keeps the backdrop; --margin with --keep-background is refused in one line."""
    from click.testing import CliRunner

    from core.cli import main as cli

    widths = {}
    for flags in ([], ["--keep-background"]):
        out = tmp_path / f"head{len(flags)}.ply"
        result = CliRunner().invoke(cli, ["mesh", "--resolution", "48", "--quiet", "--out", str(out)] + flags)
        assert result.exit_code == 0, result.output
        widths[len(flags)] = float(np.ptp(read_ply(out)[0]["x"]))
    head_width = float(np.ptp(default_model().mesh_input[0, :, 0].numpy()))
    assert widths[0] <= head_width + 2 * (DEFAULT_MARGIN + 1 / 47 / 2.5) < widths[1]
    result = CliRunner().invoke(cli, ["mesh", "--keep-background", "--margin", "0.05", "--out",
                                      str(tmp_path / "x.ply")])
    assert result.exit_code == 2 and "--margin" in result.output and not (tmp_path / "x.ply").exists()
