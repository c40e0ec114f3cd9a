"""One-shot avatars from a portrait by pivotal tuning inversion (issue #7).

Modules (imported on use, so `next3d --help` stays fast):
    perceptual    LPIPS-style distance on a user-given VGG16 (+ optional LPIPS lin weights), SSIM
    pti           `invert`: latent optimization of all ws, then fine-tuning of the generator at that pivot
    avatar_files  the avatar folder (`save_avatar`, `load_avatar`) and `load_latent` for `next3d render --latent`
    cli           the `invert` command

`from core.inversion import invert, save_avatar, load_latent, ...` works; the names load their module on first use.
"""

from importlib import import_module

_EXPORTS = {
    "invert": "pti", "InversionResult": "pti", "InversionStep": "pti", "psnr": "pti", "NO_PERCEPTUAL_WARNING": "pti",
    "LpipsDistance": "perceptual", "load_perceptual": "perceptual", "load_vgg16": "perceptual",
    "load_lpips_weights": "perceptual", "ssim": "perceptual",
    "Avatar": "avatar_files", "save_avatar": "avatar_files", "load_avatar": "avatar_files",
    "load_latent": "avatar_files", "check_avatar_folder": "avatar_files",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
