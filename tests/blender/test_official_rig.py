"""The official path in Blender, with full-size stand-ins of the licensed files (tools/official_standins): FLAME's
layout (5023 vertices, 9976 triangles, 300 + 100 + 36 bases) and the narrow reference weights as an official network
pickle. A rig laid out as the FLAME Blender add-on builds it and one made by 'Add FLAME Head' send the same head;
what the viewport shows is what is rendered (sculpted Basis, a custom shape key, a constrained jaw); a rig of the
other topology is refused with a message naming both."""

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view

from n3d_helpers import flame_addon_rig, frontal_camera, submodule

SIZE = 96


@pytest.fixture(scope="session")
def flame_arrays(official_standins, tmp_path_factory) -> dict:
    from core.flame.files import load_flame_data

    data = load_flame_data(official_standins["generic_model.pkl"], cache_dir=tmp_path_factory.mktemp("cache"))
    return {k: v for k, v in data.to_arrays().items() if k != "name"}


@pytest.fixture
def official(prefs, official_standins):
    """The preferences as the README says: the official pickle and FLAME's generic_model.pkl, whose landmark
    embeddings lie beside it under their official names."""
    prefs.model_source = "OFFICIAL"
    prefs.official_path = str(official_standins["next3d_small.pkl"])
    prefs.flame_model_path = str(official_standins["generic_model.pkl"])
    return official_standins


def _keys(mesh, prefix):
    return submodule("blender.rig").keys_of(mesh, prefix)


def _quaternion(axis_angle):
    from mathutils import Quaternion, Vector

    v = Vector(axis_angle)
    return Quaternion(v.normalized(), v.length) if v.length else Quaternion()


def test_both_kinds_of_flame_rig_send_the_same_head(addon, official, flame_arrays, tmp_path):
    """'Add FLAME Head' with the FLAME model builds FLAME's 300 shape, 100 expression and pose-corrective keys; the
    FLAME add-on's layout (z-up data, keys numbered from 000, quaternion bones along +z) gives the engine the same
    vertices and landmarks for the same coefficients, and they are FLAME's own."""
    import torch

    from core.flame import FlameModel, FlameModelData, FlameParams

    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    ours = bpy.data.objects["FLAME-mesh"]
    counts = submodule("blender.rig").key_counts(ours)
    n_pose = int((np.abs(flame_arrays["posedirs"]).reshape(-1, 36).max(0) > 0).sum())
    assert counts == {"Shape": 300, "Exp": 100, "Pose": n_pose} and n_pose == 18
    assert _keys(ours, "Shape")[0].name == "Shape1" and _keys(ours, "Pose")[-1].name == "Pose18"
    our_arm = bpy.data.objects["FLAME"]
    arm, theirs = flame_addon_rig(flame_arrays)

    rng = np.random.default_rng(1)
    shape, expression = rng.normal(size=300) * 0.6, rng.normal(size=100) * 0.6
    jaw = np.array([0.25, 0.03, 0.0])
    for mesh in (ours, theirs):
        for kb, value in zip(_keys(mesh, "Shape"), shape):
            kb.value = value
        for kb, value in zip(_keys(mesh, "Exp"), expression):
            kb.value = value
    our_arm.pose.bones["jaw"].rotation_mode = "QUATERNION"
    our_arm.pose.bones["jaw"].rotation_quaternion = _quaternion(jaw)
    arm.pose.bones["jaw"].rotation_quaternion = _quaternion(jaw)
    # The FLAME add-on sets its Pose keys from the bones (its "Set poseshapes"): R - I of the neck, then the jaw.
    r_jaw = np.array(_quaternion(jaw).to_matrix()) - np.eye(3)
    for kb, value in zip(_keys(theirs, "Pose"), np.concatenate([np.zeros(9), r_jaw.reshape(-1)])):
        kb.value = value
    scene = submodule("blender.scene")
    a = scene.prepare(bpy.context, [1], head=submodule("blender.rig").rig_of_mesh(ours)).arrays
    b = scene.prepare(bpy.context, [1], head=submodule("blender.rig").rig_of_mesh(theirs)).arrays
    assert np.abs(a["vertices"] - b["vertices"]).max() < 2e-5
    assert np.abs(a["landmarks"] - b["landmarks"]).max() < 2e-5
    assert np.abs(a["cam2world"] - b["cam2world"]).max() < 1e-4

    # FLAME evaluated from the same coefficients: identity and expression exactly; the jaw about the joint the
    # bones sit at (the template's, as both add-ons place them), so the vertices it turns differ by the joint's
    # shift under the identity, which bounds the difference.
    model = FlameModel(FlameModelData(**flame_arrays))
    params = FlameParams(shape=shape, expression=expression, jaw=torch.tensor([jaw], dtype=torch.float32))
    with torch.no_grad():
        want = model(params)
        rest_joints = model(FlameParams.zeros(1, 300, 100)).joints[0]
    shift = float((want.joints[0, 2] - rest_joints[2]).norm())
    moved = np.abs(a["vertices"][0] - want.vertices[0].numpy()).max(axis=1)
    skull = submodule("core.flame.mesh_pose").skull_region(flame_arrays["weights"], flame_arrays["exprdirs"],
                                                            flame_arrays["posedirs"])
    assert moved[skull].max() < 2e-5
    assert moved.max() < 2 * np.sin(0.26 / 2) * shift + 2e-5


def _render():
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    image = bpy.data.images["Next3D Render"]
    px = np.empty(SIZE * SIZE * 4, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(SIZE, SIZE, 4)[::-1, :, :3].copy()     # rows from the top


def _jaw_extent(mesh, vertices):
    """(top, bottom, left, right) in pixels of the given vertices of the evaluated mesh in the camera's image."""
    scene = bpy.context.scene
    ev = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    points = [world_to_camera_view(scene, scene.camera, ev.matrix_world @ ev.data.vertices[int(i)].co)
              for i in vertices]
    rows, cols = [(1 - p.y) * SIZE for p in points], [p.x * SIZE for p in points]
    return min(rows), max(rows), min(cols), max(cols)


def test_what_the_viewport_shows_is_rendered(addon, official, flame_arrays, tmp_path):
    """An FLAME add-on rig renders with the official-format model. Moving Basis vertices of the jaw and a custom
    shape key each change the render where the jaw is and hardly anywhere else: outside the box the jaw covers
    (before and after, 10 % margin) the mean change stays under a fifth of the change inside and under 0.002 (half
    an 8-bit level). A jaw turned by a Copy Rotation constraint renders exactly as the same rotation keyed on the
    bone, to within a twentieth of its change from the closed jaw (the tri-planes spread a jaw rotation's change
    beyond the box, so it is compared with that instead)."""
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    arm, mesh = flame_addon_rig(flame_arrays)
    frontal_camera()
    base = _render()
    assert base.std() > 0.02

    lower = np.flatnonzero(flame_arrays["weights"][:, 2] > 0.5)        # what the jaw carries
    rest = _jaw_extent(mesh, lower)

    def change(image):
        """Mean change inside the box the jaw covers before and after (10 % margin), and outside it."""
        now = _jaw_extent(mesh, lower)
        m = 0.1 * SIZE
        top, bottom = int(min(rest[0], now[0]) - m), int(max(rest[1], now[1]) + m) + 1
        left, right = int(min(rest[2], now[2]) - m), int(max(rest[3], now[3]) + m) + 1
        inside = np.zeros((SIZE, SIZE), bool)
        inside[max(top, 0):bottom, max(left, 0):right] = True
        d = np.abs(image - base).mean(axis=2)
        return float(d[inside].mean()), float(d[~inside].mean())

    changes = {}
    # 1. Sculpt: the jaw's Basis vertices 12 mm down (the z-up data).
    basis = mesh.data.shape_keys.reference_key.data
    before = [basis[int(i)].co.copy() for i in lower]
    for i in lower:
        basis[int(i)].co.z -= 0.012
    changes["basis"] = change(_render())
    for i, co in zip(lower, before):
        basis[int(i)].co = co
    # 2. A shape key of the user's own, named like no FLAME key: the lower face forward and down.
    key = mesh.shape_key_add(name="my correction", from_mix=False)
    for i in lower:
        key.data[int(i)].co.y -= 0.006
        key.data[int(i)].co.z -= 0.006
    key.value = 1.0
    changes["custom key"] = change(_render())
    key.value = 0.0
    for what, (inside, elsewhere) in changes.items():
        assert inside > 0.004, (what, inside, elsewhere)
        # The generator itself changes a little everywhere when the jaw moves (measured 0.22x inside, where alpha
        # is 1): a change confined to the face's lower part is what is asserted.
        assert elsewhere < 0.3 * inside and elsewhere < 0.002, (what, inside, elsewhere)
    # 3. The jaw bone copying the rotation of an empty: the render is the one of the jaw bone turned by the same
    # rotation directly (the constraint leaves the bone's own channels at rest), not the closed jaw.
    jaw = arm.pose.bones["jaw"]
    jaw.rotation_quaternion = _quaternion((0.2, 0.0, 0.0))
    turned = _render()
    jaw.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    target = bpy.data.objects.new("jaw target", None)
    scene.collection.objects.link(target)
    target.rotation_euler = (0.2, 0.0, 0.0)
    constraint = jaw.constraints.new("COPY_ROTATION")
    constraint.target = target
    constraint.owner_space = "LOCAL"       # the empty's rotation as the bone's own: 0.2 rad about x opens the jaw
    constrained = _render()
    opened = np.abs(constrained - base).mean()
    assert opened > 0.001 and np.abs(constrained - turned).mean() < 0.05 * opened


def test_a_rig_of_the_other_topology_is_refused(addon, prefs, official, flame_arrays, tiny_model, tmp_path):
    """The built-in head with the official model, FLAME's with the bundled one (both 5023 vertices), and a FLAME
    rig with a project model built on the built-in head (checked by the engine, which alone knows the model's
    triangles): each a one-line message naming both topologies and what to choose; nothing is written."""
    scene = bpy.context.scene
    scene.render.filepath = str(tmp_path / "out") + "/"
    frontal_camera()
    p = prefs
    p.model_source = "DEFAULT"
    assert bpy.ops.next3d.add_head() == {"FINISHED"}           # the built-in head, for the bundled model
    p.model_source = "OFFICIAL"
    with pytest.raises(RuntimeError, match=r"The model next3d_small.pkl expects FLAME's topology \(5023 vertices, "
                                           r"9976 triangles\); the mesh 'FLAME-mesh' is the built-in head \(5023 "
                                           r"vertices, 10034 triangles\): set the FLAME model in the add-on "
                                           r"preferences .* and add a FLAME head"):
        bpy.ops.next3d.render_frame()
    for name in ("FLAME", "FLAME-mesh"):
        bpy.data.objects.remove(bpy.data.objects[name])
    arm, mesh = flame_addon_rig(flame_arrays)
    scene.next3d.head = None
    p.model_source = "DEFAULT"
    with pytest.raises(RuntimeError, match=r"The bundled default model expects the built-in head \(5023 vertices, "
                                           r"10034 triangles\); the mesh 'FLAME-generic-mesh' is FLAME's topology "
                                           r"\(5023 vertices, 9976 triangles\): choose Official Next3D"):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)
    p.model_source = "PROJECT"
    p.project_path = str(tiny_model)
    with pytest.raises(RuntimeError, match=r"The model \(tiny.safetensors\) expects the built-in head .*; the mesh "
                                           r"'FLAME-generic-mesh' is FLAME's topology"):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)
    assert not (tmp_path / "out").exists() and "Next3D Render" not in bpy.data.images
