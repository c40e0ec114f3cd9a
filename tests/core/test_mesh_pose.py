"""core.flame.mesh_pose and core.flame.topology: the generator's input from a posed mesh, checked against FLAME
evaluated from the same coefficients (smplx's LBS and landmarks), on the built-in head and the synthetic FLAME."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import flame_fixtures as ff  # tests/core is on sys.path (pytest puts a test file's folder there)
from core.errors import InputError
from core.flame import FlameModel, FlameModelData, FlameParams, head_pose_transform, read_official_flame
from core.flame.builtin_head import BUILTIN_HEAD_PATH, load_builtin_head_data
from core.flame.mesh_pose import (MeshHead, Similarity, contour_row, fit_similarity, landmarks, skull_region,
                                  yaw_degrees)
from core.flame.model_data import OPTIONAL_KEYS, REQUIRED_KEYS
from core.flame.params import axis_angle_to_matrix
from core.flame.topology import covers_triangles, topology_name

ROOT = Path(__file__).resolve().parents[2]


def _rotation(aa) -> np.ndarray:
    return axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float64)).numpy()


@pytest.fixture(scope="module")
def builtin() -> dict:
    data = load_builtin_head_data(BUILTIN_HEAD_PATH)
    return {k: np.asarray(v) for k, v in data.items() if k in REQUIRED_KEYS + OPTIONAL_KEYS}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    files = ff.write_official_set(tmp_path_factory.mktemp("flame"), ff.make_synthetic_flame(seed=0))
    data = read_official_flame(files["model"], files["static"], files["dynamic"], n_shape=ff.N_SHAPE)
    return {k: v for k, v in data.to_arrays().items() if k != "name"}


# ------------------------------------------------------------------------------------------------ fitting

def test_fit_similarity_recovers_a_similarity_and_never_reflects():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    truth = Similarity(1.7, _rotation([0.3, -1.1, 0.4]), np.array([0.2, -3.0, 1.5]))
    fit = fit_similarity(src, truth.apply(src))
    assert fit.scale == pytest.approx(1.7, rel=1e-12)
    assert np.allclose(fit.rotation, truth.rotation, atol=1e-12) and np.allclose(fit.translation, truth.translation)
    rigid = fit_similarity(src, truth.apply(src), scale=False)
    assert rigid.scale == 1.0 and np.allclose(rigid.rotation, truth.rotation, atol=1e-12)
    mirrored = src * [-1, 1, 1]
    assert np.linalg.det(fit_similarity(src, mirrored).rotation) == pytest.approx(1.0)
    # Composition and inverse agree with the matrices.
    other = Similarity(0.5, _rotation([0, 0.2, 0]), np.array([1.0, 0, 0]))
    assert np.allclose(truth.then(other).matrix, other.matrix @ truth.matrix)
    assert np.allclose(truth.inverse().matrix, np.linalg.inv(truth.matrix))
    assert np.allclose(Similarity.from_matrix(truth.matrix).matrix, truth.matrix)
    with pytest.raises(InputError, match="degenerate"):
        fit_similarity(np.zeros((10, 3)), src[:10])
    with pytest.raises(InputError, match="non-finite"):
        fit_similarity(np.full((5, 3), np.nan), src[:5])


def test_skull_region_of_the_builtin_head(builtin):
    skull = skull_region(builtin["weights"], builtin["exprdirs"], builtin["posedirs"])
    assert len(skull) >= 100
    assert (builtin["weights"][skull, 1] >= 0.99).all()
    pose = np.linalg.norm(builtin["posedirs"][skull], axis=1).max()
    assert pose <= 0.02 * np.linalg.norm(builtin["posedirs"], axis=1).max()
    # Spread over the head, not a patch: it spans most of the head's width and height.
    span = np.ptp(builtin["v_template"][skull], axis=0) / np.ptp(builtin["v_template"], axis=0)
    assert span[0] > 0.5 and span[1] > 0.5


# ------------------------------------------------------------------------------------------------ the contour

def test_contour_row_is_smplx_choice():
    from smplx.lbs import find_dynamic_lmk_idx_and_bcoords

    table = torch.arange(79).view(79, 1).expand(79, 17).contiguous()        # row r holds r
    bary = torch.zeros(79, 17, 3)
    for yaw in np.concatenate([np.linspace(-60, 60, 97), [0.49, -0.51, 38.6, -39.4, -39.6]]):
        aa = np.array([0.2, math.radians(yaw), -0.1])   # pitch and roll mixed in
        pose = torch.zeros(1, 15)
        pose[0, :3] = torch.tensor(aa, dtype=torch.float32)
        idx, _ = find_dynamic_lmk_idx_and_bcoords(torch.zeros(1, 3, 3), pose, table, bary,
                                                  torch.tensor([1, 0]))
        assert contour_row(_rotation(aa)) == int(idx[0, 0]), yaw
    assert yaw_degrees(_rotation([0, math.radians(20), 0])) == pytest.approx(-20.0)


# ------------------------------------------------------------------------------------------------ the mesh path

POSES = [
    dict(),
    dict(jaw=[0.3, 0.02, 0.0], eyes=[0.1, 0.25, 0.0, -0.05, 0.3, 0.0]),
    dict(shape=0.8, expression=0.7, global_rotation=[0.1, 0.5, -0.05], jaw=[0.2, 0, 0]),
    dict(shape=-0.6, expression=-0.9, neck=[0.15, -0.35, 0.05], jaw=[0.1, 0, 0.02], eyes=[0, 0.2, 0, 0, 0.2, 0]),
    dict(shape=0.3, global_rotation=[0.0, -0.8, 0.0], neck=[0.0, 0.3, 0.1]),
]
# The rig's own coordinates: Blender's z-up (FLAME's y up becomes z), centimetres, somewhere else.
TO_MESH = Similarity(100.0, _rotation([math.pi / 2, 0, 0]), np.array([3.0, -20.0, 150.0]))


def _params(model: FlameModel, pose: dict, seed: int) -> FlameParams:
    rng = np.random.default_rng(seed)
    fields = {k: torch.tensor([v], dtype=torch.float32) for k, v in pose.items()
              if k not in ("shape", "expression")}
    shape = pose.get("shape", 0.0) * rng.normal(size=model.n_shape)
    expression = pose.get("expression", 0.0) * rng.normal(size=model.n_expr)
    return FlameParams(shape=torch.tensor(shape[None], dtype=torch.float32),
                       expression=torch.tensor(expression[None], dtype=torch.float32), **fields)


@pytest.mark.parametrize("which", ["builtin", "synthetic"])
def test_mesh_path_reproduces_flame(which, builtin, synthetic):
    """A mesh posed by FLAME's own blend shapes and skinning, in another coordinate frame, gives FLAME's canonical
    vertices and landmarks with the head's rigid motion (global and neck rotation) moved out, to float rounding."""
    arrays = builtin if which == "builtin" else synthetic
    data = FlameModelData(**arrays)
    model = FlameModel(data)
    head = MeshHead.from_arrays(arrays)
    to_flame = head.data_frame(TO_MESH.apply(arrays["v_template"]))
    assert np.allclose(to_flame.matrix, TO_MESH.inverse().matrix, atol=1e-9)
    for seed, pose in enumerate(POSES):
        params = _params(model, pose, seed)
        with torch.no_grad():
            posed = model(params, include_global_rotation=True)
        rest = (data.v_template + data.shapedirs @ params.shape[0].numpy()
                + data.exprdirs @ params.expression[0].numpy())
        frame = head.frame(TO_MESH.apply(posed.vertices[0].double().numpy()), TO_MESH.apply(rest), to_flame)
        # The head's rigid motion as FLAME applies it: global about the root, neck about the rest neck joint.
        joints = data.J_regressor.astype(np.float64) @ rest
        motion = head_pose_transform(params.global_rotation.double(), torch.tensor(joints[0]),
                                     params.neck.double(), torch.tensor(joints[1]))[0].numpy()
        undo = Similarity.from_matrix(np.linalg.inv(motion))
        want_v = undo.apply(posed.vertices[0].double().numpy())
        want_l = undo.apply(posed.landmarks[0].double().numpy())
        assert np.abs(frame.vertices - want_v).max() < 2e-6, (which, pose)
        assert np.abs(frame.landmarks - want_l).max() < 2e-6, (which, pose)
        assert frame.residual < 1e-6
        assert np.allclose(frame.rotation, motion[:3, :3], atol=1e-6)
        # head_to_mesh puts the canonical head back where the mesh is.
        back = Similarity.from_matrix(frame.head_to_mesh).apply(frame.vertices)
        assert np.abs(back - TO_MESH.apply(posed.vertices[0].double().numpy())).max() < 2e-4   # centimetres
        if not pose.get("neck"):
            # Without a neck rotation that is exactly the CLI's path: FLAME with the global rotation left out.
            with torch.no_grad():
                cli = model(params)
            assert np.abs(frame.vertices - cli.vertices[0].numpy()).max() < 2e-6


def test_landmarks_follow_the_head_yaw(synthetic):
    """The jaw contour comes from the dynamic embedding's row for the head's yaw; the other 51 are static."""
    head = MeshHead.from_arrays(synthetic)
    v = synthetic["v_template"]
    front = landmarks(v, head.faces, head.lmk_faces_idx, head.lmk_bary_coords, head.dynamic_lmk_faces_idx,
                      head.dynamic_lmk_bary_coords, np.eye(3))
    turned = landmarks(v, head.faces, head.lmk_faces_idx, head.lmk_bary_coords, head.dynamic_lmk_faces_idx,
                       head.dynamic_lmk_bary_coords, _rotation([0, math.radians(20), 0]))
    assert np.allclose(front, landmarks(v, head.faces, head.lmk_faces_idx, head.lmk_bary_coords))
    assert np.allclose(front[17:], turned[17:]) and not np.allclose(front[:17], turned[:17])
    row = head.dynamic_lmk_faces_idx[59], head.dynamic_lmk_bary_coords[59]     # -20 degrees
    assert np.allclose(turned[:17], (v[head.faces[row[0]]] * row[1][:, :, None]).sum(1))


def test_mesh_of_the_wrong_size(builtin):
    head = MeshHead.from_arrays(builtin)
    with pytest.raises(InputError, match="has \\[8, 3\\] points; the head model has 5023"):
        head.frame(np.zeros((8, 3)), np.zeros((8, 3)))


# ------------------------------------------------------------------------------------------------ topology

def test_topology_comparison(builtin):
    faces = builtin["faces"]
    rng = np.random.default_rng(0)
    shuffled = np.roll(faces[rng.permutation(len(faces))], 1, axis=1)      # other order, rotated corners
    assert covers_triangles(shuffled, faces) and covers_triangles(faces[:, ::-1], faces)
    closed = np.concatenate([shuffled, [[0, 1, 2]]])                         # extra faces are allowed
    assert covers_triangles(closed, faces)
    assert not covers_triangles(faces[1:], faces)
    known = {"the built-in head": (5023, faces)}
    assert topology_name(5023, shuffled, known) == "the built-in head"
    assert topology_name(5023, faces[:-1], known) == "a mesh of 5023 vertices and 10033 triangles"
    flame_like = faces[:9976]             # FLAME's counts: 5023 vertices, 9976 triangles
    assert topology_name(5023, flame_like, known) == "FLAME's topology"
    assert topology_name(8, np.array([[0, 1, 2]]), known) == "a mesh of 8 vertices and 1 triangles"


def test_numpy_only():
    code = ("import sys\nsys.modules['torch'] = None\nimport core.flame.mesh_pose, core.flame.topology\n"
            "print(sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in ('torch', 'bpy')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
