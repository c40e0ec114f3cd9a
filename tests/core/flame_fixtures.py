"""Test helper: a tiny synthetic FLAME-layout model, and hostile FLAME files.

The official formats (the Python 2 protocol-2 pickle with chumpy and scipy.sparse objects, the landmark .pkl and
.npy files) are written by tools/official_formats/flame_pickle.py, re-exported here; the same emitter writes the
hostile variants the reader must refuse.

The synthetic model (40 vertices, 42 faces, 4 shape + 3 expression components, 5 joints with FLAME's tree):
    0-3    neck base ring   skinned 0.7 global + 0.3 neck; the only vertices with neck pose correctives
    4-7    neck ring        neck
    8-19   upper head/face  neck (8 and 9 are the "ears" that regress the jaw joint)
    20-27  lower face/mouth jaw (20, 21 blend 0.5 neck + 0.5 jaw); the only vertices with jaw correctives
    28-33  left eyeball     100% left eye joint (an octahedron about the joint, at +x)
    34-39  right eyeball    100% right eye joint (at -x)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.official_formats.flame_pickle import *  # noqa: F401,F403 - the emitter and official layouts
from tools.official_formats.flame_pickle import (  # noqa: F401 - names used below and by the tests
    _NO_STATE, ROOT_PARENT, FlameArrays, Global, Reduce, chumpy, flame_model_tree, npy_object_bytes, pickle_bytes)

GROUPS = {
    "base": np.arange(0, 4), "neck": np.arange(4, 8), "head": np.arange(8, 20), "jaw": np.arange(20, 28),
    "left_eye": np.arange(28, 34), "right_eye": np.arange(34, 40),
}
N_SHAPE, N_EXPR = 4, 3
N_STRIP_FACES = 26      # faces 0..25: (i, i+1, i+2) over vertices 0..27; faces 20..25 touch only jaw vertices


# ----------------------------------------------------------------------------------------------------------------
# The synthetic model

@dataclass
class SyntheticFlame(FlameArrays):
    groups: dict = field(default_factory=lambda: dict(GROUPS))

    @property
    def expected_lmk_idx(self) -> np.ndarray:
        """The 68-point static embedding the converter must build: contour row 0, then the 51 static points."""
        return np.concatenate([self.dynamic_idx[0], self.static_idx]).astype(np.int64)

    @property
    def expected_lmk_bary(self) -> np.ndarray:
        return np.concatenate([self.dynamic_bary[0], self.static_bary])


def _octahedron(center, r: float) -> np.ndarray:
    c = np.asarray(center, dtype=np.float64)
    offsets = np.array([[r, 0, 0], [-r, 0, 0], [0, r, 0], [0, -r, 0], [0, 0, r], [0, 0, -r]])
    return c + offsets


_OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def _bary(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.dirichlet(np.ones(3), size=shape)


def make_synthetic_flame(seed: int = 0) -> SyntheticFlame:
    rng = np.random.default_rng(seed)
    ring = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float64)
    base = np.stack([0.05 * ring[:, 0], np.full(4, -0.12), -0.02 + 0.05 * ring[:, 1]], 1)
    neck = np.stack([0.045 * ring[:, 0], np.full(4, -0.06), -0.02 + 0.045 * ring[:, 1]], 1)
    head = np.array([[0.07, -0.02, -0.01], [-0.07, -0.02, -0.01], [0.0, 0.10, 0.02], [0.05, 0.08, 0.0],
                     [-0.05, 0.08, 0.0], [0.0, 0.06, 0.07], [0.045, 0.0, 0.06], [-0.045, 0.0, 0.06],
                     [0.0, 0.01, 0.09], [0.02, -0.01, 0.075], [-0.02, -0.01, 0.075], [0.0, 0.05, -0.08]])
    jaw = np.array([[0.05, -0.05, 0.04], [-0.05, -0.05, 0.04], [0.0, -0.09, 0.06], [0.025, -0.04, 0.07],
                    [-0.025, -0.04, 0.07], [0.0, -0.035, 0.075], [0.0, -0.05, 0.072], [0.03, -0.075, 0.05]])
    v = np.concatenate([base, neck, head, jaw, _octahedron([0.03, 0.03, 0.03], 0.012),
                        _octahedron([-0.03, 0.03, 0.03], 0.012)])
    V = len(v)

    strip = np.array([[i, i + 1, i + 2] if i % 2 == 0 else [i + 1, i, i + 2] for i in range(N_STRIP_FACES)])
    faces = np.concatenate([strip, _OCTA_FACES + 28, _OCTA_FACES + 34]).astype(np.uint32)

    weights = np.zeros((V, 5))
    weights[GROUPS["base"], 0], weights[GROUPS["base"], 1] = 0.7, 0.3
    weights[GROUPS["neck"], 1] = 1
    weights[GROUPS["head"], 1] = 1
    weights[GROUPS["jaw"], 2] = 1
    weights[[20, 21], 1], weights[[20, 21], 2] = 0.5, 0.5
    weights[GROUPS["left_eye"], 3] = 1
    weights[GROUPS["right_eye"], 4] = 1

    regressor = np.zeros((5, V))
    regressor[0, GROUPS["base"]] = 0.25
    regressor[1, GROUPS["neck"]] = 0.25
    regressor[2, [8, 9]] = 0.5
    regressor[3, GROUPS["left_eye"]] = 1 / 6
    regressor[4, GROUPS["right_eye"]] = 1 / 6

    shapedirs = rng.normal(scale=0.003, size=(V, 3, N_SHAPE + N_EXPR))
    for eye in ("left_eye", "right_eye"):   # eyeballs move rigidly with identity and expression
        shapedirs[GROUPS[eye]] = rng.normal(scale=0.002, size=(1, 3, N_SHAPE + N_EXPR))
    posedirs = np.zeros((V, 3, 36))
    posedirs[GROUPS["base"], :, 0:9] = rng.normal(scale=0.002, size=(4, 3, 9))
    posedirs[GROUPS["jaw"], :, 9:18] = rng.normal(scale=0.002, size=(8, 3, 9))

    kintree = np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)

    head_faces = np.arange(8, 18)     # faces touching only head vertices
    jaw_faces = np.arange(20, 26)     # faces touching only lower-face vertices
    static_idx = np.concatenate([head_faces[np.arange(31) % len(head_faces)],
                                 jaw_faces[np.arange(20) % len(jaw_faces)]]).astype(np.uint32)
    static_bary = _bary(rng, 51)
    dynamic_idx = ((np.arange(79)[:, None] + np.arange(17)[None, :]) % N_STRIP_FACES).astype(np.int64)
    dynamic_bary = _bary(rng, 79, 17)
    full_idx = rng.integers(0, N_STRIP_FACES, size=68).astype(np.int64)
    full_bary = _bary(rng, 68)
    return SyntheticFlame(v, faces, shapedirs, posedirs, regressor, weights, kintree, regressor @ v, static_idx,
                          static_bary, dynamic_idx, dynamic_bary, full_idx, full_bary)


# ----------------------------------------------------------------------------------------------------------------
# Hostile files

MALICIOUS_KINDS = ("os_system", "posix_system", "eval", "numpy_runstring", "inside_model", "inside_chumpy_state",
                   "inside_sparse_state")


def malicious_bytes(kind: str, marker: Path, m: SyntheticFlame | None = None) -> bytes:
    """A pickle that, loaded with plain pickle, would create `marker` (or evaluate code); the reader must refuse it."""
    cmd = f"touch {marker}"
    system = Reduce(Global("os", "system"), (cmd,))
    if kind == "os_system":
        return pickle_bytes(system)
    if kind == "posix_system":
        return pickle_bytes(Reduce(Global("posix", "system"), (cmd,)))
    if kind == "eval":
        return pickle_bytes(Reduce(Global("__builtin__", "eval"), (f"open({str(marker)!r}, 'w').close()",)))
    if kind == "numpy_runstring":
        return pickle_bytes(Reduce(Global("numpy.testing._private.utils", "runstring"),
                                   (f"open({str(marker)!r}, 'w').close()", {})))
    m = m or make_synthetic_flame()
    tree = flame_model_tree(m)
    if kind == "inside_model":
        tree["bs_style"] = system
    elif kind == "inside_chumpy_state":
        tree["shapedirs"] = chumpy(m.shapedirs, _cache=system)
    elif kind == "inside_sparse_state":
        tree["J_regressor"].state["maxprint"] = system
    else:
        raise ValueError(kind)
    return pickle_bytes(tree)


def malicious_npy_bytes(marker: Path) -> bytes:
    """An .npy 'landmark embedding' whose pickled payload calls os.system."""
    return npy_object_bytes({"lmk_face_idx": Reduce(Global("os", "system"), (f"touch {marker}",))}, py2=False)
