"""Camera and rotation conversion, checked against Blender's own projection (world_to_camera_view)."""

import math

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Vector

from next3d_blender.engine import convert
from n3d_helpers import make_scene, submodule

CONFIGS = [  # (W, H, percentage, fit, lens, sensor w, sensor h, shift x, shift y, pixel aspect x, y)
    (640, 480, 100, "AUTO", 50.0, 36.0, 24.0, 0.05, -0.03, 1, 1),
    (480, 640, 50, "AUTO", 35.0, 36.0, 24.0, -0.1, 0.2, 1, 1),
    (640, 480, 100, "VERTICAL", 85.0, 36.0, 20.0, 0.0, 0.1, 1, 1),
    (300, 500, 100, "HORIZONTAL", 120.0, 30.0, 24.0, 0.2, 0.0, 1, 1),
    (512, 512, 100, "AUTO", 4.2647 * 36, 36.0, 24.0, 0.0, 0.0, 1, 1),
    (640, 480, 100, "AUTO", 50.0, 36.0, 24.0, 0.1, 0.05, 2, 1),
]


def _camera(cfg):
    w, h, pct, fit, lens, sw, sh, sx, sy, ax, ay = cfg
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = w, h, pct
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = ax, ay
    data = bpy.data.cameras.new("cam")
    data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = lens, sw, sh, fit
    data.shift_x, data.shift_y = sx, sy
    cam = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(cam)
    cam.location = (0.3, -2.0, 0.4)
    cam.rotation_euler = Euler((math.radians(80), math.radians(3), math.radians(10)))
    cam.scale = (1.7, 1.7, 1.7)   # object scale must not change the projection
    scene.camera = cam
    bpy.context.view_layer.update()
    return scene, cam


@pytest.mark.parametrize("cfg", CONFIGS)
def test_projection_matches_blender(addon, cfg):
    scene, cam = _camera(cfg)
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.4, 0.4, (12, 3)) + np.array([0.3, 0.0, 0.4])
    params = submodule("blender.scene").camera_params(cam, scene)
    k = convert.intrinsics_pixels(params)
    c2w = convert.opencv_cam2world(convert.matrix_to_numpy(cam.matrix_world))
    ours = convert.project_points(points, c2w, k)
    w, h = params.width, params.height
    ref = np.array([[v.x * w, (1 - v.y) * h] for v in (world_to_camera_view(scene, cam, Vector(p)) for p in points)])
    assert np.abs(ours - ref).max() < 1e-3
    # The square framing gives the same pixels after scaling by the side and removing the crop offset.
    f = convert.square_framing(k, w, h)
    sq = convert.project_points(points, c2w, f.intrinsics * np.array([[f.side], [f.side], [1.0]]))
    assert np.abs(sq - [f.x0, f.y0] - ref).max() < 1e-3


def test_added_camera_is_the_ffhq_camera(addon, tmp_path):
    """'Add FLAME head' places the camera where the training cameras are: the label equals core's FFHQ camera."""
    import torch

    from core.rendering.camera import look_at_cam2world

    make_scene(tmp_path, size=(512, 512))
    jobs = submodule("engine.jobs")
    frames = submodule("blender.scene").prepare(bpy.context, [1])
    from core.default_model import SMALL_CONFIG

    label = jobs.camera_labels(frames.arrays, SMALL_CONFIG)[0]
    c2w = label[:16].reshape(4, 4)
    assert np.allclose(c2w[:3, 3], [0.0, 0.0, 2.7], atol=1e-4)
    assert np.allclose(c2w[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-5)
    k = label[16:].reshape(3, 3)
    assert np.allclose(k, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], atol=1e-5)
    ref = look_at_cam2world(0.0, 0.0, pivot=(0.0, 0.0, 0.0)).numpy()
    assert np.allclose(c2w, ref, atol=1e-4)
    assert frames.framing.side == 512 and (frames.framing.x0, frames.framing.y0) == (0, 0)
    assert torch.is_tensor(torch.from_numpy(label))


def test_head_pose_is_folded_into_the_camera(addon, tmp_path):
    """Turning the rig (object transform and neck bone) moves the camera the opposite way in head space."""
    arm = make_scene(tmp_path)
    prepare = submodule("blender.scene").prepare
    rest = prepare(bpy.context, [1]).arrays
    arm.rotation_euler.z = math.radians(30)       # yaw the whole rig about the world's up axis
    arm.pose.bones["neck"].rotation_euler = (0.0, math.radians(10), 0.0)   # and the neck about FLAME's y
    bpy.context.view_layer.update()
    turned = prepare(bpy.context, [1]).arrays
    neck = np.array(arm.data.bones["neck"].head_local)
    total = convert.axis_angle_to_matrix([0.0, math.radians(40), 0.0])   # FLAME y is Blender's up here
    c_rest, c_turned = rest["cam2world"][0].astype(np.float64), turned["cam2world"][0].astype(np.float64)
    assert np.allclose(c_turned[:3, :3], total.T @ c_rest[:3, :3], atol=1e-4)
    # Position: the world yaw turns about the rig origin, the neck about its joint.
    r_world, r_neck = convert.axis_angle_to_matrix([0, math.radians(30), 0]), \
        convert.axis_angle_to_matrix([0, math.radians(10), 0])
    expected = r_neck.T @ (r_world.T @ c_rest[:3, 3] - neck) + neck
    assert np.allclose(c_turned[:3, 3], expected, atol=1e-4)
    # The face itself is not turned: its landmarks are where they were.
    assert np.abs(turned["landmarks"] - rest["landmarks"]).max() < 1e-5


SCENE_CAMERAS = {   # lens, shift, location, rotation (degrees), the rig's turn about Blender's up, warns
    "85 mm portrait, rolled and shifted": (85.0, (0.08, -0.04), (0.12, -0.93, 0.04), (88, 7, 8), 20, False),
    "the factory camera": (50.0, (0.0, 0.0), (7.3589, -6.9258, 4.9583), (63.6, 0.0, 46.7), 0, True),
}


@pytest.mark.parametrize("name", sorted(SCENE_CAMERAS))
def test_virtual_view_lands_the_rig_where_blender_sees_it(addon, tmp_path, name):
    """Any scene camera (docs/camera.md#any-scene-camera). The rig's landmarks through the virtual camera and
    to_scene land where Blender's own projection (world_to_camera_view) puts them, and the matte is opaque there."""
    lens, shift, location, rotation, turn, warns = SCENE_CAMERAS[name]
    arm = make_scene(tmp_path, size=(960, 540))
    arm.rotation_euler.z = math.radians(turn)           # the head turned: its pose goes into the camera
    scene = bpy.context.scene
    data = bpy.data.cameras.new("shot")
    data.lens, (data.shift_x, data.shift_y) = lens, shift
    cam = bpy.data.objects.new("shot", data)
    scene.collection.objects.link(cam)
    cam.location = location
    cam.rotation_euler = Euler([math.radians(a) for a in rotation])    # the portrait's Y is a roll
    scene.camera = cam
    bpy.context.view_layer.update()
    frames = submodule("blender.scene").prepare(bpy.context, [scene.frame_current])
    framing = submodule("engine.framing")
    arrays = frames.arrays
    params = submodule("blender.scene").camera_params(cam, scene)
    view = framing.virtual_view(arrays["cam2world"][0], params, arrays["vertices"][0])
    assert bool(view.warning) == warns, view.warning
    landmarks = arrays["landmarks"][0].astype(np.float64)
    head_to_world = frames.heads[scene.frame_current]
    world = landmarks @ head_to_world[:3, :3].T + head_to_world[:3, 3]
    w, h = params.width, params.height
    ref = np.array([[v.x * w, (1 - v.y) * h] for v in (world_to_camera_view(scene, cam, Vector(p)) for p in world)])
    # The projection the fit uses is Blender's.
    direct = convert.project_points(landmarks, arrays["cam2world"][0].astype(np.float64),
                                    convert.intrinsics_pixels(params))
    assert np.abs(direct - ref).max() < 0.05
    through = view.generator_to_scene(convert.project_points(landmarks, view.cam2world.astype(np.float64),
                                                             view.pixel_intrinsics))
    assert np.abs(through - ref).max() * 512 / max(w, h) < 2.0     # pixels at the scale of a 512 px render
    alpha = framing.head_matte(framing.head_pixels(arrays["vertices"][0], arrays["cam2world"][0], params),
                               arrays["faces"], w, h)
    inside = (ref[:, 0] >= 0) & (ref[:, 0] < w) & (ref[:, 1] >= 0) & (ref[:, 1] < h)
    assert inside.all() or inside.sum() > 50
    assert np.all(alpha[ref[inside, 1].astype(int), ref[inside, 0].astype(int)] == 1.0)


def test_rotations_round_trip():
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=3) for _ in range(20)] + [np.array([math.pi - 1e-6, 0, 0]), np.zeros(3),
                                                          np.array([0, 0, 1e-9])]
    for aa in vectors:
        if np.linalg.norm(aa) > math.pi:
            aa = aa / np.linalg.norm(aa) * (np.linalg.norm(aa) % math.pi)
        back = convert.matrix_to_axis_angle(convert.axis_angle_to_matrix(aa))
        assert np.allclose(convert.axis_angle_to_matrix(back), convert.axis_angle_to_matrix(aa), atol=1e-6)
    # A bone whose rest orientation is not the identity: its rotation is conjugated into armature axes.
    rest = np.eye(4)
    rest[:3, :3] = convert.axis_angle_to_matrix([0.0, 0.0, math.pi / 2])
    basis = np.eye(4)
    basis[:3, :3] = convert.axis_angle_to_matrix([0.3, 0.0, 0.0])
    assert np.allclose(convert.matrix_to_axis_angle(convert.bone_rotation_in_parent_axes(rest, basis)),
                       [0.0, 0.3, 0.0], atol=1e-7)


def test_image_pixels_round_trip(addon):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    image = submodule("blender.datablocks").image_from_pixels("probe", pixels)
    flat = np.empty(9 * 6 * 4, np.float32)
    image.pixels.foreach_get(flat)
    back = convert.blender_to_pixels(flat, 9, 6)
    assert np.array_equal(back[..., :3], pixels)
    assert tuple(image.size) == (9, 6)
