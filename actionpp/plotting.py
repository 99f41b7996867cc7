"""Small plotting helpers the notebooks share: the lab's class colours, the unit sphere and vectors on it.

- :func:`class_colours` / :func:`label_cmap`: one colour per class for the whole lab (RV is the same
  orange in every notebook), from the Okabe-Ito colour-blind-safe palette;
- :func:`sphere_axes`: a 3D matplotlib axis with the unit sphere as a wireframe;
- :func:`to_sphere3`: ``(N, d)`` unit vectors as points of S^2 (identity for d = 3, padded
  for d < 3, the top-3 principal axes of a basis, renormalised, for d > 3);
- :func:`best_view`: the (elev, azim) of a 3D view in which no point hides behind another or
  behind the origin (a static figure of a tetrahedron otherwise loses a vertex).

Taught in notebooks/00_data_tour.ipynb, 01_class_centers.ipynb, 03_contrastive_losses.ipynb and 04_train.ipynb.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OKABE_ITO", "class_colours", "class_colour", "label_cmap", "sphere_axes", "to_sphere3", "best_view",
           "view_separation"]

#: The Okabe-Ito palette (Okabe and Ito, 2008): distinguishable under every common colour-vision deficiency.
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermilion": "#D55E00", "reddish purple": "#CC79A7", "grey": "#999999",
}

# class name -> colour, in label order; the background is grey wherever it is drawn at all
_CLASS_COLOURS: dict[str, dict[str, str]] = {
    "acdc": {"background": OKABE_ITO["grey"], "RV": OKABE_ITO["orange"], "Myo": OKABE_ITO["sky blue"],
             "LV": OKABE_ITO["bluish green"]},
    "la": {"background": OKABE_ITO["grey"], "LA": OKABE_ITO["reddish purple"]},
}
_ALIASES = {"bg": "background", "BG": "background", "atrium": "LA"}


def class_colours(dataset: str = "acdc") -> dict[str, str]:
    """Class name -> hex colour of ``dataset`` (``"acdc"``: background, RV, Myo, LV; ``"la"``: background,
    LA), in label order. Every notebook draws a class in this colour, so the RV (the tail of notebooks
    04-05) is the same orange everywhere. Another registered dataset (:mod:`actionpp.data.spec`) gets its
    spec's classes in the palette's order, the background grey."""
    if dataset in _CLASS_COLOURS:
        return dict(_CLASS_COLOURS[dataset])
    from actionpp.data.spec import dataset_names, dataset_spec

    if dataset not in dataset_names():
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {dataset_names()}")
    palette = [c for name, c in OKABE_ITO.items() if name != "grey"]
    names = dataset_spec(dataset).class_names
    return {"background": OKABE_ITO["grey"], **{n: palette[i % len(palette)] for i, n in enumerate(names[1:])}}


def class_colour(name: str, dataset: str = "acdc") -> str:
    """The colour of one class by name (``"RV"``; ``"BG"`` / ``"bg"`` mean the background)."""
    colours = class_colours(dataset)
    key = _ALIASES.get(name, name)
    if key not in colours:
        raise ValueError(f"no class {name!r} in {dataset}: expected one of {list(colours)}")
    return colours[key]


def label_cmap(dataset: str = "acdc") -> Any:
    """A matplotlib colormap indexed by label value: 0 (background) transparent, label c in the colour of
    class c. Draw a label map with ``imshow(label, cmap=label_cmap(), vmin=0, vmax=K - 1,
    interpolation="nearest")``."""
    from matplotlib.colors import ListedColormap

    colours: list[Any] = ["#00000000", *list(class_colours(dataset).values())[1:]]  # 0: fully transparent
    return ListedColormap(colours)


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


def view_separation(points: Any, elev: float, azim: float) -> float:
    """Smallest distance between the projections of ``points (N, 3)`` and of the origin on the image plane
    of a matplotlib 3D view (``elev``, ``azim`` in degrees): 0 when a point hides another one or sits in
    front of the origin (its ray from the centre collapses to a dot)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    e, a = np.radians(elev), np.radians(azim)
    eye = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])  # unit vector towards the viewer
    pts = np.vstack([p, np.zeros((1, 3))])
    flat = pts - np.outer(pts @ eye, eye)  # projections on the image plane
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    return float(dist[~np.eye(len(pts), dtype=bool)].min())


def best_view(points: Any, elevs: Any = range(-60, 61, 5), azims: Any = range(0, 360, 5)) -> tuple[float, float]:
    """The (elev, azim) on a grid that maximises :func:`view_separation` of ``points (N, 3)``: every point,
    and the ray from the centre to it, stays visible in a static figure. Ties go to the first grid point."""
    grid = [(float(e), float(a)) for e in elevs for a in azims]
    scores = [view_separation(points, e, a) for e, a in grid]
    return grid[int(np.argmax(scores))]  # the first of equal maxima
