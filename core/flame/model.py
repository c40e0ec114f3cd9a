"""The FLAME head model as an nn.Module: parameters -> vertices, 68 landmarks and joints (smplx's LBS maths).

Built from a `FlameModelData` (an official model converted by `official.py`, or the built-in head in the same
layout). Evaluation is smplx's `lbs` (blend shapes, the 5 joints global / neck / jaw / left eye / right eye,
pose correctives, linear blend skinning) and `vertices2landmarks` (barycentric points on the deformed faces).

What the Next3D generator consumes (docs/flame.md#generator-input) is the mesh with the *global* rotation zeroed:
DECA zeroes it before FLAME, and the head pose is carried by the camera. So by default `forward` leaves
`global_rotation` out of the vertices; fold it into the camera with `conversions.fold_head_pose_into_camera`.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import nn

from ..errors import Next3DError
from .model_data import N_CONTOUR_LANDMARKS, FlameModelData
from .params import FlameParams

__all__ = ["FlameModel", "FlameOutput"]


def _smplx_lbs():
    try:
        from smplx import lbs as smplx_lbs
    except ImportError as exc:  # pragma: no cover - smplx is pinned in requirements.txt
        raise Next3DError(f"The FLAME model needs the smplx package, which cannot be imported ({exc}); install the "
                          "project's requirements (pip install smplx==0.1.28).") from None
    return smplx_lbs


@dataclass(frozen=True)
class FlameOutput:
    """FLAME evaluated for a batch, in FLAME units (metres), canonical frame (x left of subject, y up, z forward)."""

    vertices: torch.Tensor   # [B, V, 3]
    landmarks: torch.Tensor  # [B, 68, 3] iBUG order
    joints: torch.Tensor     # [B, 5, 3] posed joints: global, neck, jaw, left eye, right eye

    def mesh_input(self) -> torch.Tensor:
        """The generator's mesh input [B, V + 68, 3]: the vertices, then the landmarks."""
        return torch.cat([self.vertices, self.landmarks], dim=1)


class FlameModel(nn.Module):
    """FLAME (or a model in the same layout) with fixed arrays as buffers.

    Args:
        data: the model arrays (FlameModelData).
        dynamic_contour: pick the 17 jaw-contour landmarks by the neck's yaw as FLAME and DECA do (only when the
            model has the dynamic embedding). At zero neck yaw this equals the static 68-point embedding, which is
            what the generator's training data used.
    """

    def __init__(self, data: FlameModelData, *, dynamic_contour: bool = True) -> None:
        super().__init__()
        if not isinstance(data, FlameModelData):
            raise Next3DError(f"FlameModel needs a FlameModelData, got {type(data).__name__}; load one with "
                              "core.flame.load_model_data or core.flame.load_or_convert.")
        self.name = data.name
        self.n_shape = data.n_shape
        self.n_expr = data.n_expr
        self.n_vertices = data.n_vertices
        self.dynamic_contour = bool(dynamic_contour) and data.has_dynamic_contour
        f32 = torch.float32
        V = data.n_vertices
        self.register_buffer("v_template", torch.as_tensor(data.v_template, dtype=f32))
        blend = torch.cat([torch.as_tensor(data.shapedirs, dtype=f32), torch.as_tensor(data.exprdirs, dtype=f32)], 2)
        self.register_buffer("blenddirs", blend)                                      # [V, 3, S + E]
        posedirs = torch.as_tensor(data.posedirs, dtype=f32).reshape(V * 3, -1).t().contiguous()
        self.register_buffer("posedirs", posedirs)                                    # [36, V * 3] (smplx layout)
        self.register_buffer("J_regressor", torch.as_tensor(data.J_regressor, dtype=f32))
        self.register_buffer("lbs_weights", torch.as_tensor(data.weights, dtype=f32))
        self.register_buffer("parents", torch.as_tensor(data.parents, dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))
        self.register_buffer("lmk_faces_idx", torch.as_tensor(data.lmk_faces_idx, dtype=torch.long))
        self.register_buffer("lmk_bary_coords", torch.as_tensor(data.lmk_bary_coords, dtype=f32))
        if data.has_dynamic_contour:
            self.register_buffer("dynamic_lmk_faces_idx", torch.as_tensor(data.dynamic_lmk_faces_idx,
                                                                          dtype=torch.long))
            self.register_buffer("dynamic_lmk_bary_coords", torch.as_tensor(data.dynamic_lmk_bary_coords, dtype=f32))
        else:
            self.dynamic_lmk_faces_idx = None
            self.dynamic_lmk_bary_coords = None
        self.register_buffer("neck_kin_chain", torch.tensor([1, 0], dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, vertices={self.n_vertices}, shape={self.n_shape}, expression={self.n_expr}, "
                f"dynamic_contour={self.dynamic_contour}")

    def forward(self, params: FlameParams, *, include_global_rotation: bool = False,
                include_neck: bool = True) -> FlameOutput:
        """Evaluate FLAME.

        Args:
            params: FlameParams [B]; shape/expression shorter than the model's are zero-padded.
            include_global_rotation: also rotate the vertices by `params.global_rotation` (about the root joint).
                Off by default: the generator was trained with zero global rotation; the head pose belongs in the
                camera (conversions.fold_head_pose_into_camera).
            include_neck: apply `params.neck` to the vertices (default). Pass False when the neck rotation is
                folded into the camera as well.
        Returns:
            FlameOutput with vertices [B, V, 3], landmarks [B, 68, 3], joints [B, 5, 3].
        """
        if not isinstance(params, FlameParams):
            raise Next3DError(f"FlameModel expects FlameParams, got {type(params).__name__}.")
        lbs_mod = _smplx_lbs()
        dtype, device = self.v_template.dtype, self.v_template.device
        params = params.padded(self.n_shape, self.n_expr).to(device=device, dtype=dtype)
        betas = torch.cat([params.shape, params.expression], dim=1)
        pose = params.full_pose(include_global_rotation=include_global_rotation, include_neck=include_neck)
        vertices, joints = lbs_mod.lbs(betas, pose, self.v_template, self.blenddirs, self.posedirs,
                                       self.J_regressor, self.parents, self.lbs_weights)
        B = vertices.shape[0]
        lmk_idx = self.lmk_faces_idx.unsqueeze(0).expand(B, -1)
        lmk_bary = self.lmk_bary_coords.unsqueeze(0).expand(B, -1, -1)
        if self.dynamic_contour:
            dyn_idx, dyn_bary = lbs_mod.find_dynamic_lmk_idx_and_bcoords(
                vertices, pose, self.dynamic_lmk_faces_idx, self.dynamic_lmk_bary_coords, self.neck_kin_chain)
            lmk_idx = torch.cat([dyn_idx, lmk_idx[:, N_CONTOUR_LANDMARKS:]], dim=1)
            lmk_bary = torch.cat([dyn_bary, lmk_bary[:, N_CONTOUR_LANDMARKS:]], dim=1)
        landmarks = lbs_mod.vertices2landmarks(vertices, self.faces, lmk_idx.contiguous(), lmk_bary.contiguous())
        return FlameOutput(vertices=vertices, landmarks=landmarks, joints=joints)

    def mesh_input(self, params: FlameParams, *, include_neck: bool = True) -> torch.Tensor:
        """The generator's mesh input [B, V + 68, 3] for these parameters (global rotation left to the camera)."""
        return self(params, include_neck=include_neck).mesh_input()
