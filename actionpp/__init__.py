"""actionpp: a reference teaching and replication kit for ACTION++.

ACTION++ (You et al., MICCAI 2023) is semi-supervised medical image segmentation
with adaptive anatomical contrast: class centres fixed uniformly on the unit
hypersphere, matched online to classes, serve as extra positives in a supervised
pixel-contrastive loss (SAACL), and every contrastive temperature follows a cosine
schedule (ATS).

The library is the source of truth; the notebooks in ``notebooks/`` only call it.
"""

__version__ = "0.1.0"
