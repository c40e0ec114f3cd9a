"""Full-size stand-ins of the licensed files, made deterministically from nothing licensed, for the tests and for
trying the official path without the downloads: `python -m tools.official_standins OUTDIR` writes

    generic_model.pkl            FLAME 2020's layout (Python 2 protocol-2 pickle, chumpy.ch.Ch, scipy csc_matrix)
    flame_static_embedding.pkl   FLAME's 51 static landmarks
    flame_dynamic_embedding.npy  FLAME's jaw contour by neck yaw (79 x 17)
    landmark_embedding.npy       DECA's embedding (static + dynamic + full 68)
    next3d_small.pkl             the narrow reference generator as an official network pickle (G_ema)
    flame2023.pkl                (--flame2023) the same model as FLAME 2023 pickles it: Python 3, no chumpy

from the shared reference numbers (../shared/reference/next3d_small). See flame_model.py and network.py for what
is real (topology, template, landmarks, file layouts) and what is made up (bases, weights).
"""

from __future__ import annotations

from pathlib import Path

from tools.official_formats.flame_pickle import (write_deca_embedding, write_dynamic_embedding, write_flame_pickle,
                                                 write_static_embedding)

from .flame_model import ReferenceMissing, build_flame
from .network import write_network

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "next3d_small"
FILES = ("generic_model.pkl", "flame_static_embedding.pkl", "flame_dynamic_embedding.npy", "landmark_embedding.npy",
         "next3d_small.pkl")

__all__ = ["write_standins", "build_flame", "ReferenceMissing", "DEFAULT_REFERENCE", "FILES"]


def write_standins(out_dir: Path, reference: Path = DEFAULT_REFERENCE, network: bool = True,
                   flame2023: bool = False) -> dict[str, Path]:
    """Write the stand-ins into out_dir; returns {file name: path}."""
    out_dir, reference = Path(out_dir), Path(reference)
    m = build_flame(reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "generic_model.pkl": write_flame_pickle(out_dir / "generic_model.pkl", m),
        "flame_static_embedding.pkl": write_static_embedding(out_dir / "flame_static_embedding.pkl", m),
        "flame_dynamic_embedding.npy": write_dynamic_embedding(out_dir / "flame_dynamic_embedding.npy", m),
        "landmark_embedding.npy": write_deca_embedding(out_dir / "landmark_embedding.npy", m),
    }
    if flame2023:   # FLAME 2023's layout: the same keys as plain numpy arrays in a Python 3 pickle
        paths["flame2023.pkl"] = write_flame_pickle(out_dir / "flame2023.pkl", m, py2=False, use_chumpy=False)
    if network:
        paths["next3d_small.pkl"] = write_network(reference, out_dir / "next3d_small.pkl")
    return paths
