"""Where a run's data come from: ``data.root`` names (``phantom``, ``shared``), folders and pack files.

- :func:`open_dataset`: a dataset folder (ACDC or LA layout) or a pack file;
- :func:`resolve_data_root`: ``data.root`` of a config to a folder or pack file.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from actionpp.data.core import DataError
from actionpp.data.folders import open_folder
from actionpp.data.pack import load_pack

if TYPE_CHECKING:  # pragma: no cover - typing only
    from actionpp.config import Config

__all__ = ["open_dataset", "resolve_data_root"]


def open_dataset(root_or_pack: str | Path) -> Any:
    """Open a dataset folder (ACDC or LA layout, auto-detected) or a pack file.

    Returns an :class:`~actionpp.data.acdc.ACDCDataset`, :class:`~actionpp.data.la.LADataset`
    or :class:`~actionpp.data.pack.Pack`; all three offer ``volumes(split)`` and ``read_volume(name)``.
    """
    p = Path(root_or_pack)
    if p.is_file():
        return load_pack(p)
    return open_folder(p)


def resolve_data_root(root: str, cfg: Config | None = None, dataset: str | None = None) -> Path:
    """``"phantom"`` -> the generated phantom folder; ``"shared"`` -> ``../shared/data/<dataset>``; else the path.

    ``cfg`` (optional) gives the dataset and the phantom's preset, patient count and seed;
    ``dataset`` overrides the dataset (default ``cfg.data.dataset``, else ``"acdc"``).
    Raises :class:`DataError` naming the path when it does not exist.
    """
    dataset = dataset or (cfg.data.dataset if cfg is not None else "acdc")
    if root == "phantom":
        from actionpp.data.phantom import ensure_phantom

        if cfg is not None:
            return Path(
                ensure_phantom(
                    kind=dataset, preset=cfg.data.phantom_preset if dataset == "acdc" else "acdc",
                    patients=cfg.data.phantom_patients, seed=cfg.data.phantom_seed,
                )
            )
        return Path(ensure_phantom(kind=dataset))
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
