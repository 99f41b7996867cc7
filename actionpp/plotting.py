"""Small plotting helpers the notebooks share: the unit sphere and vectors shown on it.

- :func:`sphere_axes`: a 3D matplotlib axis with the unit sphere as a wireframe;
- :func:`to_sphere3`: ``(N, d)`` unit vectors as points of S^2 (identity for d = 3, padded
  for d < 3, the top-3 principal axes of a basis, renormalised, for d > 3).

Taught in notebooks/01_class_centers.ipynb and notebooks/03_contrastive_losses.ipynb.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sphere_axes", "to_sphere3"]


def sphere_axes(ax: Any, resolution: tuple[int, int] = (40, 20), color: str = "0.85", lw: float = 0.4) -> Any:
    """Draw the unit sphere as a wireframe on a 3D axis, equal aspect, no ticks; returns ``ax``."""
    u, w = np.mgrid[0 : 2 * np.pi : complex(resolution[0]), 0 : np.pi : complex(resolution[1])]
    ax.plot_wireframe(np.cos(u) * np.sin(w), np.sin(u) * np.sin(w), np.cos(w), color=color, lw=lw)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_axis_off()  # the wireframe is the reference; axis ticks only add clutter
    return ax


def to_sphere3(v: Tensor, basis: Tensor | None = None) -> Tensor:
    """``v (N, d)`` as ``(N, 3)`` points on the unit sphere.

    d = 3: ``v`` normalised; d < 3: zero-padded; d > 3: projected on the top-3 right singular
    vectors of ``basis`` (default ``v`` itself, e.g. the class centres to keep every class's
    centre in view) and renormalised. A projection distorts angles when ``v`` does not lie in
    a 3D subspace: read the angles from the numbers, not the picture.
    """
    if v.ndim != 2:
        raise ValueError(f"v must be (N, d), got shape {tuple(v.shape)}")
    v = v.double()
    d = v.shape[1]
    if d < 3:
        v = torch.cat([v, v.new_zeros(v.shape[0], 3 - d)], dim=1)
    elif d > 3:
        ref = (v if basis is None else basis).double()
        _, _, vt = torch.linalg.svd(ref, full_matrices=False)
        v = v @ vt[:3].T
    return F.normalize(v, dim=1)
