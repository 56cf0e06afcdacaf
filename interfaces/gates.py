"""Input gates: refuse an image the model cannot register, before it is registered (issue 11, "do no harm").

Each check returns None (pass) or a one-line problem; `interfaces.images` prefixes the file name and role and
raises InputError, so the pair is skipped, the other pairs are still done and the run exits 1. Called on the
runner's read/resample path (`read_image`, `onto_grid`), which both layouts share. No torch here.

Thresholds (docs/RELIABILITY.md says the same, with the measurements):
- SPACING_MM: 0.05-10 mm per axis. iUS volumes are reconstructed at 0.1-0.5 mm, MR at 0.4-1.5 mm (thick
  2-D slices up to ~6 mm); a header written in metres gives 0.0005 and one in micrometres 500.
- EXTENT_MM: 5-600 mm per axis (size x spacing). The model's finest features are MIND-SSC at 1 mm with a
  patch radius 1 and dilation 2, 5 voxels across: a slab thinner than 5 mm holds no full feature. A head is
  ~200 mm and MR fields of view stay under ~500 mm; 600 mm and more is a unit error, not an image.
- MIN_FAN_CM3 = 1 cm^3 of iUS voxels > 0 (the model's fan is exactly its voxels > 0, model/features.py).
  The real RESECT-24 fan is ~48 cm^3; the project's small-fan stress cases (simulation/stress.py,
  `small_fan`, the full 128 mm scene) have 54-134 cm^3 (seeds 4010-4013, measured at 64^3 @ 2 mm and
  48^3 @ 2.67 mm). 1 cm^3 is a 10 mm cube: under 5 voxels per axis at the coarse 3 mm level and
  under 2 at the 6 mm level the global pose is searched on, too little to register on.
- PERCENTILES (1, 99): the model maps the 1st..99th percentile inside the fan (iUS) or the head (MR) to
  0..1 (model/features.py robust_normalise). When they are equal (relative to their size, to float32
  resolution) no normalisation rescues the image: it is flat where it matters.
"""
from __future__ import annotations

import math

import numpy as np

SPACING_MM = (0.05, 10.0)
EXTENT_MM = (5.0, 600.0)
MIN_FAN_CM3 = 1.0
PERCENTILES = (1.0, 99.0)
RELATIVE_SPREAD = 1e-6      # about 8 float32 steps: less spread than this between the percentiles is none
ORTHONORMAL_TOL = 1e-3      # max abs(D^T D - I) of the direction matrix; NIfTI quaternions and float32 headers are ~1e-6
SAMPLE_VOXELS = 1_000_000   # percentiles on a regular index-space subsample of about this many voxels


def _g(value: float) -> str:
    return f"{value:.4g}"


def geometry_problem(size, spacing, direction) -> str | None:
    """Spacing, field of view and direction of a header; None when plausible."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return f"has zero, negative or non-finite spacing {tuple(_g(s) for s in spacing)} in its header"
    lo, hi = SPACING_MM
    if np.any(spacing < lo) or np.any(spacing > hi):
        hint = " (a header in metres?)" if np.any(spacing < lo) else " (a header in micrometres?)"
        return (f"has spacing {'x'.join(_g(s) for s in spacing)} mm, outside the plausible {lo:g}-{hi:g} mm per "
                f"axis{hint}")
    extent = np.asarray(size, dtype=np.float64) * spacing
    lo, hi = EXTENT_MM
    for axis, length in zip("ijk", extent):
        if length < lo or length > hi:
            return (f"has a field of view of {length:.3g} mm along axis {axis} ({'x'.join(f'{e:.3g}' for e in extent)}"
                    f" mm), outside the plausible {lo:g}-{hi:g} mm per axis")
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(direction)):
        return "has a non-finite direction matrix in its header"
    error = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if error > ORTHONORMAL_TOL:
        det = float(np.linalg.det(direction))
        kind = "degenerate" if abs(abs(det) - 1.0) > ORTHONORMAL_TOL else "sheared"
        return (f"has a {kind} (non-orthonormal) direction matrix {tuple(round(d, 4) for d in direction.ravel())}"
                f" (max abs(D^T D - I) = {error:.3g}, det {det:.3g}); expected a rotation")
    return None


def sample(array: np.ndarray, voxels: int = SAMPLE_VOXELS) -> np.ndarray:
    """A regular subsample in index space (a view): every s-th voxel along each axis, about `voxels` in all.
    Index-space strides keep two arrays on the same grid aligned whatever their memory layout."""
    step = max(1, math.ceil((array.size / voxels) ** (1.0 / 3.0))) if array.ndim == 3 else 1
    return array[::step, ::step, ::step] if array.ndim == 3 else array


def _spread_problem(values: np.ndarray, where: str) -> str | None:
    if values.size == 0:
        return f"has no voxel {where}"
    lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
    if hi - lo <= RELATIVE_SPREAD * max(abs(lo), abs(hi)):
        return (f"has no contrast {where}: its {PERCENTILES[0]:g}st and {PERCENTILES[1]:g}th percentiles are "
                f"both {_g(lo)}, nothing to normalise")
    return None


def mr_problem(array: np.ndarray) -> str | None:
    """An MR with no information: all zero, constant, or no spread inside the head (its voxels != 0)."""
    lo, hi = float(array.min()), float(array.max())
    if lo == hi == 0.0:
        return "is empty (all voxels are 0)"
    if lo == hi:
        return f"is constant (every voxel is {_g(lo)}): no information"
    values = sample(array)
    return _spread_problem(values[values != 0], "inside the head (voxels != 0)")


def fan_cm3(array: np.ndarray, spacing) -> float:
    return float(np.count_nonzero(array > 0)) * float(np.prod(spacing)) / 1000.0


def ius_problem(array: np.ndarray, spacing) -> str | None:
    """An iUS the model cannot register: no fan (voxels > 0), a fan under MIN_FAN_CM3, no contrast in it."""
    if not np.any(array):
        return "is empty (all voxels are 0)"
    volume = fan_cm3(array, spacing)
    if volume == 0.0:
        return "has no positive voxel: no ultrasound fan (the fan is the voxels > 0)"
    if volume < MIN_FAN_CM3:
        return (f"has an ultrasound fan too small to register: {volume:.3g} cm^3 of voxels > 0, at least "
                f"{MIN_FAN_CM3:g} cm^3 needed")
    values = sample(array)
    return _spread_problem(values[values > 0], "inside the ultrasound fan (voxels > 0)")


def mr_in_fan_problem(mr_on_fixed: np.ndarray, fixed: np.ndarray) -> str | None:
    """The MR on the iUS grid must show something inside the fan: a flat MR there (e.g. it covers under ~1 %
    of the fan) gives the model nothing to match."""
    values = sample(mr_on_fixed)[sample(fixed) > 0]
    return _spread_problem(values, "inside the iUS fan on the iUS grid (does it cover the fan?)")


# ---------------------------------------------------------------- which image is the ultrasound
# An iUS is a fan in a box: much of its box is one constant background, and speckle makes it rough at the
# millimetre scale, where an MR is smooth. Measured 2026-12-07 on the iUS grid, where both images show something
# (roughness: the image minus its 1 mm Gaussian, over the whole contrast): real RESECT-24 iUS 0.56 against its
# T1/FLAIR 0.35-0.48 (12 hybrid pairs), background 64 % against 0 %; the simulated sets' iUS 0.27-0.51 against
# their MRs 0.17-0.30 (smallest margin 0.03), background 62-73 % against 5-43 % (the 17 real RESECT fans leave
# 64-75 % of their box at 0). The MR given as the iUS turns both round (0.41-0.46 against the iUS's 0.56, 0 %
# against 64 %): only when BOTH say so is the pair refused, so a rough MR or a smooth iUS alone never is.
FINE_SCALE_MM = 1.0


def background_fraction(array: np.ndarray) -> float:
    """The fraction of the box at the image's minimum (an iUS's background outside the fan)."""
    return float(np.count_nonzero(array == array.min())) / array.size


def fine_scale_roughness(array: np.ndarray, spacing, mask: np.ndarray) -> float:
    """std(image - its FINE_SCALE_MM Gaussian) / std(image), over `mask` (the fan) of a regular subsample."""
    from scipy import ndimage

    step = max(1, math.ceil((array.size / SAMPLE_VOXELS) ** (1.0 / 3.0)))
    values = np.asarray(array[::step, ::step, ::step], dtype=np.float32)
    sigma = [FINE_SCALE_MM / (float(s) * step) for s in spacing]
    # away from the mask's border, where the Gaussian would mix in the outside (an edge, not texture)
    inside = ndimage.binary_erosion(mask[::step, ::step, ::step], iterations=2)
    if not inside.any():
        return 0.0
    fine = values - ndimage.gaussian_filter(values, sigma)
    spread = float(values[inside].std())
    return float(fine[inside].std()) / spread if spread > 0 else 0.0


def swapped_problem(fixed: np.ndarray, mr_on_fixed: np.ndarray, spacing) -> str | None:
    """The iUS (zero background) that looks like the MR and the MR that looks like an iUS: swapped inputs."""
    # where both show something: the iUS's fan and the MR's own foreground (above its minimum), so an iUS given
    # as the MR is judged inside its fan too
    shown = (fixed > 0) & (mr_on_fixed > mr_on_fixed.min())
    if np.count_nonzero(shown) < 1000:
        return None  # too few voxels to judge (the fan gate names a fan this small)
    us_rough = fine_scale_roughness(fixed, spacing, shown)
    mr_rough = fine_scale_roughness(mr_on_fixed, spacing, shown)
    us_background, mr_background = background_fraction(fixed), background_fraction(mr_on_fixed)
    if us_rough < mr_rough and us_background < mr_background:
        return (f"looks like an MR and the MR like an ultrasound fan (speckle part {us_rough:.2f} against the MR's "
                f"{mr_rough:.2f}; background {us_background:.0%} of the box against the MR's {mr_background:.0%}): "
                "are they swapped? The iUS must be _0000")
    return None
