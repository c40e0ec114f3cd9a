"""core/flame: the restricted reader of official FLAME files, the converted layout, FLAME evaluation, parameters,
conversions to the generator's world and camera, and animation files. Real files in tmp_path, no mocks."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import flame_fixtures as ff  # tests/core is on sys.path (pytest puts a test file's folder there)
from core.errors import CheckpointError, InputError
from core.flame import (FlameModel, FlameModelData, FlameParams, FlameSequence, axis_angle_to_matrix,
                        convert_official_flame, eye_pose_to_gaze, eyes_to_gaze, flame_to_world,
                        fold_head_pose_into_camera, fold_head_pose_into_label, gaze_to_eye_pose, gaze_to_eyes,
                        load_model_data, load_or_convert, load_sequence, matrix_to_axis_angle, read_flame_pickle,
                        read_obj_sequence, read_official_flame, save_sequence, world_to_flame)
from core.flame import official
from core.rendering.camera import fov_to_intrinsics, look_at_cam2world


# ----------------------------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def synth() -> ff.SyntheticFlame:
    return ff.make_synthetic_flame(seed=0)


@pytest.fixture(scope="module")
def files(synth, tmp_path_factory) -> dict:
    return ff.write_official_set(tmp_path_factory.mktemp("flame"), synth)


@pytest.fixture(scope="module")
def data(files) -> FlameModelData:
    return read_official_flame(files["model"], files["static"], files["dynamic"], n_shape=ff.N_SHAPE)


@pytest.fixture(scope="module")
def model(data) -> FlameModel:
    return FlameModel(data)


def _moved(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-7) -> set:
    return set(torch.nonzero((a - b).norm(dim=-1) > tol)[:, 0].tolist())


def _barycentric(vertices: torch.Tensor, faces: torch.Tensor, idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """[V,3] vertices -> [L,3] points on faces[idx] (independent of smplx)."""
    tri = vertices[faces[idx]]                    # [L, 3 corners, 3]
    return (bary[:, :, None] * tri).sum(dim=1)


# ----------------------------------------------------------------------------------------------------------------
# The restricted reader

def test_fixture_writes_real_numpy_pickles(files, synth):
    # Independent check of the byte-level writer: numpy's own unpickler reads the landmark files identically.
    static = pickle.loads(files["static"].read_bytes(), encoding="latin1")
    assert np.array_equal(static["lmk_face_idx"], synth.static_idx) and static["lmk_face_idx"].dtype == np.uint32
    assert np.array_equal(static["lmk_b_coords"], synth.static_bary)
    deca = np.load(files["deca"], allow_pickle=True).item()
    assert np.array_equal(deca["dynamic_lmk_bary_coords"], synth.dynamic_bary)


@pytest.mark.parametrize("variant", [
    dict(),                                            # FLAME 2020 as written by Python 2 + chumpy
    dict(nested=True),                                 # Ch whose 'x' is another Ch
    dict(use_chumpy=False),                            # plain numpy arrays (no chumpy at all)
    dict(sparse_module="scipy.sparse._csc"),           # newer scipy module path
    dict(reconstructor=True),                          # protocol-0/1 style copy_reg._reconstructor
    dict(py2=False),                                   # protocol 3, Python 3 strings and bytes
])
def test_restricted_loader_reads_official_layout(tmp_path, synth, variant):
    path = ff.write_flame_pickle(tmp_path / "generic_model.pkl", synth, **variant)
    raw = read_flame_pickle(path)
    assert np.array_equal(raw["v_template"], synth.v_template)
    assert np.array_equal(raw["f"], synth.f)
    assert np.array_equal(raw["shapedirs"], synth.shapedirs)
    assert np.array_equal(raw["posedirs"], synth.posedirs)
    assert np.array_equal(raw["J_regressor"], synth.J_regressor)
    assert np.array_equal(raw["weights"], synth.weights)
    assert np.array_equal(raw["kintree_table"], synth.kintree_table)
    assert raw["bs_style"] == "lbs" and raw["bs_type"] == "lrotmin"


def test_chumpy_select_is_resolved(tmp_path, synth):
    tree = ff.flame_model_tree(synth)
    tree["v_template"] = ff.chumpy(None, "Select", "chumpy.reordering", a=ff.chumpy(synth.v_template),
                                   idxs=np.arange(synth.v_template.size), preferred_shape=synth.v_template.shape)
    (tmp_path / "m.pkl").write_bytes(ff.pickle_bytes(tree))
    assert np.array_equal(read_flame_pickle(tmp_path / "m.pkl")["v_template"], synth.v_template)


def test_hostile_pickle_is_live_under_plain_pickle(tmp_path):
    # The refusal tests below are meaningful: the same bytes run a command under the stock unpickler.
    marker = tmp_path / "ran"
    pickle.loads(ff.malicious_bytes("os_system", marker))
    assert marker.exists()


@pytest.mark.parametrize("kind", ff.MALICIOUS_KINDS)
def test_restricted_loader_refuses_code(tmp_path, synth, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(ff.malicious_bytes(kind, marker, synth))
    with pytest.raises(CheckpointError) as err:
        read_flame_pickle(path)
    assert not marker.exists()
    assert "nothing from it was run" in str(err.value)


def test_restricted_npy_reader_refuses_code(tmp_path, files):
    marker = tmp_path / "pwned"
    bad = tmp_path / "flame_dynamic_embedding.npy"
    bad.write_bytes(ff.malicious_npy_bytes(marker))
    with pytest.raises(CheckpointError, match="os.system"):
        read_official_flame(files["model"], files["static"], bad, n_shape=ff.N_SHAPE)
    assert not marker.exists()


def test_corrupted_and_wrong_files(tmp_path, files):
    cut = tmp_path / "generic_model.pkl"
    cut.write_bytes(files["model"].read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupted"):
        read_flame_pickle(cut)
    with pytest.raises(CheckpointError, match="is a landmark embedding, not a FLAME model"):
        read_flame_pickle(files["static"])    # a landmark file given as the model


# ----------------------------------------------------------------------------------------------------------------
# Conversion, layout, cache

def test_conversion_layout(data, synth, files):
    assert data.n_shape == ff.N_SHAPE and data.n_expr == ff.N_EXPR and data.n_vertices == 40
    assert data.parents.tolist() == [-1, 0, 1, 1, 1]
    assert np.array_equal(data.lmk_faces_idx, synth.expected_lmk_idx)
    assert np.allclose(data.lmk_bary_coords, synth.expected_lmk_bary)
    assert np.array_equal(data.dynamic_lmk_faces_idx, synth.dynamic_idx)
    assert np.allclose(data.exprdirs, synth.shapedirs[:, :, ff.N_SHAPE:])
    deca = read_official_flame(files["model"], deca_embedding=files["deca"], n_shape=ff.N_SHAPE)
    assert np.array_equal(deca.lmk_faces_idx, data.lmk_faces_idx)
    assert np.array_equal(deca.dynamic_lmk_faces_idx, data.dynamic_lmk_faces_idx)


def test_npz_round_trip(tmp_path, data, files):
    out = convert_official_flame(files["model"], tmp_path / "flame.npz", files["static"], files["dynamic"],
                                 n_shape=ff.N_SHAPE, name="synthetic")
    back = load_model_data(tmp_path / "flame.npz")
    assert back.name == "synthetic" == out.name
    for key, value in data.to_arrays().items():
        if key != "name":
            assert np.array_equal(getattr(back, key), value), key
    assert list(tmp_path.iterdir()) == [tmp_path / "flame.npz"]   # atomic write left nothing behind
    with np.load(tmp_path / "flame.npz", allow_pickle=False) as z:   # readable without pickle
        assert z["posedirs"].shape == (40, 3, 36)


def test_malformed_model_data(tmp_path, data):
    arrays = data.to_arrays()
    arrays.pop("name")
    bad = dict(arrays, faces=arrays["faces"] + 100)
    with pytest.raises(InputError, match="'faces' refers to vertex"):
        FlameModelData(**bad)
    np.savez(tmp_path / "half.npz", v_template=arrays["v_template"])
    with pytest.raises(InputError, match="lacks faces"):
        load_model_data(tmp_path / "half.npz")


def test_missing_landmark_files_are_named(tmp_path, files):
    missing = tmp_path / "flame_static_embedding.pkl"
    with pytest.raises(InputError, match="flame_static_embedding.pkl' does not exist"):
        read_official_flame(files["model"], missing, files["dynamic"], n_shape=ff.N_SHAPE)
    with pytest.raises(InputError, match="flame_dynamic_embedding.npy, the 17 jaw-contour"):
        read_official_flame(files["model"], files["static"], n_shape=ff.N_SHAPE)
    with pytest.raises(InputError, match="landmark_embedding.npy"):
        read_official_flame(files["model"], n_shape=ff.N_SHAPE)
    with pytest.raises(InputError, match="FLAME model file .*nothere.pkl' does not exist"):
        load_or_convert(tmp_path / "nothere.pkl", files["static"], files["dynamic"], cache_dir=tmp_path)


def test_conversion_is_cached(tmp_path, synth):
    src = ff.write_official_set(tmp_path / "src", synth)
    cache = tmp_path / "cache"
    reads = official.pickle_reads
    first = load_or_convert(src["model"], src["static"], src["dynamic"], cache_dir=cache, n_shape=ff.N_SHAPE)
    assert official.pickle_reads == reads + 1
    (cached,) = cache.iterdir()
    stamp = cached.stat().st_mtime_ns
    second = load_or_convert(src["model"], src["static"], src["dynamic"], cache_dir=cache, n_shape=ff.N_SHAPE)
    assert official.pickle_reads == reads + 1 and cached.stat().st_mtime_ns == stamp
    assert np.array_equal(first.shapedirs, second.shapedirs)
    # A replaced model file is converted again.
    st = src["model"].stat()
    os.utime(src["model"], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    load_or_convert(src["model"], src["static"], src["dynamic"], cache_dir=cache, n_shape=ff.N_SHAPE)
    assert official.pickle_reads == reads + 2 and len(list(cache.iterdir())) == 2


# ----------------------------------------------------------------------------------------------------------------
# Evaluation

def test_zero_params_give_the_template(model, synth, data):
    out = model(FlameParams.zeros(2))
    v = torch.tensor(synth.v_template, dtype=torch.float32)
    assert out.vertices.shape == (2, 40, 3) and out.landmarks.shape == (2, 68, 3) and out.joints.shape == (2, 5, 3)
    assert torch.allclose(out.vertices, v.expand(2, -1, -1), atol=1e-7)
    assert torch.allclose(out.joints[0], torch.tensor(synth.J, dtype=torch.float32), atol=1e-7)
    want = _barycentric(v, torch.as_tensor(data.faces), torch.as_tensor(data.lmk_faces_idx),
                        torch.as_tensor(data.lmk_bary_coords))
    assert torch.allclose(out.landmarks[1], want, atol=1e-7)
    mesh = out.mesh_input()
    assert mesh.shape == (2, 40 + 68, 3) and torch.equal(mesh[:, :40], out.vertices)
    assert torch.allclose(model.mesh_input(FlameParams.zeros(1)), mesh[:1], atol=1e-7)


def test_jaw_moves_only_lower_face(model, synth):
    base = model(FlameParams.zeros(1))
    out = model(FlameParams(jaw=[0.3, 0.05, 0.0]))
    jaw_skinned = set(np.nonzero(synth.weights[:, 2])[0].tolist())
    assert _moved(out.vertices[0], base.vertices[0]) == jaw_skinned == set(ff.GROUPS["jaw"].tolist())
    # mouth landmarks (iBUG 48-67) sit on lower-face faces and follow; brows, nose and eyes (17-47) stay.
    assert _moved(out.landmarks[0], base.landmarks[0]) == set(range(48, 68))


@pytest.mark.parametrize("eye,sl", [("left_eye", slice(0, 3)), ("right_eye", slice(3, 6))])
def test_eye_rotation_moves_only_that_eyeball(model, synth, eye, sl):
    base = model(FlameParams.zeros(1))
    eyes = torch.zeros(1, 6)
    eyes[0, sl] = torch.tensor([0.2, -0.3, 0.0])
    out = model(FlameParams(eyes=eyes))
    assert _moved(out.vertices[0], base.vertices[0]) == set(ff.GROUPS[eye].tolist())
    idx = ff.GROUPS[eye]
    assert torch.allclose(out.vertices[0, idx].mean(0), base.vertices[0, idx].mean(0), atol=1e-7)  # turns in place
    assert _moved(out.landmarks[0], base.landmarks[0]) == set()


def test_landmarks_follow_their_faces(model, data):
    g = torch.Generator().manual_seed(1)
    params = FlameParams(shape=torch.randn(3, ff.N_SHAPE, generator=g), expression=torch.randn(3, 2, generator=g),
                         jaw=0.2 * torch.rand(3, 3, generator=g), eyes=0.2 * torch.randn(3, 6, generator=g))
    out = model(params)
    faces = torch.as_tensor(data.faces)
    for b in range(3):
        want = _barycentric(out.vertices[b], faces, torch.as_tensor(data.lmk_faces_idx),
                            torch.as_tensor(data.lmk_bary_coords))
        assert torch.allclose(out.landmarks[b], want, atol=1e-7)


@pytest.mark.parametrize("yaw_deg,row", [(-10.0, 10), (10.0, 49), (0.0, 0)])
def test_dynamic_contour_follows_neck_yaw(model, data, yaw_deg, row):
    # FLAME/DECA/smplx look-up: row = round(-yaw) for yaw <= 0 degrees, 39 + yaw for yaw > 0.
    out = model(FlameParams(neck=[0.0, math.radians(yaw_deg), 0.0]))
    want = _barycentric(out.vertices[0], torch.as_tensor(data.faces), torch.as_tensor(data.dynamic_lmk_faces_idx[row]),
                        torch.as_tensor(data.dynamic_lmk_bary_coords[row]))
    assert torch.allclose(out.landmarks[0, :17], want, atol=1e-7)


def test_missing_trailing_coefficients_are_zero(model):
    short = FlameParams(shape=[[0.5, -1.0]], expression=[[1.0]])
    full = FlameParams(shape=[[0.5, -1.0, 0.0, 0.0]], expression=[[1.0, 0.0, 0.0]])
    assert torch.equal(model(short).vertices, model(full).vertices)
    with pytest.raises(InputError, match="shape has 5 coefficients but the FLAME model has only 4"):
        model(FlameParams(shape=torch.zeros(1, 5)))


def test_global_rotation_is_left_to_the_camera(model):
    params = FlameParams(global_rotation=[0.0, 0.4, 0.0])
    assert torch.equal(model(params).vertices, model(FlameParams.zeros(1)).vertices)
    assert not torch.allclose(model(params, include_global_rotation=True).vertices, model(params).vertices)


# ----------------------------------------------------------------------------------------------------------------
# Parameters and gaze

@pytest.mark.parametrize("kwargs,match", [
    (dict(jaw=[[0.0, 0.1, 0.2, 0.3]]), r"jaw has 4 values per sample; it needs exactly 3"),
    (dict(eyes=[0.0] * 5), r"eyes has 5 values"),
    (dict(expression=[[0.0, float("nan")]]), r"expression contains NaN"),
    (dict(shape=[[0.0, 25.0]]), r"shape\[1\] is 25 .*within \+-10"),
    (dict(neck=[[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]]), r"neck holds a rotation of 4 rad \(batch entry 1\).*degrees"),
    (dict(jaw=torch.zeros(2, 3), shape=torch.zeros(3, 2)), r"different batch sizes"),
    (dict(shape=torch.zeros(2, 3, 1)), r"shape has shape \[2, 3, 1\]"),
    (dict(jaw="open"), r"jaw must be numbers"),
])
def test_params_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        FlameParams(**kwargs)


def test_params_helpers():
    p = FlameParams(shape=[[1.0, 2.0]], jaw=torch.zeros(3, 3))   # batch-1 fields are shared
    assert p.batch_size == 3 and p.n_shape == 2 and p.n_expr == 0 and p.eyes.shape == (3, 6)
    assert torch.equal(p.shape[2], torch.tensor([1.0, 2.0]))
    assert p[1].batch_size == 1 and p[-1].batch_size == 1
    both = FlameParams.cat([p, FlameParams(shape=[[0.0, 0.0, 3.0]])])
    assert both.batch_size == 4 and both.n_shape == 3 and float(both.shape[0, 2]) == 0.0
    assert p.full_pose().shape == (3, 15)
    with pytest.raises(InputError, match="Unknown FLAME parameter"):
        FlameParams.from_dict({"jaw_pose": [0, 0, 0]})
    q = FlameParams.from_dict(p.to_dict())
    assert torch.equal(q.shape, p.shape)


def test_gaze_round_trip_and_direction():
    yaw = torch.tensor([-0.6, -0.2, 0.0, 0.3, 0.7])
    pitch = torch.tensor([0.4, -0.3, 0.0, 0.2, -0.5])
    aa = gaze_to_eye_pose(yaw, pitch)
    y2, p2 = eye_pose_to_gaze(aa)
    assert torch.allclose(y2, yaw, atol=1e-6) and torch.allclose(p2, pitch, atol=1e-6)
    d = axis_angle_to_matrix(aa)[..., :, 2]            # line of sight of an eye looking along +z at rest
    assert torch.all(torch.sign(d[:, 0]) == torch.sign(yaw)) and torch.all(torch.sign(d[:, 1]) == torch.sign(pitch))
    eyes = gaze_to_eyes(0.1, 0.2, -0.3, 0.05)
    assert eyes.shape == (6,)
    assert torch.allclose(torch.stack(eyes_to_gaze(eyes)), torch.tensor([0.1, 0.2, -0.3, 0.05]), atol=1e-6)
    with pytest.raises(InputError, match="degrees"):
        gaze_to_eye_pose(30.0, 0.0)


def test_gaze_moves_the_pupil(model):
    # The left eyeball's front vertex (+z, index 32) goes right/up for positive yaw/pitch.
    base = model(FlameParams.zeros(1)).vertices[0, 32]
    right = model(FlameParams.zeros(1).with_gaze(0.3, 0.0)).vertices[0, 32]
    up = model(FlameParams.zeros(1).with_gaze(0.0, 0.3)).vertices[0, 32]
    assert right[0] > base[0] + 1e-3 and abs(float(right[1] - base[1])) < 1e-7
    assert up[1] > base[1] + 1e-3 and abs(float(up[0] - base[0])) < 1e-7


def test_matrix_to_axis_angle_round_trip():
    g = torch.Generator().manual_seed(3)
    axes = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=-1)
    angles = torch.cat([torch.rand(56, generator=g, dtype=torch.float64) * math.pi,
                        torch.tensor([0.0, 1e-9, 1e-4, math.pi - 1e-3, math.pi - 1e-7, 2.0, 3.0, 3.1],
                                     dtype=torch.float64)])
    aa = axes * angles[:, None]
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.allclose(axis_angle_to_matrix(back), axis_angle_to_matrix(aa), atol=1e-9)
    assert torch.allclose(back[:56], aa[:56], atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Conversions

def test_flame_world_mapping():
    p = torch.tensor([[0.1, 0.2, 0.3]])
    assert torch.allclose(flame_to_world(p), torch.tensor([[0.25, 0.525, 0.75]]))
    assert torch.allclose(flame_to_world(p, view="top"), torch.tensor([[0.25, 0.525, 0.725]]))
    q = torch.randn(5, 7, 3)
    assert torch.allclose(world_to_flame(flame_to_world(q)), q, atol=1e-6)
    with pytest.raises(InputError, match="Unknown view"):
        flame_to_world(p, view="back")


def _camera_coords(points_world: torch.Tensor, cam2world: torch.Tensor) -> torch.Tensor:
    w2c = torch.linalg.inv(cam2world)
    return points_world @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]


def _project(points_world: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    pc = _camera_coords(points_world, cam2world)
    return (pc / pc[..., 2:]) @ intrinsics.T.to(pc.dtype)


def test_head_pose_folding_on_points():
    g = torch.Generator().manual_seed(5)
    pts = 0.1 * torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    rot = torch.tensor([[0.2, 0.5, -0.1], [-0.3, -0.4, 0.2]], dtype=torch.float64)
    pivot = torch.tensor([[0.0, -0.1, -0.02], [0.01, -0.12, -0.03]], dtype=torch.float64)
    cam = torch.stack([look_at_cam2world(0.2, -0.1), look_at_cam2world(-0.3, 0.15)]).to(torch.float64)
    rotated = (pts - pivot[:, None]) @ axis_angle_to_matrix(rot).transpose(1, 2) + pivot[:, None]
    moved = fold_head_pose_into_camera(cam, rot, pivot=pivot)
    assert torch.allclose(_camera_coords(flame_to_world(rotated), cam),
                          _camera_coords(flame_to_world(pts), moved), atol=1e-12)
    k = fov_to_intrinsics(18.837).to(torch.float64)
    assert torch.allclose(_project(flame_to_world(rotated), cam, k), _project(flame_to_world(pts), moved, k),
                          atol=1e-12)
    # the same on 25-value camera labels
    label = torch.cat([cam.reshape(2, 16), k.reshape(1, 9).expand(2, -1)], 1)
    folded = fold_head_pose_into_label(label, rot, pivot=pivot)
    assert torch.allclose(folded[:, :16].reshape(2, 4, 4), moved) and torch.equal(folded[:, 16:], label[:, 16:])


def test_head_pose_folding_with_the_model(model):
    params = FlameParams(jaw=[0.2, 0.0, 0.0], expression=[[0.5, -0.5]], global_rotation=[0.1, -0.5, 0.05],
                         neck=[0.15, 0.3, 0.0])
    cam = look_at_cam2world(0.25, -0.1)[None]
    k = fov_to_intrinsics(18.837)
    # Global rotation only: every vertex and the static landmarks match exactly.
    rotated = model(params, include_global_rotation=True)
    plain = model(params)
    moved = fold_head_pose_into_camera(cam, params.global_rotation, pivot=plain.joints[:, 0])
    a = _project(flame_to_world(torch.cat([rotated.vertices, rotated.landmarks[:, 17:]], 1)), cam, k)
    b = _project(flame_to_world(torch.cat([plain.vertices, plain.landmarks[:, 17:]], 1)), moved, k)
    assert torch.allclose(a, b, atol=1e-5)
    # Neck folded as well: exact for everything skinned to the neck and its children (not the neck base).
    no_neck = model(params, include_neck=False)
    moved = fold_head_pose_into_camera(cam, params.global_rotation, params.neck, pivot=no_neck.joints[:, 0],
                                       neck_pivot=no_neck.joints[:, 1])
    head = torch.arange(4, 40)
    a = _project(flame_to_world(rotated.vertices[:, head]), cam, k)
    b = _project(flame_to_world(no_neck.vertices[:, head]), moved, k)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(InputError, match="neck_pivot"):
        fold_head_pose_into_camera(cam, params.global_rotation, params.neck, pivot=no_neck.joints[:, 0])


# ----------------------------------------------------------------------------------------------------------------
# Animation files

def _sequence(frames: int = 4, cameras: bool = True, shared_shape: bool = True) -> FlameSequence:
    g = torch.Generator().manual_seed(7)
    shape = torch.randn(1 if shared_shape else frames, 6, generator=g)
    params = FlameParams(shape=shape.expand(frames, -1) if shared_shape else shape,
                         expression=torch.randn(frames, 5, generator=g), jaw=0.3 * torch.rand(frames, 3, generator=g),
                         neck=0.1 * torch.randn(frames, 3, generator=g),
                         global_rotation=0.2 * torch.randn(frames, 3, generator=g),
                         eyes=0.2 * torch.randn(frames, 6, generator=g))
    cams = torch.randn(frames, 25, generator=g) if cameras else None
    return FlameSequence(params, fps=25.0, cameras=cams)


def _same(a: FlameSequence, b: FlameSequence) -> None:
    assert a.fps == b.fps and a.n_frames == b.n_frames
    for name, value in a.frames.to_dict().items():
        assert np.array_equal(value, b.frames.to_dict()[name]), name
    assert (a.cameras is None) == (b.cameras is None)
    if a.cameras is not None:
        assert torch.equal(a.cameras, b.cameras)


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("shared", [True, False])
def test_animation_round_trip(tmp_path, suffix, shared):
    seq = _sequence(shared_shape=shared, cameras=shared)
    path = save_sequence(tmp_path / f"anim{suffix}", seq)
    _same(seq, load_sequence(path))
    assert [p.name for p in tmp_path.iterdir()] == [f"anim{suffix}"]
    if suffix == ".json":
        doc = json.loads(path.read_text())
        assert ("shape" in doc) == shared and len(doc["frames"]) == 4


def test_hand_written_json(tmp_path):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({"shape": [0.5], "frames": [{"jaw": [0.1, 0, 0]}, {"expression": [1, 2]}]}))
    seq = load_sequence(path)
    assert seq.fps == 30.0 and seq.n_frames == 2 and seq.cameras is None
    assert seq.frames.expression.tolist() == [[0.0, 0.0], [1.0, 2.0]]
    assert seq.frames.shape.tolist() == [[0.5], [0.5]]
    assert torch.equal(seq.frames.eyes, torch.zeros(2, 6))


def test_the_numpy_json_reader_is_the_layout_of_flame_params(tmp_path):
    """core/flame/animation_json.py (numpy only, for Blender's Python) mirrors FlameParams' fields and returns the
    numbers load_sequence builds its FlameSequence from: plain float32 arrays, the fps and the cameras."""
    from core.flame import PARAM_FIELDS
    from core.flame.animation_json import CAMERA_SIZE, FIELD_SIZES, read_json_animation

    assert FIELD_SIZES == {f.name: f.size for f in PARAM_FIELDS} and CAMERA_SIZE == 25
    seq = _sequence(shared_shape=True, cameras=True)
    path = save_sequence(tmp_path / "anim.json", seq)
    doc = read_json_animation(path)
    assert doc.fps == seq.fps == 25.0 and doc.cameras.dtype == np.float32
    assert np.array_equal(doc.cameras, seq.cameras.numpy())
    for name, value in seq.frames.to_dict().items():
        assert doc.values[name].dtype == np.float32 and np.array_equal(doc.values[name], value), name
    # Its messages start with the label given (Blender names the file, not its whole path).
    path.write_text(json.dumps({"frames": [{"jaw": [0, 0]}]}))
    with pytest.raises(InputError, match=r'^anim\.json, frame 0: "jaw" has 2 numbers; it needs exactly 3\.$'):
        read_json_animation(path, label="anim.json")


@pytest.mark.parametrize("doc,match", [
    ({"frames": [{"jaw": [0, 0, 0]}, {"jaw": [0, 5.0, 0]}]}, r"bad\.json, frame 1: FlameParams.jaw holds a rotation"),
    ({"frames": [{}, {"jaw": [0, 0]}]}, r"bad\.json, frame 1: \"jaw\" has 2 numbers"),
    ({"frames": [{"camera": [0] * 25}, {}]}, r"frame 1: either every frame has a \"camera\""),
    ({"frames": [{"mouth": [1]}]}, r"frame 0 has unknown key\(s\) 'mouth'"),
    ({"frames": []}, r"empty \"frames\""),
    ({"fps": -3, "frames": [{}]}, r"fps is -3"),
])
def test_json_errors_name_file_and_frame(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        load_sequence(path)


def test_npz_errors_name_the_frame(tmp_path):
    expr = np.zeros((3, 2), np.float32)
    expr[2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", expression=expr, fps=24.0)
    with pytest.raises(InputError, match=r"bad\.npz, frame 2: FlameParams.expression contains NaN"):
        load_sequence(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="use a .npz or .json"):
        save_sequence(tmp_path / "anim.txt", _sequence())


def _write_frame(folder: Path, stem: str, verts: np.ndarray, lms: np.ndarray | None) -> None:
    (folder / f"{stem}.obj").write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts) + "f 1 2 3\n")
    if lms is not None:
        np.savetxt(folder / f"{stem}_kpt2d.txt", lms, fmt="%.6f")


def test_obj_sequence(tmp_path):
    rng = np.random.default_rng(0)
    frames = {}
    for stem in ("img10", "img2", "img1"):
        frames[stem] = (rng.uniform(-0.1, 0.1, (5023, 3)), rng.uniform(-0.1, 0.1, (68, 3)))
        _write_frame(tmp_path, stem, *frames[stem])
    (tmp_path / "img1.png").write_bytes(b"")   # other files of the reenactment folder are ignored
    meshes, names = read_obj_sequence(tmp_path, with_names=True)
    assert names == ["img1", "img2", "img10"] and meshes.shape == (3, 5091, 3)
    for t, stem in enumerate(names):
        want = np.concatenate(frames[stem]).astype(np.float32)
        assert np.allclose(meshes[t].numpy(), want, atol=1e-6)
    (tmp_path / "img2_kpt2d.txt").unlink()
    with pytest.raises(InputError, match=r"Frame 1 \(img2.obj\) .* has no landmark file img2_kpt2d.txt"):
        read_obj_sequence(tmp_path)


def test_obj_sequence_wrong_vertex_count(tmp_path):
    _write_frame(tmp_path, "a", np.zeros((5023, 3)), np.zeros((68, 3)))
    _write_frame(tmp_path, "b", np.zeros((100, 3)), np.zeros((68, 3)))
    with pytest.raises(InputError, match=r"Frame 1 \(b.obj\).*has 100 vertices"):
        read_obj_sequence(tmp_path)
