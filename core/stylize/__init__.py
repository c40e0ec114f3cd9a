"""Text-driven 3D-aware stylization of a generator (StyleGAN-NADA) with a user-supplied ViT CLIP model (issue #4).

Modules (imported on use, so `next3d --help` stays fast):
    clip_model  ViT CLIP with OpenAI / open_clip parameter names; `load_clip` infers the architecture from a state dict
    tokenizer   CLIP's byte-level BPE reading the user's bpe_simple_vocab_16e6.txt.gz
    nada        `select_trainable`, the directional CLIP loss, `stylize`, `preview_grid`
    cli         the `stylize` command

`from core.stylize import stylize, load_clip, ...` works; the names load their module on first use.
"""

from importlib import import_module

_EXPORTS = {
    "ClipConfig": "clip_model", "ClipModel": "clip_model", "load_clip": "clip_model",
    "clip_config_from_state_dict": "clip_model", "read_clip_state_dict": "clip_model",
    "ClipTokenizer": "tokenizer", "load_tokenizer": "tokenizer", "default_vocab_path": "tokenizer",
    "StylizeResult": "nada", "select_trainable": "nada", "stylize": "nada", "directional_loss": "nada",
    "text_direction": "nada", "preview_grid": "nada",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
