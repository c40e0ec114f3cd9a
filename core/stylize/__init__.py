"""Text-driven 3D-aware stylization of a generator (StyleGAN-NADA) with a user-supplied ViT CLIP model (issue #7).

Modules:
    clip_model  ViT CLIP with OpenAI / open_clip parameter names; `load_clip` infers the architecture from a state dict
    tokenizer   CLIP's byte-level BPE reading the user's bpe_simple_vocab_16e6.txt.gz
    nada        `select_trainable`, the directional CLIP loss, `stylize`, `preview_grid`

Import from the modules themselves (e.g. `from core.stylize.nada import stylize`); the package imports
nothing, so `next3d --help` stays fast. The `next3d stylize` command is core/cli/stylize.py.
"""
