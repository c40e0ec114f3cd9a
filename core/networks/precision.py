"""How the generator computes: the exact float32 path (default) or a faster opt-in path, set with
Next3DGenerator.set_precision (costs and differences: docs/architecture.md#cost-of-our-code).

bf16 changes only the five StyleGAN2-style networks (texture and static backbones, mouth module, neural blending,
super-resolution). Their inputs and outputs, the skip images they sum, styles and demodulation stay float32; the
tri-plane sampling, the decoder, the ray marcher and every resize stay float32 in all modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: torch.dtype  # what the feature maps and convolution weights are held in inside the networks
    # Fewer passes over memory, the same maths in another order (results move by rounding): channels-last strides
    # kept between layers (the exact path's reshape of each modulated convolution's output gives a batch of 1 odd
    # strides, and oneDNN then copies it to NCHW and takes its slower NCHW kernels); bias and gain inside the
    # convolution; per-sample weights written once; noise, activation and clamp in place; channels-last tri-planes.
    fast: bool
    description: str

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """x as the networks hold it in this precision (the float32 modes leave any dtype as it is)."""
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def outside(self, x: torch.Tensor) -> torch.Tensor:
        """x back in float32, for what leaves a network or is summed across its blocks."""
        return x if self.dtype == torch.float32 else x.to(torch.float32)


FP32 = Precision("fp32", torch.float32, False, "float32, the path that reproduces the official code (default)")
PRECISIONS = {p.name: p for p in (
    FP32,
    Precision("fp32-fast", torch.float32, True, "float32, reordered for speed: differs from fp32 by float32 "
              "rounding only"),
    Precision("bf16", torch.bfloat16, True, "fp32-fast with bfloat16 convolutions: fast on CPUs with AVX-512 "
              "BF16 or AMX, invisibly close to fp32 but not equal"),
)}


def precision_named(name: str) -> Precision:
    """The Precision called `name`, or an InputError listing the choices."""
    if name not in PRECISIONS:
        raise InputError(f"Unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[name]
