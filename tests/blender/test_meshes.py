"""Extracted meshes belong to the scene (docs/mesh_extraction.md#head-region): with the bundled model, the mesh of
a frame is parented to the rig, lies on the rig's face, follows the head, shows only on its frame, and extracting
the frame again replaces it instead of adding a duplicate."""

import bpy
import numpy as np
from scipy.spatial import cKDTree

from n3d_helpers import make_scene, submodule

NAME = "Next3D Mesh FLAME {:04d}"


def _animate(arm):
    """From frame 1 to 5 the neck turns, the jaw opens and the rig moves."""
    bones = arm.pose.bones
    for frame, turn, jaw, x in ((1, 0.0, 0.0, 0.0), (5, 0.3, 0.25, 0.05)):
        bones["neck"].rotation_euler = (0.0, turn, 0.0)
        bones["neck"].keyframe_insert("rotation_euler", frame=frame)
        bones["jaw"].rotation_euler = (jaw, 0.0, 0.0)
        bones["jaw"].keyframe_insert("rotation_euler", frame=frame)
        arm.location.x = x
        arm.keyframe_insert("location", frame=frame)


def _world(obj):
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def _surface_distance(points, obj, samples=6):
    """Distance from world points to the object's triangles (dense samples of them)."""
    v = _world(obj)
    loops = np.empty(len(obj.data.loops), np.int32)
    obj.data.loops.foreach_get("vertex_index", loops)
    tri = v[loops.reshape(-1, 3)]
    w = np.random.RandomState(0).dirichlet([1.0, 1.0, 1.0], size=(len(tri), samples))
    pts = np.concatenate([np.einsum("fkj,fjc->fkc", w, tri).reshape(-1, 3), v])
    return cKDTree(pts).query(points)[0]


def _head_matrix(arm):
    """Where the rig's head is now: the neck bone's deformation (the skull follows it)."""
    neck = arm.pose.bones["neck"]
    return np.array(arm.matrix_world @ neck.matrix @ neck.bone.matrix_local.inverted())


def _extract(mode="CURRENT"):
    scene = bpy.context.scene
    scene.next3d.mesh_frames = mode
    scene.next3d.mesh_resolution = 64
    assert bpy.ops.next3d.extract_mesh() == {"FINISHED"}


def test_mesh_is_parented_on_the_face_follows_the_head_and_shows_on_its_frame(addon, tmp_path):
    arm = make_scene(tmp_path)
    _animate(arm)
    scene = bpy.context.scene
    scene.frame_set(5)
    before = set(bpy.data.objects.keys())
    _extract()
    assert set(bpy.data.objects.keys()) - before == {NAME.format(5)}
    obj = bpy.data.objects[NAME.format(5)]
    assert obj.data.name == obj.name and obj.next3d.mesh_frame == 5
    assert obj.name in bpy.data.collections["Next3D Meshes FLAME"].objects
    assert (obj.parent, obj.parent_type, obj.parent_bone) == (arm, "BONE", "neck")

    # On the rig's face: the landmarks the generator was given (the rig's, at frame 5, in world space) lie within
    # a few millimetres of the surface; and the mesh is about the size of the head (no backdrop beside it).
    frames = submodule("blender.scene").prepare(bpy.context, [5])
    head = frames.heads[5]
    landmarks = frames.arrays["landmarks"][0] @ head[:3, :3].T + head[:3, 3]
    bpy.context.view_layer.update()
    assert np.allclose(np.array(obj.matrix_world), head, atol=1e-5)
    dist = _surface_distance(landmarks, obj)
    assert np.median(dist) < 0.006 and np.percentile(dist, 90) < 0.012, np.round(dist * 1000, 1)
    rig_extent = np.ptp(_world(bpy.data.objects["FLAME-mesh"]), axis=0)
    assert (np.ptp(_world(obj), axis=0) <= rig_extent + 2 * 0.025).all()

    # Only on its frame, in the viewport and in renders.
    for frame, hidden in ((4, True), (5, False), (6, True), (1, True), (5, False)):
        scene.frame_set(frame)
        assert (obj.hide_viewport, obj.hide_render) == (hidden, hidden), frame

    # Follows the head: move the rig and turn the neck at frame 5 (not keyframed), and the mesh moves with them.
    arm.location.x += 0.1
    arm.pose.bones["neck"].rotation_euler = (0.2, -0.1, 0.0)
    bpy.context.view_layer.update()
    moved = _head_matrix(arm)
    assert not np.allclose(moved, head, atol=1e-3)
    assert np.allclose(np.array(obj.matrix_world), moved, atol=1e-5)


def test_extracting_again_replaces_the_frames_mesh(addon, tmp_path):
    arm = make_scene(tmp_path)
    _animate(arm)
    scene = bpy.context.scene
    scene.frame_set(5)
    _extract()
    obj = bpy.data.objects[NAME.format(5)]
    old = obj.data
    old["extraction"] = "first"
    material = bpy.data.materials.new("Skin")
    old.materials.append(material)
    counts = (len(bpy.data.objects), len(bpy.data.meshes))

    scene.next3d.seed += 1                                      # another avatar: another surface
    _extract()
    assert (len(bpy.data.objects), len(bpy.data.meshes)) == counts
    assert bpy.data.objects[NAME.format(5)] == obj and obj.data.name == obj.name
    assert obj.data.get("extraction") is None and not any(m.get("extraction") for m in bpy.data.meshes)
    assert list(obj.data.materials) == [material]               # the user's material stays
    assert not [n for n in list(bpy.data.objects.keys()) + list(bpy.data.meshes.keys()) if ".00" in n]
    assert (obj.parent, obj.parent_bone) == (arm, "neck")
    keys = {fc.data_path: len(fc.keyframe_points) for fc in submodule("blender.rig").fcurves_of(obj)}
    assert keys == {"hide_viewport": 3, "hide_render": 3}

    # One mesh per keyframe (1 and 5): frame 5's is replaced again, frame 1's is new; each shows on its frame.
    _extract("KEYFRAMES")
    assert (len(bpy.data.objects), len(bpy.data.meshes)) == (counts[0] + 1, counts[1] + 1)
    first = bpy.data.objects[NAME.format(1)]
    assert first.parent == arm and first.next3d.mesh_frame == 1
    for frame, shown in ((1, (False, True)), (5, (True, False)), (3, (True, True))):
        scene.frame_set(frame)
        assert (first.hide_viewport, obj.hide_viewport) == shown, frame
