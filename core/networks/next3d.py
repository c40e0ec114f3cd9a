"""The Next3D generator (docs/architecture.md): neural texture + dynamic/static tri-planes + mouth module + neural
blending, volume rendering and super-resolution. Module and buffer names equal the official `TriPlaneGenerator`'s,
so the official G_ema state dict loads strictly.

Animation API: an avatar identity (ws -> neural texture and static planes) is computed once with
`make_identity`; `render_frame` then renders any number of frames (FLAME vertices + landmarks, camera) from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import InputError
from ..rendering import orthographic
from ..rendering.volume import (NEXT3D_PLANE_AXES, RandomDraws, RenderingOptions, render_planes, sample_from_planes,
                                sample_rays)
from .precision import FP32, Precision, precision_named
from .stylegan2 import NOISE_MODES, FullyConnectedLayer, StyleGAN2Generator
from .styleunet import StyleUNetGenerator
from .superresolution import SuperresolutionHybrid8XDC

PLANE_FEATURES = 32  # feature channels of the neural texture and of each tri-plane (fixed by the decoder)


@dataclass(frozen=True)
class Next3DConfig:
    """Everything that fixes the network's shapes and behaviour. Defaults are the official FFHQ-512 model."""

    z_dim: int = 512
    w_dim: int = 512                       # the super-resolution module is built for 512
    c_dim: int = 25                        # camera label: cam2world 4x4 + normalized intrinsics 3x3
    channel_base: int = 32768              # backbone width at resolution r is min(channel_base // r, channel_max)
    channel_max: int = 512
    mapping_layers: int = 2
    texture_resolution: int = 256          # side of the UV neural texture
    plane_resolution: int = 256            # side of each tri-plane = orthographic rasterization size
    neural_rendering_resolution: int = 64  # side of the volume-rendered feature image
    image_resolution: int = 512            # side of the final image (super-resolution output)
    n_vertices: int = 5023                 # FLAME vertices
    n_landmarks: int = 68                  # 3-D landmarks appended to the vertices
    n_faces: int = 9976
    n_uvcoords: int = 5118
    mouth_input_size: int = 64             # the mouth crop is resized to this before the mouth style-UNet
    blend_final_size: int = 32             # coarsest encoder resolution of the neural-blending style-UNet
    c_gen_conditioning_zero: bool = False  # zero the camera given to the mapping network
    c_scale: float = 1.0                   # scale of that camera
    sr_antialias: bool = True
    sr_noise_mode: str = "none"
    decoder_lr_mul: float = 1.0
    orth_scale: float = 5.0                # FLAME units -> rasterizer NDC (x2.5 to EG3D world with box_warp 1)
    orth_shift: Tuple[float, float, float] = (0.0, -0.01, -0.01)
    avg_camera_radius: float = 2.7
    avg_camera_pivot: Tuple[float, float, float] = (0.0, 0.0, 0.2)
    rendering: RenderingOptions = field(default_factory=RenderingOptions)

    def __post_init__(self):
        for name in ("texture_resolution", "plane_resolution", "neural_rendering_resolution", "image_resolution"):
            value = getattr(self, name)
            if value < 8 or value & (value - 1):
                raise InputError(f"Next3DConfig.{name} = {value} must be a power of two >= 8.")
        if self.w_dim != 512:
            raise InputError("Next3DConfig.w_dim must be 512: the super-resolution module is built for 512.")
        if self.image_resolution < 4 * 8:
            raise InputError("Next3DConfig.image_resolution must be at least 32 (super-resolution upsamples 4x).")
        if self.texture_resolution != self.plane_resolution:
            raise InputError("Next3DConfig.texture_resolution and plane_resolution must be equal: the texture, "
                             "static and mouth networks share the same ws.")
        if self.blend_final_size >= self.plane_resolution:
            raise InputError("Next3DConfig.blend_final_size must be smaller than plane_resolution.")
        if self.sr_noise_mode not in NOISE_MODES:
            raise InputError(f"Next3DConfig.sr_noise_mode must be one of {NOISE_MODES}.")

    @property
    def num_ws_half(self) -> int:
        """ws per backbone (14 at 256): the mapping emits twice this many."""
        return 2 * int(math.log2(self.plane_resolution)) - 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Next3DConfig":
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"Unknown Next3D config fields {unknown}; this file was written by a newer version?")
        if "rendering" in data and isinstance(data["rendering"], dict):
            data["rendering"] = RenderingOptions(**data["rendering"])
        for key in ("orth_shift", "avg_camera_pivot"):
            if key in data:
                data[key] = tuple(float(x) for x in data[key])
        return cls(**data)


@dataclass(frozen=True)
class Topology:
    """Mesh connectivity and UV layout of the FLAME-format head the generator rasterizes."""

    faces: torch.Tensor         # [F, 3] int64 vertex indices
    uv_faces: torch.Tensor      # [F, 3] int64 indices into uvs
    uvs: torch.Tensor           # [U, 2] float32 texture coordinates in [0, 1]
    uv_face_mask: torch.Tensor  # [R, R] float32 in [0, 1]: where the neural texture may replace the static planes


@dataclass(frozen=True)
class AvatarIdentity:
    """What stays fixed over an animation: ws and the two networks that depend only on them."""

    ws: torch.Tensor             # [B, 28, w_dim]
    textures: torch.Tensor       # [B, 32, T, T] neural texture in UV space
    static_planes: torch.Tensor  # [B, 3, 32, P, P]

    @property
    def eg3d_ws(self) -> torch.Tensor:
        return self.ws[:, :self.ws.shape[1] // 2]


@dataclass(frozen=True)
class GeneratorOutput:
    image: torch.Tensor        # [B, 3, image_resolution^2], nominally [-1, 1], not clamped
    image_raw: torch.Tensor    # [B, 3, N, N] first three volume-rendered feature channels
    image_depth: torch.Tensor  # [B, 1, N, N] expected depth along each ray (EG3D world units)


class OSGDecoder(nn.Module):
    """Tri-plane features (mean over planes) -> density (raw) and 32 features (sigmoid, MipNeRF range)."""

    def __init__(self, n_features: int = PLANE_FEATURES, hidden: int = 64, lr_mul: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(FullyConnectedLayer(n_features, hidden, lr_multiplier=lr_mul), nn.Softplus(),
                                 FullyConnectedLayer(hidden, 1 + n_features, lr_multiplier=lr_mul))
        self.precision = FP32

    def forward(self, sampled: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.precision.fast and sampled.stride(2) == 1:
            # sample_from_planes leaves the points innermost: reducing in that layout is several times faster than
            # mean(1), which writes a channels-innermost result (the same sums).
            x = sampled.transpose(2, 3).mean(1).transpose(1, 2)
        else:
            x = sampled.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return rgb, x[..., 0:1]


def dense_uv_triangles(resolution: int) -> torch.Tensor:
    """The official (unused) `dense_faces` buffer: two triangles per cell of a UV grid, 2/5-pixel margins."""
    xs = torch.arange(2, resolution - 1 - 2)
    ys = torch.arange(5, resolution - 1 - 5)
    x, y = torch.meshgrid(xs, ys, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    t0 = torch.stack([y * resolution + x, y * resolution + x + 1, (y + 1) * resolution + x], -1)
    t1 = torch.stack([y * resolution + x + 1, (y + 1) * resolution + x + 1, (y + 1) * resolution + x], -1)
    tris = torch.stack([t0, t1], 1).reshape(-1, 3)
    return tris[:, [0, 2, 1]].long()


class Next3DGenerator(nn.Module):
    """The official `TriPlaneGenerator` (triplane_next3d) in plain PyTorch."""

    def __init__(self, config: Optional[Next3DConfig] = None, topology: Optional[Topology] = None):
        super().__init__()
        cfg = config or Next3DConfig()
        self.config = cfg
        common = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, channel_base=cfg.channel_base,
                      channel_max=cfg.channel_max, mapping_layers=cfg.mapping_layers)
        # Registration order = the official state-dict order.
        self.texture_backbone = StyleGAN2Generator(img_resolution=cfg.texture_resolution,
                                                   img_channels=PLANE_FEATURES, **common)
        self.mouth_backbone = StyleUNetGenerator(img_resolution=cfg.plane_resolution, img_channels=PLANE_FEATURES,
                                                 cond_channels=PLANE_FEATURES, in_size=cfg.mouth_input_size,
                                                 final_size=4, num_cond_res=cfg.mouth_input_size, **common)
        half = self.texture_backbone.num_ws
        self.backbone = StyleGAN2Generator(img_resolution=cfg.plane_resolution, img_channels=3 * PLANE_FEATURES,
                                           mapping_ws=2 * half, **common)
        self.superresolution = SuperresolutionHybrid8XDC(channels=PLANE_FEATURES, w_dim=cfg.w_dim,
                                                         antialias=cfg.sr_antialias,
                                                         input_resolution=cfg.image_resolution // 4,
                                                         output_resolution=cfg.image_resolution)
        self.decoder = OSGDecoder(PLANE_FEATURES, lr_mul=cfg.decoder_lr_mul)
        self.neural_blending = StyleUNetGenerator(img_resolution=cfg.plane_resolution, img_channels=PLANE_FEATURES,
                                                  cond_channels=PLANE_FEATURES, in_size=cfg.plane_resolution,
                                                  final_size=cfg.blend_final_size,
                                                  num_cond_res=cfg.plane_resolution, **common)
        self.num_ws = 2 * half
        # Geometry buffers (official names). Filled from `topology`, or by load_state_dict.
        self.register_buffer("dense_faces", dense_uv_triangles(cfg.texture_resolution)[None])
        self.register_buffer("faces", torch.zeros(1, cfg.n_faces, 3, dtype=torch.long))
        self.register_buffer("raw_uvcoords", torch.zeros(1, cfg.n_uvcoords, 2))
        self.register_buffer("uvcoords", torch.zeros(1, cfg.n_uvcoords, 3))
        self.register_buffer("uvfaces", torch.zeros(1, cfg.n_faces, 3, dtype=torch.long))
        self.register_buffer("face_uvcoords", torch.zeros(1, cfg.n_faces, 3, 3))
        # Not in the official state dict (a plain attribute there); saved with our checkpoints as an extra.
        self.register_buffer("uv_face_mask", torch.ones(1, 1, cfg.texture_resolution, cfg.texture_resolution),
                             persistent=False)
        self.register_buffer("plane_axes", NEXT3D_PLANE_AXES.clone(), persistent=False)
        self.precision = FP32  # set with set_precision; not saved with the weights
        if topology is not None:
            self.set_topology(topology)

    # ----------------------------------------------------------------------------------------------- set-up

    def set_topology(self, topology: Topology) -> None:
        """Fill the geometry buffers from faces, UV faces, UVs and the UV face mask."""
        cfg = self.config
        check_tensor("topology.faces", topology.faces, [cfg.n_faces, 3], floating=False)
        check_tensor("topology.uv_faces", topology.uv_faces, [cfg.n_faces, 3], floating=False)
        check_tensor("topology.uvs", topology.uvs, [cfg.n_uvcoords, 2])
        check_tensor("topology.uv_face_mask", topology.uv_face_mask, [None, None])
        with torch.no_grad():
            uvs = topology.uvs.to(torch.float32)
            self.faces.copy_(topology.faces[None].long())
            self.uvfaces.copy_(topology.uv_faces[None].long())
            self.raw_uvcoords.copy_(uvs[None])
            # (u, v) -> (2u - 1, 1 - 2v, 1): grid_sample coordinates with the image row 0 at v = 1.
            uv3 = torch.cat([uvs * 2 - 1, torch.ones_like(uvs[:, :1])], -1)
            uv3[:, 1] = -uv3[:, 1]
            self.uvcoords.copy_(uv3[None])
            self.face_uvcoords.copy_(uv3[topology.uv_faces.long()][None])
            mask = topology.uv_face_mask.to(torch.float32)[None, None]
            # Nearest resize to the texture size, as the official code does with its mask image.
            self.uv_face_mask.copy_(F.interpolate(mask, size=self.uv_face_mask.shape[-2:], mode="nearest"))

    def set_precision(self, precision: str) -> "Next3DGenerator":
        """How the generator computes: 'fp32' (default, reproduces the official code), 'fp32-fast' or 'bf16'
        (core/networks/precision.py; costs and differences in docs/architecture.md#cost-of-our-code). Meant for
        inference; not saved with the weights; returns self."""
        mode = precision_named(precision)
        for module in self.modules():
            if isinstance(getattr(module, "precision", None), Precision):
                module.precision = mode
        return self

    # ---------------------------------------------------------------------------------------------- mapping

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """z [B, z_dim] + conditioning camera c [B, >=25] -> ws [B, 28, w_dim].

        Truncation applies to the first `truncation_cutoff` ws only; the official scripts use 14, which leaves the
        neural-texture ws (14..27) untruncated."""
        cfg = self.config
        check_tensor("z", z, [None, cfg.z_dim])
        check_tensor("c", c, [z.shape[0], None])
        if c.shape[1] < cfg.c_dim:
            raise InputError(f"c has {c.shape[1]} values per sample, expected at least {cfg.c_dim}.")
        c = c[:, :cfg.c_dim]
        if cfg.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * cfg.c_scale, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    # ------------------------------------------------------------------------------------ identity (cached)

    def make_identity(self, ws: torch.Tensor, noise_mode: str = "const") -> AvatarIdentity:
        """The per-avatar part: neural texture from ws[14:], static tri-planes from ws[:14]."""
        check_tensor("ws", ws, [None, self.num_ws, self.config.w_dim])
        half = self.num_ws // 2
        textures = self.texture_backbone.synthesis(ws[:, half:], noise_mode=noise_mode)
        static = self.backbone.synthesis(ws[:, :half], noise_mode=noise_mode)
        static = static.view(len(static), 3, PLANE_FEATURES, static.shape[-2], static.shape[-1])
        return AvatarIdentity(ws=ws, textures=textures, static_planes=static)

    # ------------------------------------------------------------------------------------------ per frame

    def split_mesh(self, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B, n_vertices + n_landmarks, 3] -> vertices, landmarks, with a clear error for the wrong count."""
        cfg = self.config
        want = cfg.n_vertices + cfg.n_landmarks
        if not isinstance(v, torch.Tensor) or v.ndim != 3 or v.shape[1:] != (want, 3):
            got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InputError(f"v must be [B, {want}, 3]: {cfg.n_vertices} FLAME vertices followed by "
                             f"{cfg.n_landmarks} 3-D landmarks, in FLAME units; got {got}.")
        check_tensor("v (FLAME vertices + landmarks)", v, [None, want, 3])
        return v[:, :cfg.n_vertices], v[:, cfg.n_vertices:]

    def build_planes(self, identity: AvatarIdentity, v: torch.Tensor, noise_mode: str = "const",
                     record: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Dynamic tri-planes of a frame blended with the static ones: [B, 3, 32, P, P]
        (docs/architecture.md#per-frame-planes).

        `record`, when given, receives the intermediate tensors under the reference names."""
        cfg = self.config
        vertices, landmarks = self.split_mesh(v)
        b = v.shape[0]
        identity = broadcast_identity(identity, b)
        eg3d_ws = identity.eg3d_ws
        raster = orthographic.rasterize_views(vertices, self.faces[0], self.face_uvcoords[0],
                                              image_size=cfg.plane_resolution, orth_scale=cfg.orth_scale,
                                              orth_shift=cfg.orth_shift)
        grids = [r[:, :2].permute(0, 2, 3, 1) for r in raster]
        feats = [F.grid_sample(identity.textures, g, mode="bilinear", padding_mode="zeros", align_corners=False)
                 for g in grids]
        alphas = orthographic.view_alphas(raster, self.uv_face_mask)
        front_lm = orthographic.project_view(landmarks, orthographic.VIEW_ANGLES[0], orth_scale=cfg.orth_scale,
                                             orth_shift=cfg.orth_shift)[..., :2]
        boxes = orthographic.mouth_box(front_lm, cfg.plane_resolution)
        size = cfg.mouth_input_size
        mouth_in = torch.cat([
            F.interpolate(feats[0][i:i + 1, :, r0:r1, c0:c1], size=(size, size), mode="bilinear", antialias=True)
            for i, (r0, r1, c0, c1) in enumerate(boxes.tolist())])
        mouth_plane = self.mouth_backbone.synthesis(mouth_in, eg3d_ws, noise_mode=noise_mode)
        stitched = feats[0].clone()
        patches = []
        for i, (r0, r1, c0, c1) in enumerate(boxes.tolist()):
            # The official code resizes to (rows, rows): the box is square by construction.
            patch = F.interpolate(mouth_plane[i:i + 1], size=(r1 - r0, r1 - r0), mode="bilinear", antialias=True)
            stitched[i:i + 1, :, r0:r1, c0:c1] = patch
            patches.append(patch)
        blend_out = self.neural_blending.synthesis(stitched, eg3d_ws, noise_mode=noise_mode)
        # Plane 1 gets the sum of both side views, plane 2 the top view: the crossed assignment the released weights
        # were trained with (docs/official_quirks.md#crossed-planes).
        dynamic = torch.cat([blend_out, feats[1] + feats[2], feats[3]], 1).view(*identity.static_planes.shape)
        alpha = alphas.unsqueeze(2)
        planes = dynamic * alpha + identity.static_planes * (1 - alpha)
        if self.precision.fast:
            # Channels innermost: grid_sample reads all 32 features of a texel at once, several times faster.
            planes = planes.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(planes.shape)
        if record is not None:
            record.update(textures=identity.textures, alpha_views=alphas, mouth_box=boxes, mouth_in=mouth_in,
                          mouth_plane=mouth_plane, blend_out=blend_out,
                          static_plane=identity.static_planes.flatten(1, 2), planes=planes)
            for k, r in enumerate(raster):
                record[f"raster_view{k}"] = r
            if b == 1:
                record["mouth_patch"] = patches[0]
        return planes

    def decode_points(self, planes: torch.Tensor, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features [B, M, 32] and raw density [B, M, 1] at world points [B, M, 3] (for mesh extraction)."""
        return self.decoder(sample_from_planes(self.plane_axes, planes, points, self.config.rendering.box_warp))

    def render_planes(self, planes: torch.Tensor, eg3d_ws: torch.Tensor, c: torch.Tensor,
                      generator: Optional[torch.Generator] = None, draws: Optional[RandomDraws] = None,
                      record: Optional[Dict[str, torch.Tensor]] = None) -> GeneratorOutput:
        """Volume rendering of blended planes from camera c, then super-resolution (docs/architecture.md#rendering)."""
        cfg = self.config
        check_tensor("c (camera label)", c, [planes.shape[0], None])
        if c.shape[1] < 25:
            raise InputError(f"c has {c.shape[1]} values per frame, expected 25 (cam2world 4x4 + intrinsics 3x3).")
        res = cfg.neural_rendering_resolution
        origins, directions = sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), res)
        feats, depth, weight_sum = render_planes(planes, self.decoder, self.plane_axes, origins, directions,
                                                 cfg.rendering, generator=generator, draws=draws)
        n = planes.shape[0]
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        rgb = feature_image[:, :3]
        image = self.superresolution(rgb, feature_image, eg3d_ws, noise_mode=cfg.sr_noise_mode)
        if record is not None:
            record.update(ray_origins=origins, ray_directions=directions, render_weight_sum=weight_sum,
                          sr_in_rgb=rgb, sr_in_feat=feature_image)
        return GeneratorOutput(image=image, image_raw=rgb, image_depth=depth_image)

    def render_frame(self, identity: AvatarIdentity, v: torch.Tensor, c: torch.Tensor, noise_mode: str = "const",
                     generator: Optional[torch.Generator] = None, draws: Optional[RandomDraws] = None,
                     record: Optional[Dict[str, torch.Tensor]] = None) -> GeneratorOutput:
        """Render B frames of one avatar: v [B, 5091, 3] (FLAME vertices then 68 landmarks), c [B, 25]."""
        planes = self.build_planes(identity, v, noise_mode=noise_mode, record=record)
        ws = broadcast_identity(identity, v.shape[0]).eg3d_ws
        return self.render_planes(planes, ws, c, generator=generator, draws=draws, record=record)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, v: torch.Tensor, noise_mode: str = "const",
                  generator: Optional[torch.Generator] = None, draws: Optional[RandomDraws] = None,
                  record: Optional[Dict[str, torch.Tensor]] = None) -> GeneratorOutput:
        """The official synthesis(ws, c, v): identity and frame in one call."""
        return self.render_frame(self.make_identity(ws, noise_mode), v, c, noise_mode, generator, draws, record)

    def forward(self, z: torch.Tensor, c: torch.Tensor, v: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "const",
                generator: Optional[torch.Generator] = None) -> GeneratorOutput:
        """G(z, c, v): mapping and synthesis with the same camera (the official scripts condition the mapping on
        a frontal camera instead; call `mapping` and `synthesis` separately for that)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, v, noise_mode=noise_mode, generator=generator)


def broadcast_identity(identity: AvatarIdentity, batch: int) -> AvatarIdentity:
    """An identity of batch 1 serves any number of frames; otherwise the batch sizes must agree."""
    have = identity.ws.shape[0]
    if have == batch:
        return identity
    if have != 1:
        raise InputError(f"The avatar identity has batch {have} but {batch} frames were given; use one avatar "
                         "(batch 1) for many frames, or the same batch size for both.")
    return AvatarIdentity(ws=identity.ws.expand(batch, -1, -1),
                          textures=identity.textures.expand(batch, -1, -1, -1),
                          static_planes=identity.static_planes.expand(batch, -1, -1, -1, -1))
