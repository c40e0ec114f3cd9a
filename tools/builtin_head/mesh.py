"""The whole mesh: the eye and mouth regions, seam, neck rim and fill, triangulated and relaxed, the slit split
into two lips, the mouth bag and the eyeballs, with the bookkeeping (vertex ranges, region records) the UV,
skinning, landmark and blend-shape stages read."""

from __future__ import annotations

import numpy as np

from .anatomy import N_VERTICES
from .eyeballs import N_EYEBALL, build_eyeball, eyeball_faces
from .eyes import EYE_EXCLUDE_M, build_eye_region, eye_level_of_rays
from .fill import N_CANDIDATES, SEAM_SPACING, build_neck_rim, build_seam, farthest_points, fibonacci_sphere, spacing
from .mouth import N_SLIT, build_mouth_region, mouth_chart_of_rays, mouth_excluded, slit_y
from .mouth_bag import BAG_LOOPS, bag_faces, bag_positions
from .rays import ray_origins, surface_from_param
from .triangulation import directed_edge_problems, relax, triangulate

RELAX_ITERS = 4


def build_mesh():
    """All vertices, faces and the bookkeeping the later stages need."""
    eye_regions = [build_eye_region(0), build_eye_region(1)]
    m_param, m_pos, m_chart, m_recs = build_mouth_region()
    poles, seam = build_seam()
    seam_pos = surface_from_param(seam)
    pole_pos = surface_from_param(poles)
    rim = build_neck_rim()
    rim_pos = surface_from_param(rim)

    n_eye = sum(len(r[0]) for r in eye_regions)
    n_struct = n_eye + len(m_param) + 2 + len(seam) + len(rim)
    n_lower = N_SLIT - 2
    n_ring = 2 * N_SLIT - 2
    n_bag = BAG_LOOPS * n_ring
    n_fill = N_VERTICES - n_struct - n_lower - n_bag - 2 * N_EYEBALL
    if n_fill <= 0:
        raise RuntimeError("no vertices left for the fill")

    cand = fibonacci_sphere(N_CANDIDATES)
    cand_pos = surface_from_param(cand)
    origins = ray_origins(cand)
    keep = ~mouth_excluded(origins, cand)
    for e in (0, 1):
        keep &= eye_level_of_rays(e, origins, cand) > EYE_EXCLUDE_M
    keep &= ~((np.abs(cand[:, 0]) * 0.12 < 0.45 * SEAM_SPACING) & (cand[:, 2] < 0))
    keep &= np.abs(cand[:, 1]) < 0.9995
    cand, cand_pos = cand[keep], cand_pos[keep]
    fixed = np.concatenate([eye_regions[0][1], eye_regions[1][1], m_pos, pole_pos, seam_pos, rim_pos])
    chosen = farthest_points(cand_pos, fixed, n_fill, spacing(cand_pos))
    fill, fill_pos = cand[chosen], cand_pos[chosen]

    # Skin vertex order: left eye region, right eye region, mouth (slit first), bottom pole, top pole, seam,
    # neck rim, fill.
    params = np.concatenate([eye_regions[0][0], eye_regions[1][0], m_param, poles, seam, rim, fill])
    pos = np.concatenate([eye_regions[0][1], eye_regions[1][1], m_pos, pole_pos, seam_pos, rim_pos, fill_pos])
    n_skin = len(params)
    eye_start = [0, len(eye_regions[0][0])]
    mouth_start = n_eye
    pole_ids = (mouth_start + len(m_param), mouth_start + len(m_param) + 1)
    seam_ids = np.arange(pole_ids[1] + 1, pole_ids[1] + 1 + len(seam))

    faces = triangulate(params)
    free = np.zeros(n_skin, dtype=bool)
    free[seam_ids[-1] + 1 + len(rim):] = True
    free &= ~((np.abs(pos[:, 0]) < 1.5 * SEAM_SPACING) & (pos[:, 2] < -0.02))
    for _ in range(RELAX_ITERS):
        params, pos = relax(params, pos, faces, free)
        faces = triangulate(params)
    edges = set(map(tuple, np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)))
    slit = mouth_start + np.arange(N_SLIT)
    for k in range(N_SLIT - 1):
        if (min(slit[k], slit[k + 1]), max(slit[k], slit[k + 1])) not in edges:
            raise RuntimeError(f"slit edge {k} is missing from the triangulation")
    chain = np.concatenate([[pole_ids[0]], seam_ids, [pole_ids[1]]])
    for k in range(len(chain) - 1):
        if (min(chain[k], chain[k + 1]), max(chain[k], chain[k + 1])) not in edges:
            raise RuntimeError(f"seam edge {k} is missing from the triangulation")

    # Split the slit: faces below it take lower-lip copies of the interior slit vertices.
    chart, _ = mouth_chart_of_rays(ray_origins(params), params)
    below = chart[:, 1] - slit_y(chart[:, 0]) < 0
    interior = set(slit[1:-1].tolist())
    lower_of = {int(s): n_skin + k for k, s in enumerate(slit[1:-1])}
    slit_set = set(slit.tolist())
    for fi, f in enumerate(faces):
        if not interior.intersection(f.tolist()):
            continue
        others = [v for v in f if v not in slit_set]
        if not others:
            raise RuntimeError("a face lies entirely on the slit")
        votes = [bool(below[v]) for v in others]
        if all(votes) != any(votes):
            raise RuntimeError("a face straddles the slit")
        if votes[0]:
            faces[fi] = [lower_of.get(int(v), int(v)) for v in f]
    lower_ids = np.array([lower_of[int(s)] for s in slit[1:-1]])
    pos = np.concatenate([pos, pos[slit[1:-1]]])
    params_all = np.concatenate([params, params[slit[1:-1]]])

    # Mouth bag behind the slit.
    ring = np.concatenate([[slit[0]], slit[1:-1], [slit[-1]], lower_ids[::-1]])
    ring_side = np.concatenate([[0.0], np.ones(N_SLIT - 2), [0.0], -np.ones(N_SLIT - 2)])
    bag = bag_positions(pos[ring], ring_side)
    bag_start = len(pos)
    rings = [ring.tolist()] + [list(range(bag_start + j * n_ring, bag_start + (j + 1) * n_ring))
                               for j in range(BAG_LOOPS)]
    pos = np.concatenate([pos, bag.reshape(-1, 3)])
    bfaces = np.array(bag_faces(rings), dtype=np.int64)
    trial = np.concatenate([faces, bfaces])
    if directed_edge_problems(trial) != (0, 0):
        bfaces = bfaces[:, [0, 2, 1]]

    # Eyeballs.
    eyeball_start = [len(pos), len(pos) + N_EYEBALL]
    eyeball_info = []
    all_faces = [faces, bfaces]
    for e in (0, 1):
        v, polar, azim = build_eyeball(e)
        pos = np.concatenate([pos, v])
        ef, corners = eyeball_faces(eyeball_start[e])
        all_faces.append(ef)
        eyeball_info.append((polar, azim, corners))
    all_faces = np.concatenate(all_faces)
    if len(pos) != N_VERTICES:
        raise RuntimeError(f"{len(pos)} vertices instead of {N_VERTICES}")
    problems = directed_edge_problems(all_faces)
    if problems != (0, 0):
        raise RuntimeError(f"the mesh is not a consistently oriented closed surface: {problems}")

    return dict(
        pos=pos, faces=all_faces, n_skin_faces=len(faces), n_bag_faces=len(bfaces), params=params_all,
        n_skin=n_skin, n_skin_all=n_skin + n_lower, eye_regions=eye_regions, eye_start=eye_start,
        mouth_start=mouth_start, mouth_chart=m_chart, mouth_recs=m_recs, slit=slit, lower_ids=lower_ids,
        pole_ids=pole_ids, seam_ids=seam_ids, ring=ring, ring_side=ring_side, bag_start=bag_start,
        n_ring=n_ring, eyeball_start=eyeball_start, eyeball_info=eyeball_info,
    )
