"""Levenberg-Marquardt for a clip: per-frame variables X [T, P] and shared ones s [S], with costs

    sum_t |r_t(x_t, s)|^2 + sum_t |prior * x_t|^2 + |shape_prior * s|^2
        + sum_t |smooth1 * (D X)_t|^2 + sum_t |smooth2 * (D^2 X)_t|^2

where r are the data residuals of each frame (any torch function, frames independent), `prior`, `shape_prior`,
`smooth1` and `smooth2` are per-variable weights (square roots of the weights of the squared terms), D is the
frame-to-frame difference and D^2 the difference of that.

Why not Adam: the temporal terms couple every frame to its neighbours, and Adam needs thousands of steps for such
a chain to settle, while at any fixed step size it keeps every parameter moving by about that size, which is
jitter of its own (measured in docs/capture.md#accuracy). The Gauss-Newton system here is sparse: one block per
frame, k blocks either side of it from the temporal terms, and the shared variables coupled to all; scipy's sparse
LU solves it exactly in milliseconds, so 10-20 iterations reach the optimum.

The Jacobians come from torch's forward mode (torch.func.jvp), one direction per variable for all frames at once
(the frames are independent in r), batched with vmap; a problem may give a faster exact way (core/capture/fit.py
does for the blend-shape coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional

import numpy as np
import torch

__all__ = ["ClipProblem", "solve_clip"]

_CHUNK = 16                # Jacobian directions evaluated together (memory: this many forward passes at once)


@dataclass
class ClipProblem:
    residuals: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (X [T, P], s [S]) -> [T, R]
    prior: np.ndarray              # [P]
    shape_prior: np.ndarray        # [S]
    smooth1: np.ndarray            # [P] on the frame-to-frame change
    smooth2: np.ndarray            # [P] on the change of that change
    lower: np.ndarray              # [P] bounds, applied after each step (-inf / inf: none)
    upper: np.ndarray
    # Optional (X, s, columns, shared) -> (r, Jx, Js) as _jacobians returns, for a faster way to the same numbers.
    jacobian: Optional[Callable] = None


def _difference(n: int, order: int):
    """The sparse k-th order difference operator [(n - k), n]."""
    import scipy.sparse as sp

    d = sp.identity(n, format="csr")
    for _ in range(order):
        d = (sp.eye(d.shape[0] - 1, d.shape[0], k=1) - sp.eye(d.shape[0] - 1, d.shape[0])) @ d
    return d.tocsr()


def _temporal(n: int, problem: ClipProblem) -> list:
    """[(D^T D, weights squared [P])] of the temporal terms that apply to a clip of n frames."""
    terms = []
    for order, weights in ((1, problem.smooth1), (2, problem.smooth2)):
        if n > order and np.any(weights > 0):
            d = _difference(n, order)
            terms.append(((d.T @ d).tocsr(), weights ** 2))
    return terms


def _cost(problem: ClipProblem, x: torch.Tensor, s: torch.Tensor, temporal: list) -> float:
    with torch.no_grad():
        r = problem.residuals(x, s)
    xn, sn = x.double().numpy(), s.double().numpy()
    smooth = sum(float(((dtd @ xn) * xn * w2).sum()) for dtd, w2 in temporal)
    return (float(r.double().pow(2).sum()) + float(((xn * problem.prior) ** 2).sum())
            + float(((sn * problem.shape_prior) ** 2).sum()) + smooth)


def _jacobians(problem: ClipProblem, x: torch.Tensor, s: torch.Tensor, cols: np.ndarray, shared: bool):
    """(r [T, R], Jx [T, R, len(cols)], Js [T, R, S] or None), by forward-mode differentiation."""
    from torch.func import jvp, vmap

    n, p = x.shape
    directions = [("x", int(c)) for c in cols] + ([("s", j) for j in range(s.shape[0])] if shared else [])
    with torch.no_grad():
        r = problem.residuals(x, s)
    columns: List[torch.Tensor] = []
    for start in range(0, len(directions), _CHUNK):
        chunk = directions[start:start + _CHUNK]
        tx = torch.zeros(len(chunk), n, p, dtype=x.dtype)
        ts = torch.zeros(len(chunk), s.shape[0], dtype=s.dtype)
        for k, (kind, j) in enumerate(chunk):
            if kind == "x":
                tx[k, :, j] = 1.0
            else:
                ts[k, j] = 1.0
        with torch.no_grad():
            columns.append(vmap(lambda a, b: jvp(problem.residuals, (x, s), (a, b))[1])(tx, ts))
    jac = torch.cat(columns, dim=0).permute(1, 2, 0).double()          # [T, R, directions]
    jx = jac[..., :len(cols)]
    js = jac[..., len(cols):] if shared else None
    return r.double(), jx, js


def solve_clip(problem: ClipProblem, x0: torch.Tensor, s0: torch.Tensor, *, free: np.ndarray, shared: bool,
               iterations: int, progress: Optional[Callable[[], None]] = None, tolerance: float = 1e-6) -> tuple:
    """Minimize over the per-frame variables `free` [P] bool (the others stay as in x0) and, with `shared`, s.
    Returns (X, s, cost per iteration). `progress()` is called after each iteration."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    x, s = x0.detach().clone(), s0.detach().clone()
    n, p = x.shape
    cols = np.flatnonzero(free)
    m = len(cols)
    lower = torch.as_tensor(problem.lower, dtype=x.dtype)
    upper = torch.as_tensor(problem.upper, dtype=x.dtype)
    temporal = _temporal(n, problem)
    prior2 = problem.prior[cols] ** 2
    shape2 = problem.shape_prior ** 2
    mu = 1e-3
    costs = [_cost(problem, x, s, temporal)]
    for _ in range(iterations):
        r, jx, js = (problem.jacobian or partial(_jacobians, problem))(x, s, cols, shared)
        xf = x.double().numpy()[:, cols]
        # Gradient and Gauss-Newton matrix of the data terms, the priors and the temporal terms.
        blocks = torch.einsum("tri,trj->tij", jx, jx).numpy() + np.diag(prior2)[None]
        g_x = torch.einsum("tri,tr->ti", jx, r).numpy() + prior2 * xf
        a = sp.block_diag(list(blocks), format="csr")
        for dtd, w2 in temporal:
            a = a + sp.kron(dtd, sp.diags(w2[cols]), format="csr")
            g_x = g_x + (dtd @ xf) * w2[cols]
        g = g_x.reshape(-1)
        if shared:
            sn = s.double().numpy()
            b = torch.einsum("tri,trj->tij", jx, js).numpy().reshape(n * m, -1)
            c = torch.einsum("tri,trj->ij", js, js).numpy() + np.diag(shape2)
            g = np.concatenate([g, torch.einsum("tri,tr->i", js, r).numpy() + shape2 * sn])
            h = sp.bmat([[a, sp.csr_matrix(b)], [sp.csr_matrix(b.T), sp.csr_matrix(c)]], format="csc")
        else:
            h = a.tocsc()
        # Variables on a bound that the gradient pushes outwards stay there this iteration (an active set):
        # letting the step assume they move, then clamping them, spoils the step of everything coupled to them.
        xc = x[:, cols].double().numpy()
        lo, hi = problem.lower[cols], problem.upper[cols]
        active = ((xc <= lo + 1e-9) & (g_x > 0)) | ((xc >= hi - 1e-9) & (g_x < 0))
        if active.any():
            pin = np.concatenate([active.reshape(-1), np.zeros(len(g) - n * m, bool)])
            keep = sp.diags((~pin).astype(float))
            h = (keep @ h @ keep + sp.diags(pin.astype(float))).tocsc()
            g = np.where(pin, 0.0, g)
        diag = h.diagonal()
        while True:
            step = spsolve((h + sp.diags(mu * (diag + 1e-9))).tocsc(), -g)
            x_new = x.clone()
            x_new[:, cols] = x_new[:, cols] + torch.from_numpy(step[:n * m].reshape(n, m)).to(x.dtype)
            x_new = torch.maximum(torch.minimum(x_new, upper), lower)
            s_new = s + torch.from_numpy(step[n * m:]).to(s.dtype) if shared else s
            cost = _cost(problem, x_new, s_new, temporal)
            if cost <= costs[-1]:
                x, s, mu = x_new, s_new, max(mu / 3, 1e-7)
                break
            mu *= 8
            if mu > 1e6:
                break
        improved = costs[-1] - min(cost, costs[-1])
        costs.append(min(cost, costs[-1]))
        if progress is not None:
            progress()
        if improved <= tolerance * costs[-1] or mu > 1e6:
            break
    return x, s, costs
