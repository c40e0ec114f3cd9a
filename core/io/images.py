"""Image conversion and atomic PNG writing."""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..errors import InputError
from .atomic import write_bytes_atomic


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in nominal [-1, 1] -> [H, W, 3] uint8, as the official scripts convert (x*127.5 + 128)."""
    x = (image.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float32 in [-1, 1] (the inverse of to_uint8 up to its rounding)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).to(torch.float32) / 127.5 - 1


def ensure_writable_dir(path: Union[str, os.PathLike]) -> Path:
    """Create `path` if needed and check that files can be written there, before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".next3d-write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"Cannot write to the output folder {str(path)!r} ({exc.strerror}). Choose a folder you "
                         "can write to, or fix its permissions.") from None
    return path


def write_png(path: Union[str, os.PathLike], pixels: np.ndarray) -> None:
    """Write a PNG atomically (core.io.atomic), so a crash never leaves a half-written frame behind."""
    import imageio.v3 as iio

    write_bytes_atomic(path, iio.imwrite("<bytes>", pixels, extension=".png"))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_is_whole(path: Union[str, os.PathLike]) -> bool:
    """True if the file is a complete PNG: every chunk whole with a right CRC, the image data one complete zlib
    stream, and IEND at the end. It checks what a decoder relies on without filtering or keeping the pixels, so a
    resumed render can afford it for every frame on disk (a frame cut short by a full disk, or damaged, fails)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    if not data.startswith(_PNG_SIGNATURE):
        return False
    stream = zlib.decompressobj()
    pos, seen_header = len(_PNG_SIGNATURE), False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        kind = data[pos + 4:pos + 8]
        seen_header = seen_header or kind == b"IHDR"
        if kind == b"IDAT":
            try:
                stream.decompress(data[pos + 8:end - 4])   # the pixels are dropped as they come
            except zlib.error:
                return False
        elif kind == b"IEND":
            return seen_header and stream.eof
        pos = end
    return False


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """An image file (PNG, JPEG, ...) as [H, W, 3] uint8 RGB: grey is repeated, alpha is dropped, 16-bit is scaled."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The image {str(path)!r} does not exist; give the path of a PNG or JPEG file.")
    try:
        pixels = np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - imageio raises many kinds for unreadable files
        raise InputError(f"The image {str(path)!r} cannot be read ({exc}); give a PNG or JPEG file.") from None
    if pixels.ndim == 4:  # animated GIF/WebP: the first frame
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or min(pixels.shape[:2]) < 8:
        raise InputError(f"The image {str(path)!r} has shape {list(pixels.shape)}; expected a colour or grey picture "
                         "at least 8 pixels on a side.")
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = np.clip(pixels.astype(np.float32), 0, 255).astype(np.uint8)
    if pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])
