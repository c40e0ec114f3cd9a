"""The built-in FLAME-format head shipped in addon_assets/builtin_head.npz.

The official FLAME model is a licensed download, so the project ships a head of its own, generated procedurally
by scripts/make_builtin_head.py and stored in the same converted layout (see model_data.py), so that one code
path evaluates both. It has FLAME's vertex count (5023: skin, mouth bag, left eyeball, right eyeball), FLAME's
five joints (global, neck, jaw, left eye, right eye), 26 identity and 16 expression blend shapes, pose correctives,
a 68-point iBUG landmark embedding, a UV layout and a UV face/eye mask. Its faces and UVs are its own (not
FLAME's 9976 faces / 5118 UVs), so generators trained on it carry its topology (`builtin_head_topology`).

Extra arrays in the file, ignored by the FLAME loader: `shape_names` and `expression_names` (what each blend
shape does; expression coefficient 1 is a clear expression, e.g. `eye_close_left` = 1 closes the left eye).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from ..errors import InputError
from ..networks.next3d import Topology

__all__ = ["BUILTIN_HEAD_PATH", "BUILTIN_HEAD_NAME", "builtin_head_topology", "load_builtin_head_data"]

# addon_assets/ sits beside core/ in the repository and inside the built extension.
BUILTIN_HEAD_PATH = Path(__file__).resolve().parent.parent.parent / "addon_assets" / "builtin_head.npz"
BUILTIN_HEAD_NAME = "next3d-builtin-head-v1"


@lru_cache(maxsize=4)
def _load(path: str) -> Dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"The built-in head {p} is missing; regenerate it with "
                         "`python scripts/make_builtin_head.py` (or reinstall the extension).")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"The built-in head {p} cannot be read ({exc}); regenerate it with "
                         "`python scripts/make_builtin_head.py`.") from None
    for key, value in arrays.items():
        value.setflags(write=False)
    return arrays


def load_builtin_head_data(path=None) -> Dict[str, np.ndarray]:
    """The built-in head's arrays (converted-FLAME layout: v_template, faces, shapedirs, exprdirs, posedirs,
    J_regressor, weights, parents, lmk_faces_idx, lmk_bary_coords, uvs, uv_faces, uv_face_mask, name, plus
    shape_names and expression_names). The arrays are read-only and shared between calls; copy to modify."""
    return dict(_load(str(Path(path) if path is not None else BUILTIN_HEAD_PATH)))


def builtin_head_topology(path=None) -> Topology:
    """The generator topology of the built-in head: faces, UV faces, UVs and the [256, 256] UV face/eye mask."""
    d = load_builtin_head_data(path)
    return Topology(faces=torch.tensor(d["faces"], dtype=torch.long),
                    uv_faces=torch.tensor(d["uv_faces"], dtype=torch.long),
                    uvs=torch.tensor(d["uvs"], dtype=torch.float32),
                    uv_face_mask=torch.tensor(d["uv_face_mask"], dtype=torch.float32))
