"""Where a run's data come from: ``data.root`` names (``phantom``, ``shared``), folders and pack files.

- :func:`open_dataset`: a dataset folder (a registered layout) or a pack file;
- :func:`resolve_data_root`: ``data.root`` of a config to a folder or pack file.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, cast

from actionpp.data.core import DataError
from actionpp.data.folders import open_folder
from actionpp.data.pack import Pack, load_pack
from actionpp.data.spec import DatasetReader, DataSettings, dataset_spec

__all__ = ["open_dataset", "resolve_data_root"]


class HasData(Protocol):
    """A whole configuration: its ``data`` section are the settings."""

    @property
    def data(self) -> DataSettings: ...


def open_dataset(root_or_pack: str | Path) -> DatasetReader:
    """Open a dataset folder (a registered layout, auto-detected) or a pack file.

    Returns the dataset's reader (:class:`~actionpp.data.acdc.ACDCDataset`, :class:`~actionpp.data.la.LADataset`,
    ...) or a :class:`~actionpp.data.pack.Pack`; all offer ``volumes(split)``, ``available(split)`` and
    ``read_volume(name)`` (:class:`~actionpp.data.spec.DatasetReader`).
    """
    p = Path(root_or_pack)
    if p.is_file():
        pack: Pack = load_pack(p)
        return pack
    return open_folder(p)


def resolve_data_root(root: str, settings: DataSettings | HasData | None = None, dataset: str | None = None) -> Path:
    """``"phantom"`` -> the generated phantom folder; ``"shared"`` -> ``../shared/data/<dataset>``; else the path.

    ``settings`` (optional; a config's ``data`` section, or the config itself) give the dataset and the
    phantom's preset, patient count and seed; ``dataset`` overrides the dataset (default
    ``settings.dataset``, else ``"acdc"``). Raises :class:`DataError` naming the path when it does not exist.
    """
    d = _data_settings(settings)
    dataset = dataset or (d.dataset if d is not None else "acdc")
    if root == "phantom":
        from actionpp.data.phantom import DEFAULT_PRESET, ensure_phantom

        if d is None:
            return Path(ensure_phantom(kind=dataset))
        presets = dataset_spec(dataset).phantom.presets
        return Path(ensure_phantom(kind=dataset, preset=d.phantom_preset if presets else DEFAULT_PRESET,
                                   patients=d.phantom_patients, seed=d.phantom_seed))
    if root == "shared":
        from actionpp.paths import shared_data, shared_root

        p = shared_data(dataset)
        if p is None:
            raise DataError(
                f"data.root=shared but {shared_root() / 'data' / dataset} does not exist "
                "(set ACTIONPP_SHARED, or use data.root=phantom)"
            )
        return p
    p = Path(root).expanduser()
    if not p.exists():
        raise DataError(f"data.root={root!r}: {p} does not exist")
    return p


def _data_settings(settings: DataSettings | HasData | None) -> DataSettings | None:
    """A config's ``data`` section, or the settings themselves (a whole config is accepted, as before)."""
    if settings is None:
        return None
    data: DataSettings | None = getattr(settings, "data", None)
    return data if data is not None else cast(DataSettings, settings)
