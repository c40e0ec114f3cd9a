"""The project's own checkpoint format: one .safetensors file holding the weights and a JSON config.

Layout: the state dict under its own names, extra tensors (e.g. `uv_face_mask`, `plane_axes`) under `extra/<name>`,
and the safetensors `__metadata__` = {format: 'next3d-blender', kind, format_version: '1', config: <JSON text>}.
Files are written atomically so an interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import OrderedDict
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, InputError
from .atomic import new_file_mode
from .bounded_read import json_loads
from .restricted_pickle import short_repr

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "EXTRA_PREFIX", "save_checkpoint", "load_checkpoint",
           "checkpoint_kind", "stored_kind", "describe_file_format"]

FORMAT_NAME = "next3d-blender"
FORMAT_VERSION = "1"
EXTRA_PREFIX = "extra/"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors itself caps the header at 100 MB

CheckpointKind = Literal["official-pickle", "next3d-safetensors", "unknown"]


# ----------------------------------------------------------------------------------------------------------------
# Sniffing

def _read_head(path: str, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _safetensors_header(path: str) -> dict | None:
    """The parsed JSON header of a safetensors file, or None when the file is not one."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return None
            (n,) = struct.unpack("<Q", raw)
            if n < 2 or n > _MAX_HEADER or 8 + n > size:
                return None
            header = f.read(n)
        if header[:1] != b"{":
            return None
        parsed = json_loads(header.decode("utf-8"))   # nesting beyond the layout's 3 levels: not our file
    except (OSError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _project_metadata(path: str) -> dict | None:
    """The metadata block of a safetensors file written by this project; None for any other file."""
    header = _safetensors_header(path)
    meta = header.get("__metadata__") if header is not None else None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME else None


def checkpoint_kind(path: str | os.PathLike) -> CheckpointKind:
    """Tell the kind of a checkpoint file from its first bytes.

    'official-pickle': a pickle of protocol 2-5 (the official Next3D/EG3D network pickles);
    'next3d-safetensors': a safetensors file written by this project (its metadata says format 'next3d-blender');
    'unknown': anything else, including zip torch.save files and safetensors files of other projects.
    A missing file raises CheckpointError.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: '{path}'. Check the path.")
    head = _read_head(path, 2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "official-pickle"
    return "next3d-safetensors" if _project_metadata(path) is not None else "unknown"


def stored_kind(path: str | os.PathLike) -> str | None:
    """The `kind` a .safetensors file of this project says it holds ('next3d-generator', a training state, ...);
    None for any other file. Reads only the header."""
    meta = _project_metadata(os.fspath(path))
    kind = meta.get("kind") if meta is not None else None
    return kind if isinstance(kind, str) else None


def describe_file_format(path: str | os.PathLike) -> str:
    """A short phrase naming what a file looks like, for error messages ('a zip archive (torch.save) file', ...)."""
    path = os.fspath(path)
    head = _read_head(path, 512)
    if not head:
        return "an empty file"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]})"
    if head[:4] == b"PK\x03\x04":
        return ("a zip archive, which is what torch.save writes (a PyTorch state-dict checkpoint, not the official "
                "network pickle)")
    header = _safetensors_header(path)
    if header is not None:
        meta = header.get("__metadata__")
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt == FORMAT_NAME:
            return "a .safetensors checkpoint written by this project"
        return f"a .safetensors file from another project (format {short_repr(fmt)})" if fmt else \
            "a .safetensors file from another project (no next3d-blender metadata)"
    if head[:2] == b"\x1f\x8b":
        return "a gzip-compressed file (decompress it first)"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "a web page (often Google Drive's download-warning page instead of the file itself)"
    return "neither a pickle, a zip archive nor a safetensors file"


# ----------------------------------------------------------------------------------------------------------------
# Writing

def _prepare_tensors(state_dict: dict, extra_tensors: dict | None) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for group, mapping, prefix in (("state_dict", state_dict, ""), ("extra_tensors", extra_tensors or {},
                                                                        EXTRA_PREFIX)):
        if not isinstance(mapping, dict):
            raise InputError(f"{group} must be a dict of name -> torch.Tensor, got {type(mapping).__name__}.")
        for name, t in mapping.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"{group} has a key {name!r}; tensor names must be non-empty strings.")
            if not isinstance(t, torch.Tensor):
                raise InputError(f"{group}['{name}'] is a {type(t).__name__}, not a torch.Tensor.")
            if t.layout != torch.strided or t.is_quantized:
                raise InputError(f"{group}['{name}'] is a sparse or quantized tensor; store a dense tensor.")
            if prefix == "" and name.startswith(EXTRA_PREFIX):
                raise InputError(f"state_dict key '{name}' starts with '{EXTRA_PREFIX}', which is reserved for "
                                 "extra tensors; pass it in extra_tensors instead.")
            tensors[prefix + name] = t.detach().to("cpu").contiguous()
    # safetensors refuses tensors that share memory (tied or aliased weights): give those their own copy.
    seen: set[int] = set()
    for name, t in tensors.items():
        if t.numel() == 0:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            tensors[name] = t.clone()
        else:
            seen.add(ptr)
    return tensors


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict,
                    extra_tensors: dict[str, torch.Tensor] | None = None, kind: str = "next3d-generator") -> None:
    """Write one .safetensors checkpoint: `state_dict`, `extra_tensors` (stored under 'extra/') and `config`
    (JSON in the metadata). The file appears complete or not at all (temp file in the same folder, fsync,
    os.replace)."""
    path = os.fspath(path)
    if not isinstance(config, dict):
        raise InputError(f"config must be a dict, got {type(config).__name__}.")
    if not isinstance(kind, str) or not kind:
        raise InputError("kind must be a non-empty string such as 'next3d-generator'.")
    try:
        config_text = json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"config cannot be stored as JSON ({exc}); use plain numbers, strings, lists and "
                         "dicts.") from exc
    tensors = _prepare_tensors(state_dict, extra_tensors)
    metadata = {"format": FORMAT_NAME, "kind": kind, "format_version": FORMAT_VERSION, "config": config_text}

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckpointError(f"Cannot save '{path}': the folder '{folder}' does not exist.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"Cannot save '{path}': {exc.strerror or exc}. Choose a folder you can write to.") \
            from exc
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise CheckpointError(f"Cannot save '{path}': {exc.strerror or exc}. Check the path and the free disk "
                                  "space.") from exc
        raise
    # Persist the rename itself; not every platform lets a folder be opened (Windows).
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------------------------------------------
# Reading

def load_checkpoint(path: str | os.PathLike, kind: str | None = "next3d-generator"
                    ) -> tuple[dict, "OrderedDict[str, torch.Tensor]", "OrderedDict[str, torch.Tensor]"]:
    """Read a checkpoint written by `save_checkpoint`; returns (config, state_dict, extra_tensors), on the CPU.

    `kind` is the kind expected (None accepts any). Raises CheckpointError for a missing file, a file that is not
    safetensors, a safetensors file of another project, an unknown format_version, or a wrong kind.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint file not found: '{path}'. Check the path.")
    if os.path.isdir(path):
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file. Choose the .safetensors file itself.")
    header = _safetensors_header(path)
    if header is None:
        what = describe_file_format(path)
        hint = (" Official Next3D pickles are read by the official-pickle loader; `next3d convert` turns one into a "
                ".safetensors checkpoint."
                if what.startswith("a Python pickle") else "")
        raise CheckpointError(f"'{path}' is not a .safetensors checkpoint: it looks like {what}.{hint}")
    meta = header.get("__metadata__")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT_NAME:
        raise CheckpointError(f"'{path}' is a .safetensors file from another project "
                              f"({'format ' + short_repr(fmt) if fmt else 'no next3d-blender metadata'}), not a Next3D "
                              "checkpoint of this project. Convert the official next3d_ffhq_512.pkl (`next3d convert`) "
                              "and use the result instead.")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"'{path}' has checkpoint format_version {short_repr(version)}; this version of the "
                              f"add-on reads format_version {FORMAT_VERSION!r}. Update the add-on, or convert the "
                              "checkpoint again with this version.")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"'{path}' is a {short_repr(meta.get('kind'))} checkpoint, but a '{kind}' checkpoint was "
                              "expected. Choose the right file.")
    try:
        config = json_loads(meta.get("config", ""))
    except (TypeError, ValueError) as exc:   # not text, not JSON, or nested deeper than any config
        raise CheckpointError(f"'{path}' has a damaged config in its metadata ({exc}). Convert the checkpoint "
                              "again.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"'{path}' has a config that is not a JSON object. Convert the checkpoint again.")

    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    extra: OrderedDict[str, torch.Tensor] = OrderedDict()
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                if name.startswith(EXTRA_PREFIX):
                    extra[name[len(EXTRA_PREFIX):]] = f.get_tensor(name)
                else:
                    state_dict[name] = f.get_tensor(name)
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"Not enough memory to load '{path}'; close other programs.") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        if "Cannot allocate memory" in str(exc) or "os error 12" in str(exc):   # mmap or a tensor's allocation
            raise CheckpointError(f"Not enough memory to load '{path}' ({' '.join(str(exc).split())[:160]}); close "
                                  "other programs.") from None
        raise CheckpointError(f"'{path}' could not be read ({exc}); the file is damaged or truncated. Convert the "
                              "checkpoint again.") from exc
    return config, state_dict, extra
