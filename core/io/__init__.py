"""Checkpoint I/O: the restricted reader of official Next3D network pickles and the project's safetensors format."""

from .official_pickle import OfficialNetwork, describe_official_pickle, load_official_pickle
from .safetensors_format import (checkpoint_kind, describe_file_format, load_checkpoint, save_checkpoint,
                                 stored_kind)

__all__ = ["OfficialNetwork", "load_official_pickle", "describe_official_pickle", "save_checkpoint",
           "load_checkpoint", "checkpoint_kind", "stored_kind", "describe_file_format"]
