"""Bias + activation + gain + clamp, the fused op of StyleGAN2 written as plain PyTorch
(docs/architecture.md#stylegan2-building-blocks)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

# Default gain of each activation: lrelu is scaled by sqrt(2) so activations keep unit variance.
DEFAULT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, act: str = "linear", gain: Optional[float] = None,
             clamp: Optional[float] = None, fresh: bool = False) -> torch.Tensor:
    """x + b (along dim 1), then the activation, then * gain, then clamp to [-clamp, clamp].

    `gain=None` means the activation's default gain. The order (gain before clamp) matters for the clamped
    super-resolution layers. `fresh=True` says x is a temporary of the caller's, which the steps may overwrite.
    """
    if act not in DEFAULT_GAIN:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(DEFAULT_GAIN)}")
    gain = DEFAULT_GAIN[act] if gain is None else float(gain)
    clamp = clamp if clamp is not None and clamp >= 0 else None
    # Without autograd, every step after the first works in place on the fresh tensor the first step made: the
    # same arithmetic, but one pass over memory less per step (these tensors reach 128 x 512 x 512).
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)))
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
        fresh = True
    if act == "lrelu":
        x = F.leaky_relu_(x, 0.2) if inplace and fresh else F.leaky_relu(x, 0.2)
        fresh = True
    if gain != 1:
        x = x.mul_(gain) if inplace and fresh else x * gain
        fresh = True
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if inplace and fresh else x.clamp(-clamp, clamp)
    return x
