"""A full-size FLAME-layout model made from nothing licensed: the stand-in for FLAME 2020's generic_model.pkl.

Topology and template come from the shared reference numbers (../shared/reference/next3d_small): FLAME's 9976
faces (`state_dict.npz`, key `faces`) and the official demo mesh with its 68 landmarks (`case0.npz`, key `v`,
[1, 5023 + 68, 3]), so faces, vertices and landmarks agree with what the official generator was run on. Everything
else is made up, smooth and deterministic:
- 300 shape and 100 expression bases: random combinations of low-order polynomials and Gaussian bumps of the
  template coordinates (eyeballs move rigidly with identity and not with expression); expression components are
  confined to the face and strongest at the mouth, the first three a jaw drop, a smile and a brow raise;
- 36 pose correctives, small: the neck's below the neck joint, the jaw's on the jaw region, none for the eyes;
- FLAME's 5-joint tree; the joint regressor averages rings of vertices (the neck's open end, a ring round the
  upper neck, both jaw hinges) and the eyeballs; skinning by region: eyeballs to the eye joints, the lower face
  under the lips to the jaw, the end of the neck partly to the root, the rest to the neck joint;
- landmark embeddings: each reference landmark's nearest surface point (so the 68 landmarks of v_template are the
  reference ones), the jaw contour for each neck yaw slid around the jaw as the silhouette would.
The real FLAME model differs in every basis and weight; only its file layout is reproduced here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.official_formats.flame_pickle import FLAME_KINTREE, FlameArrays

from .surface import closest_points, evaluate

N_VERTICES, N_FACES, N_SHAPE, N_EXPR, N_POSE = 5023, 9976, 300, 100, 36
LEFT_EYE, RIGHT_EYE = np.arange(3931, 4477), np.arange(4477, 5023)   # FLAME's eyeball vertices (+x first)
N_YAWS = 79        # dynamic contour rows: neck yaw 0..39 degrees, then -1..-39 (see row_yaw_degrees)
SEED = 19


class ReferenceMissing(RuntimeError):
    """The shared reference numbers (FLAME's faces, the demo mesh) are not where they were looked for."""


def read_reference(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces [9976, 3] int64, template vertices [5023, 3], landmarks [68, 3]) from the shared reference."""
    sd_path, case_path = folder / "state_dict.npz", folder / "case0.npz"
    for path, key in ((sd_path, "faces"), (case_path, "v")):
        if not path.is_file():
            raise ReferenceMissing(f"{path} does not exist; the stand-ins take FLAME's face list and the demo mesh "
                                   "from the shared reference folder (../shared/reference/next3d_small). Give it "
                                   "with --reference DIR.")
        with np.load(path) as data:
            if key not in data.files:
                raise ReferenceMissing(f"{path} has no '{key}' array; it is not the next3d_small reference.")
    with np.load(sd_path) as data:
        faces = np.asarray(data["faces"]).reshape(-1, 3).astype(np.int64)
    with np.load(case_path) as data:
        v = np.asarray(data["v"], dtype=np.float64).reshape(-1, 3)
    if faces.shape != (N_FACES, 3) or v.shape != (N_VERTICES + 68, 3):
        raise ReferenceMissing(f"{folder} holds {len(faces)} faces and {len(v)} mesh points; expected FLAME's "
                               f"{N_FACES} faces and {N_VERTICES} vertices + 68 landmarks.")
    return faces, v[:N_VERTICES], v[N_VERTICES:]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def row_yaw_degrees(row: int) -> float:
    """The neck yaw (Euler angle about y, degrees) a dynamic-contour row is for: smplx/DECA index the table with
    round(-yaw) for 0..39 and 39 - round(-yaw) for the negative side."""
    return -float(row) if row < 40 else float(row - 39)


def _neck_distance(faces: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Edges from the neck's open boundary to each vertex [V] (the boundary loop lowest on the mesh; FLAME's other
    open loop is the mouth). Rings of equal distance run round the neck, which is slanted, unlike height slices."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    boundary = np.unique(unique[count == 1])
    labels = np.arange(len(v))          # connected components of the boundary edges, by label propagation
    b_edges = unique[count == 1]
    while True:
        low = np.minimum(labels[b_edges[:, 0]], labels[b_edges[:, 1]])
        new = labels.copy()
        np.minimum.at(new, b_edges[:, 0], low)
        np.minimum.at(new, b_edges[:, 1], low)
        if np.array_equal(new, labels):
            break
        labels = new
    loops = [boundary[labels[boundary] == lab] for lab in np.unique(labels[boundary])]
    neck = min(loops, key=lambda loop: v[loop, 1].mean())
    dist = np.full(len(v), -1)
    dist[neck] = 0
    frontier, d = neck, 0
    both = np.concatenate([unique, unique[:, ::-1]])
    while len(frontier):
        d += 1
        reach = both[np.isin(both[:, 0], frontier), 1]
        frontier = np.unique(reach[dist[reach] < 0])
        dist[frontier] = d
    return dist


class _Regions:
    """Where things are on the reference template (metres, FLAME axes: x to the subject's left, y up, +z front)."""

    def __init__(self, v: np.ndarray, lmk: np.ndarray, faces: np.ndarray) -> None:
        self.v, self.lmk = v, lmk
        self.eye = np.zeros(len(v), bool)
        self.eye[LEFT_EYE] = self.eye[RIGHT_EYE] = True
        self.skin = np.nonzero(~self.eye)[0]
        self.mouth_y = float(lmk[60:68, 1].mean())      # between the inner lips
        self.chin_y = float(lmk[8, 1])
        self.mouth_center = lmk[48:68].mean(0)
        self.neck_dist = _neck_distance(faces, v)

    def ring(self, d: int) -> np.ndarray:
        """The vertices `d` edges up from the neck's open end: a ring round the neck."""
        return np.nonzero(self.neck_dist == d)[0]

    def nearest(self, point: np.ndarray, k: int) -> np.ndarray:
        d = ((self.v[self.skin] - point) ** 2).sum(1)
        return self.skin[np.argsort(d, kind="stable")[:k]]


def joint_regressor(r: _Regions) -> np.ndarray:
    """[5, V]: global (the neck's open end), neck (a ring 8 edges up, behind the jaw), jaw (vertices at both
    hinges in front of the ears, whose mean lies between them), the two eyeballs' means."""
    reg = np.zeros((5, N_VERTICES))
    rows = [r.ring(0), r.ring(8),
            np.concatenate([r.nearest(r.lmk[1], 12), r.nearest(r.lmk[15], 12)]), LEFT_EYE, RIGHT_EYE]
    for j, idx in enumerate(rows):
        reg[j, idx] = 1.0 / len(idx)
    return reg


def skinning_weights(r: _Regions, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, 5] weights (rows sum to 1) and the jaw's share [V] (used to place expression and pose bases)."""
    x, y, z = r.v.T
    hinge_z = joints[2, 2]
    jaw = (_sigmoid((r.mouth_y - y) / 0.003) * _sigmoid((z - hinge_z + 0.005) / 0.008)
           * _sigmoid((y - (r.chin_y - 0.03)) / 0.008))
    root = 0.7 * _sigmoid((3 - r.neck_dist) / 1.0)
    jaw = jaw * (1 - root)
    w = np.zeros((N_VERTICES, 5))
    w[:, 0], w[:, 2] = root, jaw
    w[:, 1] = 1 - root - jaw
    w[r.eye] = 0
    w[LEFT_EYE, 3] = w[RIGHT_EYE, 4] = 1
    jaw[r.eye] = 0
    return w, jaw


def _features(points: np.ndarray, center: np.ndarray, bumps: np.ndarray, width: float) -> np.ndarray:
    """Smooth scalar functions of position: monomials of degree <= 3, then Gaussian bumps. [N, P]."""
    u = (points - center) / 0.1
    cols = [u[:, 0] ** a * u[:, 1] ** b * u[:, 2] ** c
            for a in range(4) for b in range(4) for c in range(4) if a + b + c <= 3]
    cols += [np.exp(-((points - b) ** 2).sum(1) / (2 * width ** 2)) for b in bumps]
    return np.stack(cols, 1)


def _random_fields(feats: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random displacement fields [V, 3, n] from the features (columns scaled to unit RMS first)."""
    scale = np.sqrt((feats ** 2).mean(0))
    coef = rng.standard_normal((feats.shape[1], 3, n))
    unit = feats / np.maximum(scale, 1e-12)
    # Accumulated feature by feature, not by a BLAS product, whose rounding depends on threads and alignment: the
    # same bytes on every run.
    out, term = np.zeros((len(feats), 3 * n)), np.empty((len(feats), 3 * n))
    for p in range(feats.shape[1]):
        out += np.multiply(unit[:, p, None], coef[p].reshape(1, -1), out=term)
    return out.reshape(len(feats), 3, n)


def _scale_rms(fields: np.ndarray, rms: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Each component [.., k] scaled so its RMS displacement over the vertices `over` is rms[k]."""
    now = np.sqrt((fields[over] ** 2).sum(1).mean(0))
    return fields * (rms / np.maximum(now, 1e-12))


def _gauss(v: np.ndarray, c: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((v - c) ** 2).sum(1) / (2 * width ** 2))


def blend_shapes(r: _Regions, jaw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """shapedirs [V, 3, 300 + 100]."""
    v = r.v
    center = v[r.skin].mean(0)
    bumps = v[rng.choice(r.skin, 100, replace=False)]
    # Identity: the eyeballs take the displacement of their centres, so they move rigidly.
    pts = v.copy()
    pts[LEFT_EYE], pts[RIGHT_EYE] = v[LEFT_EYE].mean(0), v[RIGHT_EYE].mean(0)
    shape = _random_fields(_features(pts, center, bumps, 0.035), N_SHAPE, rng)
    shape = _scale_rms(shape, 0.004 / np.sqrt(1 + np.arange(N_SHAPE) / 4), r.skin)

    # Expression: on the face only (in front of the ears), strongest about the mouth; eyeballs still.
    face = _sigmoid((v[:, 2] + 0.01) / 0.01) * (0.3 + _gauss(v, r.mouth_center, 0.03))
    face[r.eye] = 0
    expr = _random_fields(_features(v, center, bumps, 0.025), N_EXPR, rng) * face[:, None, None]
    lips = _gauss(v, r.mouth_center, 0.02)
    up = np.array([0.0, 1.0, 0.0])
    expr[:, :, 0] = jaw[:, None] * np.array([0.0, -1.0, -0.35])        # jaw drop
    for corner, side in ((r.lmk[48], -1), (r.lmk[54], 1)):               # smile: corners up and out
        expr[:, :, 1] += _gauss(v, corner, 0.012)[:, None] * (up + np.array([0.6 * side, 0, -0.3]))
    expr[:, :, 1] += 0.2 * lips[:, None] * np.array([0, 0, -1.0])
    brows = np.zeros(N_VERTICES)
    for p in r.lmk[17:27]:                                               # brow raise
        brows = np.maximum(brows, _gauss(v, p, 0.012))
    expr[:, :, 2] = brows[:, None] * up
    expr[r.eye] = 0
    expr = _scale_rms(expr, 0.002 / np.sqrt(1 + np.arange(N_EXPR) / 4), r.skin)
    return np.concatenate([shape, expr], 2)


def pose_correctives(r: _Regions, jaw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """posedirs [V, 3, 36] (FLAME's layout: 9 entries of (R - I) for each non-root joint)."""
    v = r.v
    feats = _features(v, v[r.skin].mean(0), v[rng.choice(r.skin, 40, replace=False)], 0.04)
    posedirs = np.zeros((N_VERTICES, 3, N_POSE))
    neck = _sigmoid((9 - r.neck_dist) / 1.5)
    neck[r.eye] = 0
    for part, mask in ((0, neck), (1, jaw)):
        fields = _random_fields(feats, 9, rng) * mask[:, None, None]
        posedirs[:, :, 9 * part:9 * part + 9] = _scale_rms(fields, np.full(9, 0.0015), r.skin)
    return posedirs


def landmark_embeddings(r: _Regions, faces: np.ndarray) -> dict:
    """Static (51), dynamic contour (79 x 17) and 'full' (68) embeddings whose zero-yaw points are the reference
    landmarks' nearest surface points."""
    skin_faces = np.nonzero(~r.eye[faces].any(1))[0]
    idx, bary = closest_points(r.lmk, r.v, faces, skin_faces)
    # The contour slides around a vertical axis behind the jaw as the head turns: seen from a camera that the head
    # has turned away from by yaw, the silhouette sits that much further round (docs/flame.md, landmarks).
    contour = r.lmk[:17]
    axis_z = float(contour[[0, 16], 2].mean())
    phi = np.arctan2(contour[:, 0], contour[:, 2] - axis_z)
    radius = np.hypot(contour[:, 0], contour[:, 2] - axis_z)
    queries = []
    for row in range(N_YAWS):
        turned = np.clip(phi - 0.8 * np.radians(row_yaw_degrees(row)), -np.radians(110), np.radians(110))
        queries.append(np.stack([radius * np.sin(turned), contour[:, 1], axis_z + radius * np.cos(turned)], 1))
    queries = np.concatenate(queries)
    queries[:17] = contour          # row 0 is the zero-yaw contour itself
    d_idx, d_bary = closest_points(queries, r.v, faces, skin_faces)
    return {"static_idx": idx[17:].astype(np.uint32), "static_bary": bary[17:],
            "dynamic_idx": d_idx.reshape(N_YAWS, 17), "dynamic_bary": d_bary.reshape(N_YAWS, 17, 3),
            "full_idx": idx, "full_bary": bary}


def build_flame(reference: Path, seed: int = SEED) -> FlameArrays:
    """The stand-in FLAME 2020 model and its landmark embeddings, as the official files hold them."""
    faces, v, lmk = read_reference(Path(reference))
    rng = np.random.default_rng(seed)
    regions = _Regions(v, lmk, faces)
    regressor = joint_regressor(regions)
    joints = (regressor[:, :, None] * v[None]).sum(1)     # not a BLAS product (see _random_fields)
    weights, jaw = skinning_weights(regions, joints)
    shapedirs = blend_shapes(regions, jaw, rng)
    posedirs = pose_correctives(regions, jaw, rng)
    emb = landmark_embeddings(regions, faces)
    return FlameArrays(v_template=v, f=faces.astype(np.uint32), shapedirs=_float32_grid(shapedirs),
                       posedirs=_float32_grid(posedirs), J_regressor=regressor, weights=_float32_grid(weights),
                       kintree_table=FLAME_KINTREE.copy(), J=joints, **emb)


def _float32_grid(x: np.ndarray) -> np.ndarray:
    """float64 values rounded to float32's grid: numpy's SIMD paths (exp, reductions) can differ in the last bit
    with the memory alignment of a run, and this rounding absorbs that, so every run writes the same bytes."""
    return x.astype(np.float32).astype(np.float64)


def landmarks_of(m: FlameArrays) -> np.ndarray:
    """The 68 zero-yaw landmarks the embeddings give on the template (contour row 0, then the 51 static)."""
    f = m.f.astype(np.int64)
    return np.concatenate([evaluate(m.v_template, f, m.dynamic_idx[0], m.dynamic_bary[0]),
                           evaluate(m.v_template, f, m.static_idx.astype(np.int64), m.static_bary)])
