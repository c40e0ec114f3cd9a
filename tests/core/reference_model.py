"""The narrow reference model (../shared/reference/next3d_small, README there) for the tests that compare with it:
our generator loaded with its official weights, one recorded case run with its recorded random draws, and the
stage-by-stage comparison with the official intermediates. Imported by name (tests/core is on sys.path)."""

import numpy as np
import torch

from core.networks.next3d import Next3DConfig, Next3DGenerator
from core.rendering.volume import RandomDraws

# Stored as float16 in the reference (rounded float32 results): compared relative to magnitude.
FLOAT16_STAGES = ("textures", "mouth_plane", "blend_out", "static_plane")
EXACT_STAGES = ("raster_view0", "raster_view1", "raster_view2", "raster_view3", "alpha_views", "mouth_in",
                "mouth_patch", "ray_origins", "ray_directions", "render_weight_sum", "sr_in_rgb", "sr_in_feat")


def reference_generator(reference_dir) -> Next3DGenerator:
    weights = np.load(reference_dir / "state_dict.npz")
    g = Next3DGenerator(Next3DConfig(channel_base=2048, channel_max=32)).eval()
    g.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files if k != "uv_face_mask"}, strict=True)
    g.uv_face_mask.copy_(torch.from_numpy(weights["uv_face_mask"]))
    return g


def run_case(generator, reference_dir, name: str, device: str = "cpu"):
    """(the case's arrays, ws, GeneratorOutput, recorded stages) of reference case `name` on `device`."""
    d = np.load(reference_dir / f"{name}.npz")
    t = lambda k: torch.from_numpy(d[k]).to(device)  # noqa: E731
    cutoff = int(d["truncation_cutoff"])
    record = {}
    with torch.no_grad():
        ws = generator.mapping(t("z"), t("c_cond"), truncation_psi=float(d["truncation_psi"]),
                               truncation_cutoff=None if cutoff < 0 else cutoff)
        out = generator.synthesis(ws, t("c"), t("v"), draws=RandomDraws(t("rand_stratified"), t("rand_pdf")),
                                  record=record)
    return d, ws, out, record


def check_stages(record, d, exact_atol: float, float16_rtol: float, stats_rtol: float) -> None:
    """The recorded intermediates against the official ones: the mouth box exactly, EXACT_STAGES within
    `exact_atol`, FLOAT16_STAGES within `float16_rtol` of their magnitude where stored, and their per-channel
    statistics (mean, std, min, max, float32 exact in the reference) within `stats_rtol`."""
    assert record["mouth_box"].tolist() == d["mouth_box"].tolist()
    for stage in EXACT_STAGES:
        np.testing.assert_allclose(record[stage].cpu().numpy(), d[stage], rtol=0, atol=exact_atol, err_msg=stage)
    for stage in FLOAT16_STAGES:
        ours = record[stage].cpu().numpy()
        if stage in d.files:
            ref = d[stage].astype(np.float32)
            assert (np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))).max() <= float16_rtol, stage
        flat = ours[0].reshape(ours.shape[1], -1).astype(np.float64)
        stats = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], 1)
        ref_stats = d[f"{stage}_stats"]
        assert (np.abs(stats - ref_stats) / np.maximum(1.0, np.abs(ref_stats))).max() <= stats_rtol, stage
