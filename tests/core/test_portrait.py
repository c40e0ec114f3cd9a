"""Portrait preprocessing (core/portrait): detection on a real photo, the crop and FLAME + camera fit, eye-pose
fitting on a rendered synthetic head, the files, and `next3d invert` on a photo.

The real photo is scikit-image's astronaut (Eileen Collins, NASA, public domain), which the pinned scikit-image
wheel ships. Everything runs on the built-in head."""

import dataclasses
import json
import math

import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner

from core.cli import main as cli
from core.default_model import tiny_builtin_generator
from core.errors import InputError
from core.flame import FlameModel, load_model_data
from core.flame.builtin_head import BUILTIN_HEAD_PATH
from core.flame.params import FlameParams, eyes_to_gaze, gaze_to_eyes
from core.inversion.avatar_files import AVATAR_FILES
from core.io.generator_io import save_generator
from core.io.images import write_png
from core.portrait import (detect_landmarks, eye_vertex_indices, fit_eye_pose, load_portrait, preprocess_portrait,
                           project_flame_points, read_camera_file, read_landmarks_file, save_portrait)
from core.portrait.fit import order_iris
from core.rendering.camera import FFHQ_PIVOT, ffhq_camera
from core.training.synthetic import builtin_head_sampler, render_head, sample_appearance

R = 256


@pytest.fixture(scope="module")
def flame() -> FlameModel:
    return FlameModel(load_model_data(BUILTIN_HEAD_PATH))


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def portrait(flame, astronaut):
    return preprocess_portrait(astronaut, flame, resolution=R, source="astronaut.png")


# ------------------------------------------------------------------------------------------------- the photo


def test_detection_on_a_real_photo(astronaut):
    landmarks, irises = detect_landmarks(astronaut)
    assert landmarks.shape == (68, 2) and irises.shape == (2, 5, 2)
    # Anatomy in image coordinates: brows above eyes above nose tip above mouth above chin; eyes left to right.
    brows, eyes, nose, mouth, chin = (landmarks[17:27, 1].mean(), landmarks[36:48, 1].mean(), landmarks[33, 1],
                                      landmarks[48:68, 1].mean(), landmarks[8, 1])
    assert brows < eyes < nose < mouth < chin
    assert landmarks[36:42, 0].mean() < landmarks[27, 0] < landmarks[42:48, 0].mean()
    # Each iris centre lies inside its eye's corners, the image-left iris first.
    for iris, corners in ((irises[0], landmarks[[36, 39]]), (irises[1], landmarks[[42, 45]])):
        assert corners[:, 0].min() < iris[0, 0] < corners[:, 0].max()
        assert abs(iris[0, 1] - corners[:, 1].mean()) < 0.5 * abs(corners[1, 0] - corners[0, 0])


def test_preprocessing_end_to_end(portrait, flame):
    p = portrait
    assert p.image.shape == (R, R, 3) and p.image.dtype == np.uint8
    # The 51 inner landmarks fit to within 2 % of the crop (4.8 px of 512 measured), eyes to within 1 %.
    assert p.fit_error_px < 0.02 * R
    assert p.eye_error_px is not None and p.eye_error_px < 0.01 * R
    assert p.warnings == []
    # The crop is FFHQ-like: eyes level, face centred, the head's pivot at the FFHQ cameras' distance.
    left_eye, right_eye = p.landmarks[36:42].mean(0), p.landmarks[42:48].mean(0)
    assert abs(left_eye[1] - right_eye[1]) < 0.02 * R
    assert abs((left_eye[0] + right_eye[0]) / 2 - R / 2) < 0.05 * R
    cam2world = p.camera[:16].reshape(4, 4)
    assert abs(float(torch.linalg.norm(cam2world[:3, 3] - torch.tensor(FFHQ_PIVOT))) - 2.5) < 0.1
    assert float(cam2world[2, 2]) < -0.95                     # looking at the face from the front
    torch.testing.assert_close(p.camera[16:], ffhq_camera()[16:])
    # The mesh is the generator's input for the fitted parameters, and its landmarks land on the photo's.
    assert p.mesh_input.shape == (1, flame.n_vertices + 68, 3)
    with torch.no_grad():
        torch.testing.assert_close(p.mesh_input, flame.mesh_input(p.flame))
    projected = project_flame_points(p.mesh_input[0, -68:], p.camera, R).numpy()
    assert np.linalg.norm(projected[17:] - p.landmarks[17:], axis=1).mean() == pytest.approx(p.fit_error_px,
                                                                                             rel=1e-3)
    # She looks into the camera: both eyes within 10 degrees of straight ahead.
    assert max(abs(float(a)) for a in eyes_to_gaze(p.flame.eyes[0])) < math.radians(10)


def test_portrait_files_round_trip(portrait, tmp_path):
    save_portrait(tmp_path / "p", portrait)
    back = load_portrait(tmp_path / "p")
    assert np.array_equal(back.image, portrait.image)
    np.testing.assert_allclose(back.landmarks, portrait.landmarks, atol=1e-3)
    np.testing.assert_allclose(back.eye_landmarks, portrait.eye_landmarks, atol=1e-3)
    torch.testing.assert_close(back.camera, portrait.camera)
    torch.testing.assert_close(back.mesh_input, portrait.mesh_input)
    torch.testing.assert_close(back.flame.expression, portrait.flame.expression)
    np.testing.assert_allclose(back.crop.quad(), portrait.crop.quad(), atol=1e-3)
    assert not list((tmp_path / "p").glob(".*"))              # no temporary files left behind
    (tmp_path / "p" / "camera.npy").unlink()
    with pytest.raises(InputError, match="camera.npy missing"):
        load_portrait(tmp_path / "p")


def test_a_photo_without_a_face_says_so():
    grey = np.full((300, 300, 3), 128, np.uint8)
    with pytest.raises(InputError, match="No face was found in grey.png.*--landmarks"):
        detect_landmarks(grey, source="grey.png")
    with pytest.raises(InputError, match="RGB image"):
        detect_landmarks(np.zeros((300, 300), np.uint8))


def test_given_landmarks_and_camera_override_detection(flame, portrait, astronaut, tmp_path):
    # Landmarks from a file: no detection, so the irises are unknown and the eyes stay straight (with a warning).
    detected, _ = detect_landmarks(astronaut)
    np.savetxt(tmp_path / "lm.txt", detected)
    from_file = preprocess_portrait(astronaut, flame, resolution=R, landmarks=read_landmarks_file(tmp_path / "lm.txt"),
                                    steps=120)
    assert from_file.eye_landmarks is None and "irises are unknown" in from_file.warnings[0]
    assert float(from_file.flame.eyes.abs().max()) == 0.0
    assert from_file.fit_error_px < 0.03 * R
    # A camera given: the photo is taken as aligned, and the camera is kept as it is.
    np.save(tmp_path / "cam.npy", portrait.camera.numpy())
    camera = read_camera_file(tmp_path / "cam.npy")
    aligned = preprocess_portrait(portrait.image, flame, resolution=R, camera=camera, steps=120)
    torch.testing.assert_close(aligned.camera, portrait.camera)
    assert aligned.crop is None and np.array_equal(aligned.image, portrait.image)
    assert aligned.fit_error_px < 0.03 * R
    with pytest.raises(InputError, match="aligned square crop"):
        preprocess_portrait(astronaut[:, :400], flame, resolution=R, camera=camera)


def test_landmark_and_camera_file_errors(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((5, 2)))
    with pytest.raises(InputError, match=r"shape \[5, 2\]"):
        read_landmarks_file(tmp_path / "short.npy")
    with pytest.raises(InputError, match="does not exist"):
        read_landmarks_file(tmp_path / "none.txt")
    (tmp_path / "nan.json").write_text(json.dumps({"landmarks": [[float("nan"), 0]] * 68}))
    with pytest.raises(InputError, match="NaN"):
        read_landmarks_file(tmp_path / "nan.json")
    label = ffhq_camera(0.1, 0.0)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["a.png", label.tolist()]]}))
    torch.testing.assert_close(read_camera_file(tmp_path / "dataset.json"), label)
    np.save(tmp_path / "c2w.npy", label[:16].reshape(4, 4).numpy())
    torch.testing.assert_close(read_camera_file(tmp_path / "c2w.npy"), label)
    (tmp_path / "two.json").write_text(json.dumps({"labels": [["a.png", label.tolist()], ["b.png", label.tolist()]]}))
    with pytest.raises(InputError, match="2 labels"):
        read_camera_file(tmp_path / "two.json")
    np.save(tmp_path / "bad.npy", np.zeros(7))
    with pytest.raises(InputError, match="7 values"):
        read_camera_file(tmp_path / "bad.npy")


# ------------------------------------------------------------------------------------------------- the eyes


def _pupil_centres(image: np.ndarray, around: np.ndarray, radius: int = 25) -> np.ndarray:
    """[2, 2] centroids of the dark pupil pixels within `radius` of each approximate eye position [2, 2]."""
    darkness = np.clip(60.0 - image.astype(np.float32).max(axis=-1), 0, None)
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]] + 0.5
    centres = []
    for x0, y0 in around:
        w = darkness * ((np.abs(xs - x0) < radius) & (np.abs(ys - y0) < radius))
        assert w.sum() > 0, "no pupil found"
        centres.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    return np.array(centres, np.float32)


def test_eye_fit_recovers_the_gaze_of_a_rendered_head(flame):
    """Render the built-in head looking up and to its left (the training-data renderer, which paints an iris and
    pupil on the eyeballs), find the pupils in the picture and fit: the gaze comes back within 3 degrees. The
    iris rim is left out (weight 0): the lids hide its top, bottom and one side in the render."""
    sampler = builtin_head_sampler()
    rng = np.random.default_rng(3)
    yaw, pitch = 0.3, 0.15
    params = sampler.neutral_params()
    params["eyes"] = gaze_to_eyes(yaw, pitch, yaw, pitch).numpy().astype(np.float32)
    head = sampler.sample(rng, params)
    appearance = dataclasses.replace(sample_appearance(rng), specular=0.0, ambient=1.0, diffuse=0.0)
    camera = ffhq_camera(0.15, -0.05)
    resolution = 512
    image = render_head(head, sampler, camera, appearance, resolution, rng)
    with torch.no_grad():
        joints = flame(FlameParams.zeros()).joints[0, [4, 3]]          # right eye (image left), then left eye
        around = project_flame_points(joints, camera, resolution).numpy()
    landmarks = np.zeros((2, 5, 2), np.float32)
    landmarks[:, 0] = _pupil_centres(image, around)
    weights = np.zeros((2, 5))
    weights[:, 0] = 1
    eyes, error = fit_eye_pose(flame, FlameParams.zeros(), camera, landmarks, resolution, weights=weights,
                               steps=200)
    assert error < 1.0
    for got, want in zip(eyes_to_gaze(eyes[0]), (yaw, pitch, yaw, pitch)):
        assert abs(float(got) - want) < math.radians(3), (float(got), want)
    # Straight ahead instead: the fit says so too (the pupils moved with the gaze, not with anything else).
    params["eyes"] = np.zeros(6, np.float32)
    straight = render_head(sampler.sample(rng, params), sampler, camera, appearance, resolution, rng)
    landmarks[:, 0] = _pupil_centres(straight, around)
    eyes, _ = fit_eye_pose(flame, FlameParams.zeros(), camera, landmarks, resolution, weights=weights, steps=200)
    assert max(abs(float(a)) for a in eyes_to_gaze(eyes[0])) < math.radians(3)


def test_eye_fit_recovers_gaze_from_projected_points(flame):
    """Exact geometry: the five points projected from a known pose with 0.3 px of noise give the pose back to
    within 1 degree, and order_iris puts shuffled rim points back in the order of eye_vertex_indices."""
    gaze = (-0.25, 0.1, -0.2, 0.12)
    params = FlameParams(shape=torch.linspace(-1, 1, flame.n_shape)[None], eyes=gaze_to_eyes(*gaze)[None])
    camera = ffhq_camera(-0.2, 0.1)
    with torch.no_grad():
        rim = flame(params).vertices[0][torch.from_numpy(eye_vertex_indices(flame))]
        points = torch.cat([rim.mean(dim=1, keepdim=True), rim], dim=1).reshape(-1, 3)
        target = project_flame_points(points, camera, 512).numpy().reshape(2, 5, 2)
    target = target + np.random.default_rng(0).normal(0, 0.3, target.shape).astype(np.float32)
    shuffled = np.concatenate([target[:, :1], target[:, [3, 1, 4, 2]]], axis=1)
    ordered = np.stack([order_iris(eye) for eye in shuffled])
    np.testing.assert_array_equal(ordered, target)
    eyes, error = fit_eye_pose(flame, params.replace(eyes=torch.zeros(1, 6)), camera, ordered, 512)
    assert error < 0.6
    for got, want in zip(eyes_to_gaze(eyes[0]), gaze):
        assert abs(float(got) - want) < math.radians(1), (float(got), want)


# ------------------------------------------------------------------------------------------------- the command


def test_cli_invert_a_photo(astronaut, tmp_path):
    """`next3d invert photo.png` with a tiny model: detection, crop, fit, inversion, and the portrait/ folder."""
    save_generator(tmp_path / "tiny.safetensors", tiny_builtin_generator(32, seed=2))
    write_png(tmp_path / "photo.png", astronaut)
    out = tmp_path / "me"
    result = CliRunner().invoke(cli, ["invert", str(tmp_path / "photo.png"), "--out", str(out), "--model",
                                      str(tmp_path / "tiny.safetensors"), "--latent-steps", "2", "--tune-steps", "1",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "landmark fit error" in result.output
    for name in AVATAR_FILES:
        assert (out / name).is_file(), name
    back = load_portrait(out / "portrait")
    assert back.image.shape == (32, 32, 3)
    np.testing.assert_allclose(np.load(out / "mesh.npy"), back.mesh_input[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.load(out / "camera.npy"), back.camera.numpy(), atol=1e-6)
    grey = tmp_path / "grey.png"
    write_png(grey, np.full((200, 200, 3), 90, np.uint8))
    result = CliRunner().invoke(cli, ["invert", str(grey), "--out", str(tmp_path / "none"), "--model",
                                      str(tmp_path / "tiny.safetensors"), "--quiet"])
    assert result.exit_code == 2 and "No face was found" in result.output
    assert not (tmp_path / "none" / "avatar.json").exists()
