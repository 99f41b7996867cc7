"""The method in one figure, for the lab guide: student, EMA teacher, queue, class centres, where each loss acts.

:func:`method_diagram` draws it (matplotlib only, no data, no training); ``python -m actionpp.lab.diagram``
writes ``docs/method_diagram.png``, the image ``notebooks/README.md`` shows. Each box names the notebook
that teaches it. Regenerate the image after changing the drawing (``tests/test_lab_diagram.py`` checks
that the committed image is what this module draws).

Taught in notebooks/README.md (the pre-lab reading).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from actionpp.paths import repo_root
from actionpp.plotting import OKABE_ITO

__all__ = ["method_diagram", "BOXES", "ARROWS", "LABELS", "DEFAULT_PATH", "main"]

DEFAULT_PATH = Path("docs") / "method_diagram.png"

#: box id -> (x, y, width, height, text, colour); coordinates in axis fractions, (x, y) the lower left
BOXES: dict[str, tuple[float, float, float, float, str, str]] = {
    "labelled": (0.01, 0.66, 0.13, 0.11, "labelled slices\n$x_l$, labels $y_l$", OKABE_ITO["grey"]),
    "unlabelled": (0.01, 0.33, 0.13, 0.11, "unlabelled slices\n$x_u$", OKABE_ITO["grey"]),
    "student": (0.20, 0.56, 0.17, 0.24, "student U-Net\n(encoder-decoder)\n+ representation head", OKABE_ITO["blue"]),
    "teacher": (0.20, 0.14, 0.17, 0.20, "EMA teacher\n(same network;\nweights: EMA of the student)",
                OKABE_ITO["sky blue"]),
    "sup": (0.45, 0.80, 0.18, 0.09, "$L_{sup}$: CE + Dice\n(labelled pixels)", OKABE_ITO["vermilion"]),
    "anco": (0.45, 0.62, 0.18, 0.09, "$L_{anco}$: anatomical\ncontrast (ReCo style)", OKABE_ITO["vermilion"]),
    "unsup": (0.45, 0.44, 0.18, 0.09, "$L_{unsup}$: pseudo-label CE\n(unlabelled pixels)", OKABE_ITO["vermilion"]),
    "saacl": (0.45, 0.22, 0.18, 0.14, "$L_{SAACL}$: supervised\ncontrast, the matched\ncentre a positive (nb 03)",
              OKABE_ITO["vermilion"]),
    "centres": (0.72, 0.82, 0.22, 0.11, "class centres, fixed before training\n(regular simplex; nb 01)",
                OKABE_ITO["bluish green"]),
    "assign": (0.72, 0.62, 0.22, 0.11, "Hungarian matching of running\nclass means to centres (nb 03)",
               OKABE_ITO["bluish green"]),
    "ats": (0.75, 0.38, 0.16, 0.12, "ATS: temperature\n$\\tau(t)$ on a cosine (nb 02)", OKABE_ITO["reddish purple"]),
    "queue": (0.70, 0.03, 0.22, 0.11, "queue: past teacher\nembeddings + labels (FIFO)", OKABE_ITO["yellow"]),
}

#: the words the figure must show (the test reads them back from the drawn figure)
LABELS = ("student", "EMA teacher", "queue", "class centres", "Hungarian", "ATS", "L_{sup}", "L_{unsup}",
          "L_{anco}", "L_{SAACL}", "pre-training", "fine-tuning")

#: arrows: (from box, to box, label, where the label sits along the arrow); each leaves and enters its boxes on
#: the line between their centres
ARROWS: tuple[tuple[str, str, str, float], ...] = (
    ("labelled", "student", "", 0.5),
    ("unlabelled", "student", "", 0.5),
    ("unlabelled", "teacher", "", 0.5),
    ("student", "teacher", "EMA of weights", 0.5),
    ("student", "sup", "logits", 0.5),
    ("student", "anco", "embeddings", 0.5),
    ("student", "unsup", "logits", 0.5),
    ("student", "saacl", "anchor\nembeddings", 0.3),
    ("teacher", "unsup", "pseudo-labels", 0.3),
    ("teacher", "saacl", "teacher view", 0.5),
    ("teacher", "queue", "push", 0.5),
    ("queue", "saacl", "positives and\nnegatives", 0.5),
    ("centres", "assign", "", 0.5),
    ("assign", "saacl", "centre of\neach class", 0.5),
    ("ats", "anco", "$\\tau$", 0.5),
    ("ats", "saacl", "$\\tau$", 0.5),
)


def _centre(box: tuple[float, float, float, float, str, str]) -> tuple[float, float]:
    x, y, w, h = box[:4]
    return x + w / 2, y + h / 2


def _edge(box: tuple[float, float, float, float, str, str], towards: tuple[float, float]) -> tuple[float, float]:
    """The point where the line from the box's centre to ``towards`` leaves the box."""
    x, y, w, h = box[:4]
    cx, cy = x + w / 2, y + h / 2
    dx, dy = towards[0] - cx, towards[1] - cy
    if dx == 0 and dy == 0:
        return cx, cy
    sx = (w / 2) / abs(dx) if dx else float("inf")
    sy = (h / 2) / abs(dy) if dy else float("inf")
    s = min(sx, sy)
    return cx + dx * s, cy + dy * s


def method_diagram(path: str | Path | None = None, dpi: int = 150) -> Any:
    """Draw the method (one figure) and return the matplotlib ``Figure``; with ``path``, also save it as PNG.

    Boxes: the inputs, the student and its EMA teacher, the queue, the fixed class centres and their
    Hungarian matching, the ATS temperature, and the four fine-tuning losses where they act; a note names
    the pre-training phase. No pyplot state is touched (a bare ``Figure`` with the Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(13, 7.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0.09, 1, 0.84))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    fig.suptitle("ACTION++ in one figure: what each part does, and where each loss acts", fontsize=14, y=0.985)
    dark_text = {OKABE_ITO["blue"], OKABE_ITO["vermilion"], OKABE_ITO["reddish purple"], OKABE_ITO["bluish green"]}
    for x, y, w, h, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.006,rounding_size=0.015", fc=colour,
                                    ec="0.2", lw=1.0, alpha=0.95))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9,
                color="white" if colour in dark_text else "black")
    for a, b, label, where in ARROWS:
        start = _edge(BOXES[a], _centre(BOXES[b]))
        end = _edge(BOXES[b], _centre(BOXES[a]))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, lw=1.1, color="0.25",
                                     shrinkA=2, shrinkB=2))
        if label:
            mx, my = start[0] + where * (end[0] - start[0]), start[1] + where * (end[1] - start[1])
            ax.text(mx, my, label, fontsize=7.5, ha="center", va="center", color="0.15",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    fig.text(0.01, 0.015, "pre-training (ACTION, ACTION++): $L_{sup}$ + ISD global / local distillation of the "
            "student towards the teacher, no labels needed for ISD (nb 04).\n"
            "fine-tuning: total = $L_{sup}$ + $L_{unsup}$ + $L_{anco}$ + $L_{SAACL}$ (weights in the run's "
            "configuration; nb 04). ACTION has the same parts without the centres, the matching and ATS.",
            fontsize=8.5, ha="left", va="bottom", color="0.1")
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, metadata={"Software": None})
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m actionpp.lab.diagram [OUT]``: write the diagram (default ``docs/method_diagram.png``)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else repo_root() / DEFAULT_PATH
    method_diagram(out)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover - the command line
    raise SystemExit(main())
