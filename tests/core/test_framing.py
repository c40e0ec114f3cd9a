"""Any scene camera (next3d_blender/engine/framing.py, docs/camera.md#any-scene-camera): the virtual training
camera, the 2-D transform into the scene camera's frame, the warp, the depth mapping, the matte and the depth
composite. Real head (the built-in head's template and landmarks), real cameras.

Scene cameras are given in Blender's world (location, XYZ Euler rotation) and brought into head space exactly as
blender/scene.py does; the head stands where "Add FLAME Head" puts it with the 3D cursor at the origin: the armature
at the origin with a +90 degree rotation about X (blender/rig.py), so the face looks down Blender's -Y."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from next3d_blender.engine import convert, framing, matte
from next3d_blender.engine.heads import BUILTIN_HEAD_NPZ

ROOT = Path(__file__).resolve().parents[2]


def _euler(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x                          # Blender's XYZ Euler order


def _world(location, rotation_deg) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _euler(*(math.radians(a) for a in rotation_deg))
    m[:3, 3] = location
    return m


HEAD_TO_WORLD = _world((0.0, 0.0, 0.0), (90.0, 0.0, 0.0))


def _in_head_space(location, rotation_deg) -> np.ndarray:
    return convert.camera_in_head_space(convert.opencv_cam2world(_world(location, rotation_deg)), HEAD_TO_WORLD)


def _params(lens, width=1920, height=1080, shift_x=0.0, shift_y=0.0, sensor_width=36.0, sensor_height=24.0,
            fit="AUTO", aspect=(1.0, 1.0)):
    return convert.CameraParams(lens=lens, sensor_width=sensor_width, sensor_height=sensor_height, sensor_fit=fit,
                                shift_x=shift_x, shift_y=shift_y, width=width, height=height,
                                pixel_aspect_x=aspect[0], pixel_aspect_y=aspect[1])


@pytest.fixture(scope="module")
def head():
    """(vertices [5023, 3], faces, landmarks [68, 3]) of the built-in head at zero parameters, head space."""
    from next3d_blender.core.default_model import builtin_head_mesh_input

    with np.load(BUILTIN_HEAD_NPZ, allow_pickle=False) as z:
        faces = np.asarray(z["faces"], dtype=np.int64)
    mesh = builtin_head_mesh_input()[0].numpy().astype(np.float64)
    return mesh[:-68], faces, mesh[-68:]


def _landmark_errors(view, c2w, params, points):
    """Scene pixels of `points` through the virtual camera + to_scene, and through the scene camera."""
    through = view.generator_to_scene(convert.project_points(points, view.cam2world.astype(np.float64),
                                                             view.pixel_intrinsics))
    direct = convert.project_points(points, c2w, convert.intrinsics_pixels(params))
    return through, direct


# Lens (mm), Blender location, rotation (degrees), render size. The face's front is 0.076 m in front of the head's
# origin, its eyes about 0.03 m above it.
FACTORY = ("factory camera, 50 mm at 11 m", 50.0, (7.3589, -6.9258, 4.9583), (63.6, 0.0, 46.7), (1920, 1080))
PORTRAIT = ("85 mm at 0.86 m", 85.0, (0.0, -0.076 - 0.86, 0.03), (90.0, 0.0, 0.0), (1920, 1080))
CLOSE_UP = ("50 mm close-up at 0.6 m", 50.0, (0.12, -0.076 - 0.6, 0.05), (86.0, 0.0, 11.0), (1920, 1080))
VERTICAL = ("85 mm, portrait frame, off-centre", 85.0, (-0.15, -1.2, 0.1), (88.0, 0.0, -9.0), (1080, 1350))


@pytest.mark.parametrize("case", [FACTORY, PORTRAIT, CLOSE_UP, VERTICAL], ids=lambda c: c[0])
def test_landmarks_land_where_the_scene_camera_sees_them(head, case):
    name, lens, location, rotation, (w, h) = case
    vertices, _, landmarks = head
    c2w, params = _in_head_space(location, rotation), _params(lens, w, h)
    view = framing.virtual_view(c2w, params, vertices)
    through, direct = _landmark_errors(view, c2w, params, landmarks)
    err = np.linalg.norm(through - direct, axis=1)
    eyes = np.linalg.norm(direct[36] - direct[45])       # outer eye corners: the face's scale in the frame
    # At the scale of a 512 px square render (the "within a few pixels at 512 px"). A similarity cannot
    # undo the stronger perspective of a camera nearer than the training distance: the close-up gets 3 px.
    at_512 = err.max() * 512 / max(w, h)
    assert at_512 < (3.0 if "close-up" in name else 1.5), (name, at_512)
    # And relative to the face (a far head's face is a few pixels wide: there, within 1.5 scene pixels).
    assert err.max() < max(0.06 * eyes, 1.5), (name, err.max(), eyes)
    # The head's size in the frame: the camera-facing half's extent, both ways.
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    front = (vertices - centre) @ (c2w[:3, 3] - centre) > 0
    t_all, d_all = _landmark_errors(view, c2w, params, vertices[front])
    size_t, size_d = np.ptp(t_all, axis=0), np.ptp(d_all, axis=0)
    assert np.allclose(size_t, size_d, rtol=0.04), (name, size_t, size_d)
    # The virtual camera is a training camera: 2.7 units from the world origin, looking at the pivot, upright.
    label = _label(view)
    assert abs(np.linalg.norm(label[:3, 3]) - framing.FFHQ_RADIUS) < 1e-4
    forward = np.asarray(framing.FFHQ_PIVOT) - label[:3, 3]
    assert np.allclose(label[:3, 2], forward / np.linalg.norm(forward), atol=1e-5)
    assert abs(label[:3, 0][1]) < 1e-6                    # image x stays level: no roll
    assert np.allclose(view.intrinsics, [[framing.FFHQ_FOCAL, 0, 0.5], [0, framing.FFHQ_FOCAL, 0.5], [0, 0, 1]])


def _label(view) -> np.ndarray:
    """The virtual camera in the generator's world, as the job's camera_labels computes it."""
    from next3d_blender.core.flame import conversions

    return conversions.camera_to_world(view.cam2world[None].astype(np.float64))[0]


def test_training_camera_gives_the_identity(head):
    """A scene camera that is already a training camera (FFHQ position and focal, 512 px square) maps unchanged."""
    import torch

    from next3d_blender.core.flame import conversions
    from next3d_blender.core.rendering.camera import look_at_cam2world

    vertices, _, landmarks = head
    params = _params(framing.FFHQ_FOCAL * 36.0, 512, 512)
    for yaw, pitch in ((0.0, 0.0), (0.3, -0.1), (-0.5, 0.2)):
        world = look_at_cam2world(yaw, pitch).to(torch.float64).numpy()
        c2w = np.array(world)
        c2w[:3, 3] = conversions.Placement().to_flame(world[:3, 3])
        view = framing.virtual_view(c2w, params, vertices)
        assert np.allclose(view.cam2world, c2w, atol=1e-5), (yaw, pitch)
        assert np.allclose(view.to_scene, [[1, 0, 0], [0, 1, 0]], atol=1e-4), (yaw, pitch, view.to_scene)
        assert view.residual_px < 1e-3
        through, direct = _landmark_errors(view, c2w, params, landmarks)
        assert np.abs(through - direct).max() < 1e-3


def test_a_wider_virtual_camera_frames_more_of_the_head(head):
    """focal_scale < 1: the same direction, a wider view; the transform still lands the landmarks."""
    vertices, _, landmarks = head
    c2w, params = _in_head_space(FACTORY[2], FACTORY[3]), _params(FACTORY[1])
    trained = framing.virtual_view(c2w, params, vertices)
    wide = framing.virtual_view(c2w, params, vertices, focal_scale=0.6)
    assert np.allclose(wide.cam2world, trained.cam2world)
    assert np.isclose(wide.intrinsics[0, 0], 0.6 * framing.FFHQ_FOCAL) and wide.warning == trained.warning
    assert np.isclose(wide.scale, trained.scale / 0.6, rtol=0.02)
    through, direct = _landmark_errors(wide, c2w, params, landmarks)
    assert np.abs(through - direct).max() < 1.5

    def inside(view):
        xy = convert.project_points(vertices, view.cam2world.astype(np.float64), view.pixel_intrinsics)
        return np.mean(np.all((xy >= 0) & (xy < view.side), axis=1))

    assert inside(trained) < 0.9 and inside(wide) == 1.0     # seen from the side, FFHQ's crop cuts the head
    with pytest.raises(framing.InputError, match="focal scale"):
        framing.virtual_view(c2w, params, vertices, focal_scale=0.0)


def test_official_values_agree_with_core():
    from next3d_blender.core.default_model import SMALL_CONFIG
    from next3d_blender.core.flame.conversions import OFFICIAL_PLACEMENT, Placement
    from next3d_blender.core.rendering.camera import FFHQ_PIVOT, FFHQ_RADIUS
    from next3d_blender.core.training.synthetic import FFHQ_FOCAL

    assert (framing.FFHQ_RADIUS, framing.FFHQ_PIVOT, framing.FFHQ_FOCAL) == (FFHQ_RADIUS, FFHQ_PIVOT, FFHQ_FOCAL)
    train = framing.TrainingCamera()
    assert train == framing.TrainingCamera.of(SMALL_CONFIG)
    assert train.scale == OFFICIAL_PLACEMENT.scale and train.offset == OFFICIAL_PLACEMENT.offset("front")
    p = np.array([0.03, -0.05, 0.07])
    assert np.allclose(train.to_world(p), Placement.of(SMALL_CONFIG).to_world(p))
    with pytest.raises(framing.InputError, match="not a generator config"):
        framing.TrainingCamera.of(object())


def test_a_models_own_camera_values_are_used(head):
    from dataclasses import replace

    from next3d_blender.core.default_model import SMALL_CONFIG
    from next3d_blender.core.flame import conversions

    config = replace(SMALL_CONFIG, avg_camera_radius=3.1, avg_camera_pivot=(0.0, 0.05, 0.15))
    view = framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0), head[0], config=config)
    world = conversions.camera_to_world(view.cam2world[None].astype(np.float64), config)[0]
    assert abs(np.linalg.norm(world[:3, 3]) - 3.1) < 1e-4
    forward = np.array([0.0, 0.05, 0.15]) - world[:3, 3]
    assert np.allclose(world[:3, 2], forward / np.linalg.norm(forward), atol=1e-5)
    with pytest.raises(framing.InputError, match="scale must be positive"):
        framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0), head[0], head_scale=0.0)


def test_roll_lens_shift_and_aspect_go_into_the_transform(head):
    vertices, _, landmarks = head
    base = _in_head_space(PORTRAIT[2], PORTRAIT[3])
    plain = framing.virtual_view(base, _params(85.0), vertices)
    rolled_rot = _world((0, 0, 0), (PORTRAIT[3][0], 20.0, PORTRAIT[3][2]))   # the camera turned about its view axis
    rolled = _world(PORTRAIT[2], (0, 0, 0))
    rolled[:3, :3] = rolled_rot[:3, :3]
    rolled = convert.camera_in_head_space(convert.opencv_cam2world(rolled), HEAD_TO_WORLD)
    shifted = _params(85.0, shift_x=0.1, shift_y=-0.05, aspect=(1.0, 1.3))
    view = framing.virtual_view(rolled, shifted, vertices)
    # Same direction, so the same virtual camera: roll, shift and pixel aspect are all in to_scene.
    assert np.allclose(view.cam2world, plain.cam2world, atol=1e-6)

    k = convert.intrinsics_pixels(shifted)

    def angle(m, aspect=1.0):
        return math.degrees(math.atan2(m[1, 0] / aspect, m[0, 0]))

    # Euler Y on this camera (after X = 90) turns it about its view axis: the image turns the opposite way.
    assert abs(abs(angle(view.to_scene, k[1, 1] / k[0, 0]) - angle(plain.to_scene)) - 20.0) < 0.5
    through, direct = _landmark_errors(view, rolled, shifted, landmarks)
    assert np.abs(through - direct).max() < 4.0
    # Pixel aspect: the vertical scale of to_scene differs from the horizontal by fy / fx.
    rows = np.linalg.norm(view.to_scene[:, :2], axis=1)
    assert abs(rows[1] / rows[0] - k[1, 1] / k[0, 0]) < 1e-6
    # The shift moves the head by shift * the fit dimension, in pixels.
    unrolled = framing.virtual_view(base, _params(85.0, shift_x=0.1), vertices)
    assert np.allclose(unrolled.to_scene[:, 2] - plain.to_scene[:, 2], [-0.1 * 1920, 0.0], atol=1e-6)


@pytest.mark.parametrize("where, location, rotation, lens, warns", [
    ("behind", (0.0, 1.0, 0.03), (90.0, 0.0, 180.0), 85.0, "from behind"),
    ("above", (0.0, -0.5, 1.0), (27.0, 0.0, 0.0), 85.0, "from above"),
    ("profile", (1.0, -0.1, 0.03), (90.0, 0.0, 84.0), 85.0, "from the side"),
    ("telephoto far away", (0.0, -6.0, 0.03), (90.0, 0.0, 0.0), 600.0, ""),
    ("wide angle close", (0.0, -0.35, 0.03), (90.0, 0.0, 0.0), 18.0, ""),
    ("off-centre, 35 degrees yaw", (0.6, -0.8, 0.2), (82.0, 0.0, 38.0), 50.0, ""),
])
def test_warning_only_for_the_direction(head, where, location, rotation, lens, warns):
    vertices = head[0]
    view = framing.virtual_view(_in_head_space(location, rotation), _params(lens), vertices)
    if warns:
        assert warns in view.warning and "45" in view.warning, (where, view.yaw_pitch, view.warning)
    else:
        assert view.warning == "", (where, view.yaw_pitch, view.warning)


def test_view_angles():
    assert framing.view_angles(np.array([0.0, 0.0, 1.0])) == (0.0, 0.0)
    yaw, pitch = framing.view_angles(np.array([math.sin(0.5), 0.0, math.cos(0.5)]))
    assert math.isclose(yaw, math.degrees(0.5)) and pitch == 0.0
    yaw, pitch = framing.view_angles(np.array([0.0, math.sin(0.4), math.cos(0.4)]))
    assert math.isclose(pitch, math.degrees(0.4)) and yaw == 0.0


def test_cameras_inside_or_facing_away_are_refused(head):
    vertices = head[0]
    with pytest.raises(framing.InputError, match="inside the head"):
        framing.virtual_view(_in_head_space((0.0, -0.02, 0.0), (90.0, 0.0, 0.0)), _params(50.0), vertices)
    with pytest.raises(framing.HeadOutOfView, match="behind the scene camera"):
        framing.virtual_view(_in_head_space((0.0, -1.0, 0.0), (90.0, 0.0, 180.0)), _params(50.0), vertices)
    with pytest.raises(framing.InputError, match=r"shape \[4, 4\]"):
        framing.virtual_view(np.eye(3), _params(50.0), vertices)
    bad = vertices.copy()
    bad[3] = np.nan
    with pytest.raises(framing.InputError, match="non-finite"):
        framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0), bad)
    views = framing.frame_views([_in_head_space((0.0, -1.0, 0.0), (90.0, 0.0, 180.0)),
                                 _in_head_space(PORTRAIT[2], PORTRAIT[3])], [_params(50.0), _params(85.0)],
                                [vertices, vertices])
    assert views[0] is None and isinstance(views[1], framing.VirtualView)


def _coordinate_image(side: int) -> np.ndarray:
    """An image whose pixels hold their own centre's coordinates in the `framing.DEFAULT_SIDE` square, and 1."""
    c = (np.arange(side) + 0.5) * framing.DEFAULT_SIDE / side
    xx, yy = np.meshgrid(c, c)
    return np.stack([xx, yy, np.ones_like(xx)], axis=-1).astype(np.float32)


@pytest.mark.parametrize("case", [FACTORY, PORTRAIT, VERTICAL], ids=lambda c: c[0])
def test_warp_puts_each_generator_pixel_where_to_scene_says(head, case):
    name, lens, location, rotation, (w, h) = case
    vertices, _, landmarks = head
    c2w, params = _in_head_space(location, rotation), _params(lens, w, h)
    view = framing.virtual_view(c2w, params, vertices)
    gen = convert.project_points(landmarks, view.cam2world.astype(np.float64), view.pixel_intrinsics)
    scene = view.generator_to_scene(gen)
    scene = scene[(scene[:, 0] >= 0) & (scene[:, 0] < w) & (scene[:, 1] >= 0) & (scene[:, 1] < h)]
    assert len(scene) > 40
    for size in (512, 128):
        out = framing.warp_to_scene(_coordinate_image(size), view, w, h)
        assert out.shape == (h, w, 3)
        got = np.array([out[int(y), int(x)] for x, y in scene])
        assert np.all(got[:, 2] > 0.999), name
        # Where a scene pixel's centre maps back to: within that pixel's footprint in the generator image (and the
        # area averaging of a shrinking head).
        tol = max(1.0 / view.scale, 1.0) + framing.DEFAULT_SIDE / size
        back = np.floor(scene) + 0.5
        expect = (back - view.to_scene[:, 2]) @ np.linalg.inv(view.to_scene[:, :2]).T
        assert np.abs(got[:, :2] - expect).max() < tol, (name, size)
    # Zero outside the generator's square, beyond the half pixel (of the last, 128 px image, or of its
    # area-reduced copy) over which bilinear sampling fades to zero.
    corners = view.generator_to_scene(np.array([[0.0, 0.0], [512.0, 512.0], [0.0, 512.0], [512.0, 0.0]]))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    fade = 0.5 * 4 * max(1, int(1 / (view.scale * 4))) * view.scale * math.sqrt(2) + 1
    assert lo[0] - fade > 2 or hi[1] + fade < h - 2, name        # something of the frame is outside the square
    if lo[0] - fade > 2:
        assert np.all(out[:, : int(lo[0] - fade)] == 0)
        assert np.any(out[:, int(lo[0] + fade) + 1] != 0)
    if hi[1] + fade < h - 2:
        assert np.all(out[int(hi[1] + fade) + 1:] == 0)


def test_warp_is_bilinear_with_zeros_outside():
    """Against a plain per-pixel bilinear interpolation, on a small rotated, scaled, shifted view."""
    rng = np.random.default_rng(3)
    image = rng.random((8, 8, 2)).astype(np.float32)
    angle, scale = 0.3, 1.4
    to_scene = np.array([[scale * math.cos(angle), -scale * math.sin(angle), 3.2],
                         [scale * math.sin(angle), scale * math.cos(angle), -1.7]])
    view = framing.VirtualView(cam2world=np.eye(4, dtype=np.float32), intrinsics=np.eye(3, dtype=np.float32),
                               side=8, to_scene=to_scene, depth_scale=1.0, depth_offset=0.0, yaw_pitch=(0.0, 0.0),
                               warning="")
    out = framing.warp_to_scene(image, view, 16, 14)
    inv = np.linalg.inv(np.vstack([to_scene, [0, 0, 1]]))

    def pixel(i, j):
        return image[i, j] if 0 <= i < 8 and 0 <= j < 8 else np.zeros(2)

    for r in range(14):
        for c in range(16):
            x, y, _ = inv @ [c + 0.5, r + 0.5, 1.0]
            fx, fy = x - 0.5, y - 0.5
            j, i = math.floor(fx), math.floor(fy)
            ax, ay = fx - j, fy - i
            want = ((1 - ax) * (1 - ay) * pixel(i, j) + ax * (1 - ay) * pixel(i, j + 1)
                    + (1 - ax) * ay * pixel(i + 1, j) + ax * ay * pixel(i + 1, j + 1))
            assert np.allclose(out[r, c], want, atol=1e-5), (r, c)
    assert out.any() and not out.all()


def test_warp_within_a_box(head):
    view = framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0, 480, 270), head[0])
    image = _coordinate_image(64)
    whole = framing.warp_to_scene(image, view, 480, 270)
    part = framing.warp_to_scene(image, view, 480, 270, box=(100, 50, 300, 200))
    assert np.array_equal(part[50:200, 100:300], whole[50:200, 100:300])
    part[50:200, 100:300] = 0
    assert not part.any() and whole[:50].any()


def test_warp_rejects_bad_images(head):
    view = framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0), head[0])
    with pytest.raises(framing.InputError, match="square"):
        framing.warp_to_scene(np.zeros((10, 12, 3), np.float32), view, 64, 64)
    with pytest.raises(framing.InputError, match="positive size"):
        framing.warp_to_scene(np.zeros((8, 8, 3), np.float32), view, 0, 64)


@pytest.mark.parametrize("case", [PORTRAIT, CLOSE_UP, FACTORY], ids=lambda c: c[0])
def test_depth_maps_to_the_scene_cameras_depth(head, case):
    name, lens, location, rotation, (w, h) = case
    vertices = head[0]
    c2w, params = _in_head_space(location, rotation), _params(lens, w, h)
    head_scale = 1.5                                   # a rig scaled up in Blender: scene depth in Blender units
    view = framing.virtual_view(c2w, params, vertices, head_scale=head_scale)
    train = framing.TrainingCamera()
    # Generator z depth of the camera-facing vertices (world units along the virtual camera's axis).
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    front = vertices[(vertices - centre) @ (c2w[:3, 3] - centre) > 0]
    v2w = view.cam2world.astype(np.float64)
    z_gen = ((front - v2w[:3, 3]) @ v2w[:3, 2]) * train.scale
    z_scene = ((front - c2w[:3, 3]) @ c2w[:3, 2]) * head_scale
    # Per generator pixel (the vertex's ray through the virtual camera): exact.
    xy = convert.project_points(front, v2w, view.intrinsics.astype(np.float64))
    xn, yn = (xy[:, 0] - 0.5) / framing.FFHQ_FOCAL, (xy[:, 1] - 0.5) / framing.FFHQ_FOCAL
    assert np.abs(view.scene_depth(z_gen, xn, yn) - z_scene).max() < 1e-6 * abs(z_scene).max()
    # The one-number mapping of the central ray: within a small fraction of the head's depth (lateral offsets
    # are dropped).
    mapped = view.depth_scale * z_gen + view.depth_offset
    worst = np.abs(mapped - z_scene).max()
    assert worst < 0.1 * np.ptp(z_scene), (name, worst, np.ptp(z_scene))


def test_ray_depth_becomes_z_depth(head):
    """A plane facing the virtual camera: ray distances grow off-axis, z depths stay constant."""
    view = framing.virtual_view(_in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0), head[0])
    r = 32
    u = (np.arange(r) + 0.5) / r
    xn, yn = (u[None, :] - 0.5) / framing.FFHQ_FOCAL, (u[:, None] - 0.5) / framing.FFHQ_FOCAL
    ray = 2.5 * np.sqrt(xn * xn + yn * yn + 1.0)
    assert np.allclose(framing.generator_z_depth(ray, view), 2.5)
    scene = framing.depth_to_scene(ray.astype(np.float32), view, 1920, 1080)
    inside = np.isfinite(scene)
    assert inside.any() and not inside.all()
    # The plane's scene depth: exact per pixel; on a frontal camera, the plane stays (nearly) flat.
    cx, cy = view.generator_to_scene(np.array([256.0, 256.0]))
    assert np.isclose(scene[int(cy), int(cx)], view.depth_scale * 2.5 + view.depth_offset, rtol=1e-3)
    assert np.ptp(scene[inside]) < 0.02 * np.median(scene[inside])


def test_head_matte(head):
    vertices, faces, landmarks = head
    w, h = 640, 480
    c2w, params = _in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(30.0, w, h)
    pixels = framing.head_pixels(vertices, c2w, params)
    alpha = framing.head_matte(pixels, faces, w, h)
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    face = convert.project_points(landmarks, c2w, convert.intrinsics_pixels(params))
    assert np.all(alpha[face[:, 1].astype(int), face[:, 0].astype(int)] == 1.0)
    size = np.ptp(pixels, axis=0).max()
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    # Zero beyond widen + feather around the head's box; still 1 just outside the silhouette (the widening).
    far = (matte.WIDEN + matte.FEATHER) * size + 3
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    outside = (xs < lo[0] - far) | (xs > hi[0] + far) | (ys < lo[1] - far) | (ys > hi[1] + far)
    assert outside.any() and np.all(alpha[outside] == 0.0)
    top = int(lo[1]) - int(0.5 * matte.WIDEN * size)
    column = int(round(pixels[np.argmin(pixels[:, 1]), 0]))
    assert alpha[top, column] == 1.0
    # Smooth: no step larger than the feather's steepest slope (smoothstep: 1.5 / feather width) allows.
    slope = 1.5 / (matte.FEATHER * size)
    steps = max(np.abs(np.diff(alpha, axis=0)).max(), np.abs(np.diff(alpha, axis=1)).max())
    assert steps < 1.6 * slope + 0.02, (steps, slope)
    # Straight up from the top of the head, alpha only falls.
    ray = alpha[: top + 1, column][::-1]
    assert np.all(np.diff(ray) <= 1e-6) and ray[0] == 1.0 and ray[-1] == 0.0
    assert np.any((ray > 0.05) & (ray < 0.95))            # a feathered edge, not a cut
    # A head far away: a small matte, the same shape.
    small = framing.head_matte(pixels * 0.1, faces, w, h)
    assert 0 < (small > 0.5).sum() < (alpha > 0.5).sum() / 50
    # Bad input.
    with pytest.raises(framing.InputError, match="outside 0"):
        framing.head_matte(pixels[:10], faces, w, h)
    with pytest.raises(framing.InputError, match=r"\[N, 2\]"):
        framing.head_matte(vertices, faces, w, h)


def test_head_matte_of_a_head_larger_than_the_frame(head):
    """The 85 mm portrait: the head overflows the frame; the matte covers the face and is computed quickly on a
    reduced grid (its size does not grow with the render's)."""
    vertices, faces, landmarks = head
    c2w, params = _in_head_space(PORTRAIT[2], PORTRAIT[3]), _params(85.0)
    alpha = framing.head_matte(framing.head_pixels(vertices, c2w, params), faces, 1920, 1080)
    face = convert.project_points(landmarks, c2w, convert.intrinsics_pixels(params))
    inside = (face[:, 0] >= 0) & (face[:, 0] < 1920) & (face[:, 1] >= 0) & (face[:, 1] < 1080)
    assert inside.sum() > 50
    assert np.all(alpha[face[inside, 1].astype(int), face[inside, 0].astype(int)] == 1.0)
    assert alpha[0, 0] == 0.0 and alpha[0, -1] == 0.0      # the corners lie beyond the widened cheeks


@pytest.mark.parametrize("case", [PORTRAIT, FACTORY], ids=lambda c: c[0])
def test_head_layer(head, case):
    """One head's layer: the generator's colours under the matte, cut softly where its square ends, premultiplied,
    with the scene depth where alpha > 0."""
    name, lens, location, rotation, (w, h) = case
    w, h = w // 4, h // 4
    vertices, faces, landmarks = head
    c2w, params = _in_head_space(location, rotation), _params(lens, w, h)
    view = framing.virtual_view(c2w, params, vertices)
    colour = np.array([0.2, 0.5, 0.9], np.float32)
    image = np.broadcast_to(colour, (64, 64, 3))
    ray = np.full((16, 16), view.pivot_depth, np.float32)     # a sphere about the virtual camera, at the pivot
    pixels = framing.head_pixels(vertices, c2w, params)
    rgba, depth = framing.head_layer(image, ray, view, pixels, faces, w, h)
    alpha = rgba[..., 3]
    matte_alone = framing.head_matte(pixels, faces, w, h)
    assert np.all(alpha <= matte_alone + 1e-6)
    solid = alpha > 1e-3
    assert solid.any()
    assert np.allclose(rgba[solid, :3] / alpha[solid, None], colour, atol=1e-4)   # premultiplied, colour kept
    assert np.all(np.isinf(depth[~(alpha > 0)])) and np.all(np.isfinite(depth[alpha > 0]))
    # Where the square does not reach, nothing, even under the matte.
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    inv = np.linalg.inv(np.vstack([view.to_scene, [0, 0, 1]]))
    gx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    gy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # (bilinear sampling reaches one pixel of the 64 px image beyond the square, or of its area-reduced copy)
    reach = 8 * max(1, int(1 / (view.scale * 8))) + 1
    beyond = (gx < -reach) | (gx > 512 + reach) | (gy < -reach) | (gy > 512 + reach)
    assert beyond.any()
    assert np.all(alpha[beyond] == 0)
    # The face's landmarks that fall in the frame are opaque, at the pivot's scene depth give or take the head.
    face = convert.project_points(landmarks, c2w, convert.intrinsics_pixels(params)).astype(int)
    ok = (face[:, 0] >= 0) & (face[:, 0] < w) & (face[:, 1] >= 0) & (face[:, 1] < h)
    opaque = alpha[face[ok, 1], face[ok, 0]]
    assert np.mean(opaque == 1.0) > 0.8, name
    pivot_depth = view.depth_offset + view.depth_scale * view.pivot_depth
    assert np.allclose(depth[face[ok, 1], face[ok, 0]], pivot_depth, atol=0.05)
    # Without a depth image: the pivot's depth under the whole layer.
    _, flat = framing.head_layer(image, None, view, pixels, faces, w, h)
    assert np.allclose(flat[alpha > 0], pivot_depth)


def test_composite_by_depth_puts_the_nearer_head_in_front():
    h, w = 20, 30
    red = np.zeros((h, w, 4), np.float32)
    red[:, :18] = (1.0, 0.0, 0.0, 1.0)
    red_depth = np.where(np.arange(w)[None, :] < 18, 2.0, np.inf) * np.ones((h, 1))
    blue = np.zeros((h, w, 4), np.float32)
    blue[:, 10:] = (0.0, 0.0, 0.5, 0.5)                   # premultiplied, half transparent
    blue_depth = np.where(np.arange(w)[None, :] >= 10, 1.0, np.inf) * np.ones((h, 1))
    for layers in ([(red, red_depth), (blue, blue_depth)], [(blue, blue_depth), (red, red_depth)]):
        rgba, depth = framing.composite_by_depth(layers)
        assert np.allclose(rgba[:, 5], [1, 0, 0, 1]) and np.all(depth[:, 5] == 2.0)          # red alone
        assert np.allclose(rgba[:, 14], [0.5, 0, 0.5, 1]) and np.all(depth[:, 14] == 1.0)    # blue over red
        assert np.allclose(rgba[:, 25], [0, 0, 0.5, 0.5]) and np.all(depth[:, 25] == 1.0)    # blue alone
    # Blue behind red: red hides it.
    rgba, depth = framing.composite_by_depth([(red, red_depth), (blue, blue_depth + 5.0)])
    assert np.allclose(rgba[:, 14], [1, 0, 0, 1]) and np.all(depth[:, 14] == 2.0)
    empty = framing.composite_by_depth([(np.zeros((h, w, 4), np.float32), np.full((h, w), np.inf))])
    assert np.all(empty[0] == 0) and np.all(np.isinf(empty[1]))
    with pytest.raises(framing.InputError, match="nothing to composite"):
        framing.composite_by_depth([])
    with pytest.raises(framing.InputError, match="differ in size"):
        framing.composite_by_depth([(red, red_depth), (blue[:5], blue_depth[:5])])


def test_framing_imports_without_torch():
    """The render engine runs in Blender's Python, which has numpy and no torch."""
    code = ("import sys\nsys.modules['torch'] = None\nimport next3d_blender.engine.framing as f\n"
            "print(sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in "
            "('torch', 'bpy')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_backdrop_key_removes_the_generators_backdrop_behind_the_head():
    """A head (a disc of depths 2.55-2.75 about a centre at 2.78) in front of a backdrop at 2.88: 1 on the head, 0 on
    the backdrop. A close-up whose square holds only the head (depths in front of its centre) keeps everything."""
    r = 32
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    dist = np.hypot(xx - r / 2, yy - r / 2) / (r / 2)
    head = dist < 0.6
    z = np.where(head, 2.55 + 0.2 * dist / 0.6, 2.88)
    key = framing.backdrop_key(z, centre_depth=2.78)
    assert key.shape == (r, r) and key.dtype == np.float32
    assert key[dist < 0.45].min() > 0.99 and key[dist > 0.8].max() < 0.01
    assert np.all(np.diff(key[r // 2, r // 2:]) <= 1e-6)          # falls off outwards, no holes
    close_up = 2.55 + 0.2 * dist / dist.max()
    assert framing.backdrop_key(close_up, centre_depth=2.78).min() == 1.0
    assert framing.backdrop_key(np.full((r, r), 2.7), centre_depth=2.78).min() == 1.0


def test_head_layer_keys_out_the_backdrop_inside_the_matte(head):
    """With a generator depth image whose border is far behind the head, the layer is transparent there even where
    the widened silhouette reaches."""
    name, lens, location, rotation, (w, h) = PORTRAIT
    w, h = w // 4, h // 4
    vertices, faces, landmarks = head
    c2w, params = _in_head_space(location, rotation), _params(lens, w, h)
    view = framing.virtual_view(c2w, params, vertices)
    image = np.full((64, 64, 3), 0.5, np.float32)
    pixels = framing.head_pixels(vertices, c2w, params)
    near = np.full((16, 16), view.pivot_depth, np.float32)
    keyed = near.copy()
    keyed[:, :2] = keyed[:, -2:] = view.centre_depth + 0.5       # the backdrop, left and right of the head
    plain, _ = framing.head_layer(image, near, view, pixels, faces, w, h)
    cut, _ = framing.head_layer(image, keyed, view, pixels, faces, w, h)
    assert np.all(cut[..., 3] <= plain[..., 3] + 1e-6)
    assert cut[..., 3].sum() < plain[..., 3].sum()
    face = convert.project_points(landmarks, c2w, convert.intrinsics_pixels(params)).astype(int)
    ok = (face[:, 0] >= 0) & (face[:, 0] < w) & (face[:, 1] >= 0) & (face[:, 1] < h)
    assert np.allclose(cut[face[ok, 1], face[ok, 0], 3], plain[face[ok, 1], face[ok, 0], 3])
