"""Make the README's picture of portrait preprocessing (run: .venv/bin/python scripts/make_portrait_figure.py).

  docs/images/portrait_fit.png   Three panels for scikit-image's astronaut photo (Eileen Collins, NASA, public
                                 domain; it ships in the pinned scikit-image wheel):
                                 1. the photo with the detected landmarks, irises and the crop square;
                                 2. the aligned crop with the fitted head's landmarks and iris rims projected by
                                    the fitted camera;
                                 3. the built-in head with the fitted shape, expression, jaw and eyes, rendered
                                    from that camera by the synthetic-data renderer.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "portrait_fit.png"
RES = 512


def main() -> None:
    import dataclasses

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import skimage.data
    import torch

    sys.path.insert(0, str(ROOT))
    from core.flame.params import eyes_to_gaze
    from core.portrait import detect_landmarks, eye_vertex_indices, preprocess_portrait, project_flame_points
    from core.training.synthetic import builtin_head_sampler, render_head, sample_appearance

    photo = skimage.data.astronaut()
    sampler = builtin_head_sampler()
    flame = sampler.model
    landmarks, irises = detect_landmarks(photo)
    p = preprocess_portrait(photo, flame, resolution=RES, source="astronaut")

    with torch.no_grad():
        out = flame(p.flame)
        fitted_lmk = project_flame_points(out.landmarks[0], p.camera, RES).numpy()
        rims = out.vertices[0][torch.from_numpy(eye_vertex_indices(flame))]
        rim_px = project_flame_points(rims.reshape(-1, 3), p.camera, RES).numpy().reshape(2, 4, 2)
    params = {"shape": p.flame.shape[0].numpy(), "expression": p.flame.expression[0].numpy(),
              "jaw": p.flame.jaw[0].numpy(), "eyes": p.flame.eyes[0].numpy()}
    rng = np.random.default_rng(0)
    head = sampler.sample(rng, params)
    look = dataclasses.replace(sample_appearance(rng), background=np.full((2, 3), 0.85), ambient=0.5, diffuse=0.6,
                               light_dir=np.array([0.3, 0.3, 0.9]) / np.linalg.norm([0.3, 0.3, 0.9]))
    render = render_head(head, sampler, p.camera, look, RES, rng)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.3))
    ax = axes[0]
    ax.imshow(photo)
    quad = np.vstack([p.crop.quad(), p.crop.quad()[:1]])
    ax.plot(quad[:, 0], quad[:, 1], "c-", lw=1.5, label="crop")
    ax.scatter(landmarks[:, 0], landmarks[:, 1], s=4, c="yellow", label="68 landmarks")
    ax.scatter(irises[..., 0].ravel(), irises[..., 1].ravel(), s=2, c="lime", label="irises")
    ax.set_title("detected (mediapipe Face Mesh)")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[1]
    ax.imshow(p.image)
    ax.scatter(p.landmarks[17:, 0], p.landmarks[17:, 1], s=8, c="yellow", label="detected")
    ax.scatter(fitted_lmk[17:, 0], fitted_lmk[17:, 1], s=8, c="red", label="fitted FLAME")
    for eye in rim_px:
        ring = eye[[0, 2, 1, 3, 0]]
        ax.plot(ring[:, 0], ring[:, 1], "r-", lw=1)
    ax.set_title(f"aligned crop: landmark error {p.fit_error_px:.1f} px, iris {p.eye_error_px:.1f} px")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[2]
    ax.imshow(render)
    gaze = [math.degrees(float(a)) for a in eyes_to_gaze(p.flame.eyes[0])]
    ax.set_title(f"fitted head from the fitted camera (gaze {gaze[0]:.0f}/{gaze[1]:.0f} deg)")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=72)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
