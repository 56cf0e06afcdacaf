"""Real MRI anatomy sources for the simulator (source-resolution volumes, cached).

* "mni152":  nilearn's packaged MNI ICBM152 2009a symmetric template (T1, GM and WM probability maps,
             197x233x189 at 1 mm, brain-extracted).  No T2 template exists: a T2-like contrast is
             synthesised from the tissue maps (CSF bright, GM intermediate, WM dark).  No tumour: a
             synthetic tumour is added per case (see cases.add_synthetic_tumour).
* "remind022": the REAL ReMIND-022 patient (ceT1, T2 resampled onto the ceT1 grid with the identity
             transform in world coordinates, and the expert tumour label).  Tissue probabilities are a
             crude intensity classification (documented limitation).

Every source is a dict with float32 arrays on one source grid (i, j, k) and its voxel->RAS affine:
t1, t2, brain, gm, wm, csf, tumour (0/1 float or zeros), saliency (structure-tensor corner measure of t1).
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import nibabel as nib
from scipy import ndimage

from .hybrid import DATA_DIR

REMIND_DIR = os.path.join(DATA_DIR, "remind-022")


def _nilearn_data_dir() -> str:
    import importlib.util
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.origin:
        raise RuntimeError("nilearn is not installed; it ships the MNI152 template used here")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def _saliency(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Smallest eigenvalue of the structure tensor (corner-like 3-D points), inside the brain."""
    g = [ndimage.gaussian_filter(t1, 1.0, order=o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    T = np.empty(t1.shape + (3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            T[..., a, b] = T[..., b, a] = ndimage.gaussian_filter(g[a] * g[b], 2.0)
    m = ndimage.binary_erosion(brain > 0.5, iterations=3)
    out = np.zeros(t1.shape, np.float32)
    out[m] = np.linalg.eigvalsh(T[m])[:, 0]
    return out


def _finish(src: dict) -> dict:
    for k in ("t1", "t2", "brain", "gm", "wm", "csf", "tumour"):
        src[k] = np.ascontiguousarray(src[k], dtype=np.float32)
    # the structure tensor is the slow part (docs/SIMULATION.md): cache it outside the repository
    cache_dir = os.environ.get("SIM_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "remind_sim"))
    cache = os.path.join(cache_dir, f"saliency_{src['name']}_v1.npy")
    sal = None
    if os.path.exists(cache):
        try:
            sal = np.load(cache)
            if sal.shape != src["t1"].shape:
                sal = None
        except Exception:
            sal = None
    if sal is None:
        sal = _saliency(src["t1"] / max(np.percentile(src["t1"][src["brain"] > 0.5], 99), 1e-6), src["brain"])
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = cache + f".{os.getpid()}.tmp.npy"
            np.save(tmp, sal)
            os.replace(tmp, cache)
        except OSError:
            pass
    src["saliency"] = sal
    src["peaks"] = np.argwhere((sal == ndimage.maximum_filter(sal, size=5)) & (sal > np.percentile(sal[sal > 0], 70)))
    src["spacing"] = np.sqrt((src["affine"][:3, :3] ** 2).sum(0))
    # distance (mm) inside the brain to its surface
    src["depth"] = ndimage.distance_transform_edt(src["brain"] > 0.5, sampling=src["spacing"]).astype(np.float32)
    return src


@lru_cache(maxsize=2)
def load_anatomy(name: str) -> dict:
    if name == "mni152":
        d = _nilearn_data_dir()
        load = lambda t: np.asarray(nib.load(os.path.join(
            d, f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz")).get_fdata(), np.float32)
        img = nib.load(os.path.join(d, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
        t1, gm, wm = load("t1"), load("gm") / 255.0, load("wm") / 255.0
        brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 5, iterations=2))
        brain = ndimage.binary_opening(brain, iterations=1).astype(np.float32)
        csf = np.clip(brain - gm - wm, 0, 1)
        t2 = brain * (60.0 * wm + 110.0 * gm + 260.0 * csf)
        t2 = ndimage.gaussian_filter(t2, 0.5)
        return _finish(dict(name=name, t1=t1, t2=t2, brain=brain, gm=gm, wm=wm, csf=csf,
                            tumour=np.zeros_like(t1), affine=img.affine.copy(), real_tumour=False))
    if name == "remind022":
        ci = nib.load(os.path.join(REMIND_DIR, "ceT1.nii.gz"))
        t1 = np.asarray(ci.get_fdata(), np.float32)
        ti = nib.load(os.path.join(REMIND_DIR, "T2.nii.gz"))
        tum = np.asarray(nib.load(os.path.join(REMIND_DIR, "tumor_seg.nii.gz")).get_fdata(), np.float32)
        # T2 onto the ceT1 grid: identity transform in world (RAS) coordinates
        M = np.linalg.inv(ti.affine) @ ci.affine
        t2 = ndimage.affine_transform(np.asarray(ti.get_fdata(), np.float32), M[:3, :3], M[:3, 3],
                                      output_shape=t1.shape, order=1, mode="constant", cval=0.0)
        # crude brain mask: head mask, eroded through scalp and skull, cleaned
        sm = ndimage.gaussian_filter(t1, 1.0)
        head = ndimage.binary_fill_holes(ndimage.binary_closing(sm > 40, iterations=3))
        inner = ndimage.binary_erosion(head, iterations=9)
        t1n = t1 / np.median(t1[inner])
        t2n = t2 / np.median(t2[inner])
        tissue = inner & (ndimage.gaussian_filter(t1n, 1.0) > 0.55) & (ndimage.gaussian_filter(t1n, 1.0) < 1.6)
        tissue = ndimage.binary_opening(tissue, iterations=2)
        lab, n = ndimage.label(tissue)
        if n > 1:
            sizes = ndimage.sum(tissue, lab, range(1, n + 1))
            tissue = lab == (1 + int(np.argmax(sizes)))
        brain = ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=3))
        brain = ndimage.binary_fill_holes(brain | (inner & (t2n > 1.5) & ndimage.binary_dilation(brain, iterations=3)))
        brain = brain.astype(np.float32)
        sig = lambda z: 1.0 / (1.0 + np.exp(-z))
        csf = brain * sig((t2n - 2.0) / 0.25)
        wm = brain * (1 - csf) * sig((t1n - 1.08) / 0.05)
        gm = np.clip(brain - csf - wm, 0, 1)
        return _finish(dict(name=name, t1=t1, t2=t2, brain=brain, gm=gm, wm=wm, csf=csf, tumour=tum,
                            affine=ci.affine.copy(), real_tumour=True))
    raise ValueError(f"unknown anatomy {name!r} (mni152 | remind022)")
