"""Tests of core.rendering: the pytorch3d-equivalent rasteriser, the orthographic views, the hole fill and the
mouth box (docs/flame.md). The reference tests compare with numbers from the official code."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import InputError
from core.rendering.orthographic import (VIEW_ANGLES, angle2matrix, fill_enclosed_holes, front_landmarks_2d,
                                         mouth_box, project_view, rasterize_views, view_alphas)
from core.rendering.rasterize import rasterize, rasterize_fragments

REF_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "next3d_small"


# ---------------------------------------------------------------------------------------------------- helpers

def _centres(n):
    return (2 * np.arange(n) + 1) / n - 1.0          # float64, pixel centres along one axis


def _tri(verts, attrs=None):
    """One-triangle batch: vertices [1,3,3], faces [1,3], attributes [1,3,D]."""
    v = torch.tensor([verts], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2]])
    a = torch.ones(1, 3, 1) if attrs is None else torch.tensor([attrs], dtype=torch.float32)
    return v, f, a


def _naive_fragments(verts, faces, h, w):
    """Independent per-face loop in numpy float32, following pytorch3d's naive CPU rasteriser step by step.
    Returns pix_to_face [H,W] (-1 background) and bary [H,W,3]."""
    v = verts.astype(np.float32)
    def centres(n):                                # pytorch3d's PixToNonSquareNdc, negated, float32 throughout
        k = (2 * np.arange(n - 1, -1, -1) + 1).astype(np.float32)
        return -(k / np.float32(n) - np.float32(1))

    cy, cx = centres(h), centres(w)
    py, px = np.meshgrid(cy, cx, indexing="ij")
    best_z = np.full((h, w), np.inf, np.float32)
    p2f = np.full((h, w), -1, np.int64)
    bary = np.zeros((h, w, 3), np.float32)

    def edge(ax, ay, bx, by, cx_, cy_):          # EdgeFunctionForward(p=a, v0=b, v1=c)
        return (ax - bx) * (cy_ - by) - (ay - by) * (cx_ - bx)

    for f, (i0, i1, i2) in enumerate(faces):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[i0], v[i1], v[i2]
        orient = edge(x0, y0, x1, y1, x2, y2)
        if orient < 0 or abs(orient) <= 1e-8 or min(z0, z1, z2) < 1e-8:
            continue
        area = np.float32(np.float64(edge(x2, y2, x0, y0, x1, y1)) + 1e-8)
        w0 = edge(px, py, x1, y1, x2, y2) / area
        w1 = edge(px, py, x2, y2, x0, y0) / area
        w2 = edge(px, py, x0, y0, x1, y1) / area
        pz = w0 * z0 + w1 * z1 + w2 * z2
        inbox = (px >= min(x0, x1, x2)) & (px <= max(x0, x1, x2)) & (py >= min(y0, y1, y2)) & (py <= max(y0, y1, y2))
        take = inbox & (w0 > 0) & (w1 > 0) & (w2 > 0) & (pz >= 0) & (pz < best_z)
        best_z[take] = pz[take]
        p2f[take] = f
        bary[take] = np.stack([w0, w1, w2], -1)[take]
    return p2f, bary


def _load_reference():
    if not (REF_DIR / "case0.npz").exists():
        pytest.skip("reference numbers live in ../shared/reference/next3d_small (beside the repository); they are "
                    "not in a plain clone")
    case = np.load(REF_DIR / "case0.npz")
    sd = np.load(REF_DIR / "state_dict.npz")
    return case, sd


@pytest.fixture(scope="module")
def reference():
    case, sd = _load_reference()
    v = torch.from_numpy(case["v"])
    faces = torch.from_numpy(sd["faces"][0])
    fuv = torch.from_numpy(sd["face_uvcoords"][0])
    views = rasterize_views(v[:, :5023], faces, fuv)
    return case, sd, v, views


# ------------------------------------------------------------------------------------- analytic rasteriser tests

# Kept winding (counter-clockwise on screen, x right / y down); no pixel centre of a 32x32 grid lies near its edges.
TRI = [(-0.71, -0.63, 2.0), (-0.17, 0.77, 2.0), (0.66, -0.29, 2.0)]


def test_single_triangle_coverage_is_the_set_of_centres_strictly_inside():
    h, w = 32, 40
    v, f, a = _tri(TRI)
    img, cov = rasterize(v, f, a, (h, w))
    P = np.array(TRI)[:, :2]
    ys, xs = np.meshgrid(_centres(h), _centres(w), indexing="ij")
    s = []
    for k in range(3):                                    # float64 half-plane tests, independent of the code
        (ax, ay), (bx, by) = P[k], P[(k + 1) % 3]
        s.append((xs - ax) * (by - ay) - (ys - ay) * (bx - ax))
    s = np.stack(s)
    assert np.abs(s).min() > 1e-4, "test triangle must keep pixel centres away from its edges"
    inside = (s > 0).all(0) | (s < 0).all(0)
    assert inside.sum() > 100
    np.testing.assert_array_equal(cov[0, 0].numpy() == 1, inside)
    assert set(np.unique(cov.numpy())) == {0.0, 1.0}
    assert (img[0, 0].numpy()[~inside] == 0).all()        # background is 0


def test_barycentrics_reproduce_a_linear_attribute():
    h = w = 48
    lin = lambda x, y: [0.3 * x - 1.7 * y + 0.25, 2.0 * x + 0.5 * y - 1.0]
    attrs = [lin(x, y) for x, y, _ in TRI]
    v, f, a = _tri(TRI, attrs)
    img, cov = rasterize(v, f, a, h)
    m = cov[0, 0].numpy() == 1
    ys, xs = np.meshgrid(_centres(h), _centres(w), indexing="ij")
    want = np.stack(lin(xs, ys))
    np.testing.assert_allclose(img[0].numpy()[:, m], want[:, m], atol=2e-5)
    # Interpolating the constant 1 gives the barycentric sum, 1 up to pytorch3d's +1e-8 in the denominator.
    v, f, a = _tri(TRI)
    one = rasterize(v, f, a, h)[0][0, 0].numpy()[m]
    np.testing.assert_allclose(one, 1.0, atol=1e-6)


def test_reversed_winding_is_culled():
    v, f, a = _tri([TRI[0], TRI[2], TRI[1]])
    img, cov = rasterize(v, f, a, 32)
    assert cov.sum() == 0 and img.abs().sum() == 0


def test_faces_behind_the_camera_are_ignored():
    behind = [(x, y, -1.0) for x, y, _ in TRI]
    v, f, a = _tri(behind)
    assert rasterize(v, f, a, 32)[1].sum() == 0
    # pytorch3d >= 0.7 drops a face outright once any corner has z < 1e-8, even if part of it is in front.
    partly = [TRI[0], TRI[1], (TRI[2][0], TRI[2][1], -0.5)]
    v, f, a = _tri(partly)
    assert rasterize(v, f, a, 32)[1].sum() == 0


def test_zero_area_face_is_skipped():
    v, f, a = _tri([(-0.5, -0.5, 1.0), (0.0, 0.0, 1.0), (0.5, 0.5, 1.0)])
    assert rasterize(v, f, a, 16)[1].sum() == 0


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_hides_farther_one_regardless_of_order(near_first):
    near = [(x, y, 1.5) for x, y, _ in TRI]
    far = [(x + 0.2, y + 0.1, 4.0) for x, y, _ in TRI]
    tris = [near, far] if near_first else [far, near]
    verts = torch.tensor([tris[0] + tris[1]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ids = torch.tensor([[[0.0]] * 3, [[1.0]] * 3]) if near_first else torch.tensor([[[1.0]] * 3, [[0.0]] * 3])
    img, cov = rasterize(verts, faces, ids, 32)
    p2f, _, zbuf = rasterize_fragments(verts, faces, 32)
    near_idx = 0 if near_first else 1
    only_near = rasterize(torch.tensor([near], dtype=torch.float32), torch.tensor([[0, 1, 2]]), torch.ones(1, 3, 1),
                          32)[1][0, 0].bool()
    assert only_near.sum() > 50
    assert (p2f[0][only_near] == near_idx).all()          # every pixel of the near triangle shows it
    assert (img[0, 0][only_near] == 0).all()              # attribute 0 = near triangle, in both face orders
    far_only = cov[0, 0].bool() & ~only_near
    assert far_only.sum() > 10 and (p2f[0][far_only] == 1 - near_idx).all()
    torch.testing.assert_close(img[0, 0][far_only], torch.ones(int(far_only.sum())), atol=1e-6, rtol=0)
    np.testing.assert_allclose(zbuf[0][only_near].numpy(), 1.5, rtol=1e-6)
    assert (zbuf[0][~cov[0, 0].bool()] == -1).all()


def test_equal_depth_tie_goes_to_the_lowest_face_index():
    verts = torch.tensor([TRI + TRI], dtype=torch.float32)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])           # the same triangle twice
    p2f, _, _ = rasterize_fragments(verts, faces, 24)
    assert set(p2f.unique().tolist()) == {-1, 0}


def test_quad_mesh_leaves_the_shared_diagonal_uncovered():
    # Square [-0.5, 0.5]² from two triangles. Pixel centres on the shared diagonal have a zero barycentric
    # for both triangles and, like pytorch3d, are covered by neither.
    n = 16
    verts = torch.tensor([[(-0.5, -0.5, 1.0), (0.5, -0.5, 1.0), (0.5, 0.5, 1.0), (-0.5, 0.5, 1.0)]])
    faces = torch.tensor([[0, 3, 2], [0, 2, 1]])          # both counter-clockwise on screen
    attrs = torch.tensor([[[1.0]] * 3, [[2.0]] * 3])
    img, cov = rasterize(verts, faces, attrs, n)
    c = _centres(n)
    ys, xs = np.meshgrid(c, c, indexing="ij")
    square = (np.abs(xs) < 0.5) & (np.abs(ys) < 0.5)
    want = square & (xs != ys)
    np.testing.assert_array_equal(cov[0, 0].numpy() == 1, want)
    lower = square & (ys > xs)                            # below the diagonal on screen: face 0
    assert (img[0, 0].numpy()[lower] == 1).all() and (img[0, 0].numpy()[square & (ys < xs)] == 2).all()


def test_cube_shows_its_front_face():
    # Axis-aligned cube seen along +z (the camera sits at z = -inf). Quads are wound so that the right-hand normal
    # points outwards; the rasteriser keeps faces whose normal points at the camera (-z). So only the z = 2 quad
    # shows: the z = 3 quad is a back face and the four sides project to zero area.
    lo, hi = -0.43, 0.51
    corners = torch.tensor([[(x, y, z) for z in (2.0, 3.0) for y in (lo, hi) for x in (lo, hi)]])
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 4, 6, 2), (1, 3, 7, 5), (0, 1, 5, 4), (2, 6, 7, 3)]
    faces = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    attrs = torch.arange(12, dtype=torch.float32).repeat_interleave(3).view(12, 3, 1)
    img, cov = rasterize(corners, faces, attrs, 32)
    p2f, _, _ = rasterize_fragments(corners, faces, 32)
    c = _centres(32)
    ys, xs = np.meshgrid(c, c, indexing="ij")
    square = (xs > lo) & (xs < hi) & (ys > lo) & (ys < hi)
    # The quad's diagonal runs through centres with x == y: on the shared edge, so covered by neither triangle.
    np.testing.assert_array_equal(cov[0, 0].numpy() == 1, square & (xs != ys))
    p2f = p2f[0].numpy()
    assert (p2f[square & (ys > xs)] == 0).all() and (p2f[square & (ys < xs)] == 1).all()
    np.testing.assert_allclose(img[0, 0].numpy(), np.where(cov[0, 0].numpy() == 1, p2f, 0), atol=1e-6)


def test_random_soup_matches_a_naive_per_face_loop():
    g = torch.Generator().manual_seed(0)
    n_f, h, w = 60, 37, 29
    verts = torch.rand(1, n_f * 3, 3, generator=g) * 2.2 - 1.1
    verts[..., 2] = torch.rand(1, n_f * 3, generator=g) * 3 - 0.5     # some corners behind the camera
    faces = torch.arange(n_f * 3).view(n_f, 3)
    p2f, bary, _ = rasterize_fragments(verts, faces, (h, w))
    want_f, want_b = _naive_fragments(verts[0].numpy(), faces.numpy(), h, w)
    assert (want_f >= 0).sum() > 200
    np.testing.assert_array_equal(p2f[0].numpy(), want_f)
    np.testing.assert_array_equal(bary[0].numpy(), want_b)             # bit-identical float32 arithmetic


def test_chunked_candidates_and_batches_give_identical_results():
    g = torch.Generator().manual_seed(1)
    verts = torch.rand(2, 90, 3, generator=g) * 2 - 1
    verts[..., 2] += 2
    faces = torch.arange(90).view(30, 3)
    attrs = torch.rand(2, 30, 3, 5, generator=g)
    img, cov = rasterize(verts, faces, attrs, 40)
    img_c, cov_c = rasterize(verts, faces, attrs, 40, max_pairs=97)
    assert torch.equal(img, img_c) and torch.equal(cov, cov_c)
    for b in range(2):
        img_b, cov_b = rasterize(verts[b:b + 1], faces, attrs[b], 40)
        assert torch.equal(img_b, img[b:b + 1]) and torch.equal(cov_b, cov[b:b + 1])


def test_invalid_inputs_raise_input_error():
    v, f, a = _tri(TRI)
    with pytest.raises(InputError):
        rasterize(v[0], f, a, 8)
    with pytest.raises(InputError):
        rasterize(v, f.float(), a, 8)
    with pytest.raises(InputError):
        rasterize(v, f + 1, a, 8)
    with pytest.raises(InputError):
        rasterize(v, f, a[:, :2], 8)
    with pytest.raises(InputError):
        rasterize(v, f, a, 0)
    with pytest.raises(InputError):
        rasterize(v * float("nan"), f, a, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(2)
    verts = torch.rand(2, 300, 3, generator=g) * 2 - 1
    verts[..., 2] += 2
    faces = torch.arange(300).view(100, 3)
    attrs = torch.rand(100, 3, 3, generator=g)
    img, cov = rasterize(verts, faces, attrs, 64)
    img_g, cov_g = rasterize(verts.cuda(), faces.cuda(), attrs.cuda(), 64)
    assert torch.equal(cov, cov_g.cpu())
    torch.testing.assert_close(img, img_g.cpu(), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ view transform

def test_angle2matrix_is_rz_ry_rx_in_row_vector_convention():
    R = angle2matrix(torch.tensor([[30.0, 45.0, 60.0]]))[0].double()
    a, b, c = np.deg2rad([30.0, 45.0, 60.0])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    np.testing.assert_allclose(R.numpy(), rz @ ry @ rx, atol=1e-6)
    assert torch.equal(angle2matrix(VIEW_ANGLES[0])[0], torch.eye(3))


def test_project_view_front_is_scale_shift_and_flips():
    p = torch.tensor([[[0.1, 0.2, 0.3]]])
    out = project_view(p, VIEW_ANGLES[0])
    want = [0.1 * 5, -((-0.2 - 0.01) * 5), -((0.3 - 0.01) * 5) + 10]
    np.testing.assert_allclose(out[0, 0].numpy(), want, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- hole fill

def _ring(n=12, value=1.0):
    a = np.zeros((n, n), np.float32)
    a[3:9, 3:9] = value
    a[5:7, 5:7] = 0.0                                    # enclosed hole
    return a


def _fill(a):
    return fill_enclosed_holes(torch.from_numpy(a)[None, None])[0, 0].numpy()


def test_fill_closes_an_enclosed_hole_and_keeps_everything_else():
    a = _ring()
    a[4, 4] = 0.3
    out = _fill(a)
    want = a.copy()
    want[3:9, 3:9] = 1.0                                 # the ring's interior and the ring itself (unreachable)
    np.testing.assert_array_equal(out, want)
    assert out[5, 5] == 1.0 and out[0, 0] == 0.0


def test_fill_keeps_a_hole_connected_to_the_border():
    a = _ring()
    a[5, 0:6] = 0.0                                      # channel from the left border into the hole
    out = _fill(a)
    assert (out[5:7, 5:7] == 0).all()
    assert (out[a == 1.0] == 1.0).all()


def test_fill_passes_values_up_to_254_over_255():
    a = _ring(value=np.float32(254 / 255))               # 254.0 after * 255: passable, so no hole
    np.testing.assert_array_equal(_fill(a), a)
    b = _ring(value=np.nextafter(np.float32(254 / 255), np.float32(1)))
    assert _fill(b)[5, 5] == 1.0


def test_fill_is_4_connected_not_8_connected():
    a = _ring()
    a[3, 3] = 0.0                                        # corner notch: only a diagonal path into the ring
    a[4, 4] = 0.0
    a[4, 5] = 0.0                                        # ... towards the hole, still 8- but not 4-connected
    a[5, 5] = 0.0
    out = _fill(a)
    assert out[5, 5] == 1.0 and out[4, 4] == 1.0 and out[3, 3] == 0.0


def test_fill_seed_value_sets_the_range():
    a = np.full((6, 6), 0.5, np.float32)
    a[2:4, 2:4] = 0.2                                    # below the seed value: not passable
    out = _fill(a)
    assert (out[2:4, 2:4] == 1.0).all() and (out[a == 0.5] == 0.5).all()


# ---------------------------------------------------------------------------------------------- mouth box

def test_mouth_box_rejects_a_mouth_outside_the_front_view():
    lm = torch.zeros(1, 68, 2)
    lm[0, 48:60, 0] = torch.linspace(0.95, 1.2, 12)
    lm[0, 48:60, 1] = torch.linspace(-0.1, 0.1, 12)
    with pytest.raises(InputError, match="outside the front view"):
        mouth_box(lm)


def test_mouth_box_geometry():
    lm = torch.zeros(1, 68, 2)
    # Pixel x = 144 + dx, y = 96 + dy, exact in float32; corners (48, 54) at dx = -10 and +11.
    lm[0, 48:60, 0] = torch.tensor([-10.0, -6, -2, 0, 2, 6, 11, 6, 2, 0, -2, -6]) / 128 + 0.125
    lm[0, 48:60, 1] = torch.tensor([0.0, -3, -4, -3, -4, -3, 0, 4, 5, 5, 5, 4]) / 128 - 0.25
    # centre (144.5, 96); r = int(1.2 * 21) = 25, r // 2 = 12; columns int(132.5) = 132 .. int(156.5) = 156
    assert mouth_box(lm).tolist() == [[84, 108, 132, 156]]

# ---------------------------------------------------------------------------------------- reference checks

@pytest.mark.parametrize("view", range(4))
def test_reference_raster_views(reference, view):
    case, _, _, views = reference
    ref = torch.from_numpy(case[f"raster_view{view}"])
    got = views[view]
    assert got.shape == ref.shape
    mismatched = int((got[:, 3] != ref[:, 3]).sum())
    assert mismatched == 0, f"view {view}: {mismatched} coverage pixels differ from the official rasteriser"
    err = float((got[:, :3] - ref[:, :3]).abs().max())
    assert err <= 1e-4, f"view {view}: attributes differ by up to {err}"


def test_reference_alpha_views(reference):
    case, sd, _, views = reference
    alphas = view_alphas(views, torch.from_numpy(sd["uv_face_mask"]))
    ref = torch.from_numpy(case["alpha_views"])
    assert alphas.shape == ref.shape
    err = float((alphas - ref).abs().max())
    assert err <= 1e-5, f"alpha_views differ by up to {err}"


def test_reference_mouth_box(reference):
    case, _, v, _ = reference
    box = mouth_box(front_landmarks_2d(v[:, 5023:]))
    assert box.dtype == torch.int64
    assert box.tolist() == case["mouth_box"].tolist() == [[82, 122, 108, 148]]
