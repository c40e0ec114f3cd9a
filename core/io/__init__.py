"""Checkpoint I/O: the restricted reader of official Next3D network pickles and the project's safetensors format.
Names are imported from their module on first use, so `core.io.atomic` loads without torch."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "official_pickle": ["OfficialNetwork", "describe_official_pickle", "load_official_pickle"],
    "safetensors_format": ["checkpoint_kind", "describe_file_format", "load_checkpoint", "save_checkpoint",
                           "stored_kind"],
})
