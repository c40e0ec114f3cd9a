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

from core.training.loop import TrainingOptions, load_training_state, train
from core.training.synthetic import StandInHeadSampler, generate_dataset
from reference_model import check_stages, reference_generator, run_case  # tests/core is on sys.path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU; bench/gpu_check.sh runs these on a machine with one")

@pytest.fixture(autouse=True)
def float32_on_the_gpu():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def gpu_generator(reference_dir):
    return reference_generator(reference_dir).cuda()


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_reference_parity_on_the_gpu(gpu_generator, reference_dir, case):
    d, ws, out, record = run_case(gpu_generator, reference_dir, case, device="cuda")
    assert out.image.device.type == "cuda"
    np.testing.assert_allclose(ws.cpu().numpy(), d["ws"], rtol=0, atol=1e-4)
    for name, bound in (("image_raw", 1e-3), ("image_depth", 1e-3), ("image", 1e-2)):
        worst = np.abs(getattr(out, name).cpu().numpy() - d[name]).max()
        assert worst <= bound, (name, worst)
    check_stages(record, d, exact_atol=1e-3, float16_rtol=1e-2, stats_rtol=1e-3)


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
