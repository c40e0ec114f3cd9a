"""CUDA-only checks, run by bench/gpu_check.sh on a machine with a GPU and skipped elsewhere: the generator reproduces
the official reference numbers on the GPU, and training runs and resumes on the GPU.

The reference numbers come from the official code in float32; the GPU computes the same formulas in other orders
(cuDNN's convolution algorithms, atomics in grid_sample's backward), so the bounds are ten times the CPU test's
(tests/core/test_reference_parity.py), with TF32 off: cuDNN's default TF32 convolutions keep 10 mantissa bits and
would move the image by about 1e-2.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from core.networks.next3d import Next3DConfig, Next3DGenerator
from core.rendering.volume import RandomDraws
from core.training.loop import TrainingOptions, load_training_state, train
from core.training.synthetic import StandInHeadSampler, generate_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU; bench/gpu_check.sh runs these on a machine with one")

FLOAT16_STAGES = ("textures", "mouth_plane", "blend_out", "static_plane")
EXACT_STAGES = ("raster_view0", "raster_view1", "raster_view2", "raster_view3", "alpha_views", "mouth_in",
                "mouth_patch", "ray_origins", "ray_directions", "render_weight_sum", "sr_in_rgb", "sr_in_feat")


@pytest.fixture(autouse=True)
def float32_on_the_gpu():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def gpu_generator(reference_dir):
    weights = np.load(reference_dir / "state_dict.npz")
    g = Next3DGenerator(Next3DConfig(channel_base=2048, channel_max=32)).eval()
    g.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files if k != "uv_face_mask"}, strict=True)
    g.uv_face_mask.copy_(torch.from_numpy(weights["uv_face_mask"]))
    return g.cuda()


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_reference_parity_on_the_gpu(gpu_generator, reference_dir, case):
    d = np.load(reference_dir / f"{case}.npz")
    t = lambda k: torch.from_numpy(d[k]).cuda()  # noqa: E731
    cutoff = int(d["truncation_cutoff"])
    record = {}
    with torch.no_grad():
        ws = gpu_generator.mapping(t("z"), t("c_cond"), truncation_psi=float(d["truncation_psi"]),
                                   truncation_cutoff=None if cutoff < 0 else cutoff)
        out = gpu_generator.synthesis(ws, t("c"), t("v"), draws=RandomDraws(t("rand_stratified"), t("rand_pdf")),
                                      record=record)
    assert out.image.device.type == "cuda"
    np.testing.assert_allclose(ws.cpu().numpy(), d["ws"], rtol=0, atol=1e-4)
    for name, bound in (("image_raw", 1e-3), ("image_depth", 1e-3), ("image", 1e-2)):
        worst = np.abs(getattr(out, name).cpu().numpy() - d[name]).max()
        assert worst <= bound, (name, worst)
    assert record["mouth_box"].tolist() == d["mouth_box"].tolist()
    for stage in EXACT_STAGES:
        np.testing.assert_allclose(record[stage].cpu().numpy(), d[stage], rtol=0, atol=1e-3, err_msg=stage)
    for stage in FLOAT16_STAGES:
        ours = record[stage].cpu().numpy()
        if stage in d.files:
            ref = d[stage].astype(np.float32)
            assert (np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))).max() <= 1e-2, stage
        flat = ours[0].reshape(ours.shape[1], -1).astype(np.float64)
        stats = np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1)], 1)
        ref_stats = d[f"{stage}_stats"]
        assert (np.abs(stats - ref_stats) / np.maximum(1.0, np.abs(ref_stats))).max() <= 1e-3, stage


def _options(data, outdir, steps, **kw):
    return TrainingOptions(data=str(data), outdir=str(outdir), cfg="tiny", batch_size=4, mbstd_group=2,
                           total_kimg=steps * 4 / 1000, seed=3, g_reg_interval=2, d_reg_interval=2,
                           sample_grid=(2, 2), progress=False, snapshot_kimg=0.004, keep_states=4, device="cuda", **kw)


def test_training_runs_and_resumes_on_the_gpu(tmp_path):
    """Two steps on the GPU, and a run resumed from the first step's state: the same random numbers (CPU and CUDA
    generator states are saved and restored) and the same weights up to the GPU's non-deterministic sums."""
    data = generate_dataset(tmp_path / "data", count=4, resolution=32, seed=7, sampler=StandInHeadSampler())
    whole = train(_options(data, tmp_path / "whole", 2))
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "whole" / "state-00000001.safetensors", tmp_path / "resumed")
    train(_options(data, tmp_path / "resumed", 2))
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert log[0]["device"].startswith("cuda")
    first = next(r for r in log if r.get("step") == 1)
    for key in ("loss_G", "loss_density", "loss_D_real", "loss_D_fake", "r1_penalty"):
        assert np.isfinite(first[key]), key
    assert whole.network_path.is_file() and (tmp_path / "whole" / "samples-00000002.png").is_file()
    _, a, extra_a = load_training_state(tmp_path / "whole" / "state-00000002.safetensors")
    _, b, extra_b = load_training_state(tmp_path / "resumed" / "state-00000002.safetensors")
    _, start, _ = load_training_state(tmp_path / "whole" / "state-00000001.safetensors")
    assert torch.equal(extra_a["rng.torch_cuda"], extra_b["rng.torch_cuda"])
    assert torch.equal(extra_a["rng.torch_cpu"], extra_b["rng.torch_cpu"])
    moved = [k for k in a if k.startswith("G.") and a[k].is_floating_point() and not torch.equal(a[k], start[k])]
    assert len(moved) > 50
    for prefix in ("D.", "G_ema."):
        worst = max((a[k] - b[k]).abs().max().item() for k in a if k.startswith(prefix) and a[k].is_floating_point())
        assert worst < 1e-4, (prefix, worst)
    g = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if k.startswith("G.") and a[k].is_floating_point()])
    assert (g > 1e-5).float().mean().item() < 1e-3   # Adam turns rounding of near-zero gradients into steps
