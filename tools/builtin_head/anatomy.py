"""The fixed anatomy every stage shares: FLAME's vertex count, the eyeballs' centres and radius, the lid
thickness and the five joints with their parents. Metres, FLAME's frame (y up, the face looking along +z,
+x = the subject's left); index 0 = left eye (+x), 1 = right eye (-x)."""

from __future__ import annotations

import numpy as np

N_VERTICES = 5023

EYE_R = 0.0125
EYE_CENTRES = np.array([[0.032, 0.030, 0.034], [-0.032, 0.030, 0.034]])
LID = 0.0016                      # lid thickness over the eyeball
JOINTS = np.array([
    [0.0, -0.160, -0.050],        # 0 global / root, at the neck base
    [0.0, -0.050, -0.045],        # 1 neck (top of the neck)
    [0.0, -0.010, -0.020],        # 2 jaw hinge (in front of the ears, a little below them)
    EYE_CENTRES[0],               # 3 left eye
    EYE_CENTRES[1],               # 4 right eye
])
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
