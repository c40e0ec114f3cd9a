"""Latent codes for the synthetic heads' appearance, for the reconstruction loss.

`next3d make-dataset` records each image's procedural appearance (skin, hair, lip, iris and background colours,
hairline, light) in meshes.npz as `appearance` [N, 27]. With those records the reconstruction loss can give G a
z that says which appearance the target image has, instead of a random one: its target is then determined by
(z, mesh, camera) and G is pulled toward that image, not toward the average over all appearances.

The codes must look like the z that G gets at sampling time, N(0, I), so a random z still gives a head from the
data's distribution. Each record field is turned into a standard normal by its rank (ties share their mean
rank), the fields are then decorrelated and scaled to unit variance (PCA whitening; directions with no variance,
such as a field that is a fixed multiple of another, are dropped), and each resulting direction is turned into
normal scores by its rank once more, as whitening leaves the weak ones heavy-tailed. The codes fill the first K entries
of z; the rest of z stays random, so G learns to ignore it for the reconstruction.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

__all__ = ["appearance_codes"]


def _normal_scores(column: np.ndarray) -> np.ndarray:
    """Rank-based standard normal scores of one column; equal values get the same score."""
    _, inverse, counts = np.unique(column, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = first + (counts - 1) / 2                 # 0-based mean rank of each distinct value
    u = (mean_rank[inverse.reshape(-1)] + 0.5) / len(column)
    return torch.special.ndtri(torch.as_tensor(u, dtype=torch.float64)).numpy()


def _normal_scores_by_column(matrix: np.ndarray) -> np.ndarray:
    return np.stack([_normal_scores(matrix[:, j]) for j in range(matrix.shape[1])], axis=1)


def appearance_codes(records: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """[N, A] appearance records -> [N, K] float32 codes, each column standard normal, nearly uncorrelated (K <= A)."""
    records = np.asarray(records, dtype=np.float64)
    if records.ndim != 2 or records.shape[0] < 2:
        raise InputError(f"Appearance records must be an [N, A] array with N >= 2, got shape {list(records.shape)}.")
    if not np.isfinite(records).all():
        raise InputError("The dataset's appearance records contain NaN or infinity; regenerate meshes.npz with "
                         "next3d make-dataset.")
    scores = _normal_scores_by_column(records)
    scores -= scores.mean(0)
    cov = scores.T @ scores / len(scores)
    eigval, eigvec = np.linalg.eigh(cov)
    keep = eigval > rel_tol * max(eigval.max(), 1e-30)
    if not keep.any():
        raise InputError("The dataset's appearance records do not vary; they cannot tell images apart.")
    order = np.argsort(eigval[keep])[::-1]             # strongest direction first
    basis = eigvec[:, keep][:, order]
    # eigh's sign of each direction is arbitrary; fix it so the codes are the same on every machine.
    largest = np.abs(basis).argmax(0)
    basis = basis * np.sign(basis[largest, np.arange(basis.shape[1])])
    basis = basis / np.sqrt(eigval[keep][order])
    whitened = scores @ basis
    # The weak directions are heavy-tailed (values of 10 where a random z never goes beyond ~4): ranking once more
    # makes every code entry exactly normal again, and keeps them nearly uncorrelated.
    return _normal_scores_by_column(whitened).astype(np.float32)
