"""The narrow reference weights (../shared/reference/next3d_small) as an official-format network pickle: the
stand-in for the Next3D release's next3d_ffhq_512.pkl (docs/checkpoint_formats.md).

Same layout as the official file: a dict with a `G_ema` TriPlaneGenerator (a torch_utils.persistence object whose
module sources are stand-in text), its constructor arguments and plain attributes from the reference config,
storages tagged as saved on cuda:0, and `training_set_kwargs`. Only the widths differ (channel_base 2048,
channel_max 32 instead of 32768 and 512), so it renders in seconds on a CPU; the weights are random.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from tools.official_formats.network_pickle import easydict, is_official_buffer, write_official_pickle

from .flame_model import ReferenceMissing


def write_network(reference: Path, out: Path) -> Path:
    sd_path, config_path = reference / "state_dict.npz", reference / "config.json"
    for path in (sd_path, config_path):
        if not path.is_file():
            raise ReferenceMissing(f"{path} does not exist; the stand-in network is the next3d_small reference "
                                   "(../shared/reference/next3d_small). Give it with --reference DIR.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    kwargs = dict(config["constructor_kwargs"])
    derived = config["derived"]
    with np.load(sd_path) as data:
        arrays = {k: data[k] for k in data.files}
    uv_face_mask = torch.from_numpy(arrays.pop("uv_face_mask"))
    state_dict = OrderedDict((k, torch.from_numpy(np.array(a, order="C"))) for k, a in arrays.items())  # 0-d stays 0-d
    buffers = [k for k in state_dict if is_official_buffer(k)]
    init_kwargs = dict(kwargs, mapping_kwargs=easydict(kwargs["mapping_kwargs"]),
                       sr_kwargs=easydict(kwargs["sr_kwargs"]))
    attributes = {
        "uv_face_mask": uv_face_mask,
        "orth_scale": torch.tensor(derived["orth_scale"], dtype=torch.float32),
        "orth_shift": torch.tensor(derived["orth_shift"], dtype=torch.float32),
        "neural_rendering_resolution": derived["neural_rendering_resolution"],
        "rendering_kwargs": dict(kwargs["rendering_kwargs"]),
        "load_lms": derived["load_lms"],
        "fill_mouth": derived["fill_mouth"],
        "uv_resolution": derived["uv_resolution"],
        "topology_path": kwargs["topology_path"],
        "plane_axes": torch.tensor(derived["plane_axes"], dtype=torch.float32),
    }
    out = Path(out)
    write_official_pickle(out, state_dict, buffers, init_kwargs, attributes, storage_location="cuda:0")
    return out
