"""Procedural phantoms written in the real data layouts: cardiac cine MRI (ACDC labels) and 3D left atrium.

Cardiac phantom (``kind="acdc"``), per synthetic patient:
- an end-diastole (``frame01``) and an end-systole frame (``frameMM``, MM drawn in 8..15), each with
  6-12 short-axis slices from base to apex, in-plane size 128-192 px per side (varies by patient);
- anatomy: LV blood pool inside a closed myocardial ring (thickness 4-7 mm at ED, x1.3-1.6 at ES),
  an RV crescent that rests against the septum and shrinks faster than the LV toward the apex;
  at ES the cavities shrink and the wall thickens; patients differ in size, ellipticity, wall
  thickness, heart position, rotation, outline (low-order Fourier harmonics) and papillary muscles;
- unlabelled confounders: descending and (basal slices) ascending aorta with blood-pool intensity,
  lungs, liver (apical slices), chest-wall muscle, subcutaneous and pericardial fat, spine;
- MR-like appearance: per-patient tissue contrast and gamma, smooth multiplicative bias field,
  partial-volume blur, Rician noise, integer intensities (maximum 300-1500) min-max scaled per
  volume exactly as SSL4MIS does (so the pack codec sees real-like ``k / n`` values).

Presets: ``"acdc"`` targets real ACDC class shares (background ~96 %, each structure ~1.2-1.3 %);
``"longtail"`` makes the RV clearly rarer (~0.4 %) for head-versus-tail experiments.

Split (ACDC phantom): 70 / 15 / 15 % of the patients (at least one val and one test patient), e.g.
20 -> 14 / 3 / 3 and 6 -> 4 / 1 / 1. Training frames are written as slices, val/test frames as
volumes with a ``spacing`` attribute (mm, order S, H, W). With ``nifti=True`` the raw-ACDC NIfTI
layout is written too (``raw/patientNNN/patientNNN_frameMM[_gt].nii.gz``, int16 intensities,
voxel spacing in the header); :func:`actionpp.data.acdc.prepare_acdc` converts it back to the
identical SSL4MIS files.

Left-atrium phantom (``kind="la"``): 3D volumes (X, Y, Z) of 112-144 x 112-128 x 80-88 voxels at
0.625 mm: atrium body, four pulmonary veins and the appendage inside a torso with lungs, aorta,
left ventricle (blood intensity), spine and fat; blurred, bias field, Rician noise, z-scored per
volume; label 1 = atrium. UA-MT layout; split 80 / 20 %.

Why one module of this length: the cardiac and the left-atrium phantoms share their noise,
bias-field and writing code; each anatomy is a few short functions.

Taught in notebooks/00_data_tour.ipynb.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from actionpp.data.acdc import to_unit_range
from actionpp.data.core import DataError
from actionpp.data.spec import DatasetSpec, dataset_spec

__all__ = ["PRESETS", "DEFAULT_PRESET", "ensure_phantom", "generate_acdc_phantom", "generate_la_phantom",
           "generate_into", "acdc_patient", "la_case", "default_patients", "phantom_dir", "write_info"]

PHANTOM_VERSION = 2  # bump when the generator's output changes: cached phantoms are then regenerated
PRESETS = ("acdc", "longtail")  # the cardiac phantom's class shares (data.phantom_preset)
DEFAULT_PRESET = PRESETS[0]  # the folder-name part of a phantom without presets (LA: la-acdc-<seed>-<n>)
# preset -> (LV scale, Myo thickness scale, RV scale, RV apical extent)
_SHAPE = {"acdc": (1.0, 1.0, 1.0, 1.0), "longtail": (1.0, 1.0, 0.75, 0.9)}


def default_patients(kind: str) -> int:
    """Default number of phantom patients of dataset ``kind`` (its spec's; 20 for ACDC and LA)."""
    return dataset_spec(kind).phantom.default_patients


# --------------------------------------------------------------------------------------
# cardiac
# --------------------------------------------------------------------------------------

def _disk(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, ang: float = 0.0) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    dy, dx = yy - cy, xx - cx
    u, v = c * dx + s * dy, -s * dx + c * dy
    inside: np.ndarray = (u / rx) ** 2 + (v / ry) ** 2 < 1.0
    return inside


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amp: float) -> np.ndarray:
    """exp of a random low-order polynomial in normalised coordinates: a smooth bias field."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    f = np.zeros(shape)
    for g in grids:
        f += rng.normal(0, amp) * g + rng.normal(0, amp / 2) * g**2
    if len(grids) >= 2:
        f += rng.normal(0, amp / 2) * grids[-1] * grids[-2]
    return np.exp(f)


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    return np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)


def acdc_patient(seed: int, index: int, preset: str = "acdc") -> dict[str, Any]:
    """One synthetic cardiac patient, deterministic in ``(seed, index, preset)``.

    Returns ``{"frames": {"ED": (raw int16 (S,H,W), label uint8 (S,H,W)), "ES": ...},
    "es_frame": int, "spacing": (slice mm, row mm, column mm)}``.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    rng = np.random.default_rng([seed, index, 7])
    lv_k, w_k, rv_k, rv_ext = _SHAPE[preset]
    H, W = (int(v) for v in rng.choice(np.arange(128, 193, 16), size=2))
    S = int(rng.integers(6, 13))
    px = float(rng.uniform(1.35, 1.9))  # mm per pixel
    dz = float(rng.choice([5.0, 6.5, 8.0, 10.0]))
    side = np.sqrt(H * W)
    size_k = float(np.exp(rng.normal(0, 0.12)))
    R0 = 0.089 * side * size_k * lv_k  # LV radius at the base, ED (pixels)
    w0 = float(rng.uniform(3.6, 6.0)) / px * w_k * (1.1 if side < 150 else 1.0)  # wall thickness (pixels)
    w0 = max(w0, 3.0)
    ell = float(rng.uniform(0.85, 1.15))
    rot = float(rng.normal(0, 0.35))
    rv_dir = np.pi + rot + float(rng.normal(0, 0.2))  # RV toward image left, rotated
    cy0 = H / 2 + rng.normal(0, 0.05 * H)
    cx0 = W / 2 + rng.normal(0.03 * W, 0.05 * W)
    drift = rng.normal(0, 0.04 * side, 2)
    harm = [(int(k), float(rng.uniform(0, 0.07)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4)]
    t_apex = float(rng.uniform(0.95, 1.12))
    t_rv = float(rng.uniform(0.72, 0.95)) * rv_ext
    es_lv = float(rng.uniform(0.62, 0.8))  # ES / ED cavity radius
    es_w = float(rng.uniform(1.3, 1.6))  # ES / ED wall thickness
    es_rv = float(rng.uniform(0.65, 0.85))
    # per-patient tissue contrast (arbitrary units before the scanner scaling)
    tis = {
        "blood": rng.uniform(0.65, 0.95), "rv_blood": 0.0, "myo": rng.uniform(0.16, 0.3),
        "muscle": rng.uniform(0.16, 0.32), "fat": rng.uniform(0.55, 0.95), "lung": rng.uniform(0.02, 0.07),
        "liver": rng.uniform(0.25, 0.45), "soft": rng.uniform(0.2, 0.4), "spine": rng.uniform(0.3, 0.55),
        "papillary": 0.0,
    }
    tis["rv_blood"] = tis["blood"] * rng.uniform(0.8, 1.0)
    tis["papillary"] = tis["myo"] * rng.uniform(0.9, 1.3)
    gamma = float(rng.uniform(0.75, 1.35))
    blur = float(rng.uniform(0.5, 1.1))
    noise = float(rng.uniform(0.02, 0.06))
    vmax = int(rng.integers(300, 1500))
    body_ry, body_rx = rng.uniform(0.40, 0.5) * H, rng.uniform(0.42, 0.52) * W
    n_pap = int(rng.integers(1, 3))
    pap = [(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.08, 0.18))) for _ in range(n_pap)]
    es_frame = int(rng.integers(8, 16))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = {}
    for phase in ("ED", "ES"):
        img = np.zeros((S, H, W))
        lab = np.zeros((S, H, W), np.uint8)
        bias = _smooth_field(rng, (H, W), 0.25)
        for k in range(S):
            t = k / max(S - 1, 1)
            cy, cx = cy0 + drift[0] * t, cx0 + drift[1] * t
            taper = np.sqrt(max(0.0, 1.0 - (t / t_apex) ** 2.2))
            R = R0 * taper * (es_lv if phase == "ES" else 1.0)
            w = w0 * (es_w if phase == "ES" else 1.0) * (1.0 + 0.25 * t)
            dy, dx = yy - cy, xx - cx
            th = np.arctan2(dy, dx)
            c, s = np.cos(rot), np.sin(rot)
            u, v = c * dx + s * dy, -s * dx + c * dy
            r = np.sqrt((u * ell) ** 2 + (v / ell) ** 2)
            shape = 1.0 + sum(a * np.cos(kk * th + p) for kk, a, p in harm)
            endo = R * shape
            epi = endo + w * (1.0 + 0.15 * np.cos(th - rv_dir))
            if R < 2.0:  # apex: a cap of muscle, no cavity
                lv = np.zeros((H, W), bool)
                myo = r < max(w, 3.0) * 1.1
                epi = np.full((H, W), max(w, 3.0) * 1.1)
            else:
                lv = r < endo
                myo = (r < epi) & ~lv
            # RV crescent: inside an ellipse offset toward rv_dir, outside the epicardium
            rvs = max(0.0, 1.0 - (t / t_rv) ** 1.6) if t_rv > 0 else 0.0
            Re = R0 + w0
            rv_sz = rv_k * rvs * (es_rv if phase == "ES" else 1.0)
            if rv_sz > 0.15:
                d = 0.55 * Re
                ecy, ecx = cy + d * np.sin(rv_dir), cx + d * np.cos(rv_dir)
                rv = _disk(yy, xx, ecy, ecx, 1.7 * Re * rv_sz, 1.2 * Re * rv_sz, rv_dir) & (r >= epi)
            else:
                rv = np.zeros((H, W), bool)
            # confounders
            body = _disk(yy, xx, H / 2, W / 2, body_ry * (1 - 0.05 * t), body_rx)
            inner = _disk(yy, xx, H / 2, W / 2, body_ry * 0.9, body_rx * 0.92)
            wall = _disk(yy, xx, H / 2, W / 2, body_ry * 0.8, body_rx * 0.85)
            sp_y, sp_x = H / 2 + 0.3 * H, W / 2
            spine = _disk(yy, xx, sp_y, sp_x, 0.06 * H, 0.06 * W)
            aorta = _disk(yy, xx, sp_y - 0.1 * H, sp_x + 0.07 * W, 0.055 * side * size_k, 0.055 * side * size_k)
            lungs = (_disk(yy, xx, H / 2 + 0.02 * H, cx - 0.27 * W, 0.28 * H * (1 - 0.4 * t), 0.13 * W)
                     | _disk(yy, xx, H / 2 + 0.05 * H, cx + 0.22 * W, 0.26 * H * (1 - 0.3 * t), 0.12 * W))
            liver = _disk(yy, xx, H / 2 + 0.3 * H, W / 2 - 0.25 * W, 0.3 * H * t, 0.3 * W * t) if t > 0.4 else None
            peri = (r < epi + 2.0 + 2.0 * (np.cos(3 * th + rot) > 0.3)) & ~(lv | myo) & ~rv
            im = np.zeros((H, W))
            im[body] = tis["fat"]
            im[inner] = tis["muscle"]
            im[wall] = tis["soft"]
            im[lungs & wall] = tis["lung"]
            if liver is not None:
                im[liver & wall] = tis["liver"]
            im[spine] = tis["spine"]
            im[aorta] = tis["blood"]
            if t < 0.4:  # ascending aorta / pulmonary trunk in basal slices, anterior to the heart
                asc = _disk(yy, xx, cy - 1.25 * Re, cx + 0.3 * Re, 0.45 * Re, 0.45 * Re)
                im[asc & ~(lv | myo | rv)] = tis["blood"] * 0.95
            im[peri] = tis["fat"] * 0.8
            im[rv] = tis["rv_blood"]
            im[myo] = tis["myo"]
            im[lv] = tis["blood"]
            for ang, rad in pap:  # papillary muscles: dark, labelled LV (as in ACDC)
                if R > 6 and 0.15 < t < 0.8:
                    py, px_ = cy + 0.6 * R * np.sin(ang), cx + 0.6 * R * np.cos(ang)
                    im[_disk(yy, xx, py, px_, rad * R, rad * R) & lv] = tis["papillary"]
            img[k] = im
            lab[k][rv] = 1
            lab[k][myo] = 2
            lab[k][lv] = 3
        tex = gaussian_filter(rng.normal(0, 0.04, img.shape), (0, 2.0, 2.0))
        img = np.clip(img + tex * (img > 0.1), 0, None)
        img = gaussian_filter(img, (0, blur, blur)) * bias[None]
        img = _rician(rng, img, noise * tis["blood"])
        img = (img / img.max()) ** gamma
        raw = np.rint(img * vmax).astype(np.int16)
        frames[phase] = (raw, lab)
    return {"frames": frames, "es_frame": es_frame, "spacing": (dz, px, px)}


def _split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    if len(fractions) == 2:
        te = max(1, round(n * fractions[1]))
        return [n - te, te]
    va = max(1, round(n * fractions[1]))
    te = max(1, round(n * fractions[2]))
    return [n - va - te, va, te]


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray, **attrs: Any) -> None:
    import h5py

    with h5py.File(path, "w") as h:
        h.create_dataset("image", data=image, compression="gzip", compression_opts=1)
        h.create_dataset("label", data=label, compression="gzip", compression_opts=1)
        for k, v in attrs.items():
            h.attrs[k] = v


def write_info(out: Path, *, kind: str, version: int = PHANTOM_VERSION, **params: Any) -> None:
    """``out/phantom.json``: what generated the folder (``kind``, generator ``version``, its parameters).

    Every generator writes it last; :func:`ensure_phantom` takes a folder with the spec's version as complete.
    """
    (out / "phantom.json").write_text(json.dumps({"generator": "actionpp.data.phantom", "version": version,
                                                  "kind": kind, **params}, indent=1) + "\n")


def _write_nifti(path: Path, arr_shw: np.ndarray, spacing_shw: tuple[float, ...]) -> None:
    import nibabel as nib

    data = np.transpose(arr_shw, (2, 1, 0))  # (S, H, W) -> nibabel (X, Y, Z)
    affine = np.diag([spacing_shw[2], spacing_shw[1], spacing_shw[0], 1.0])
    img = nib.Nifti1Image(data, affine)  # type: ignore[no-untyped-call]  # nibabel is untyped
    img.header.set_zooms((spacing_shw[2], spacing_shw[1], spacing_shw[0]))  # type: ignore[no-untyped-call]
    nib.save(img, str(path))


def generate_acdc_phantom(out: str | Path, *, preset: str = "acdc", patients: int = 20, seed: int = 0,
                          nifti: bool = False) -> dict[str, Any]:
    """Write a cardiac phantom in the SSL4MIS layout into ``out`` (must not exist) and return a summary.

    ``patients`` >= 3 (one per split at least). Deterministic in ``(preset, patients, seed)``.
    """
    if patients < 3:
        raise ValueError(f"an ACDC phantom needs at least 3 patients (train/val/test), got {patients}")
    t0 = time.perf_counter()
    out = Path(out)
    (out / "data" / "slices").mkdir(parents=True)
    rng = np.random.default_rng([seed, 1234])
    ids = [f"patient{i + 1:03d}" for i in range(patients)]
    order = [ids[i] for i in rng.permutation(patients)]
    n_tr, n_va, n_te = _split_counts(patients, (0.7, 0.15, 0.15))
    split = {"train": order[:n_tr], "val": order[n_tr:n_tr + n_va], "test": order[n_tr + n_va:]}
    where = {p: s for s, ps in split.items() for p in ps}
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    slices: list[str] = []
    counts = np.zeros(4, np.int64)
    for p in order:
        idx = int(p[-3:])
        case = acdc_patient(seed, idx, preset)
        s = where[p]
        for phase, fnum in (("ED", 1), ("ES", case["es_frame"])):
            raw, lab = case["frames"][phase]
            frame = f"{p}_frame{fnum:02d}"
            lists[s].append(frame)
            image = to_unit_range(raw)
            if nifti:
                pdir = out / "raw" / p
                pdir.mkdir(parents=True, exist_ok=True)
                _write_nifti(pdir / f"{frame}.nii.gz", raw, case["spacing"])
                _write_nifti(pdir / f"{frame}_gt.nii.gz", lab, case["spacing"])
            if s == "train":
                counts += np.bincount(lab.ravel(), minlength=4)
                ks = np.random.default_rng([seed, idx, fnum]).permutation(image.shape[0])
                for k in ks:
                    name = f"{frame}_slice_{k}"
                    _write_h5(out / "data" / "slices" / f"{name}.h5", image[k], lab[k])
                    slices.append(name)
            else:
                _write_h5(out / "data" / f"{frame}.h5", image, lab, spacing=np.array(case["spacing"]),
                          phase=phase)
    for s in lists:
        (out / f"{s}.list").write_text("".join(f"{f}\n" for f in lists[s]))
    (out / "train_slices.list").write_text("".join(f"{n}\n" for n in slices))
    if nifti:
        for name in ("train.list", "val.list", "test.list", "train_slices.list"):
            shutil.copy(out / name, out / "raw" / name)
    share = counts / counts.sum()
    write_info(out, kind="acdc", preset=preset, patients=patients, seed=seed, nifti=nifti)
    return {
        "kind": "acdc", "preset": preset, "seed": seed, "root": str(out),
        "patients": {s: len(v) for s, v in split.items()},
        "frames": {s: len(v) for s, v in lists.items()}, "train_slices": len(slices),
        "class_share_train": {n: round(float(x), 4) for n, x in zip(("background", "RV", "Myo", "LV"), share)},
        "nifti": nifti, "seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------------------
# left atrium
# --------------------------------------------------------------------------------------

def _tube(grid: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Voxels within a tapered capsule from ``a`` (radius r0) to ``b`` (radius r1)."""
    x, y, z = grid
    ab = b - a
    L2 = float(ab @ ab)
    tt = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / L2, 0, 1)
    d2 = (x - a[0] - tt * ab[0]) ** 2 + (y - a[1] - tt * ab[1]) ** 2 + (z - a[2] - tt * ab[2]) ** 2
    inside: np.ndarray = d2 < (r0 + (r1 - r0) * tt) ** 2
    return inside


def _ellipsoid(grid: tuple[np.ndarray, ...], c: np.ndarray, radii: np.ndarray, ang: float = 0.0) -> np.ndarray:
    x, y, z = grid
    cs, sn = np.cos(ang), np.sin(ang)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    u, v = cs * dx + sn * dy, -sn * dx + cs * dy
    inside: np.ndarray = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2 < 1.0
    return inside


def la_case(seed: int, index: int) -> dict[str, Any]:
    """One synthetic LA volume: ``{"id", "image" float32 (X,Y,Z) z-scored, "label" uint8, "spacing"}``."""
    rng = np.random.default_rng([seed, index, 11])
    X = int(rng.choice(np.arange(112, 145, 16)))
    Y = int(rng.choice([112, 128]))
    Z = int(rng.choice([80, 88]))
    grid = tuple(np.ogrid[0:X, 0:Y, 0:Z])
    gx, gy, gz = (g.astype(np.float32) for g in grid)
    grid = (gx, gy, gz)
    k = float(np.exp(rng.normal(0, 0.1)))
    c = np.array([X / 2 + rng.normal(0, 4), Y / 2 + rng.normal(0, 4), Z / 2 + rng.normal(0, 3)])
    radii = np.array([33.0, 26.0, 21.0]) * k * rng.uniform(0.9, 1.1, 3)
    ang = float(rng.normal(0, 0.3))
    atrium = _ellipsoid(grid, c, radii, ang)
    # low-order bumps on the body
    for _ in range(3):
        off = rng.normal(0, 1, 3)
        off = off / np.linalg.norm(off) * radii * 0.7
        atrium |= _ellipsoid(grid, c + off, radii * rng.uniform(0.35, 0.55), ang)
    # pulmonary veins: two left, two right, leaving posteriorly (-y)
    for sx in (-1, 1):
        for sz in (-1, 1):
            a = c + np.array([sx * radii[0] * 0.6, -radii[1] * 0.5, sz * radii[2] * 0.45])
            d = np.array([sx * rng.uniform(0.6, 1.0), -rng.uniform(0.6, 1.0), sz * rng.uniform(0.1, 0.5)])
            b = a + d / np.linalg.norm(d) * rng.uniform(18, 28) * k
            atrium |= _tube(grid, a, b, rng.uniform(4.5, 6.5) * k, rng.uniform(3.0, 4.5) * k)
    # appendage: anterior-left finger
    a = c + np.array([-radii[0] * 0.5, radii[1] * 0.7, radii[2] * 0.3])
    b = a + np.array([-rng.uniform(8, 14), rng.uniform(6, 12), rng.uniform(-4, 6)]) * k
    atrium |= _tube(grid, a, b, 6.0 * k, 2.5 * k)
    tis = {"blood": rng.uniform(0.6, 0.9), "wall": rng.uniform(0.25, 0.4), "fat": rng.uniform(0.7, 1.0),
           "lung": rng.uniform(0.02, 0.08), "soft": rng.uniform(0.2, 0.35), "spine": rng.uniform(0.4, 0.6)}
    img = np.zeros((X, Y, Z), np.float32)
    body = _ellipsoid(grid, np.array([X / 2, Y / 2 + 10, Z / 2]), np.array([X * 0.75, Y * 0.7, 1e6]))
    img[body] = tis["soft"]
    img[_ellipsoid(grid, np.array([X / 2, Y * 0.05, Z / 2]), np.array([X * 0.2, Y * 0.15, 1e6]))] = tis["spine"]
    for sx in (-1, 1):
        centre = np.array([X / 2 + sx * X * 0.38, Y * 0.3, Z / 2])
        lung = _ellipsoid(grid, centre, np.array([X * 0.16, Y * 0.3, Z * 0.7]))
        img[lung] = tis["lung"]
    ring = _ellipsoid(grid, c, radii + 3.0, ang) & ~atrium
    img[ring] = tis["wall"]
    # distractors with blood intensity: descending aorta (tube along z), LV, ascending aorta
    ao = np.array([c[0] + rng.normal(6, 3), max(c[1] - radii[1] - 14, 10), 0.0])
    img[_tube(grid, ao, ao + np.array([0, 0, Z]), 8.0 * k, 8.0 * k)] = tis["blood"] * rng.uniform(0.9, 1.1)
    lvc = c + np.array([rng.uniform(-10, 10), radii[1] + 20 * k, -radii[2] - 6])
    img[_ellipsoid(grid, lvc, np.array([22, 18, 20]) * k)] = tis["blood"] * rng.uniform(0.9, 1.1)
    img[_ellipsoid(grid, c + np.array([12, radii[1] + 8, radii[2] + 4]), np.array([8, 8, 18]) * k)] = tis["blood"]
    img[atrium] = tis["blood"]
    img += gaussian_filter(rng.normal(0, 0.05, img.shape).astype(np.float32), 1.5)
    img = gaussian_filter(img, float(rng.uniform(0.6, 1.1))) * _smooth_field(rng, (X, Y, Z), 0.2).astype(np.float32)
    img = _rician(rng, img, float(rng.uniform(0.03, 0.07)) * tis["blood"]).astype(np.float32)
    img = (img - img.mean()) / img.std()
    alphabet = np.array(list(string.ascii_uppercase + string.digits))
    cid = "".join(rng.choice(alphabet, 20))
    return {"id": cid, "image": img.astype(np.float32), "label": atrium.astype(np.uint8), "spacing": (0.625,) * 3}


def generate_la_phantom(out: str | Path, *, patients: int = 20, seed: int = 0, nifti: bool = False) -> dict[str, Any]:
    """Write an LA phantom in the UA-MT layout into ``out`` (must not exist); split 80 / 20 %."""
    from actionpp.data.la import LA_FOLDER

    if patients < 2:
        raise ValueError(f"an LA phantom needs at least 2 cases (train/test), got {patients}")
    t0 = time.perf_counter()
    out = Path(out)
    (out / LA_FOLDER).mkdir(parents=True)
    n_tr, _ = _split_counts(patients, (0.8, 0.2))
    ids: list[str] = []
    fg = tot = 0
    for i in range(patients):
        case = la_case(seed, i + 1)
        d = out / LA_FOLDER / case["id"]
        d.mkdir()
        _write_h5(d / "mri_norm2.h5", case["image"], case["label"], spacing=np.array(case["spacing"]))
        if nifti:
            nd = out / "nifti"
            nd.mkdir(exist_ok=True)
            for part in ("image", "label"):
                import nibabel as nib

                nib.save(
                    nib.Nifti1Image(case[part], np.diag([*case["spacing"], 1.0])),  # type: ignore[no-untyped-call]
                    str(nd / f"{case['id']}_{part}.nii.gz"),
                )
        ids.append(case["id"])
        fg += int(case["label"].sum())
        tot += case["label"].size
    (out / "train.list").write_text("".join(f"{c}\n" for c in ids[:n_tr]))
    (out / "test.list").write_text("".join(f"{c}\n" for c in ids[n_tr:]))
    write_info(out, kind="la", preset=None, patients=patients, seed=seed, nifti=nifti)
    return {
        "kind": "la",
        "seed": seed,
        "root": str(out),
        "cases": {"train": n_tr, "test": patients - n_tr},
        "atrium_share": round(fg / tot, 4),
        "nifti": nifti,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------


def generate_into(out: str | Path, *, kind: str = "acdc", preset: str = DEFAULT_PRESET, patients: int = 20,
                  seed: int = 0, nifti: bool = False) -> dict[str, Any]:
    """Generate the phantom of dataset ``kind`` (its spec's generator) into the new folder ``out`` whole or not at
    all: written into a temporary sibling and renamed into place when complete (an interrupted run leaves no half
    folder). Refuses (DataError) an ``out`` that exists, also one that appeared meanwhile. Returns the generator's
    summary."""
    spec = dataset_spec(kind)
    _check_preset(spec, preset)
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise DataError(f"{out}: exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        s = spec.phantom.generate(tmp, preset=preset, patients=patients, seed=seed, nifti=nifti)
        if out.exists() or out.is_symlink():
            raise DataError(f"{out}: appeared while the phantom was generated; choose a new folder")
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s["root"] = str(out)
    return s


_GENERATED = {"data", "raw", "nifti", "train_slices.list", "train.list", "val.list", "test.list", "phantom.json"}


def _is_phantom_folder(folder: Path) -> bool:
    """A folder the generator wrote (any version: its ``phantom.json``), or an incomplete one of an older
    version (nothing in it but the names the generator writes)."""
    try:
        info = json.loads((folder / "phantom.json").read_text())
        if isinstance(info, dict) and info.get("generator") == "actionpp.data.phantom":
            return True
    except (OSError, ValueError):
        pass
    from actionpp.data.la import LA_FOLDER

    try:
        return all(p.name in _GENERATED | {LA_FOLDER} for p in folder.iterdir())
    except OSError:
        return False


def phantom_dir(
    kind: str = "acdc", preset: str = DEFAULT_PRESET, patients: int | None = None, seed: int = 0, nifti: bool = False
) -> Path:
    """``<repo>/data/phantom/<kind>-<preset>-<seed>-<patients>[-nifti]`` (a phantom without presets ignores
    ``preset`` but keeps it in the name)."""
    from actionpp.paths import repo_root

    n = default_patients(kind) if patients is None else patients
    return repo_root() / "data" / "phantom" / f"{kind}-{preset}-{seed}-{n}{'-nifti' if nifti else ''}"


def _is_current(folder: Path, spec: DatasetSpec) -> bool:
    """A complete phantom of ``spec`` written by its generator's current version."""
    info = folder / "phantom.json"
    if not (info.is_file() and spec.detect(folder)):
        return False
    try:
        data = json.loads(info.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("version") == spec.phantom.version and data.get("kind") == spec.name


def _check_preset(spec: DatasetSpec, preset: str) -> None:
    known = spec.phantom.presets or PRESETS  # a phantom without presets accepts (and ignores) the cardiac ones
    if preset not in known:
        raise ValueError(f"preset must be one of {known}, got {preset!r}")


def ensure_phantom(
    kind: str = "acdc",
    preset: str = DEFAULT_PRESET,
    patients: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    *,
    nifti: bool = False,
) -> Path:
    """Generate the phantom of dataset ``kind`` once and return its folder; later calls return the cached folder.

    ``kind``: a registered dataset (its spec's :class:`~actionpp.data.spec.PhantomSpec` generates it).
    ``root``: the folder to use (default :func:`phantom_dir`). Generation writes into a sibling
    temporary folder that is renamed into place only when complete, so an interrupted run never
    leaves a folder that looks finished. A folder written by another generator version
    (``phantom.json`` records the spec's version) or left incomplete is regenerated and
    swapped in. Concurrent callers each write their own temporary folder; the first rename wins.
    ``nifti=True`` (keyword, an extension of the contract) also writes the NIfTI layout.
    """
    try:
        spec = dataset_spec(kind)
    except ValueError as exc:
        raise ValueError(f"kind: {exc}") from None
    _check_preset(spec, preset)
    n = spec.phantom.default_patients if patients is None else int(patients)
    folder = Path(root) if root is not None else phantom_dir(kind, preset, n, seed, nifti)
    if _is_current(folder, spec):
        return folder
    if (folder.exists() or folder.is_symlink()) and not (folder.is_dir() and _is_phantom_folder(folder)):
        raise DataError(f"{folder}: exists and is not a phantom this generator wrote (no phantom.json); refusing to "
                        "replace it: move it away or pass another root")
    folder.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.time_ns()}"
    tmp = folder.parent / f".{folder.name}.tmp-{stamp}"
    old = folder.parent / f".{folder.name}.old-{stamp}"
    try:
        spec.phantom.generate(tmp, preset=preset, patients=n, seed=seed, nifti=nifti)
        if _is_current(folder, spec):
            return folder  # another process finished first
        if folder.exists():
            os.replace(folder, old)  # stale or incomplete: move aside, then swap in
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _is_current(folder, spec):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder
