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
from interfaces import gates
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


def _open_problem(path: str, role: str) -> str | None:
    """Why the file cannot be opened, said as it is: missing, a folder, permissions; None when it opens.
    Opening it (not os.access) is the true test, also as root."""
    name = _name(path)
    if os.path.isdir(path):
        return f"{name}: {role} path is a folder, not an image file"
    if not os.path.lexists(path):
        return f"{name}: {role} file not found"
    if not os.path.exists(path):
        return f"{name}: {role} file is a broken link (to {os.readlink(path)})"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        return f"{name}: {role} file exists but cannot be opened: permission denied (make it readable to this user)"
    except OSError as exc:
        return f"{name}: {role} file exists but cannot be opened: {one_line(exc)}"
    if os.path.getsize(path) == 0:
        return f"{name}: {role} file is empty (0 bytes)"
    return None


def _header_problem(detail: str) -> str:
    """ITK's reason for refusing a header, said plainly (its own text can mislead: a truncated .mha reads
    'No such file or directory')."""
    if "orthonormal" in detail:
        return "has a sheared (non-orthonormal) direction in its header, which ITK cannot represent"
    if "Zero-valued spacing" in detail:
        return "has zero spacing in its header"
    return f"not an image: unknown format or corrupt header: {detail[-160:]}"


def _voxel_problem(path: str, reader: sitk.ImageFileReader, size, detail: str) -> str:
    """Why the voxels did not read: for an uncompressed MetaImage, how many bytes are missing."""
    if path.lower().endswith(".mha"):
        with open(path, "rb") as handle:
            head = handle.read(4096)
        marker = head.find(b"ElementDataFile")
        if marker >= 0 and b"CompressedData = True" not in head[:marker]:
            data_start = head.index(b"\n", marker) + 1
            itemsize = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype).itemsize
            needed = int(np.prod(size)) * reader.GetNumberOfComponents() * itemsize
            present = os.path.getsize(path) - data_start
            if present < needed:
                return f"truncated file: {present} of the {needed} bytes of voxel data its header announces"
    if "No such file or directory" in detail:  # ITK's words for a short read of a file that is there
        return "truncated or corrupt file: its voxel data could not be read whole"
    return f"truncated or corrupt file: {detail[-160:]}"


def read_image(path: str, role: str = "image", fixed: bool = False) -> LoadedImage:
    """Read a 3-D scalar image (.nii, .nii.gz, .mha, .nrrd) and validate it; raise InputError on any problem.
    fixed: the iUS, gated as one (interfaces/gates.py: a fan to register on); else gated as an MR."""
    problem = _open_problem(path, role)
    if problem:
        raise InputError(problem)
    nifti = path.lower().endswith((".nii", ".nii.gz"))
    reader = _read_header(path, role)
    grid = _header_grid(reader, path, role, nifti)  # the geometry is checked before any voxel is read
    array, image = _read_voxels(reader, path, role, grid, nifti)
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(f"{_name(path)}: {role} contains {int(bad.sum())} NaN/Inf voxels")
    problem = gates.ius_problem(array, grid.spacing) if fixed else gates.mr_problem(array)
    if problem:
        raise InputError(f"{_name(path)}: {role} {problem}")
    return LoadedImage(path, array, grid, image)


def _read_header(path: str, role: str) -> sitk.ImageFileReader:
    """A reader that has read the file's header only (InputError when ITK refuses it)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        problem = _header_problem(one_line(exc))
        raise InputError(f"{_name(path)}: {role} {problem}" if problem.startswith("has ")
                         else f"{_name(path)}: cannot read {role} ({problem})") from None
    return reader


def _header_grid(reader: sitk.ImageFileReader, path: str, role: str, nifti: bool) -> cv.Grid:
    """The header's Grid, refused (InputError) unless 3-D (or 4-D with one volume), scalar, at least 2 voxels
    along each axis, with a non-zero spacing and a geometry the gates accept."""
    name = _name(path)
    dimension, size = reader.GetDimension(), tuple(reader.GetSize())
    components = reader.GetNumberOfComponents()
    geometry = (reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    if dimension == 4 and size[3] == 1:  # a 4-D image with one volume: accept its volume
        dimension, size = 3, size[:3]
        geometry = (geometry[0][:3], geometry[1][:3], tuple(np.asarray(geometry[2]).reshape(4, 4)[:3, :3].ravel()))
    if dimension != 3:
        raise InputError(f"{name}: {role} is {dimension}-D (size {size}), expected a 3-D image")
    if components != 1:
        raise InputError(f"{name}: {role} has {components} components per voxel, expected a scalar image")
    if min(size) < 2:
        raise InputError(f"{name}: {role} has size {size}, expected at least 2 voxels along each axis")
    if nifti and _nifti_zero_pixdim(path):
        raise InputError(f"{name}: {role} has zero spacing (pixdim) in its header (SimpleITK would read it as 1 mm)")
    problem = gates.geometry_problem(size, geometry[0], geometry[2])
    if problem:
        raise InputError(f"{name}: {role} {problem}")
    return cv.Grid(tuple(int(s) for s in size), tuple(float(s) for s in geometry[0]),
                   tuple(float(o) for o in geometry[1]), tuple(float(d) for d in geometry[2]))


def _read_voxels(reader: sitk.ImageFileReader, path: str, role: str, grid: cv.Grid, nifti: bool):
    """(float32 array in index order, the SimpleITK image or None): NIfTI voxels through nibabel (geometry
    stays SimpleITK's), other formats through the reader; InputError saying why the voxels did not read."""
    try:
        if nifti:
            return _read_nifti_pixels(path, grid.shape), None
        image = reader.Execute()
        if image.GetDimension() == 4:
            image = image[:, :, :, 0]
        image = sitk.Cast(image, sitk.sitkFloat32)
        return cv.array_from_image(image), image
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        detail = one_line(exc)
        raise InputError(f"{_name(path)}: cannot read {role} voxels "
                         f"({_voxel_problem(path, reader, grid.shape, detail)})") from None


def _nifti_zero_pixdim(path: str) -> bool:
    """Whether the header's pixdim[1:4] holds a 0, read from the raw header: nibabel and SimpleITK both quietly
    replace a zero spacing by 1 mm. NIfTI-1 (348-byte header, float32 pixdim at byte 76) and NIfTI-2 (540,
    float64 at byte 104), either byte order."""
    import struct

    try:
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rb") as handle:
            head = handle.read(540)
        for order in "<>":
            size = struct.unpack(order + "i", head[:4])[0]
            if size == 348:
                return 0.0 in struct.unpack(order + "8f", head[76:108])[1:4]
            if size == 540:
                return 0.0 in struct.unpack(order + "8d", head[104:168])[1:4]
    except (OSError, EOFError, struct.error):  # the voxel read reports a broken file
        pass
    return False


def read_images(requests: dict, workers: int | None = None) -> dict:
    """read_image for several files at once: {key: (path, role, fixed)} -> {key: LoadedImage or
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
        return _covering_the_fan(moving.array, moving, fixed, role), False
    g = fixed.grid  # the output geometry given directly: no reference image (a volume-sized copy) needed
    resampled = sitk.Resample(moving.image, list(g.shape), sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear,
                              list(g.origin), list(g.spacing), list(g.direction), 0.0, sitk.sitkFloat32)
    array = cv.array_from_image(resampled)
    if not np.any(array):
        raise InputError(f"{_name(moving.path)}: {role} does not overlap the iUS {_name(fixed.path)} in physical "
                         f"space (its grid {moving.grid.shape} at origin {tuple(round(o, 1) for o in moving.grid.origin)}"
                         f" vs iUS origin {tuple(round(o, 1) for o in fixed.grid.origin)}); cannot resample it")
    return _covering_the_fan(array, moving, fixed, role), True


def _covering_the_fan(array: np.ndarray, moving: LoadedImage, fixed: LoadedImage, role: str) -> np.ndarray:
    """The MR on the iUS grid, once the gate saw it shows something inside the fan (interfaces/gates.py)."""
    problem = gates.mr_in_fan_problem(array, fixed.array)
    if problem:
        raise InputError(f"{_name(moving.path)}: {role} {problem} (iUS {_name(fixed.path)})")
    return array


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


def check_writable(folder: str) -> None:
    """Create and remove a file in `folder`: raises OSError when it cannot be written. A real write, not
    os.access, which says yes to root on a read-only mount."""
    fd, probe = tempfile.mkstemp(prefix=f".write-test-{os.getpid()}-", dir=folder)
    os.close(fd)
    os.unlink(probe)


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
