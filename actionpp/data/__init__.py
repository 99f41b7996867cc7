"""Data layer: a dataset is one spec; the phantom, the real ACDC / LA readers, validation, packing, tensors.

Public names (see ``docs/architecture.md`` for the contracts):

- :class:`DataError` -- every data problem; the message names the file and the problem.
- :class:`Volume` -- one 3D image with its label and (optional) voxel spacing.
- :class:`DatasetSpec`, :func:`register_dataset`, :func:`dataset_spec` -- everything the library
  knows about a dataset, and the registry (:mod:`actionpp.data.spec`); the built-in ACDC and LA
  specs (:mod:`actionpp.data.datasets`) are registered by importing this package.
- :mod:`actionpp.data.acdc`, :mod:`actionpp.data.la` -- readers of the SSL4MIS / UA-MT layouts.
- :mod:`actionpp.data.check`, :mod:`actionpp.data.pack`, :mod:`actionpp.data.tensors`,
  :mod:`actionpp.data.phantom`.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from actionpp.data import datasets as _builtin  # noqa: F401 - registers the ACDC and LA specs
from actionpp.data.core import DataError, Volume
from actionpp.data.roots import open_dataset, resolve_data_root
from actionpp.data.spec import DatasetSpec, dataset_spec, register_dataset

__all__ = ["DataError", "Volume", "DatasetSpec", "dataset_spec", "register_dataset", "open_dataset",
           "resolve_data_root"]
