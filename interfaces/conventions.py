"""The project's single definition of names, axis orders, units and directions.

Two displacement-field forms exist (see docs/ARCHITECTURE.md and docs/CONVENTIONS.md):

* voxel field (organisers, docs/CONVENTIONS.md §3): numpy (i, j, k, 3), channel c = displacement along index axis c,
  in voxels of the fixed grid; fixed voxel x corresponds to moving location x + u(x).
* physical field (Grand Challenge DSPF socket, docs/CONVENTIONS.md §6): 4-D image, array (3, k, j, i), component c =
  displacement along ITK physical (LPS) axis c in mm, 3-D geometry of the fixed image; fixed point p
  corresponds to moving point p + d(p), exactly as `SimpleITK.DisplacementFieldTransform` reads it.

Index order (i, j, k) is ITK's index order and nibabel's array order; SimpleITK's numpy view is (k, j, i).
Every conversion between these lives here and nowhere else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# ---------------------------------------------------------------- file names (docs/CONVENTIONS.md §2, §3)
MODALITIES = {0: "iUS", 1: "ceT1", 2: "T2"}
MODALITY_INDEX = {name: index for index, name in MODALITIES.items()}
FIXED_INDEX = 0
# [0-9], not \d: re's \d also matches other scripts' digits (full-width "０００１"), which are no case id
IMAGE_NAME_RE = re.compile(r"^ReMIND2Reg_([0-9]{4})_([0-9]{4})\.(nii\.gz|nii|mha|nrrd)$")
DISP_NAME_RE = re.compile(r"^disp_([0-9]{4})_0000_([0-9]{4})_([0-9]{4})\.(nii\.gz|npz)$")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
TIMINGS_NAME = "timings.json"  # the algorithm's seconds per pair beside its fields (organisers' layout)
# one shard K of N (runner/shards.py) writes timings.K-of-N.json instead: shards sharing OUT never clobber
# each other's timings; the evaluation reads timings.json and every timings.K-of-N.json
TIMINGS_NAME_RE = re.compile(r"^timings(\.([0-9]+)-of-([0-9]+))?\.json$")


def timings_name(shard: tuple[int, int] | None = None) -> str:
    """`timings.json`, or `timings.K-of-N.json` for shard K (from 0) of N."""
    return TIMINGS_NAME if shard is None else f"timings.{shard[0]}-of-{shard[1]}.json"


def image_name(case: str, modality: int, suffix: str = ".nii.gz") -> str:
    """`ReMIND2Reg_XXXX_000M.nii.gz` for a 4-digit case id and modality index."""
    return f"ReMIND2Reg_{case}_{modality:04d}{suffix}"


def displacement_name(case: str, moving_modality: int, suffix: str = ".nii.gz") -> str:
    """`disp_XXXX_0000_XXXX_000M.nii.gz`: the organisers' output name for one pair."""
    return f"disp_{case}_0000_{case}_{moving_modality:04d}{suffix}"


def landmark_name(case: str, modality: int) -> str:
    return f"ReMIND2Reg_{case}_{modality:04d}.csv"


def pair_key(case: str, moving_modality: int) -> str:
    """Learn2Reg metrics.json case key: `XXXX_0000<--XXXX_000M`."""
    return f"{case}_0000<--{case}_{moving_modality:04d}"


def parse_image_name(name: str) -> tuple[str, int] | None:
    """(case, modality) from `ReMIND2Reg_XXXX_000M.<ext>`, or None for any other name."""
    match = IMAGE_NAME_RE.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def parse_displacement_name(name: str) -> tuple[str, int] | None:
    """(case, moving modality) from `disp_XXXX_0000_XXXX_000M.(nii.gz|npz)`, or None."""
    match = DISP_NAME_RE.match(name)
    if not match or match.group(1) != match.group(2):
        return None
    return match.group(1), int(match.group(3))


# ---------------------------------------------------------------- the iUS fan (docs/CONVENTIONS.md §2)
# The challenge's iUS is exactly 0 outside its fan, and the fan is its voxels > 0. An iUS whose intensities were
# shifted (e.g. by -60 on export) keeps a constant background at its minimum: read as given, "> 0" would cut its
# fan to the brightest voxels. The background is the minimum when at least this fraction of the box holds it
# exactly (real RESECT fans leave 64-75 % of their box at 0; uniform noise leaves ~0 %).
BACKGROUND_MIN_FRACTION = 0.01


def fan_background(array: np.ndarray) -> float:
    """The iUS's background level: its minimum where that fills >= BACKGROUND_MIN_FRACTION of the voxels (a
    shifted export), else 0 (the challenge's convention). The fan is the voxels above it."""
    low = float(array.min())
    if low == 0.0 or not np.isfinite(low):
        return 0.0
    return low if np.count_nonzero(array == low) >= BACKGROUND_MIN_FRACTION * array.size else 0.0


# ---------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Grid:
    """A voxel grid in ITK physical (LPS, mm) space; shape in index order (i, j, k)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major, columns are the index axes' unit vectors

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def index_to_physical(self) -> np.ndarray:
        """3x3 matrix M with physical displacement = M @ index displacement (M = D · diag(spacing))."""
        return self.direction_matrix * np.asarray(self.spacing, dtype=np.float64)[None, :]

    def physical_point(self, index: np.ndarray) -> np.ndarray:
        """Physical (LPS mm) points of continuous indices, (N, 3) -> (N, 3)."""
        index = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin) + index @ self.index_to_physical.T

    def nifti_affine(self) -> np.ndarray:
        """nibabel (RAS) affine of this grid: ITK's LPS with x and y negated."""
        affine = np.eye(4)
        affine[:3, :3] = self.index_to_physical
        affine[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def matches(self, other: "Grid", tol: float = 1e-4) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol * 10)
                and np.allclose(self.direction, other.direction, atol=tol))


# ---------------------------------------------------------------- array order
def array_from_image(image: sitk.Image) -> np.ndarray:
    """numpy array in index order (i, j, k) (nibabel order) from a 3-D scalar SimpleITK image: a view of
    SimpleITK's own copy, so its memory is Fortran order (i fastest), as nibabel's arrays are."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def image_from_array(array: np.ndarray, grid: Grid) -> sitk.Image:
    """3-D scalar SimpleITK image on `grid` from a numpy array in index order (i, j, k)."""
    if tuple(array.shape) != grid.shape:
        raise ValueError(f"array shape {array.shape} does not match grid {grid.shape}")
    return grid.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0))))


# ---------------------------------------------------------------- displacement-field forms
def check_voxel_field(field: np.ndarray, grid_shape: tuple[int, ...]) -> None:
    """Raise ValueError with the reason when `field` is not a (grid shape) + (3,) finite field."""
    expected = tuple(grid_shape) + (3,)
    if field.shape != expected:
        hint = " (channel-first? the channel must be last)" if field.shape == (3,) + tuple(grid_shape) else ""
        raise ValueError(f"displacement field has shape {field.shape}, expected {expected}{hint}")
    if not np.isfinite(field).all():
        raise ValueError(f"displacement field has {int((~np.isfinite(field)).sum())} NaN/Inf values")


def voxel_to_physical_field(field: np.ndarray, grid: Grid) -> sitk.Image:
    """Organisers' voxel field (i, j, k, 3) -> Grand Challenge DSPF image (4-D, mm, LPS axes)."""
    check_voxel_field(field, grid.shape)
    m = grid.index_to_physical  # mm along LPS axis c = sum_d m[c, d] * voxels along index axis d
    planes = [field[..., d].transpose(2, 1, 0) for d in range(3)]  # (k, j, i) views, no copy
    array = np.empty((3,) + tuple(grid.shape[::-1]), np.float32)   # (3, k, j, i): the DSPF array
    for c in range(3):  # one component plane at a time: no (i, j, k, 3) float64 temporary
        array[c] = m[c, 0] * planes[0].astype(np.float64) + m[c, 1] * planes[1] + m[c, 2] * planes[2]
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing(grid.spacing + (1.0,))
    image.SetOrigin(grid.origin + (0.0,))
    direction4 = np.eye(4)
    direction4[:3, :3] = grid.direction_matrix
    image.SetDirection(tuple(direction4.ravel()))
    return image


def physical_to_voxel_field(image: sitk.Image) -> tuple[np.ndarray, Grid]:
    """Grand Challenge DSPF image -> (voxel field (i, j, k, 3) float32, fixed grid).

    Accepts the 4-D scalar form the platform stores and, for convenience, a 3-D 3-component vector image
    (the form `DisplacementFieldTransform` uses).
    """
    if image.GetDimension() == 4 and image.GetNumberOfComponentsPerPixel() == 1:
        size = image.GetSize()
        if size[3] != 3:
            raise ValueError(f"4-D displacement field must have last size 3, got size {size}")
        direction4 = np.asarray(image.GetDirection()).reshape(4, 4)
        grid = Grid(tuple(int(s) for s in size[:3]), tuple(float(s) for s in image.GetSpacing()[:3]),
                    tuple(float(o) for o in image.GetOrigin()[:3]), tuple(direction4[:3, :3].ravel()))
        physical = sitk.GetArrayFromImage(image).transpose(3, 2, 1, 0)  # (3,k,j,i) -> (i,j,k,3)
    elif image.GetDimension() == 3 and image.GetNumberOfComponentsPerPixel() == 3:
        grid = Grid.of(image)
        physical = sitk.GetArrayFromImage(image).transpose(2, 1, 0, 3)  # (k,j,i,3) -> (i,j,k,3)
    else:
        raise ValueError(f"not a displacement field: {image.GetDimension()}-D image with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s) per pixel")
    field = physical.astype(np.float64) @ np.linalg.inv(grid.index_to_physical).T
    return np.ascontiguousarray(field, dtype=np.float32), grid


def physical_field_to_transform(image: sitk.Image) -> sitk.Transform:
    """A SimpleITK transform from a DSPF image, for `sitk.Resample(moving, fixed, transform)`."""
    field, grid = physical_to_voxel_field(image)
    physical = (field.astype(np.float64) @ grid.index_to_physical.T).transpose(2, 1, 0, 3)
    vector_image = grid.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(physical), isVector=True))
    return sitk.DisplacementFieldTransform(vector_image)


# ---------------------------------------------------------------- what a voxel field means
def warp_with_voxel_field(moving: np.ndarray, field: np.ndarray, order: int = 1, cval: float = 0.0,
                          slice_axis: int | None = None, slice_index: int = 0) -> np.ndarray:
    """Moving image (index order, on the fixed grid) resampled at x + u(x): the meaning of the voxel field.

    With `slice_axis`, only the fixed-grid slice `slice_index` along that axis is computed (2-D result).
    """
    from scipy.ndimage import map_coordinates  # scipy only where a warp is actually needed

    check_voxel_field(field, moving.shape)
    ranges = [np.arange(n, dtype=np.float32) for n in moving.shape]
    region = [slice(None)] * 3
    if slice_axis is not None:
        ranges[slice_axis] = np.array([slice_index], np.float32)
        region[slice_axis] = slice(slice_index, slice_index + 1)
    identity = np.meshgrid(*ranges, indexing="ij")
    displacement = field[tuple(region)]
    coordinates = [identity[c] + displacement[..., c] for c in range(3)]
    warped = map_coordinates(moving, coordinates, order=order, mode="constant", cval=cval).astype(np.float32)
    return warped if slice_axis is None else np.squeeze(warped, axis=slice_axis)
