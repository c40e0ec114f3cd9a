"""Per-machine settings (add-on preferences): which model, the FLAME files, the device and the worker's Python."""

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences

from . import ADDON_PACKAGE

MODEL_SOURCES = (
    ("DEFAULT", "Bundled Default", "The model shipped with the extension (random weights until trained ones are "
     "bundled)"),
    ("OFFICIAL", "Official Next3D", "The official next3d_ffhq_512.pkl (bring your own); needs the FLAME model"),
    ("PROJECT", "Project File", "A .safetensors model written by next3d (next3d convert, or training)"),
)
DEVICES = (
    ("CPU", "CPU", "Run the engine on the CPU"),
    ("CUDA", "CUDA", "Run the engine on an NVIDIA GPU when the worker's torch sees one (else the CPU, with a "
     "warning)"),
)
# core/networks/precision.py's choices (docs/architecture.md#cost-of-our-code); each renders frames of its own, so
# the frame cache keeps them apart.
PRECISIONS = (
    ("FP32", "fp32", "Float32, reproduces the official code (default)"),
    ("FP32-FAST", "fp32-fast", "Float32 reordered for speed: about 1.35x faster, the same to float32 rounding"),
    ("BF16", "bf16", "bfloat16 convolutions: about 2x faster on CPUs with AVX-512 BF16 or AMX, invisibly close to "
     "fp32 (at least 62 dB PSNR on the bundled model)"),
)


class NEXT3D_AddonPreferences(AddonPreferences):
    bl_idname = ADDON_PACKAGE

    model_source: EnumProperty(name="Model", items=MODEL_SOURCES, default="DEFAULT")
    official_path: StringProperty(name="Next3D Model", description="next3d_ffhq_512.pkl", subtype="FILE_PATH")
    project_path: StringProperty(name="Model File", description="A next3d .safetensors model", subtype="FILE_PATH")
    flame_model_path: StringProperty(name="FLAME Model", description="FLAME 2020 generic_model.pkl (or a converted "
                                     ".npz), from flame.is.tue.mpg.de", subtype="FILE_PATH")
    flame_landmark_path: StringProperty(name="Landmarks", description="DECA's landmark_embedding.npy, or FLAME's "
                                        "flame_static_embedding.pkl (with the dynamic one below). Empty: found beside "
                                        "the FLAME model under these names", subtype="FILE_PATH")
    flame_dynamic_path: StringProperty(name="Dynamic Landmarks", description="FLAME's flame_dynamic_embedding.npy, "
                                       "with flame_static_embedding.pkl above. Empty: found beside the FLAME model",
                                       subtype="FILE_PATH")
    device: EnumProperty(name="Device", items=DEVICES, default="CPU")
    precision: EnumProperty(name="Precision", items=PRECISIONS, default="FP32")
    vgg16_path: StringProperty(name="VGG16 Weights", description="torchvision vgg16 weights (.pth or .safetensors) "
                               "for the perceptual loss of 'Avatar from Photo'; empty: pixel and structural losses",
                               subtype="FILE_PATH")
    lpips_path: StringProperty(name="LPIPS Weights", description="Optional LPIPS vgg linear layers (vgg.pth); empty: "
                               "equal weights per VGG layer", subtype="FILE_PATH")
    python_path: StringProperty(name="Worker Python", description="Python interpreter that runs the engine (needs "
                                "torch). Empty: Blender's own Python", subtype="FILE_PATH")
    threads: IntProperty(name="Threads", description="CPU threads for the engine (0: torch's default)", default=0,
                         min=0, max=256)

    def draw(self, context):
        draw_model_settings(self.layout, self)
        col = self.layout.column()
        col.prop(self, "vgg16_path")
        col.prop(self, "lpips_path")
        col.prop(self, "python_path")
        col.prop(self, "threads")


def draw_model_settings(layout, prefs) -> None:
    col = layout.column()
    col.prop(prefs, "model_source")
    if prefs.model_source == "OFFICIAL":
        col.prop(prefs, "official_path")
    elif prefs.model_source == "PROJECT":
        col.prop(prefs, "project_path")
    if prefs.model_source != "DEFAULT":
        col.prop(prefs, "flame_model_path")
        col.prop(prefs, "flame_landmark_path")
        col.prop(prefs, "flame_dynamic_path")
    col.prop(prefs, "device")
    col.prop(prefs, "precision")


class _Defaults:
    """Preference values when the package runs without being enabled as an add-on (development)."""

    model_source = "DEFAULT"
    official_path = project_path = flame_model_path = flame_landmark_path = flame_dynamic_path = python_path = ""
    vgg16_path = lpips_path = ""
    device = "CPU"
    precision = "FP32"
    threads = 0


def get_preferences(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


CLASSES = (NEXT3D_AddonPreferences,)
