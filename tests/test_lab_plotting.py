"""The lab's shared figure helpers (actionpp.plotting): one class palette for every notebook, and a 3D view
that hides no point."""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest

from actionpp import centers as C
from actionpp import plotting as P
from actionpp.paths import repo_root


def test_each_class_has_one_colour_blind_safe_colour_in_every_dataset():
    acdc, la = P.class_colours("acdc"), P.class_colours("la")
    assert list(acdc) == ["background", "RV", "Myo", "LV"] and list(la) == ["background", "LA"]
    assert len(set(acdc.values())) == len(acdc), "two ACDC classes share a colour"
    assert set(acdc.values()) | set(la.values()) <= set(P.OKABE_ITO.values())
    assert P.class_colour("RV") == acdc["RV"] and P.class_colour("BG") == P.class_colour("background")
    assert P.class_colour("atrium", "la") == la["LA"]
    with pytest.raises(ValueError, match="no class"):
        P.class_colour("RA")
    with pytest.raises(ValueError, match="unknown dataset"):
        P.class_colours("brats")


def test_the_label_colormap_is_transparent_at_0_and_the_class_colour_elsewhere():
    from matplotlib.colors import to_rgba

    cmap = P.label_cmap("acdc")
    assert cmap(0)[3] == 0.0
    for label, name in enumerate(["RV", "Myo", "LV"], start=1):
        assert np.allclose(cmap(label), to_rgba(P.class_colour(name)))


@pytest.mark.parametrize("stem", ["00_data_tour", "04_train"])
def test_the_notebooks_that_draw_acdc_classes_take_their_colours_from_the_library(stem):
    """The RV was orange in 00 and blue in 04: both now colour classes through actionpp.plotting only."""
    nb = nbformat.read(repo_root() / "notebooks" / f"{stem}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "label_cmap(" in code and re.search(r"class_colours?\(", code)
    assert not re.search(r"ListedColormap\(\s*\[[^\]]*PAL", code), "a label colormap built from another palette"
    assert not re.search(r"#[0-9A-Fa-f]{6}", code), "a colour typed into the notebook"


def test_best_view_keeps_every_vertex_of_the_tetrahedron_apart():
    tetra = C.make_centers(4, 3, method="optimize", seed=0).vectors.double().numpy()
    # the view 01 used before: a vertex almost in front of the centre, its ray collapsed
    assert P.view_separation(tetra, 20, 35) < 0.2
    elev, azim = P.best_view(tetra)
    assert P.view_separation(tetra, elev, azim) > 0.75
    for k in (6, 12):
        pts = C.make_centers(k, 3, method="optimize", seed=0).vectors.double().numpy()
        assert P.view_separation(pts, *P.best_view(pts)) >= P.view_separation(pts, 20, 35)


def test_view_separation_is_zero_when_a_point_faces_the_viewer():
    assert P.view_separation(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 0, 0) == pytest.approx(0.0)
    assert P.view_separation(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 0, 45) > 0.5
