"""Reading a state dict from a weights file the user gives (VGG16, LPIPS, CLIP): .safetensors, or a torch file read
with torch.load(weights_only=True), which rebuilds tensors and nothing else. TorchScript archives are refused
before torch touches them: loading one runs the code it holds."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Union

import torch

from ..errors import CheckpointError

__all__ = ["read_state_dict_file", "is_torchscript", "WEIGHTS_SUFFIXES"]

PathLike = Union[str, os.PathLike]
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def is_torchscript(path: PathLike) -> bool:
    """TorchScript archives are zip files with a code/ folder or constants.pkl; plain state dicts have neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in archive.namelist())


def read_state_dict_file(path: PathLike, what: str, *, torchscript_fix: str = "") -> Dict[str, torch.Tensor]:
    """The name -> tensor mapping in a weights file; a training checkpoint's "state_dict" entry is unwrapped.

    `what` names the file in errors ("VGG16", "CLIP weights"); `torchscript_fix` says how to turn a TorchScript
    archive of this kind into a state dict."""
    path = Path(path)
    kinds = ", ".join(WEIGHTS_SUFFIXES)
    if not path.is_file():
        raise CheckpointError(f"The {what} file {str(path)!r} does not exist; give the path of a {kinds} file.")
    suffix = path.suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"The {what} file {path.name} must end in {kinds}.")
    if suffix != ".safetensors" and is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript archive, which holds code and is not loaded. Convert it once "
                              f"to a state dict on a machine where you trust the file"
                              f"{', e.g. ' + torchscript_fix if torchscript_fix else ''}, and give the new file.")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many kinds for foreign or unsafe files
        raise CheckpointError(f"The {what} file {path} cannot be read as a weights file ({exc}). Give a state dict "
                              "saved with torch.save(model.state_dict()) or as .safetensors.") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"The {what} file {path} does not hold a state dict (a mapping of names to tensors); "
                              "give one saved with torch.save(model.state_dict()) or as .safetensors.")
    return data
