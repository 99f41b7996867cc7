"""Data layer: the phantom, the real ACDC / LA readers, validation, packing, training tensors.

Public names (see ``docs/architecture.md`` for the contracts):

- :class:`DataError` -- every data problem; the message names the file and the problem.
- :class:`Volume` -- one 3D image with its label and (optional) voxel spacing.
- :mod:`actionpp.data.acdc`, :mod:`actionpp.data.la` -- readers of the SSL4MIS / UA-MT layouts.
- :mod:`actionpp.data.check`, :mod:`actionpp.data.pack`, :mod:`actionpp.data.tensors`,
  :mod:`actionpp.data.phantom`.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from actionpp.data.core import DataError, Volume
from actionpp.data.roots import open_dataset, resolve_data_root

__all__ = ["DataError", "Volume", "open_dataset", "resolve_data_root"]
