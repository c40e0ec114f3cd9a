"""Per-scene and per-object settings: Scene.next3d (avatar and output options, saved in the .blend) and
Object.next3d (marks rigs this add-on built). Animatable state lives in shape keys and bones, never here on the
WindowManager."""

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

FRAME_SOURCES = (
    ("RANGE", "Frame Range", "Every frame of the scene's frame range, step and output as set in Output properties "
     "(what Render > Render Animation renders)"),
    ("KEYFRAMES", "Keyframes", "Only the frames where the rig or the scene camera has keyframes, written as still "
     "images (no video: a few keyframes would only flash by)"),
)


AVATAR_SOURCES = (
    ("SEED", "Seed", "An avatar drawn from the model with the seed below"),
    ("PHOTO", "From Photo", "An avatar made from a portrait by 'Avatar from Photo' (its own tuned model and latent)"),
)


def _is_mesh(_settings, obj) -> bool:
    return obj.type == "MESH"


class NEXT3D_PG_scene(PropertyGroup):
    head: PointerProperty(name="Head", type=bpy.types.Object, poll=_is_mesh,
                          description="The head mesh the renders and extracted meshes use (Add FLAME Head sets it); "
                          "empty: the only head in the view layer")
    avatar_source: EnumProperty(name="Avatar", items=AVATAR_SOURCES, default="SEED")
    avatar_folder: StringProperty(name="Avatar Folder", description="Folder written by 'Avatar from Photo' "
                                  "(avatar.safetensors + latent.npy)", subtype="DIR_PATH")
    seed: IntProperty(name="Seed", description="Avatar identity: the latent code is drawn from this seed",
                      default=0, min=0)
    truncation_psi: FloatProperty(name="Truncation", description="Truncation psi: lower values give more average, "
                                  "cleaner avatars; 1 samples the full distribution", default=0.7, min=0.0, max=1.0)
    sample_seed: IntProperty(name="Noise Seed", description="Seed of the renderer's random depth samples (each "
                             "frame derives its own from it, so frames do not depend on which run renders them)",
                             default=0, min=0)
    frame_source: EnumProperty(name="Frames", items=FRAME_SOURCES, default="RANGE")
    mesh_frames: EnumProperty(name="Frames", items=(
        ("CURRENT", "Current Frame", "Extract one mesh at the current frame"),
        ("KEYFRAMES", "Keyframes", "One mesh per keyframe, in a collection shown frame by frame")), default="CURRENT")
    mesh_resolution: IntProperty(name="Resolution", description="Lattice points per axis for mesh extraction",
                                 default=128, min=32, max=512)
    mesh_keep_background: BoolProperty(
        name="Keep Background", default=False,
        description="Keep the density of the whole box, also the backdrop the model puts beside and behind the head "
        "(by default only the head and 2 cm around it)")


class NEXT3D_PG_object(PropertyGroup):
    is_rig: BoolProperty(name="Next3D Rig", description="Built by Next3D > Add FLAME Head", default=False)
    is_head: BoolProperty(name="Next3D Head", description="The Next3D render engine renders this head mesh (every "
                          "marked head of the view layer, composited by depth); Add FLAME Head marks its head",
                          default=False)
    head_name: StringProperty(name="Head", description="The head model the rig was built from")
    mesh_frame: IntProperty(name="Frame", description="Frame an extracted mesh belongs to", default=0)


CLASSES = (NEXT3D_PG_scene, NEXT3D_PG_object)


def attach() -> None:
    bpy.types.Scene.next3d = PointerProperty(type=NEXT3D_PG_scene)
    bpy.types.Object.next3d = PointerProperty(type=NEXT3D_PG_object)


def detach() -> None:
    for owner in (bpy.types.Object, bpy.types.Scene):
        if hasattr(owner, "next3d"):
            del owner.next3d
