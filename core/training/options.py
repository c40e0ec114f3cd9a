"""The options of a training run, apart from the loop (torch) so that `next3d train --help` builds its options
from them without loading torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

PRESETS = ("tiny", "lite", "small", "ffhq")


@dataclass(frozen=True)
class TrainingOptions:
    """Everything a run depends on. Defaults follow the Next3D FFHQ recipe (docs/training.md#recipe-defaults)
    where they apply; `cfg` picks the network size."""

    data: str                               # dataset folder (core.training.dataset)
    outdir: str                             # run folder
    cfg: str = "small"                      # network preset: tiny | small | ffhq
    batch_size: int = 4
    total_kimg: float = 1000.0              # train until this many thousand real images have been shown
    seed: int = 0
    glr: float = 0.0025
    dlr: float = 0.002
    betas: Tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 4.0
    g_reg_interval: int = 4                 # density regularization every 4 steps
    d_reg_interval: int = 16                # lazy R1 every 16 steps
    density_reg: float = 0.25
    density_reg_p_dist: float = 0.004
    blur_init_sigma: float = 10.0
    blur_fade_kimg: Optional[float] = None  # None: 200 * batch / 32 (EG3D)
    gpc_reg_prob: float = 0.5
    gpc_reg_fade_kimg: float = 1000.0
    recon_weight: float = 0.0               # reconstruction warm-up (core.training.loss); 0 = EG3D's recipe
    recon_fade_kimg: float = 0.0            # 0 with recon_weight > 0: the weight stays, no fade
    recon_appearance: bool = False          # reconstruction z carries the target's appearance code
    d_warmup_kimg: float = 0.0              # train only D for the run's first this many kimg (a fresh D, trained G)
    disc_c_noise: float = 1.0
    mesh_cond: bool = True                  # deformation-aware D (mesh rendering as extra input channels)
    mbstd_group: int = 4
    ema_kimg: Optional[float] = None        # None: batch * 10 / 32
    ema_rampup: Optional[float] = None
    snapshot_kimg: float = 50.0
    keep_states: int = 2                    # newest training states kept (network-*.safetensors are all kept)
    sample_grid: Tuple[int, int] = (4, 4)   # identities x dataset entries; (0, 0) writes no grids
    device: str = "auto"
    resume: Optional[str] = "auto"          # 'auto', None, a state file, a generator .safetensors or official .pkl
    resume_blur: bool = False
    mesh_cache_mb: float = 1024.0
    progress: bool = True
    dist_timeout_s: float = 1800.0          # under torchrun: how long a process waits for the others before it stops

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        data["sample_grid"] = list(self.sample_grid)
        return data
