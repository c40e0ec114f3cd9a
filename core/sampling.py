"""Latent codes as the official scripts draw them."""

from __future__ import annotations

import numpy as np
import torch


def latent_from_seed(seed: int, z_dim: int = 512) -> torch.Tensor:
    """z [1, z_dim] = np.random.RandomState(seed).randn(1, z_dim), as gen_samples/gen_videos draw it."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)
