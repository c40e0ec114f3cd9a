"""Faces in any photo (core/portrait/faces.py): every face found, numbered left to right, the largest by default,
`--face N` for another, and landmarks of small faces in group photos (Face Mesh on a square around the face).

The group photo is made of scikit-image's astronaut (Eileen Collins, NASA, public domain): six copies of her head,
faces 90-120 pixels high, on a 1280 x 886 picture, as in the report that Face Mesh alone finds no face there."""

import numpy as np
import pytest
import skimage.data
import skimage.transform
from click.testing import CliRunner

from core.cli import main as cli
from core.default_model import tiny_builtin_generator
from core.errors import InputError
from core.flame import FlameModel, load_model_data
from core.flame.builtin_head import BUILTIN_HEAD_PATH
from core.io.generator_io import save_generator
from core.io.images import write_png
from core.portrait.faces import detect_faces, mediapipe_solutions
from core.portrait.landmarks import detect_face_landmarks, ibug_and_irises, mesh_points
from core.portrait.preprocess import preprocess_portrait

# (x, y, scale) of each head, left to right; the fifth is the largest.
HEADS = [(10, 300, 0.95), (220, 250, 1.0), (430, 330, 1.05), (640, 280, 0.9), (850, 300, 1.1), (1070, 320, 0.85)]


def group_photo(heads=HEADS, size=(886, 1280)) -> np.ndarray:
    head = skimage.data.astronaut()[10:250, 120:330]
    canvas = np.zeros((*size, 3), np.uint8)
    canvas[:] = (90, 110, 140)
    for i, (x, y, scale) in enumerate(heads):
        picture = head if i % 2 == 0 else head[:, ::-1]
        small = (skimage.transform.rescale(picture, scale, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
        h, w = min(small.shape[0], size[0] - y), min(small.shape[1], size[1] - x)
        canvas[y:y + h, x:x + w] = small[:h, :w]
    return canvas


@pytest.fixture(scope="module")
def group():
    return group_photo()


def test_every_face_of_a_group_photo(group):
    solutions = mediapipe_solutions()
    with solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        assert not mesh.process(group).multi_face_landmarks        # the report: Face Mesh alone sees no face

    faces = detect_faces(group)
    assert len(faces) == 6
    centres = [b.centre[0] for b in faces]
    assert centres == sorted(centres)                              # numbered left to right
    for box, (x, y, scale) in zip(faces, HEADS):                   # each box on its own head
        assert x < box.centre[0] < x + 210 * scale and y < box.centre[1] < y + 240 * scale
        assert 70 < box.side < 130
    largest = detect_face_landmarks(group, source="group.png")
    assert largest.chosen == int(np.argmax([b.area for b in faces])) == 4
    assert largest.describe().startswith("6 faces found (numbered left to right): 1: ")
    assert "Using face 5, the largest; --face N picks another." in largest.describe()
    for number in (1, 4, 6):
        found = detect_face_landmarks(group, face=number, source="group.png")
        box = faces[number - 1]
        inner = found.landmarks[17:]
        assert (inner[:, 0] > box.x0 - 10).all() and (inner[:, 0] < box.x1 + 10).all()
        assert (inner[:, 1] > box.y0 - 20).all() and (inner[:, 1] < box.y1 + 10).all()
        for iris, corners in zip(found.irises, (found.landmarks[[36, 39]], found.landmarks[[42, 45]])):
            assert corners[:, 0].min() < iris[0, 0] < corners[:, 0].max()
        assert f"Using face {number};" in found.describe()


def test_a_face_number_that_does_not_exist(group):
    with pytest.raises(InputError, match=r"There is no face 7 in group.png: 6 faces found .* Choose --face 1 to 6"):
        detect_face_landmarks(group, face=7, source="group.png")
    with pytest.raises(InputError, match="No face was found in grey.png, so there is no face 1"):
        detect_face_landmarks(np.full((300, 300, 3), 128, np.uint8), face=1, source="grey.png")


def test_small_faces_are_found_in_tiles():
    """Faces of about 40 pixels in a 1280-pixel picture: found on the overlapping half-size tiles."""
    small = group_photo([(100, 400, 0.4), (500, 400, 0.4), (900, 400, 0.4)])
    faces = detect_faces(small)
    assert len(faces) == 3 and all(30 < b.side < 60 for b in faces)
    found = detect_face_landmarks(small, face=2)
    assert faces[1].x0 - 10 < found.landmarks[30, 0] < faces[1].x1 + 10


def test_a_portrait_keeps_the_landmarks_it_had():
    """One face: Face Mesh still runs on the whole picture, so a portrait's landmarks are those of before."""
    astronaut = skimage.data.astronaut()
    with mediapipe_solutions().face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.5) as mesh:
        result = mesh.process(astronaut)
    before, irises = ibug_and_irises(mesh_points(result.multi_face_landmarks[0], 0, 0, 512, 512))
    found = detect_face_landmarks(astronaut)
    np.testing.assert_array_equal(found.landmarks, before)
    np.testing.assert_array_equal(found.irises, irises)
    assert found.describe().startswith("1 face found: 1: ") and "Using" not in found.describe()


def test_preprocessing_and_invert_pick_a_face(group, tmp_path):
    """preprocess_portrait(face=2) crops and fits the second face and says which it used; `next3d invert --face`
    passes the number on (a face that is not there is refused before any fitting)."""
    flame = FlameModel(load_model_data(BUILTIN_HEAD_PATH))
    portrait = preprocess_portrait(group, flame, resolution=64, face=2, steps=30, fit_eyes=False, source="group.png")
    assert "Using face 2;" in portrait.faces_note and portrait.fit_error_px < 0.05 * 64
    second = detect_faces(group)[1]
    assert second.x0 < portrait.crop.centre[0] < second.x1
    with pytest.raises(InputError, match="with its landmarks given in a file there is nothing to choose"):
        preprocess_portrait(group, flame, resolution=64, face=2, landmarks=np.zeros((68, 2), np.float32) + 500)

    save_generator(tmp_path / "tiny.safetensors", tiny_builtin_generator(32, seed=2))
    write_png(tmp_path / "group.png", group)
    result = CliRunner().invoke(cli, ["invert", str(tmp_path / "group.png"), "--model",
                                      str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path / "none"), "--face",
                                      "9", "--quiet"])
    assert result.exit_code == 2 and "There is no face 9 in" in result.output and "--face 1 to 6" in result.output
