"""Input validation helpers shared by the public forwards: they raise InputError naming the tensor."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .errors import InputError


def check_tensor(name: str, x, shape: Sequence[Optional[int]], *, floating: bool = True,
                 finite: bool = True) -> torch.Tensor:
    """Check that `x` is a tensor of the given shape (None = any size) and, by default, a finite float tensor.

    Returns `x` unchanged so calls can be chained.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise InputError(f"{name} has shape {list(x.shape)}, expected {want}.")
    if floating and not x.is_floating_point():
        raise InputError(f"{name} has dtype {x.dtype}, expected a floating-point tensor (e.g. torch.float32).")
    if finite and floating and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values; check the values you pass in.")
    return x
