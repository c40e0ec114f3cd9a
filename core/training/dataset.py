"""The training data folder: images, EG3D camera labels, and the FLAME mesh behind every image.

Layout (what `next3d make-dataset` writes; real data fitted with DECA can be arranged the same way):

    ROOT/images/<name>.png      RGB (or grey / RGBA, converted), square, all the same size
    ROOT/dataset.json           {"labels": [["<name>.png", [25 floats]], ...]}; names relative to ROOT/images,
                                labels = cam2world 4x4 (OpenCV, EG3D world) + normalized intrinsics 3x3
    ROOT/meshes.npz             names [N] (the same names) and v [N, V + 68, 3] float32, the generator's mesh input
                                (FLAME vertices then 68 landmarks, FLAME units, canonical pose); any other arrays
                                (FLAME parameters) are kept as per-image extras
      or ROOT/meshes/<name>.npy one [V + 68, 3] array per image (same relative name, .npy instead of .png)
    ROOT/topology.npz           faces [F, 3], uv_faces [F, 3], uvs [U, 2], uv_face_mask [R, R] of the head

Every problem is reported as an InputError that names the file and says how to fix it. Opening the folder checks
the labels, names, PNG headers (signature and size) and meshes; pixel data is decoded when an image is first used
(`check(full=True)` decodes everything up front).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.bounded_read import READ_ERRORS, json_loads, load_npy, read_error_text, read_npz
from ..networks.next3d import Topology

__all__ = ["FolderDataset", "LABEL_SIZE", "read_png_size"]

LABEL_SIZE = 25
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PathLike = Union[str, os.PathLike]


def read_png_size(path: Path) -> tuple:
    """(width, height) from a PNG's IHDR chunk; InputError naming the file when it is not a readable PNG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
    except OSError as exc:
        raise InputError(f"Cannot read the image {path} ({exc.strerror}); check its permissions.") from None
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InputError(f"The image {path} is broken or not a PNG file (bad header); re-export it as PNG or remove "
                         "it and its label from dataset.json.")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


class FolderDataset:
    """Images + camera labels + FLAME meshes (see the module docstring).

    Args:
        root: the dataset folder.
        resolution: the image size the model expects; None = the size of the first image.
        require_meshes: the generator needs a mesh per image; set False only to inspect images and labels.
        cache_images_mb: decoded images are kept in memory up to this size.
    """

    def __init__(self, root: PathLike, resolution: Optional[int] = None, *, require_meshes: bool = True,
                 cache_images_mb: float = 2048):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"The dataset folder {self.root} does not exist; create one with `next3d make-dataset` "
                             "or give the folder that holds images/ and dataset.json.")
        self.image_dir = self.root / "images"
        if not self.image_dir.is_dir():
            raise InputError(f"The dataset folder {self.root} has no images/ subfolder; put the PNG images in "
                             f"{self.image_dir}.")
        self.names, labels = self._read_labels()
        self.labels = torch.tensor(labels, dtype=torch.float32)
        self._check_images_match_labels()
        self.resolution = self._check_sizes(resolution)
        self.topology: Optional[Topology] = None
        self.n_vertices: Optional[int] = None
        self.meshes: Optional[torch.Tensor] = None
        self.extras: Dict[str, np.ndarray] = {}
        if require_meshes:
            self.topology, self.n_vertices = self._read_topology()
            self.meshes = self._read_meshes()
        self._cache: Dict[int, torch.Tensor] = {}
        self._cache_limit = int(cache_images_mb * 2 ** 20) // max(1, 3 * self.resolution ** 2)

    # ------------------------------------------------------------------------------------------ reading

    def _read_labels(self):
        path = self.root / "dataset.json"
        if not path.is_file():
            raise InputError(f"{path} is missing: the dataset needs camera labels, {{\"labels\": [[\"name.png\", "
                             "[25 numbers]], ...]}}, with names relative to images/. `next3d make-dataset` writes "
                             "one; EG3D's preprocessing (dataset.json) produces the same format.")
        try:
            data = json_loads(path.read_bytes())
        except READ_ERRORS as exc:
            raise InputError(f"{path} is not valid JSON ({read_error_text(exc)}); fix or regenerate it.") from None
        entries = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{path} has no \"labels\" list (or it is empty); it must be {{\"labels\": "
                             "[[\"name.png\", [25 numbers]], ...]}}.")
        names: List[str] = []
        labels = []
        seen = set()
        for k, entry in enumerate(entries):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise InputError(f"{path}: entry {k} is {str(entry)[:80]!r}; each entry must be [\"name.png\", "
                                 "[25 numbers]].")
            name, label = entry
            name = name.replace("\\", "/")
            if name.startswith("/") or ".." in Path(name).parts:
                raise InputError(f"{path}: the image name {name!r} must be relative to images/ and stay inside it.")
            if name in seen:
                raise InputError(f"{path}: the image {name} is labelled twice; keep one label per image.")
            seen.add(name)
            if label is None or not isinstance(label, (list, tuple)):
                raise InputError(f"The image images/{name} has no camera label in {path} (got {label!r}); give "
                                 "25 numbers (cam2world 4x4 + intrinsics 3x3) or remove the image.")
            if len(label) < LABEL_SIZE:
                raise InputError(f"The camera label of images/{name} in {path} has {len(label)} numbers, expected "
                                 f"{LABEL_SIZE} (cam2world 4x4 + normalized intrinsics 3x3).")
            try:
                values = [float(x) for x in label[:LABEL_SIZE]]
            except (TypeError, ValueError):
                raise InputError(f"The camera label of images/{name} in {path} contains something that is not a "
                                 "number; fix that entry.") from None
            if not all(math.isfinite(x) for x in values):
                raise InputError(f"The camera label of images/{name} in {path} contains NaN or infinity; fix that "
                                 "entry.")
            names.append(name)
            labels.append(values)
        return names, labels

    def _check_images_match_labels(self) -> None:
        labelled = set(self.names)
        on_disk = sorted(p.relative_to(self.image_dir).as_posix() for p in self.image_dir.rglob("*")
                         if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))
        unlabelled = [n for n in on_disk if n not in labelled]
        if unlabelled:
            more = f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""
            raise InputError(f"The image {self.image_dir / unlabelled[0]}{more} has no camera label in "
                             f"{self.root / 'dataset.json'}; add [\"{unlabelled[0]}\", [25 numbers]] to \"labels\" "
                             "or remove the image.")
        present = set(on_disk)
        for name in self.names:
            if name not in present:
                path = self.image_dir / name
                what = "is not a .png file" if path.is_file() else "does not exist"
                raise InputError(f"dataset.json labels the image {path}, which {what}; add the PNG image or remove "
                                 "its label.")

    def _check_sizes(self, resolution: Optional[int]) -> int:
        want = resolution
        for name in self.names:
            path = self.image_dir / name
            w, h = read_png_size(path)
            if want is None:
                want = w
                if w != h or w < 8 or w & (w - 1):
                    raise InputError(f"The image {path} is {w}x{h}; training images must be square with a power-of-"
                                     "two side (64, 128, 256, 512); resize the dataset.")
            if (w, h) != (want, want):
                raise InputError(f"The image {path} is {w}x{h}, but the dataset's images are {want}x{want}; resize "
                                 "it (or regenerate the dataset) so that every image has the same size.")
        return int(want)

    def _read_topology(self):
        path = self.root / "topology.npz"
        if not path.is_file():
            raise InputError(f"{path} is missing: the dataset must say which head its meshes use (faces, uv_faces, "
                             "uvs, uv_face_mask); `next3d make-dataset` writes it.")
        try:
            arrays = read_npz(path)
        except READ_ERRORS as exc:
            raise InputError(f"{path} cannot be read ({read_error_text(exc)}); regenerate it.") from None
        missing = [k for k in ("faces", "uv_faces", "uvs", "uv_face_mask") if k not in arrays]
        if missing:
            raise InputError(f"{path} lacks {', '.join(missing)}; it needs faces, uv_faces, uvs and uv_face_mask.")
        faces = torch.as_tensor(arrays["faces"].astype(np.int64))
        n_vertices = int(arrays["n_vertices"]) if "n_vertices" in arrays else int(faces.max()) + 1
        topology = Topology(faces=faces, uv_faces=torch.as_tensor(arrays["uv_faces"].astype(np.int64)),
                            uvs=torch.as_tensor(arrays["uvs"].astype(np.float32)),
                            uv_face_mask=torch.as_tensor(arrays["uv_face_mask"].astype(np.float32)))
        return topology, n_vertices

    def _read_meshes(self) -> torch.Tensor:
        want_rows = self.n_vertices + 68
        npz = self.root / "meshes.npz"
        folder = self.root / "meshes"
        if npz.is_file():
            try:
                arrays = read_npz(npz)
            except READ_ERRORS as exc:
                raise InputError(f"{npz} cannot be read ({read_error_text(exc)}); regenerate it.") from None
            if "names" not in arrays or "v" not in arrays:
                raise InputError(f"{npz} must hold `names` [N] and `v` [N, {want_rows}, 3] (mesh vertices then 68 "
                                 "landmarks per image).")
            index = {str(n): k for k, n in enumerate(arrays["names"].tolist())}
            v = arrays["v"]
            if v.ndim != 3 or v.shape[1:] != (want_rows, 3) or v.shape[0] != len(index):
                raise InputError(f"{npz}: v has shape {list(v.shape)}, expected [{len(index)}, {want_rows}, 3] "
                                 f"({self.n_vertices} vertices + 68 landmarks for each of the {len(index)} names).")
            rows = []
            for name in self.names:
                if name not in index:
                    raise InputError(f"The image images/{name} has no mesh in {npz}; add it (names + v) or remove "
                                     "the image and its label.")
                rows.append(index[name])
            order = np.asarray(rows)
            meshes = torch.as_tensor(v[order].astype(np.float32))
            for key, value in arrays.items():
                if key not in ("names", "v") and value.ndim >= 1 and value.shape[0] == len(index):
                    self.extras[key] = value[order]
        elif folder.is_dir():
            items = []
            for name in self.names:
                path = folder / Path(name).with_suffix(".npy")
                if not path.is_file():
                    raise InputError(f"The image images/{name} has no mesh: {path} is missing. Add it ([{want_rows}, "
                                     "3] float array: vertices then 68 landmarks) or remove the image.")
                try:
                    arr = load_npy(path)
                except READ_ERRORS as exc:
                    raise InputError(f"The mesh {path} cannot be read ({read_error_text(exc)}); re-export "
                                     "it.") from None
                if arr.shape != (want_rows, 3):
                    raise InputError(f"The mesh {path} has shape {list(arr.shape)}, expected [{want_rows}, 3] "
                                     f"({self.n_vertices} vertices + 68 landmarks).")
                items.append(arr.astype(np.float32))
            meshes = torch.as_tensor(np.stack(items))
        else:
            raise InputError(f"The dataset {self.root} has no meshes: add meshes.npz (names + v) or a meshes/ folder "
                             "with one .npy per image; the generator needs the FLAME mesh behind every image.")
        if not bool(torch.isfinite(meshes).all()):
            bad = int(torch.nonzero(~torch.isfinite(meshes).flatten(1).all(1))[0])
            raise InputError(f"The mesh of images/{self.names[bad]} contains NaN or infinity; fix or remove it.")
        return meshes

    # ------------------------------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.names[index]

    def image(self, index: int) -> torch.Tensor:
        """uint8 [3, R, R]."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        import imageio.v3 as iio

        path = self.image_path(index)
        try:
            pixels = np.asarray(iio.imread(path))
        except Exception as exc:  # decoders raise many types
            raise InputError(f"The image {path} is broken and cannot be decoded ({exc}); re-export it or remove it "
                             "and its label.") from None
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
            raise InputError(f"The image {path} has shape {list(pixels.shape)}; expected an RGB image.")
        if pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        pixels = pixels[:, :, :3]
        if pixels.dtype != np.uint8:
            if pixels.dtype == np.uint16:
                pixels = (pixels // 257).astype(np.uint8)
            else:
                raise InputError(f"The image {path} has {pixels.dtype} pixels; save it as 8-bit PNG.")
        if pixels.shape[:2] != (self.resolution, self.resolution):
            raise InputError(f"The image {path} is {pixels.shape[1]}x{pixels.shape[0]}, but the dataset's images are "
                             f"{self.resolution}x{self.resolution}; resize it.")
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
        if len(self._cache) < self._cache_limit:
            self._cache[index] = tensor
        return tensor

    def label(self, index: int) -> torch.Tensor:
        return self.labels[index]

    def mesh(self, index: int) -> torch.Tensor:
        if self.meshes is None:
            raise InputError("This dataset was opened without meshes (require_meshes=False).")
        return self.meshes[index]

    def check(self, full: bool = True) -> None:
        """Decode every image (full=True) so a broken file is reported before training starts."""
        if full:
            for i in range(len(self)):
                self.image(i)
