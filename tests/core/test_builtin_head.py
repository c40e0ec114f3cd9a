"""The built-in FLAME-format head (addon_assets/builtin_head.npz, made by tools/builtin_head through
scripts/make_builtin_head.py)."""

import numpy as np
import pytest
import torch

from core.flame.builtin_head import BUILTIN_HEAD_NAME, BUILTIN_HEAD_PATH, builtin_head_topology, load_builtin_head_data
from core.networks.next3d import Topology
from core.rendering.orthographic import front_landmarks_2d, mouth_box, rasterize_views, view_alphas
from tools.builtin_head.cli import main as make_builtin_head

V = 5023
JAW, LEFT_EYE, RIGHT_EYE = 2, 3, 4


@pytest.fixture(scope="module")
def head():
    return load_builtin_head_data()


def _lbs(d, shape=None, expression=None, pose=None):
    """FLAME evaluation with smplx's LBS: vertices [V, 3] and landmarks [68, 3] (numpy, float64)."""
    from smplx.lbs import lbs, vertices2landmarks

    S, E = d["shapedirs"].shape[2], d["exprdirs"].shape[2]
    betas = torch.zeros(1, S + E, dtype=torch.float64)
    if shape is not None:
        betas[0, :len(shape)] = torch.as_tensor(shape, dtype=torch.float64)
    if expression is not None:
        betas[0, S:S + len(expression)] = torch.as_tensor(expression, dtype=torch.float64)
    full_pose = torch.zeros(1, 15, dtype=torch.float64)
    if pose is not None:
        for joint, aa in pose.items():
            full_pose[0, 3 * joint:3 * joint + 3] = torch.as_tensor(aa, dtype=torch.float64)
    t = {k: torch.tensor(np.array(d[k]), dtype=torch.float64)
         for k in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights")}
    dirs = torch.cat([t["shapedirs"], t["exprdirs"]], 2)
    posedirs = t["posedirs"].reshape(V * 3, -1).t()
    verts, _ = lbs(betas, full_pose, t["v_template"], dirs, posedirs, t["J_regressor"],
                   torch.tensor(np.array(d["parents"])), t["weights"])
    lmk = vertices2landmarks(verts, torch.tensor(np.array(d["faces"])),
                             torch.tensor(np.array(d["lmk_faces_idx"]))[None],
                             torch.tensor(np.array(d["lmk_bary_coords"]), dtype=torch.float64)[None])
    return verts[0].numpy(), lmk[0].numpy()


def _template_landmarks(d):
    return np.einsum("kj,kjc->kc", d["lmk_bary_coords"].astype(np.float64),
                     d["v_template"].astype(np.float64)[d["faces"][d["lmk_faces_idx"]]])


def _eyeball_ids(d, joint):
    return np.nonzero(d["weights"][:, joint] > 0.999)[0]


# ------------------------------------------------------------------------------------------------ file & layout


def test_file_loads_and_validates(head):
    d = head
    assert BUILTIN_HEAD_PATH.is_file() and BUILTIN_HEAD_PATH.stat().st_size < 5e6
    assert str(d["name"]) == BUILTIN_HEAD_NAME
    F = d["faces"].shape[0]
    S, E = d["shapedirs"].shape[2], d["exprdirs"].shape[2]
    want = {"v_template": (V, 3), "faces": (F, 3), "shapedirs": (V, 3, S), "exprdirs": (V, 3, E),
            "posedirs": (V, 3, 36), "J_regressor": (5, V), "weights": (V, 5), "parents": (5,),
            "lmk_faces_idx": (68,), "lmk_bary_coords": (68, 3), "uv_faces": (F, 3), "uv_face_mask": (256, 256)}
    for key, shape in want.items():
        assert d[key].shape == shape, key
    for key in ("faces", "parents", "lmk_faces_idx", "uv_faces"):
        assert d[key].dtype == np.int64, key
    for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "lmk_bary_coords",
                "uvs", "uv_face_mask"):
        assert d[key].dtype == np.float32, key
        assert np.isfinite(d[key]).all(), key
    assert S >= 20 and E >= 10
    assert d["shape_names"].shape == (S,) and d["expression_names"].shape == (E,)
    assert d["parents"].tolist() == [-1, 0, 1, 1, 1]
    assert d["faces"].min() == 0 and d["faces"].max() == V - 1
    assert np.unique(d["faces"]).size == V                     # every vertex is used: a real surface of 5023
    np.testing.assert_allclose(d["weights"].sum(1), 1.0, atol=1e-5)
    assert d["weights"].min() >= 0
    np.testing.assert_allclose(d["J_regressor"].sum(1), 1.0, atol=1e-5)
    assert d["J_regressor"].min() >= 0
    assert d["lmk_faces_idx"].min() >= 0 and d["lmk_faces_idx"].max() < F
    np.testing.assert_allclose(d["lmk_bary_coords"].sum(1), 1.0, atol=1e-5)
    assert d["lmk_bary_coords"].min() >= -1e-6
    assert d["uvs"].min() >= 0 and d["uvs"].max() <= 1 and d["uv_faces"].max() < d["uvs"].shape[0]
    assert 0 <= d["uv_face_mask"].min() and d["uv_face_mask"].max() <= 1
    # Size like a FLAME head (metres, y up, face towards +z).
    lo, hi = d["v_template"].min(0), d["v_template"].max(0)
    assert 0.16 < hi[0] - lo[0] < 0.24 and 0.28 < hi[1] - lo[1] < 0.36 and 0.19 < hi[2] - lo[2] < 0.26
    assert hi[2] > 0.06 and lo[1] < -0.18


def test_loads_through_the_flame_model_layout():
    from core.flame.model_data import load_model_data

    data = load_model_data(BUILTIN_HEAD_PATH)
    assert data.n_vertices == V and data.name == BUILTIN_HEAD_NAME
    assert data.uvs is not None and data.uv_face_mask is not None


def test_topology(head):
    topo = builtin_head_topology()
    assert isinstance(topo, Topology)
    assert topo.faces.dtype == torch.long and topo.uv_faces.dtype == torch.long
    assert topo.faces.shape == topo.uv_faces.shape == head["faces"].shape
    assert topo.uvs.shape == head["uvs"].shape and topo.uvs.dtype == torch.float32
    assert topo.uv_face_mask.shape == (256, 256)


def test_surface_is_closed_and_consistently_oriented(head):
    f = head["faces"]
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = e[:, 0] * V + e[:, 1]
    assert np.unique(key).size == key.size                   # no directed edge twice
    assert np.isin(e[:, 1] * V + e[:, 0], key).all()         # every edge has its reverse: closed, oriented
    # Three closed pieces: the head with its mouth bag (a sphere) and two eyeball spheres.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    n, labels = connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V)))
    assert n == 3
    for c in range(3):
        fc = f[labels[f[:, 0]] == c]
        vc = np.unique(fc).size
        assert vc - len(fc) * 3 // 2 + len(fc) == 2          # Euler characteristic of a sphere
    for joint in (LEFT_EYE, RIGHT_EYE):
        ids = _eyeball_ids(head, joint)
        assert len(np.unique(labels[ids])) == 1 and np.sum(labels == labels[ids[0]]) == len(ids)


def test_script_is_deterministic(tmp_path, head):
    out = tmp_path / "head.npz"
    assert make_builtin_head(["--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        fresh = {k: z[k] for k in z.files}
    assert sorted(fresh) == sorted(head)
    for key in head:
        assert fresh[key].dtype == head[key].dtype, key
        if np.issubdtype(head[key].dtype, np.floating):
            # numpy's vectorised transcendentals (sin, exp, ...) differ in the last bit between CPUs (AVX2 vs
            # AVX-512), so the shipped floats are reproduced to rounding, not bit for bit, on another machine.
            scale = float(np.abs(head[key]).max()) or 1.0
            np.testing.assert_allclose(fresh[key], head[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)
        else:
            assert np.array_equal(fresh[key], head[key]), key


# ------------------------------------------------------------------------------------------------ evaluation


def test_zero_parameters_give_the_template(head):
    verts, lmk = _lbs(head)
    np.testing.assert_allclose(verts, head["v_template"], atol=1e-6)
    np.testing.assert_allclose(lmk, _template_landmarks(head), atol=1e-6)
    joints = head["J_regressor"].astype(np.float64) @ head["v_template"].astype(np.float64)
    eyes = [head["v_template"][_eyeball_ids(head, j)].astype(np.float64) for j in (LEFT_EYE, RIGHT_EYE)]
    for j, pts in zip((LEFT_EYE, RIGHT_EYE), eyes):
        radii = np.linalg.norm(pts - joints[j], axis=1)       # the eye joint is the eyeball's centre
        assert radii.std() < 1e-5 and 0.010 < radii.mean() < 0.015
    assert joints[LEFT_EYE, 0] > 0.02 and joints[RIGHT_EYE, 0] < -0.02
    assert joints[0, 1] < joints[1, 1] < joints[JAW, 1] < joints[LEFT_EYE, 1]   # root, neck, jaw, eyes upwards


def test_jaw_opens_the_mouth(head):
    lm0 = _template_landmarks(head)
    verts, lm = _lbs(head, pose={JAW: (0.3, 0.0, 0.0)})
    v0 = head["v_template"].astype(np.float64)
    lower_lip = [56, 57, 58, 65, 66, 67]
    assert (lm[lower_lip, 1] - lm0[lower_lip, 1] < -0.005).all()
    assert lm[8, 1] - lm0[8, 1] < -0.008                         # the chin drops
    assert lm[66, 1] < lm[62, 1] - 0.008                         # the lips part
    still = list(range(17, 48))                                  # brows, nose bridge, nostrils, eyes
    np.testing.assert_allclose(lm[still], lm0[still], atol=1e-6)
    forehead = (v0[:, 1] > 0.06) | (v0[:, 2] < -0.08) & (v0[:, 1] > -0.02)
    np.testing.assert_allclose(verts[forehead], v0[forehead], atol=1e-6)
    assert np.abs(lm[[50, 51, 52]] - lm0[[50, 51, 52]]).max() < 5e-4   # the upper lip stays


def test_eye_rotation_moves_only_the_eyeballs(head):
    v0 = head["v_template"].astype(np.float64)
    for joint in (LEFT_EYE, RIGHT_EYE):
        verts, lm = _lbs(head, pose={joint: (0.3, 0.4, 0.0)})
        moved = np.nonzero(np.abs(verts - v0).max(1) > 1e-7)[0]
        ids = _eyeball_ids(head, joint)
        assert set(moved) <= set(ids) and len(moved) > 0.9 * len(ids)
        centre = head["J_regressor"][joint].astype(np.float64) @ v0
        np.testing.assert_allclose(np.linalg.norm(verts[ids] - centre, axis=1),
                                   np.linalg.norm(v0[ids] - centre, axis=1), atol=1e-6)   # a rigid turn
        np.testing.assert_allclose(lm, _template_landmarks(head), atol=1e-7)


def test_shape_and_expression_bases(head):
    S = head["shapedirs"].reshape(-1, head["shapedirs"].shape[2]).astype(np.float64)
    norms = np.linalg.norm(S, axis=0)
    cos = (S / norms).T @ (S / norms)
    assert np.abs(cos - np.eye(len(cos))).max() < 0.02              # orthogonal components
    # One standard deviation moves the head by millimetres, not centimetres.
    peak = np.abs(head["shapedirs"]).max(axis=(0, 1))
    assert (peak > 0.001).all() and (peak < 0.012).all()
    # Eyeballs move rigidly with the shape and stay put under expressions.
    for joint in (LEFT_EYE, RIGHT_EYE):
        ids = _eyeball_ids(head, joint)
        d = head["shapedirs"][ids]
        assert np.abs(d - d[:1]).max() < 1e-6
        assert np.abs(head["exprdirs"][ids]).max() == 0.0
    names = [str(n) for n in head["expression_names"]]
    lm0 = _template_landmarks(head)

    def expr(name, value=1.0):
        e = np.zeros(len(names))
        e[names.index(name)] = value
        return _lbs(head, expression=e)[1]

    lm = expr("eye_close_left")                                     # upper lid meets the lower lid
    assert np.abs(lm[[43, 44], 1] - lm[[47, 46], 1]).max() < 0.002
    np.testing.assert_allclose(lm[36:42], lm0[36:42], atol=1e-6)      # the right eye stays open
    lm = expr("eye_close_right")
    assert np.abs(lm[[37, 38], 1] - lm[[41, 40], 1]).max() < 0.002
    lm = expr("smile_left")
    assert lm[54, 1] - lm0[54, 1] > 0.003 and abs(lm[48, 1] - lm0[48, 1]) < 0.001
    lm = expr("brow_raise_right")
    assert lm[19, 1] - lm0[19, 1] > 0.003 and abs(lm[24, 1] - lm0[24, 1]) < 0.001
    lm = expr("lower_lip_depress")
    assert lm[57, 1] - lm0[57, 1] < -0.002 and abs(lm[51, 1] - lm0[51, 1]) < 0.0005
    lm = expr("lip_pucker")
    assert (lm[54, 0] - lm[48, 0]) < (lm0[54, 0] - lm0[48, 0]) - 0.006 and lm[51, 2] > lm0[51, 2] + 0.003


# ------------------------------------------------------------------------------------------------ the generator's view


def test_front_view_sees_the_face(head):
    topo = builtin_head_topology()
    uv3 = torch.cat([topo.uvs * 2 - 1, torch.ones_like(topo.uvs[:, :1])], -1)
    uv3[:, 1] = -uv3[:, 1]
    face_uv = uv3[topo.uv_faces]
    verts = torch.tensor(np.array(head["v_template"]))[None]
    views = rasterize_views(verts, topo.faces, face_uv)
    front = views[0][0]
    lm = torch.as_tensor(_template_landmarks(head), dtype=torch.float32)[None]
    lm2d = front_landmarks_2d(lm)[0]
    col, row = ((lm2d + 1) * 128 - 0.5).round().long()[30].tolist()        # the nose tip's pixel
    assert front[3, row, col] == 1.0 and front[3, 0, 0] == 0.0 and front[3, 255, 255] == 0.0
    # The pixel shows the front of the face (the face region of the UV map), not the back of the head.
    alphas = view_alphas(views, topo.uv_face_mask[None, None])
    assert alphas[0, 0, row, col] > 0.99
    for k in (36, 45, 48, 54, 8, 19):
        c, r = ((lm2d[k] + 1) * 128 - 0.5).round().long().tolist()
        assert front[3, r, c] == 1.0
    # The face is where FLAME's is: about 25 px from the nose tip to the mouth, eyes 10-16 px above the tip.
    px = (lm2d + 1) * 128
    assert 10 < px[39, 1] - px[30, 1] < 30 and 10 < px[30, 1] - px[51, 1] < 35


def test_mouth_box_lies_inside_the_view(head):
    lm = torch.as_tensor(_template_landmarks(head), dtype=torch.float32)[None]
    r0, r1, c0, c1 = mouth_box(front_landmarks_2d(lm))[0].tolist()
    assert 0 < r0 < r1 < 256 and 0 < c0 < c1 < 256
    assert 30 <= r1 - r0 <= 50                                   # FLAME's demo mesh: about 40 px
    assert abs((c0 + c1) / 2 - 128) <= 2 and 90 <= (r0 + r1) / 2 <= 112
    # Still inside with the mouth open and a strong expression.
    names = [str(n) for n in head["expression_names"]]
    e = np.zeros(len(names))
    e[names.index("lip_pucker")] = 2.0
    e[names.index("lower_lip_depress")] = 2.0
    _, lm = _lbs(head, expression=e, pose={JAW: (0.4, 0.0, 0.0)})
    r0, r1, c0, c1 = mouth_box(front_landmarks_2d(torch.as_tensor(lm, dtype=torch.float32)[None]))[0].tolist()
    assert 0 < r0 < r1 < 256 and 0 < c0 < c1 < 256


def test_landmarks_are_anatomically_ordered(head):
    lm = _template_landmarks(head)
    x, y, z = lm[:, 0], lm[:, 1], lm[:, 2]
    assert np.argmax(z[27:36]) == 3                              # 30, the nose tip, is the front-most
    assert np.argmin(y[:17]) == 8                                # 8, the chin, is the lowest of the jaw line
    assert (np.diff(x[:17]) > 0).all()                           # jaw line from the right (-x) to the left
    assert (x[36:42] < -0.01).all() and (x[42:48] > 0.01).all()  # right eye on -x, left eye on +x
    assert (x[17:22] < 0).all() and (x[22:27] > 0).all()
    assert (np.diff(x[17:27]) > 0).all() and (np.diff(y[27:31]) < 0).all() and (np.diff(x[31:36]) > 0).all()
    assert x[36] < x[39] and x[42] < x[45]                       # outer-to-inner, inner-to-outer corners
    assert y[37] > y[41] and y[38] > y[40] and y[43] > y[47] and y[44] > y[46]
    assert (np.diff(x[48:55]) > 0).all() and (np.diff(x[54:60]) < 0).all()
    assert (y[49:54] > y[[48, 54]].max()).all() and (y[55:60] < y[[48, 54]].min()).all()
    assert (np.diff(x[60:65]) > 0).all() and (np.diff(x[64:68]) < 0).all()
    brows, eyes, mouth = y[17:27].min(), y[36:48], y[48:68]
    assert brows > eyes.max() > eyes.min() > y[30] > y[33] > mouth.max() > mouth.min() > y[8]
    assert y[51] > y[62] >= y[66] > y[57]                        # outer upper lip, inner lips, outer lower lip
    # Left-right mirror symmetry of the layout.
    mirror = list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31] + \
        [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + \
        [64, 63, 62, 61, 60, 67, 66, 65]
    np.testing.assert_allclose(lm[mirror] * [-1, 1, 1], lm, atol=1e-3)


def test_uv_layout_and_mask(head):
    uv, uvf = head["uvs"].astype(np.float64), head["uv_faces"]
    a, b, c = uv[uvf[:, 0]], uv[uvf[:, 1]], uv[uvf[:, 2]]
    signed = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (signed >= -1e-12).all()                              # no folded UV triangles
    assert signed.sum() / 2 < 1.0                                # islands do not overlap (total area < 1)
    mask = head["uv_face_mask"]

    def mask_at(u, v):
        return mask[min(int((1 - v) * 256), 255), min(int(u * 256), 255)]

    # The face (nose tip) is in the middle of the map and inside the mask; the back of the head is not.
    f = head["faces"]
    v0 = head["v_template"]
    tip = int(np.argmax(np.where(np.abs(v0[:, 0]) < 0.002, v0[:, 2], -1)))
    fi, corner = np.argwhere(f == tip)[0]
    u, v = uv[uvf[fi, corner]]
    assert abs(u - 0.5) < 0.05 and 0.4 < v < 0.75 and mask_at(u, v) > 0.99
    back = int(np.argmin(v0[:, 2]))
    fi, corner = np.argwhere(f == back)[0]
    assert mask_at(*uv[uvf[fi, corner]]) == 0.0
    assert 0.1 < mask.mean() < 0.35
