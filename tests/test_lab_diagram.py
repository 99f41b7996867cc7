"""The method diagram of the lab guide (actionpp.lab.diagram): it renders, shows every part of the method,
its boxes do not overlap, and the committed image is what the module draws."""

from __future__ import annotations

import itertools

import pytest

from actionpp.lab import diagram as D
from actionpp.paths import repo_root


def test_the_diagram_names_every_part_of_the_method_and_where_each_loss_acts():
    fig = D.method_diagram()
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + " ".join(t.get_text() for t in fig.texts)
    missing = [label for label in D.LABELS if label not in texts]
    assert not missing, f"the diagram does not show {missing}"
    for nb in ("nb 01", "nb 02", "nb 03", "nb 04"):
        assert nb in texts, f"no box names the notebook that teaches it ({nb})"


def test_no_two_boxes_overlap():
    boxes = D.BOXES
    for (a, (xa, ya, wa, ha, *_)), (b, (xb, yb, wb, hb, *_)) in itertools.combinations(boxes.items(), 2):
        apart = xa + wa <= xb or xb + wb <= xa or ya + ha <= yb or yb + hb <= ya
        assert apart, f"boxes {a} and {b} overlap"
    for name, (x, y, w, h, *_) in boxes.items():
        assert 0 <= x and x + w <= 1 and 0 <= y and y + h <= 1, f"box {name} leaves the figure"
    for a, b, _, where in D.ARROWS:
        assert a in boxes and b in boxes and 0 < where < 1, (a, b)


def test_the_committed_image_is_what_the_module_draws(tmp_path):
    compare = pytest.importorskip("matplotlib.testing.compare")
    committed = repo_root() / D.DEFAULT_PATH
    assert committed.is_file(), "docs/method_diagram.png is missing: python -m actionpp.lab.diagram"
    fresh = tmp_path / "method_diagram.png"
    assert D.main([str(fresh)]) == 0 and fresh.stat().st_size > 50_000
    diff = compare.compare_images(str(committed), str(fresh), tol=2.0)
    assert diff is None, f"docs/method_diagram.png is stale ({diff}): rewrite it with python -m actionpp.lab.diagram"
