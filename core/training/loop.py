"""The training loop: G, D and G_ema with Adam, lazy regularization, snapshots that resume exactly, a JSON-lines
log, progress with kimg/s and losses, and sample grids.

Run folder (`outdir`):
    options.json                 the options of the first run in this folder
    log.jsonl                    one JSON object per step (losses, kimg, timing) and per event (start, resume, ...)
    state-00001234.safetensors   complete training state after step 1234 (see below); the newest few are kept
    network-00001234.safetensors G_ema alone, a generator checkpoint for `next3d render` and the add-on
    reals.png, samples-00001234.png   sample grids (real images, mesh renderings, G_ema images)

A training state is one .safetensors file (no pickle): the weights of G, G_ema and D, both Adam states (per
parameter name: exp_avg, exp_avg_sq, step), the torch RNG state(s) as uint8 tensors, and a JSON metadata block
with the step counters, the options and the network configs. Data sampling is a pure function of (seed, step), so
resuming from a state and training on gives the same numbers as never stopping (bit-exact on the CPU).

Under torchrun the run is data-parallel (core/training/distributed.py): each process computes its shard of the
global batch, gradients are averaged, and rank 0 alone writes the run folder. A step equals the single-process step
up to float rounding, so states do not depend on the number of processes and resume at any world size.

Running the same command again with the same `outdir` resumes from the newest state there (`resume='auto'`). The
run holds its folder (core.io.folder_lock: a second run there is refused, naming the first), removes the
temporaries of a killed run's snapshots, and drops the log records past the step it starts from, so log.jsonl has
one record per step however often the run was killed and resumed.
`resume` may also name a state file, a generator checkpoint (.safetensors written by this project) or the official
Next3D pickle: the last two initialise G and G_ema only (D starts fresh, the blur fade is off unless
`resume_blur`), like the official `--resume`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from ..io.atomic import write_bytes_atomic
from ..io.folder_lock import FolderLock
from ..io.generator_io import load_generator, save_generator
from ..io.images import ensure_writable_dir, write_png
from ..io.safetensors_format import load_checkpoint, save_checkpoint, stored_kind
from ..networks.next3d import Next3DConfig, Next3DGenerator
from ..rendering.volume import RenderingOptions
from .appearance_code import appearance_codes
from .dataset import FolderDataset
from .discriminator import DualDiscriminator
from .distributed import (World, any_rank, average_, average_gradients, batch_shard, broadcast_from_main,
                          check_batch_split, check_same, process_device, process_group, world_from_env)
from .loss import FakeBatch, LossOptions, Next3DLoss, RealBatch
from .mesh_render import MESH_CONDITION_CHANNELS, render_mesh_condition
from .options import PRESETS, TrainingOptions  # noqa: F401  (re-exported)
from .synthetic import mesh_is_closed

__all__ = ["TrainingOptions", "TrainingResult", "Trainer", "train", "generator_preset", "discriminator_preset",
           "PRESETS",
           "find_latest_state", "load_training_state", "STATE_KIND"]

STATE_KIND = "next3d-training-state"
# Temporaries a killed run leaves in the run folder: snapshots (core.io.safetensors_format's
# `.<name>.XXXXXXXX.tmp`) and PNGs or the log rewritten atomically (core.io.atomic's `.<stem>-XXXXXXXX<suffix>`).
_TEMPORARY = re.compile(r"\.(state|network)-\d+\.safetensors\.[a-z0-9_]{8}\.tmp$"
                        r"|\.(reals|samples-\d+|log|options)-[a-z0-9_]{8}\.(png|jsonl|json)$")
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


# Options that must not change when a run is resumed, because the state would not fit or the data would differ.
_FIXED_ON_RESUME = ("cfg", "batch_size", "seed", "mesh_cond")


def generator_preset(cfg: str, resolution: int, n_faces: int, n_uvcoords: int, n_vertices: int = 5023
                     ) -> Next3DConfig:
    """The generator of a preset at a dataset resolution.

    tiny  - a few M parameters, for tests and smoke runs (planes 32, rendering 16, 12+12 samples per ray);
    lite  - the bundled default, sized to train on 2 CPU cores: 6 M parameters, 64 px planes and texture,
            rendering at image/2 (at most 32), 16+16 samples per ray;
    small - ~9 M parameters, 37 MB, for a GPU (planes 128, rendering 32 or image/8, 24+24 samples);
    ffhq  - the official FFHQ-512 network (planes 256, rendering 64, 48+48 samples).
    """
    common = dict(n_faces=n_faces, n_uvcoords=n_uvcoords, n_vertices=n_vertices, image_resolution=resolution)
    if cfg == "tiny":
        return Next3DConfig(channel_base=256, channel_max=8, texture_resolution=32, plane_resolution=32,
                            neural_rendering_resolution=min(16, resolution // 4), blend_final_size=8,
                            mouth_input_size=16, rendering=RenderingOptions(depth_resolution=12,
                                                                            depth_resolution_importance=12),
                            **common)
    if cfg == "lite":
        return Next3DConfig(channel_base=2048, channel_max=32, texture_resolution=64, plane_resolution=64,
                            neural_rendering_resolution=min(32, resolution // 2), blend_final_size=16,
                            mouth_input_size=32, rendering=RenderingOptions(depth_resolution=16,
                                                                            depth_resolution_importance=16),
                            **common)
    if cfg == "small":
        return Next3DConfig(channel_base=4096, channel_max=64, texture_resolution=128, plane_resolution=128,
                            neural_rendering_resolution=min(resolution // 4, max(32, resolution // 8)),
                            blend_final_size=16, mouth_input_size=32,
                            rendering=RenderingOptions(depth_resolution=24, depth_resolution_importance=24),
                            **common)
    if cfg == "ffhq":
        return Next3DConfig(neural_rendering_resolution=min(64, resolution // 4), **common)
    raise InputError(f"Unknown network preset {cfg!r}; use one of {', '.join(PRESETS)}.")


def discriminator_preset(cfg: str) -> Tuple[int, int]:
    """(channel_base, channel_max) of the discriminator of a preset."""
    presets = {"tiny": (1024, 32), "lite": (4096, 64), "small": (8192, 128), "ffhq": (32768, 512)}
    return presets.get(cfg, presets["ffhq"])


@dataclass
class TrainingResult:
    step: int
    cur_nimg: int
    stats: Dict[str, float]
    state_path: Optional[Path]
    network_path: Optional[Path]
    stopped_early: bool = False
    rank: int = 0                        # the process's rank under torchrun; only rank 0 writes files


# ------------------------------------------------------------------------------------------------ helpers

def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu.")
    return torch.device(name)


def _step_generator(seed: int, step: int, phase: int) -> torch.Generator:
    """The data draws of one step and phase depend on nothing else, so a resumed run draws the same batches."""
    digest = hashlib.sha256(f"next3d-train:{seed}:{step}:{phase}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def find_latest_state(outdir: Path) -> Optional[Path]:
    states = sorted(Path(outdir).glob("state-*.safetensors"))
    return states[-1] if states else None


def _named_optimizer_state(opt: torch.optim.Optimizer, names: List[str], prefix: str) -> Tuple[dict, dict]:
    """Adam state -> ({'<prefix>.<param>.<key>': tensor}, JSON-able param groups)."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{prefix}.{names[idx]}.{key}"] = t.detach().cpu()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def _load_optimizer_state(opt: torch.optim.Optimizer, names: List[str], prefix: str, tensors: Dict[str, torch.Tensor],
                          meta: dict, device: torch.device) -> None:
    index = {n: i for i, n in enumerate(names)}
    state: Dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        name, field = key[len(prefix) + 1:].rsplit(".", 1)
        if name not in index:
            raise CheckpointError(f"The training state has optimizer state for an unknown parameter {name!r}; it was "
                                  "written for another network.")
        state.setdefault(index[name], {})[field] = value if field == "step" else value.to(device)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        g["params"] = list(range(len(names)))
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def _lazy_adam(params, lr: float, betas: Tuple[float, float], reg_interval: int) -> torch.optim.Adam:
    """Adam with EG3D's lazy-regularization correction of lr and betas."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=1e-8)


def _to_uint8_grid(rows: List[torch.Tensor]) -> np.ndarray:
    """rows of [N, 3, R, R] images in [-1, 1] -> one uint8 [rows*R, N*R, 3] grid."""
    lines = [torch.cat(list(r), dim=2) for r in rows]
    grid = torch.cat(lines, dim=1)
    return (grid.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------ the run

class Trainer:
    def __init__(self, options: TrainingOptions, world: Optional[World] = None):
        self.o = options
        self.world = world_from_env() if world is None else world
        check_batch_split(options.batch_size, self.world, options.mbstd_group)
        self.device = process_device(self.world, _device(options.device))
        self.outdir = ensure_writable_dir(options.outdir)
        self.log_path = self.outdir / "log.jsonl"
        self.dataset = FolderDataset(options.data)
        ds = self.dataset
        if options.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {options.batch_size}.")
        group = min(options.mbstd_group, options.batch_size)
        if options.batch_size % group:
            raise InputError(f"The batch size {options.batch_size} is not a multiple of the discriminator's mbstd "
                             f"group ({options.mbstd_group}); use a multiple of it.")
        self.faces = ds.topology.faces.to(self.device)
        self.closed_mesh = mesh_is_closed(ds.topology.faces)
        self.mesh_cache: Dict[int, torch.Tensor] = {}
        self.mesh_cache_limit = int(options.mesh_cache_mb * 2 ** 20) // max(1, 2 * 3 * ds.resolution ** 2)
        self.codes = self._appearance_codes() if options.recon_appearance else None
        self.step = 0
        self.cur_nimg = 0
        self.elapsed = 0.0
        self.blur_init_sigma = options.blur_init_sigma
        self._stop = False
        self._log_truncated = False

    def _appearance_codes(self) -> torch.Tensor:
        o, ds = self.o, self.dataset
        if o.recon_weight <= 0:
            raise InputError("recon_appearance only changes the reconstruction loss; give it a recon_weight > 0 "
                             "(--recon-weight).")
        records = ds.extras.get("appearance")
        if records is None or records.ndim != 2:
            raise InputError(f"{ds.root / 'meshes.npz'} has no `appearance` [N, A] records, which the appearance "
                             "codes are made from; they are written by `next3d make-dataset`. Train without "
                             "--recon-appearance on other data.")
        return torch.as_tensor(appearance_codes(records))

    # ---------------------------------------------------------------------------------------- networks

    def build(self, g_config: Optional[Next3DConfig] = None, d_config: Optional[dict] = None,
              generator: Optional[Next3DGenerator] = None) -> None:
        o, ds = self.o, self.dataset
        if generator is None:
            if g_config is None:
                g_config = generator_preset(o.cfg, ds.resolution, int(ds.topology.faces.shape[0]),
                                            int(ds.topology.uvs.shape[0]), ds.n_vertices)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(o.seed)
                generator = Next3DGenerator(g_config, ds.topology)
        self.G = generator.to(self.device).train().requires_grad_(False)
        if self.codes is not None and self.codes.shape[1] >= self.G.config.z_dim:
            raise InputError(f"The dataset's appearance records give {self.codes.shape[1]} code entries, more than "
                             f"G's z has ({self.G.config.z_dim}); train without --recon-appearance.")
        cb, cm = discriminator_preset(o.cfg)
        d_kwargs = dict(c_dim=25, img_resolution=ds.resolution, img_channels=3,
                        mesh_channels=MESH_CONDITION_CHANNELS if o.mesh_cond else 0, channel_base=cb,
                        channel_max=cm, mbstd_group_size=o.mbstd_group, disc_c_noise=o.disc_c_noise)
        if d_config is not None:
            d_kwargs.update(d_config)
        self.d_kwargs = d_kwargs
        self.shard = batch_shard(o.batch_size, self.world, d_kwargs["mbstd_group_size"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed + 1)
            self.D = DualDiscriminator(**d_kwargs)
        self.D = self.D.to(self.device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        # The mapping's running mean of w moves with each process's batch; processes average it after each step.
        self.running_means = [b for name, b in self.G.named_buffers() if name.endswith("w_avg")]
        self.g_names = [n for n, _ in self.G.named_parameters()]
        self.d_names = [n for n, _ in self.D.named_parameters()]
        self.opt_G = _lazy_adam(list(self.G.parameters()), o.glr, o.betas, o.g_reg_interval)
        self.opt_D = _lazy_adam(list(self.D.parameters()), o.dlr, o.betas, o.d_reg_interval)
        blur_fade = o.blur_fade_kimg if o.blur_fade_kimg is not None else 200 * o.batch_size / 32
        self.loss = Next3DLoss(self.G, self.D, LossOptions(
            r1_gamma=o.r1_gamma, density_reg=o.density_reg, density_reg_p_dist=o.density_reg_p_dist,
            blur_init_sigma=self.blur_init_sigma, blur_fade_kimg=blur_fade, gpc_reg_prob=o.gpc_reg_prob,
            gpc_reg_fade_kimg=o.gpc_reg_fade_kimg, recon_weight=o.recon_weight,
            recon_fade_kimg=o.recon_fade_kimg))

    def check_generator_fits(self, G: Next3DGenerator, source: str) -> None:
        ds, cfg = self.dataset, G.config
        if cfg.image_resolution != ds.resolution:
            raise InputError(f"{source} makes {cfg.image_resolution}px images but the dataset's images are "
                             f"{ds.resolution}px; use a dataset of that size.")
        if cfg.n_vertices != ds.n_vertices or cfg.n_faces != int(ds.topology.faces.shape[0]) or \
                not torch.equal(G.faces[0].cpu(), ds.topology.faces.long()):
            raise InputError(f"{source} was made for another head mesh ({cfg.n_vertices} vertices, {cfg.n_faces} "
                             f"faces) than the dataset's ({ds.n_vertices} vertices, {ds.topology.faces.shape[0]} "
                             "faces); its meshes must use the same FLAME topology.")

    # ---------------------------------------------------------------------------------------- state

    def save_state(self) -> Tuple[Path, Path]:
        tensors: Dict[str, torch.Tensor] = {}
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu()
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema)):
            tensors[f"{prefix}.uv_face_mask"] = module.uv_face_mask.detach().cpu()
            tensors[f"{prefix}.plane_axes"] = module.plane_axes.detach().cpu()
        opt_g, meta_g = _named_optimizer_state(self.opt_G, self.g_names, "opt_G")
        opt_d, meta_d = _named_optimizer_state(self.opt_D, self.d_names, "opt_D")
        tensors.update(opt_g)
        tensors.update(opt_d)
        extra = {"rng.torch_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            extra["rng.torch_cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"format": STATE_KIND, "step": self.step, "cur_nimg": self.cur_nimg, "elapsed_s": self.elapsed,
                "blur_init_sigma": self.blur_init_sigma, "options": self.o.to_json(),
                "g_config": self.G.config.to_dict(), "d_config": self.d_kwargs, "opt_G": meta_g, "opt_D": meta_d,
                "dataset": {"path": str(self.dataset.root), "images": len(self.dataset),
                            "resolution": self.dataset.resolution}}
        state_path = self.outdir / f"state-{self.step:08d}.safetensors"
        save_checkpoint(state_path, tensors, meta, extra_tensors=extra, kind=STATE_KIND)
        network_path = self.outdir / f"network-{self.step:08d}.safetensors"
        save_generator(network_path, self.G_ema)
        for old in sorted(self.outdir.glob("state-*.safetensors"))[:-max(1, self.o.keep_states)]:
            old.unlink(missing_ok=True)
        self.log({"event": "snapshot", "step": self.step, "kimg": self.cur_nimg / 1000, "state": state_path.name,
                  "network": network_path.name})
        return state_path, network_path

    def load_state(self, path: Path) -> None:
        meta, tensors, extra = load_training_state(path)
        stored = meta.get("options", {})
        changed = {k: (stored.get(k), v) for k, v in self.o.to_json().items()
                   if k in stored and stored.get(k) != v
                   and k not in ("resume", "progress", "outdir", "data", "dist_timeout_s")}
        fixed = {k: v for k, v in changed.items() if k in _FIXED_ON_RESUME}
        if fixed:
            desc = ", ".join(f"{k}: {a!r} in the state, {b!r} now" for k, (a, b) in fixed.items())
            raise InputError(f"Cannot resume {path}: {desc}. Use the options of the original run, or start a new run "
                             "in another --outdir.")
        try:
            g_config = Next3DConfig.from_dict(meta["g_config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} has no valid generator config ({exc}).") from None
        self.blur_init_sigma = float(meta.get("blur_init_sigma", self.o.blur_init_sigma))
        self.build(g_config=g_config, d_config=meta.get("d_config"))
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            own = module.state_dict()
            sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")
                   and k[len(prefix) + 1:] in own}
            missing = [k for k in own if k not in sub]
            if missing:
                raise CheckpointError(f"{path} lacks {len(missing)} weights of {prefix} (e.g. {missing[0]}); it is "
                                      "damaged or from another version.")
            module.load_state_dict(sub, strict=True)
            if prefix != "D":
                with torch.no_grad():
                    module.uv_face_mask.copy_(tensors[f"{prefix}.uv_face_mask"])
                    module.plane_axes.copy_(tensors[f"{prefix}.plane_axes"])
        _load_optimizer_state(self.opt_G, self.g_names, "opt_G", tensors, meta["opt_G"], self.device)
        _load_optimizer_state(self.opt_D, self.d_names, "opt_D", tensors, meta["opt_D"], self.device)
        torch.set_rng_state(extra["rng.torch_cpu"])
        if self.device.type == "cuda" and "rng.torch_cuda" in extra:
            torch.cuda.set_rng_state(extra["rng.torch_cuda"], self.device)
        self.step = int(meta["step"])
        self.cur_nimg = int(meta["cur_nimg"])
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        images_then = int(meta.get("dataset", {}).get("images", len(self.dataset)))
        self.log({"event": "resume", "from": str(path), "step": self.step, "kimg": self.cur_nimg / 1000,
                  "world_size": self.world.size, "changed_options": {k: list(v) for k, v in changed.items()},
                  "dataset_images_then": images_then, "dataset_images_now": len(self.dataset)})

    def init_from_generator(self, path: Path) -> None:
        """Official --resume: G (and G_ema) from a generator checkpoint, D fresh, blur off unless resume_blur."""
        G = load_generator(path)
        self.check_generator_fits(G, str(path))
        if not self.o.resume_blur:
            self.blur_init_sigma = 0.0
        self.build(generator=G.requires_grad_(False))
        self.log({"event": "init_from_generator", "from": str(path), "blur_init_sigma": self.blur_init_sigma})

    # ---------------------------------------------------------------------------------------- data

    def _hold_folder(self) -> None:
        """Rank 0 holds the run folder for the whole run (a second run there is refused, naming this one) and
        removes what killed runs left: snapshot and image temporaries."""
        self._lock = FolderLock(self.outdir, "training").acquire()
        for p in list(self.outdir.iterdir()):
            if _TEMPORARY.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass

    def _truncate_log(self) -> None:
        """Drop the log records past the step this run starts from (a killed run logged steps after its last
        snapshot, which are trained again now) and a last line cut short, so the log holds one record per step
        however often the run is resumed."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return
        kept, dropped = [], 0
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > self.step:
                dropped += 1
                continue
            kept.append(line + b"\n")
        if dropped:
            write_bytes_atomic(self.log_path, b"".join(kept))

    def log(self, record: dict) -> None:
        if not self.world.is_main:
            return
        if not self._log_truncated:  # the run's first record comes once its starting step is known
            self._truncate_log()
            self._log_truncated = True
        record = {"time": round(time.time(), 3), **record}
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def mesh_rendering(self, index: int) -> torch.Tensor:
        cached = self.mesh_cache.get(index)
        if cached is not None:
            return cached.to(self.device, torch.float32)
        ds = self.dataset
        v = ds.mesh(index)[None].to(self.device)
        c = ds.label(index)[None].to(self.device)
        out = render_mesh_condition(v, self.faces, c, ds.resolution, n_vertices=ds.n_vertices,
                                    inner_pass=not self.closed_mesh,
                                    orth_scale=self.G.config.orth_scale, orth_shift=self.G.config.orth_shift,
                                    box_warp=self.G.config.rendering.box_warp)[0]
        # Always rounded through float16, so a cached and a fresh rendering are the same numbers (exact resume).
        out = out.to(torch.float16)
        if len(self.mesh_cache) < self.mesh_cache_limit:
            self.mesh_cache[index] = out.cpu()
        return out.float()

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """Dataset images [B, 3, R, R] in [-1, 1]."""
        return torch.stack([self.dataset.image(int(i)) for i in indices]).to(self.device).float() / 127.5 - 1

    def _shard_of(self, all_indices: Optional[torch.Tensor]) -> dict:
        """A data-parallel batch's shard and the global batch's cameras (nothing for a single-process batch)."""
        if all_indices is None or not self.world.distributed:
            return {}
        return dict(shard=self.shard, c_all=self.dataset.labels[all_indices].to(self.device))

    def real_batch(self, indices: torch.Tensor, all_indices: Optional[torch.Tensor] = None) -> RealBatch:
        ds = self.dataset
        images = self.images(indices)
        c = ds.labels[indices].to(self.device)
        mesh = torch.stack([self.mesh_rendering(int(i)) for i in indices]) if self.o.mesh_cond else None
        return RealBatch(image=images, c=c, mesh=mesh, **self._shard_of(all_indices))

    def fake_batch(self, indices: torch.Tensor, z: torch.Tensor, with_target: bool = False,
                   all_indices: Optional[torch.Tensor] = None) -> FakeBatch:
        ds = self.dataset
        mesh = torch.stack([self.mesh_rendering(int(i)) for i in indices]) if self.o.mesh_cond else None
        target = self.images(indices) if with_target else None
        if with_target and self.codes is not None:
            # The target's appearance code in front, random entries after it (core.training.appearance_code).
            z = torch.cat([self.codes[indices], z[:, self.codes.shape[1]:]], dim=1)
        return FakeBatch(z=z.to(self.device), c=ds.labels[indices].to(self.device),
                         v=ds.meshes[indices].to(self.device), mesh=mesh, target=target,
                         **self._shard_of(all_indices))

    # ---------------------------------------------------------------------------------------- grids

    def grid_entries(self) -> Tuple[torch.Tensor, torch.Tensor]:
        n_id, n_entries = self.o.sample_grid
        n_entries = min(n_entries, len(self.dataset))
        g = torch.Generator().manual_seed(self.o.seed + 123)
        entries = torch.randperm(len(self.dataset), generator=g)[:n_entries]
        z = torch.randn(n_id, self.G.config.z_dim, generator=g)
        return entries, z

    def write_reals(self) -> None:
        entries, _ = self.grid_entries()
        real = self.real_batch(entries)
        rows = [real.image]
        if real.mesh is not None:
            rows.append(real.mesh)
        write_png(self.outdir / "reals.png", _to_uint8_grid(rows))

    @torch.no_grad()
    def write_samples(self) -> Path:
        entries, z = self.grid_entries()
        ds = self.dataset
        v = ds.meshes[entries].to(self.device)
        c = ds.labels[entries].to(self.device)
        rows = []
        G = self.G_ema
        for k in range(z.shape[0]):
            zk = z[k:k + 1].to(self.device).expand(len(entries), -1)
            ws = G.mapping(zk, c)
            identity = G.make_identity(ws)
            planes = G.build_planes(identity, v)
            rng = torch.Generator(device=self.device).manual_seed(k)
            rows.append(G.render_planes(planes, identity.eg3d_ws, c, generator=rng).image)
        path = self.outdir / f"samples-{self.step:08d}.png"
        write_png(path, _to_uint8_grid(rows))
        return path

    # ---------------------------------------------------------------------------------------- step

    def train_step(self) -> Dict[str, float]:
        """One step of the global batch; under torchrun this process computes its shard (`self.shard`)."""
        o, shard = self.o, self.shard
        B = o.batch_size
        n = len(self.dataset)
        stats: Dict[str, float] = {}
        draws = []
        for p in range(len(PHASES)):
            g = _step_generator(o.seed, self.step, p)
            draws.append((torch.randint(n, (B,), generator=g), torch.randint(n, (B,), generator=g),
                          torch.randn(B, self.G.config.z_dim, generator=g)))
        # When a trained G meets a fresh D, D's first verdicts are noise; G waits until D has caught up.
        d_only = self.cur_nimg < o.d_warmup_kimg * 1000
        for p, phase in enumerate(PHASES):
            interval = o.g_reg_interval if phase == "Greg" else o.d_reg_interval if phase == "Dreg" else 1
            if interval <= 0 or self.step % interval != 0 or (d_only and phase.startswith("G")):
                continue
            module, opt = (self.G, self.opt_G) if phase.startswith("G") else (self.D, self.opt_D)
            real_all, gen_all, z_all = draws[p]
            real = self.real_batch(shard.take(real_all), real_all) if phase.startswith("D") else None
            fake = self.fake_batch(shard.take(gen_all), shard.take(z_all), all_indices=gen_all,
                                   with_target=phase == "Gmain" and self.loss.recon_weight(self.cur_nimg) > 0)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            stats.update(self.loss.accumulate_gradients(phase, real, fake, gain=float(interval),
                                                        cur_nimg=self.cur_nimg))
            module.requires_grad_(False)
            average_gradients(module.parameters(), self.world)
            for param in module.parameters():
                if param.grad is not None:
                    torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            opt.step()
        if self.world.distributed:
            average_(self.running_means, self.world, "averaging G's running mean of w")
            keys = sorted(stats)
            values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
            average_([values], self.world)
            stats = dict(zip(keys, values.tolist()))
        # G_ema
        ema_kimg = o.ema_kimg if o.ema_kimg is not None else B * 10 / 32
        ema_nimg = ema_kimg * 1000
        if o.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * o.ema_rampup)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self.step += 1
        self.cur_nimg += B
        stats.update(blur_sigma=self.loss.blur_sigma(self.cur_nimg), swap_prob=self.loss.swapping_prob(self.cur_nimg))
        return stats

    # ---------------------------------------------------------------------------------------- run

    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        # First Ctrl-C: finish the current step, save a state and stop. A second one interrupts at once.
        self._stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.world.is_main:
            print("\nStopping after this step and saving a snapshot (press Ctrl-C again to abort without saving).",
                  flush=True)

    def run(self) -> TrainingResult:
        devices = [self.device] if self.device.type == "cuda" else []
        self._lock = None
        try:
            with process_group(self.world, self.device, self.o.dist_timeout_s), \
                    torch.random.fork_rng(devices=devices):   # the caller's RNG state is left as it was
                return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _resume_source(self) -> Tuple[Optional[str], bool]:
        """(the file to start from, or None for a fresh start; whether the run folder holds no state yet)."""
        resume = self.o.resume
        latest = find_latest_state(self.outdir)
        if resume == "auto":
            source = latest
        elif resume in (None, "", "none"):
            if latest is not None:
                raise InputError(f"{self.outdir} already holds a training run ({latest.name}); resume it with "
                                 "--resume auto (the default) or choose another --outdir.")
            source = None
        else:
            source = Path(resume)
            if not source.is_file():
                raise InputError(f"The resume file {source} does not exist; give a state-*.safetensors file, a "
                                 "generator .safetensors, the official .pkl, or 'auto'.")
            if latest is not None and not _is_state(source):
                # A generator to start from only applies to a fresh run: the same command run again continues
                # from the newest state in the run folder instead of starting over.
                source = latest
        return (None if source is None else str(source)), latest is None

    def _shared_resume_source(self) -> Tuple[Optional[Path], bool]:
        """Rank 0 looks at the run folder and every process starts from what it found."""
        decision: Tuple = ()
        if self.world.is_main:
            try:
                self._hold_folder()
                decision = ("ok", *self._resume_source())
            except InputError as exc:
                if not self.world.distributed:
                    raise
                decision = ("error", str(exc))
        decision = broadcast_from_main(decision, self.world)
        if decision[0] == "error":
            raise InputError(decision[1])
        return (None if decision[1] is None else Path(decision[1])), decision[2]

    def _fingerprint(self) -> str:
        """A digest of the step and the weights, to check that every process starts from the same state."""
        digest = hashlib.sha256(f"{self.step}:{self.cur_nimg}".encode())
        for module in (self.G, self.G_ema, self.D):
            for t in module.state_dict().values():
                digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def _run(self) -> TrainingResult:
        o, main = self.o, self.world.is_main
        total_steps = math.ceil(o.total_kimg * 1000 / o.batch_size)
        snapshot_steps = max(1, round(o.snapshot_kimg * 1000 / o.batch_size))
        source, fresh_folder = self._shared_resume_source()
        if source is None:
            torch.manual_seed(o.seed)
            if self.device.type == "cuda":
                torch.cuda.manual_seed(o.seed)
            self.build()
            self.log({"event": "start", "options": o.to_json(), "g_config": self.G.config.to_dict(),
                      "d_config": self.d_kwargs, "device": str(self.device), "world_size": self.world.size})
        elif _is_state(source):
            self.load_state(source)
        else:
            torch.manual_seed(o.seed)
            self.init_from_generator(source)
        if self.world.distributed:
            check_same(self._fingerprint(), self.world, "starting weights")
        if main and fresh_folder and not (self.outdir / "options.json").exists():
            (self.outdir / "options.json").write_text(json.dumps(o.to_json(), indent=2) + "\n")
        grids = min(o.sample_grid) > 0 and main
        if grids and not (self.outdir / "reals.png").exists():
            self.write_reals()
        stats: Dict[str, float] = {}
        state_path = network_path = None
        saved_step = -1
        # torchrun passes a Ctrl-C on to its processes as SIGTERM (and kills them 30 s later): the same request.
        stop_signals = (signal.SIGINT, signal.SIGTERM) if self.world.distributed else (signal.SIGINT,)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._request_stop) for s in stop_signals}
        bar = None
        if o.progress and main:
            from tqdm import tqdm
            bar = tqdm(total=total_steps * o.batch_size / 1000, initial=self.cur_nimg / 1000, unit="kimg",
                       bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]")
        try:
            while self.step < total_steps and not self._stop:
                t0 = time.perf_counter()
                stats = self.train_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                kimg_s = o.batch_size / 1000 / max(dt, 1e-9)
                record = {"step": self.step, "kimg": self.cur_nimg / 1000, "sec_per_step": round(dt, 4),
                          "kimg_per_s": kimg_s, **{k: v for k, v in stats.items()}}
                self.log(record)
                if bar is not None:
                    bar.update(o.batch_size / 1000)
                    bar.set_postfix_str(", ".join([f"{kimg_s:.4f} kimg/s"] + [
                        f"{k}={stats[k]:.3f}" for k in ("loss_G", "loss_D_real", "loss_D_fake") if k in stats]))
                if not all(math.isfinite(v) for v in stats.values()):
                    self.log({"event": "non_finite", "step": self.step,
                              "stats": {k: repr(v) for k, v in stats.items()}})
                if self.step % snapshot_steps == 0 and self.step < total_steps:
                    if main:
                        state_path, network_path = self.save_state()
                        if grids:
                            self.write_samples()
                    saved_step = self.step
                # A Ctrl-C seen by any process stops all of them after the same step.
                self._stop = any_rank(self._stop, self.world, self.device)
        finally:
            if bar is not None:
                bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if saved_step != self.step and main:
            state_path, network_path = self.save_state()
            if grids:
                self.write_samples()
        self.log({"event": "stopped" if self._stop else "done", "step": self.step, "kimg": self.cur_nimg / 1000})
        return TrainingResult(step=self.step, cur_nimg=self.cur_nimg, stats=stats, state_path=state_path,
                              network_path=network_path, stopped_early=self._stop, rank=self.world.rank)


def _is_state(path: Path) -> bool:
    return stored_kind(path) == STATE_KIND


def load_training_state(path) -> Tuple[dict, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(metadata, tensors, extra tensors) of a state-*.safetensors file."""
    meta, tensors, extra = load_checkpoint(path, kind=STATE_KIND)
    if meta.get("format") != STATE_KIND:
        raise CheckpointError(f"{path} is not a training state of this project.")
    return meta, dict(tensors), dict(extra)


def train(options: TrainingOptions) -> TrainingResult:
    """Train (or resume) a Next3D generator with the deformation-aware dual discriminator; see the module docstring."""
    return Trainer(options).run()
