"""FIR up/down-sampling and resampling convolutions (upfirdn2d, conv2d_resample) in plain PyTorch.

Semantics follow the reference implementation of StyleGAN2-ADA/EG3D (docs/architecture.md#stylegan2-building-blocks):
zero-insertion upsampling, padding (negative = crop), a 2-D FIR filter applied as a depthwise correlation with the
flipped filter, and decimation. The [1,3,3,1] filter is symmetric, so flipping never changes results, but it is kept
for exactness.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Padding = Union[int, Sequence[int]]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """The separable low-pass filter as a normalized [k, k] outer product (sum 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def _parse_padding(padding: Padding) -> Tuple[int, int, int, int]:
    """An int pads all sides; [x, y] pads symmetric per axis; [x0, x1, y0, y1] pads each side."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = list(padding)
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: Padding = 0,
              gain: float = 1.0, flip_filter: bool = False, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images [N, C, H, W]; `bias` [C] is
    added by the filter's convolution."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    # The filter is scaled by gain**(ndim/2) = gain for a 2-D filter, and flipped so that conv2d (a correlation)
    # computes a true convolution.
    f = (f * gain).to(x.dtype)
    if not flip_filter:
        f = f.flip([0, 1])
    weight = f[None, None].expand(c, 1, *f.shape)
    if px0 == px1 == py0 == py1 and px0 >= 0:
        # Symmetric zero padding inside the convolution: the same result without copying a padded image.
        x = F.conv2d(x, weight, bias, padding=px0, groups=c)
    else:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
        x = F.conv2d(x, weight, bias, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    """2x FIR upsampling that keeps the image centred (padding chosen from the filter size)."""
    k = f.shape[-1]
    p = [(k + up - 1) // 2, (k - up) // 2]
    return upfirdn2d(x, f, up=up, padding=[p[0], p[1], p[0], p[1]], gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """2x FIR downsampling that keeps the image centred."""
    k = f.shape[-1]
    p = [(k - down + 1) // 2, (k - down) // 2]
    return upfirdn2d(x, f, down=down, padding=[p[0], p[1], p[0], p[1]])


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor = None, up: int = 1, down: int = 1,
                    padding: int = 0, groups: int = 1, flip_weight: bool = True,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Convolution combined with FIR up- or downsampling, as StyleGAN2 computes it.

    `w` is [out, in/groups, kh, kw]. `flip_weight=True` means correlation (what F.conv2d does). Only the cases the
    networks use are supported: plain conv, 1x1 conv, up=2 (transposed conv then FIR) and down=2 (FIR then strided
    conv). `bias` [out], when given, is added by the last convolution (saves a pass over the output).
    """
    out_ch, in_per_group, kh, kw = w.shape
    if up > 1 and down > 1:
        raise NotImplementedError("conv2d_resample supports up or down sampling, not both")
    p0 = p1 = padding
    if up > 1:
        fk = f.shape[-1]
        p0 += (fk + up - 1) // 2
        p1 += (fk - up) // 2
        # Transposed convolution with stride `up`, then the FIR filter removes the zero-insertion images.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        p0 -= kw - 1
        p1 -= kw - up
        pt = max(min(-p0, -p1), 0)
        # StyleGAN2's layers pass flip_weight=False for up=2 ("slightly faster"): the transposed conv then uses the
        # weight unflipped. Flipping only when asked keeps both conventions exact.
        if flip_weight and (kw > 1 or kh > 1):
            wt = wt.flip([2, 3])
        x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
        return upfirdn2d(x, f, padding=[p0 + pt, p1 + pt, p0 + pt, p1 + pt], gain=up * up, bias=bias)
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    if down > 1:
        fk = f.shape[-1]
        if kw == 1 and kh == 1:
            # 1x1: decimate first (cheaper), then convolve.
            q0, q1 = p0 + (fk - down + 1) // 2, p1 + (fk - down) // 2
            x = upfirdn2d(x, f, down=down, padding=[q0, q1, q0, q1])
            return F.conv2d(x, w, bias, groups=groups)
        q0, q1 = p0 + (fk - down + 1) // 2, p1 + (fk - down) // 2
        x = upfirdn2d(x, f, padding=[q0, q1, q0, q1])
        return F.conv2d(x, w, bias, stride=down, groups=groups)
    return F.conv2d(x, w, bias, padding=padding, groups=groups)
