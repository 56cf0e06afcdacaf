"""Read and validate input images, resample onto the fixed grid, write displacement fields atomically.

Every problem with an input raises `InputError` whose message is one line naming the file and the problem.
Arrays are in index order (i, j, k) (see interfaces/conventions.py); nothing here imports torch.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from interfaces import conventions as cv
from interfaces.logs import one_line

# Writer for organisers' .nii.gz fields: gzip level 0 (stored blocks) measured fastest; see docs/CONTAINER.md.
# A writer setting ($REMIND2REG_GZIP_LEVEL, runner/settings.py), not a convention: the evaluation reads any level.
DEFAULT_GZIP_LEVEL = 0


class InputError(ValueError):
    """A problem with one input file or case; the message is one line naming the file."""


@dataclass
class LoadedImage:
    path: str
    array: np.ndarray  # float32, index order (i, j, k)
    grid: cv.Grid
    _image: sitk.Image | None = None  # the file's SimpleITK image when it was read as one (not NIfTI)

    @property
    def image(self) -> sitk.Image:
        """float32 SimpleITK image of the voxels, made on first use: only resampling needs it, and a copy
        per NIfTI volume is not worth holding for grids that already match."""
        if self._image is None:
            self._image = cv.image_from_array(self.array, self.grid)
        return self._image


def _name(path: str) -> str:
    return os.path.basename(path)


def _read_nifti_pixels(path: str, size: tuple[int, ...]) -> np.ndarray:
    """NIfTI voxels through nibabel (index order, scaling applied). SimpleITK's NIfTI reader silently
    turns NaN into 0 and zero-fills a truncated .nii.gz; nibabel reports both."""
    import nibabel as nib

    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    while data.ndim > len(size) and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != tuple(size):
        raise ValueError(f"voxel array shape {data.shape} differs from the header size {tuple(size)}")
    # kept in the file's Fortran order (i fastest): SimpleITK wants that layout, and the model transposes
    # on its device; a C-order copy here costs time per volume on the CPU (docs/CONTAINER.md)
    return data


def read_image(path: str, role: str = "image", require_nonzero: bool = False) -> LoadedImage:
    """Read a 3-D scalar image (.nii, .nii.gz, .mha, .nrrd) and validate it; raise InputError on any problem."""
    name = _name(path)
    if not os.path.isfile(path):
        raise InputError(f"{name}: {role} file not found")
    if os.path.getsize(path) == 0:
        raise InputError(f"{name}: {role} file is empty (0 bytes)")
    nifti = path.lower().endswith((".nii", ".nii.gz"))
    try:
        if nifti:  # geometry from SimpleITK (header only), voxels from nibabel
            reader = sitk.ImageFileReader()
            reader.SetFileName(path)
            reader.ReadImageInformation()
            dimension, size = reader.GetDimension(), tuple(reader.GetSize())
            components = reader.GetNumberOfComponents()
            geometry = (reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
        else:
            image = sitk.ReadImage(path)
            dimension, size = image.GetDimension(), tuple(image.GetSize())
            components = image.GetNumberOfComponentsPerPixel()
            geometry = (image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    except RuntimeError as exc:
        detail = one_line(exc)
        raise InputError(f"{name}: cannot read {role} (unreadable or truncated file): {detail[-160:]}") from None
    if dimension == 4 and size[3] == 1:  # a 4-D image with one volume: accept its volume
        dimension, size = 3, size[:3]
        geometry = (geometry[0][:3], geometry[1][:3], tuple(np.asarray(geometry[2]).reshape(4, 4)[:3, :3].ravel()))
        if not nifti:
            image = image[:, :, :, 0]
    if dimension != 3:
        raise InputError(f"{name}: {role} is {dimension}-D (size {size}), expected a 3-D image")
    if components != 1:
        raise InputError(f"{name}: {role} has {components} components per voxel, expected a scalar image")
    if min(size) < 2:
        raise InputError(f"{name}: {role} has size {size}, expected at least 2 voxels along each axis")
    spacing = np.asarray(geometry[0], dtype=np.float64)
    direction = np.asarray(geometry[2], dtype=np.float64).reshape(3, 3)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise InputError(f"{name}: {role} has invalid spacing {tuple(spacing)}")
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError(f"{name}: {role} has a degenerate direction matrix {tuple(direction.ravel())}")
    grid = cv.Grid(tuple(int(s) for s in size), tuple(float(s) for s in spacing),
                   tuple(float(o) for o in geometry[1]), tuple(float(d) for d in direction.ravel()))
    try:
        if nifti:
            array, image = _read_nifti_pixels(path, grid.shape), None
        else:
            image = sitk.Cast(image, sitk.sitkFloat32)
            array = cv.array_from_image(image)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        detail = one_line(exc)
        raise InputError(f"{name}: cannot read {role} voxels (truncated or corrupt file): {detail[-160:]}") from None
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(f"{name}: {role} contains {int(bad.sum())} NaN/Inf voxels")
    if require_nonzero and not np.any(array):
        raise InputError(f"{name}: {role} is empty (all voxels are 0)")
    return LoadedImage(path, array, grid, image)


def read_images(requests: dict, workers: int | None = None) -> dict:
    """read_image for several files at once: {key: (path, role, require_nonzero)} -> {key: LoadedImage or
    the InputError it raised}. Threads overlap the gunzip of a case's volumes (zlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(request):
        try:
            return read_image(*request)
        except InputError as exc:
            return exc

    keys = list(requests)
    if len(keys) <= 1:
        return {k: one(requests[k]) for k in keys}
    with ThreadPoolExecutor(max_workers=workers or min(len(keys), os.cpu_count() or 1)) as pool:
        return dict(zip(keys, pool.map(one, [requests[k] for k in keys])))


def onto_grid(moving: LoadedImage, fixed: LoadedImage, role: str = "moving image") -> tuple[np.ndarray, bool]:
    """The moving image on the fixed grid: as is when the grids match, else resampled by physical geometry
    (identity transform, linear interpolation, 0 outside). Returns (array, resampled?)."""
    if moving.grid.matches(fixed.grid):
        return moving.array, False
    g = fixed.grid  # the output geometry given directly: no reference image (a volume-sized copy) needed
    resampled = sitk.Resample(moving.image, list(g.shape), sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear,
                              list(g.origin), list(g.spacing), list(g.direction), 0.0, sitk.sitkFloat32)
    array = cv.array_from_image(resampled)
    if not np.any(array):
        raise InputError(f"{_name(moving.path)}: {role} does not overlap the iUS {_name(fixed.path)} in physical "
                         f"space (its grid {moving.grid.shape} at origin {tuple(round(o, 1) for o in moving.grid.origin)}"
                         f" vs iUS origin {tuple(round(o, 1) for o in fixed.grid.origin)}); cannot resample it")
    return array, True


def nifti_affine_for(fixed: LoadedImage) -> np.ndarray:
    """The affine of the output .nii.gz: the fixed NIfTI's own affine, else the grid's RAS affine."""
    if fixed.path.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            return np.asarray(nib.load(fixed.path).affine, dtype=np.float64)
        except Exception:  # noqa: BLE001 - fall back on the geometry SimpleITK read
            pass
    return fixed.grid.nifti_affine()


# ---------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: str):
    """Yield a temporary path in the same folder (same suffix); on success os.replace it onto `path`,
    on failure delete it. A partial output file is never left under the final name."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".partial-{os.getpid()}-", suffix=f"-{name}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs must be readable by the host's user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(data: dict, path: str) -> None:
    """JSON through a temporary name and os.replace (atomic_path): never a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, allow_nan=False)


def nifti_header_bytes(shape: tuple[int, ...], affine: np.ndarray, zooms=None) -> bytes:
    """A single-file NIfTI-1 header (348 bytes + 4-byte empty extension) for float32 data of `shape`."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    if zooms is not None:
        header.set_zooms(tuple(zooms))
    header.set_xyzt_units("mm")
    header["vox_offset"] = 352
    return header.binaryblock + b"\x00" * 4


def write_voxel_field_nifti(path: str, field: np.ndarray, affine: np.ndarray,
                            level: int = DEFAULT_GZIP_LEVEL) -> None:
    """Organisers' field (i, j, k, 3) float32 as .nii.gz, written as raw NIfTI bytes through gzip at `level`
    (0, the fastest measured, by default; nibabel and SimpleITK read it back exactly)."""
    field = np.asarray(field, dtype=np.float32)
    zooms = tuple(float(z) for z in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))) + (1.0,)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as out:
            out.write(nifti_header_bytes(field.shape, affine, zooms))
            for c in range(field.shape[3]):  # NIfTI data is Fortran order: i fastest, channel slowest
                plane = np.ascontiguousarray(field[..., c].T)  # (k, j, i): no copy for the model's layout
                out.write(plane.data.cast("B"))


def write_sitk_image(path: str, image: sitk.Image, compress: bool = False) -> None:
    """Any SimpleITK image (e.g. the Grand Challenge DSPF .mha) through a temp name and os.replace."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, tmp, useCompression=compress)
