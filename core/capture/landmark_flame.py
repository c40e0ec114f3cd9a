"""FLAME evaluated only where a landmark fit looks: the vertices of the faces that carry the 68 landmarks, and a
few more (the iris rims). Fitting a clip evaluates FLAME for every frame at every step; the whole mesh (5,023
vertices) would cost 25 times more for the same landmarks.

The maths is smplx's `lbs` (the same blend shapes, pose correctives and skinning as core.flame.FlameModel), on the
kept vertices. Joints depend on the whole mesh, but only linearly on shape and expression, so the regressor is
folded into the blend shapes once: J = J_regressor @ template + (J_regressor @ blend shapes) @ betas.
`tests/core/test_track.py` checks that it gives FlameModel's landmarks and vertices.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from ..flame.model import FlameModel

__all__ = ["LandmarkFlame"]


class LandmarkFlame(nn.Module):
    """FLAME's 68 static-embedding landmarks and the vertices `extra` [K] of `flame`, for the first `n_shape` shape
    and `n_expr` expression coefficients."""

    def __init__(self, flame: FlameModel, extra: np.ndarray, n_shape: int, n_expr: int) -> None:
        super().__init__()
        from smplx.lbs import batch_rigid_transform, batch_rodrigues

        self._rigid, self._rodrigues = batch_rigid_transform, batch_rodrigues
        self.n_shape, self.n_expr = min(n_shape, flame.n_shape), min(n_expr, flame.n_expr)
        lmk_faces = flame.faces[flame.lmk_faces_idx]                                  # [68, 3]
        extra = torch.as_tensor(np.asarray(extra), dtype=torch.long).reshape(-1)
        keep, local = torch.unique(torch.cat([lmk_faces.reshape(-1), extra]), return_inverse=True)
        self.register_buffer("lmk_local", local[:lmk_faces.numel()].reshape(lmk_faces.shape))
        self.register_buffer("extra_local", local[lmk_faces.numel():])
        self.register_buffer("lmk_bary", flame.lmk_bary_coords.detach().clone())
        cols = torch.cat([torch.arange(self.n_shape), flame.n_shape + torch.arange(self.n_expr)])
        blend = flame.blenddirs[:, :, cols]                                           # [V, 3, S + E]
        self.register_buffer("v_template", flame.v_template[keep].clone())
        self.register_buffer("blenddirs", blend[keep].clone())
        posedirs = flame.posedirs.reshape(flame.posedirs.shape[0], -1, 3)[:, keep]
        self.register_buffer("posedirs", posedirs.reshape(posedirs.shape[0], -1).contiguous())
        self.register_buffer("lbs_weights", flame.lbs_weights[keep].clone())
        self.register_buffer("parents", flame.parents.clone())
        self.register_buffer("j_template", flame.J_regressor @ flame.v_template)      # [J, 3]
        self.register_buffer("j_dirs", torch.einsum("jv,vcl->jcl", flame.J_regressor, blend))

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                blend_jacobian: bool = False) -> Tuple[torch.Tensor, ...]:
        """shape [B or 1, S], expression [B, E], pose [B, 15] (FLAME's order: global, neck, jaw, left eye, right
        eye) -> (landmarks [B, 68, 3], extra vertices [B, K, 3]), FLAME units, the global rotation applied.

        With `blend_jacobian`, also their derivatives [B, 68, 3, S + E] and [B, K, 3, S + E] with respect to the
        shape and expression coefficients, exactly and without differentiating through the mesh: a skinned vertex
        is sum_j w_j (R_j v + a_j), where v is linear in the coefficients, the joint rotations R_j do not depend on
        them, and the translations a_j are linear in the joints, themselves linear in the coefficients."""
        batch = pose.shape[0]
        betas = torch.cat([shape.expand(batch, -1), expression], dim=1)
        n_betas = betas.shape[1]
        # Plain matrix products and broadcasts: batched 3 x 3 products per vertex are slow on the CPU.
        v = self.v_template + (betas @ self.blenddirs.reshape(-1, n_betas).T).reshape(batch, -1, 3)
        joints = self.j_template + (betas @ self.j_dirs.reshape(-1, n_betas).T).reshape(batch, -1, 3)
        rot = self._rodrigues(pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        v = v + ((rot[:, 1:] - eye).reshape(batch, -1) @ self.posedirs).reshape(batch, -1, 3)
        _, transforms = self._rigid(rot, joints, self.parents, dtype=pose.dtype)
        t = self._skin(transforms)                                                    # [B, V, 4, 4]
        v = (t[..., :3, :3] * v[..., None, :]).sum(dim=-1) + t[..., :3, 3]
        landmarks = (v[:, self.lmk_local] * self.lmk_bary[None, :, :, None]).sum(dim=2)
        if not blend_jacobian:
            return landmarks, v[:, self.extra_local]
        n_joints = joints.shape[1]
        dv = torch.einsum("bvrc,vcl->bvrl", t[..., :3, :3], self.blenddirs)          # [B, V, 3, L]
        rot_l = rot[:, None].expand(batch, n_betas, n_joints, 3, 3).reshape(-1, n_joints, 3, 3)
        dirs = self.j_dirs.permute(2, 0, 1)[None].expand(batch, n_betas, n_joints, 3).reshape(-1, n_joints, 3)
        _, da = self._rigid(rot_l, dirs, self.parents, dtype=pose.dtype)              # a_j of the joint directions
        da = da[..., :3, 3].reshape(batch, n_betas, n_joints, 3)
        dv = dv + torch.einsum("vj,bljc->bvcl", self.lbs_weights, da)
        dlmk = (dv[:, self.lmk_local] * self.lmk_bary[None, :, :, None, None]).sum(dim=2)
        return landmarks, v[:, self.extra_local], dlmk, dv[:, self.extra_local]

    def _skin(self, transforms: torch.Tensor) -> torch.Tensor:
        batch = transforms.shape[0]
        t = self.lbs_weights @ transforms.reshape(batch, -1, 16).transpose(0, 1).reshape(-1, batch * 16)
        return t.reshape(-1, batch, 4, 4).transpose(0, 1)
