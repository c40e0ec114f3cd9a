"""One-shot avatars from a portrait by pivotal tuning inversion (issue #7).

Modules:
    perceptual    LPIPS-style distance on a user-given VGG16 (+ optional LPIPS lin weights), SSIM
    pti           `invert`: latent optimization of all ws, then fine-tuning of the generator at that pivot
    avatar_files  the avatar folder (`save_avatar`, `load_avatar`) and `load_latent` for `next3d render --latent`

Import from the modules themselves (e.g. `from core.inversion.pti import invert`); the package imports
nothing, so `next3d --help` stays fast. The `next3d invert` command is core/cli/invert.py.
"""
