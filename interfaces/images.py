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
from interfaces.logs import itk_reason, log, one_line, shorten

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
    return f"not an image: unknown format or corrupt header: {shorten(itk_reason(detail), 160)}"


def _voxel_problem(detail: str) -> str:
    """Why the voxels did not read (a file too short for its header is refused before: `_size_problem`)."""
    if "No such file or directory" in detail:  # ITK's words for a short read of a file that is there
        return "truncated or corrupt file: its voxel data could not be read whole"
    return f"truncated or corrupt file: {shorten(itk_reason(detail), 160)}"


# ---------------------------------------------------------------- header sanity before any voxel is read
# A deflate stream (gzip .nii.gz, zlib-compressed .mha/.nrrd) expands at most 1032-fold (RFC 1951: a
# 258-byte match costs at least 2 bits): a header claiming more voxel bytes than that is not this file's.
DEFLATE_MAX_RATIO = 1032
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"


def _bytes_text(count: float) -> str:
    return f"{count / 1e9:.3g} GB" if count >= 1e9 else f"{count / 1e6:.3g} MB"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return ""


def physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not known here: no limit from the machine
        return 2 ** 63 - 1


def _cgroup_folders(base: str, path: str | None) -> list[str]:
    """The process's own cgroup folder and its ancestors under `base` (a host, or a container without a
    cgroup namespace), then `base` (a namespaced container, where /proc/self/cgroup names the host's path)."""
    parts = [p for p in (path or "").split("/") if p]
    return [os.path.join(base, *parts[:depth]) for depth in range(len(parts), 0, -1)] + [base]


def memory_limit_bytes(cgroup_root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> int:
    """The memory this process may use: the smallest of the cgroup limits that apply to it (v2 memory.max,
    v1 memory.limit_in_bytes; 'max' and v1's huge 'unlimited' number change nothing) and the physical memory."""
    own = {}
    for line in _read_text(proc_self_cgroup).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own["v2" if parts[1] == "" else "v1" if "memory" in parts[1].split(",") else "other"] = parts[2]
    limits = [physical_memory_bytes()]
    for base, key, name in ((cgroup_root, "v2", "memory.max"),
                            (os.path.join(cgroup_root, "memory"), "v1", "memory.limit_in_bytes")):
        for folder in _cgroup_folders(base, own.get(key)):
            value = _read_text(os.path.join(folder, name)).strip()
            if value.isascii() and value.isdigit():
                limits.append(int(value))
    return min(limits)


def _metaimage_data(path: str) -> tuple[int, int] | None:
    """(offset of the voxel data, expansion ratio) of a .mha, None when its data is in another file."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    marker = head.find(b"ElementDataFile")
    if marker < 0 or b"LOCAL" not in head[marker:head.find(b"\n", marker)]:
        return None
    compressed = b"CompressedData = True" in head[:marker]
    return head.index(b"\n", marker) + 1, DEFLATE_MAX_RATIO if compressed else 1


def _nrrd_data(path: str) -> tuple[int, int] | None:
    """(offset of the voxel data, expansion ratio) of a .nrrd with raw or gzip voxels in the file, else None."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    end = head.find(b"\n\n")
    fields = head[:end].lower() if end >= 0 else b""
    if end < 0 or b"data file:" in fields or b"datafile:" in fields:
        return None
    ratio = {b"raw": 1, b"gzip": DEFLATE_MAX_RATIO, b"gz": DEFLATE_MAX_RATIO}
    for line in fields.splitlines():
        if line.startswith(b"encoding:"):
            return (end + 2, ratio[line.split(b":", 1)[1].strip()]) if line.split(b":", 1)[1].strip() in ratio else None
    return None


def _stored_voxels(reader: sitk.ImageFileReader, path: str, nifti: bool) -> tuple[np.dtype, tuple[int, int] | None]:
    """(the voxels' type on file, (data offset, expansion ratio) or None when the file's size says nothing)."""
    lower = path.lower()
    if nifti:  # nibabel's header: the stored type (SimpleITK reports a scaled one as float)
        import nibabel as nib

        image = nib.load(path)  # the header only (its image header's offset is reset: the proxy keeps it)
        raw = lower.endswith(".nii")
        return image.header.get_data_dtype(), (int(image.dataobj.offset) if raw else 0, 1 if raw else DEFLATE_MAX_RATIO)
    dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype)
    layout = _metaimage_data(path) if lower.endswith(".mha") else _nrrd_data(path) if lower.endswith(".nrrd") else None
    return dtype, layout


def _size_problem(reader: sitk.ImageFileReader, path: str, role: str, grid: cv.Grid, nifti: bool) -> str | None:
    """A header whose voxels its file cannot hold, or that cannot fit the memory this container may use: said
    before any voxel is read (a 99-byte file claiming 1000^3 voxels would otherwise allocate 4 GB)."""
    voxels = int(np.prod(grid.shape, dtype=np.int64))
    try:
        dtype, layout = _stored_voxels(reader, path, nifti)
    except Exception:  # noqa: BLE001 - a header nibabel cannot parse: the voxel read says why
        return None
    needed = voxels * dtype.itemsize
    file_bytes = os.path.getsize(path)
    if layout is not None:
        offset, ratio = layout
        present = max(file_bytes - offset, 0)
        if ratio == 1 and present < needed:
            return (f"cannot read {role} voxels (truncated file: {present} of the {needed} bytes of voxel data its "
                    "header announces)")
        if needed > ratio * present:
            return (f"{role} header claims {'x'.join(map(str, grid.shape))} {dtype.name} voxels "
                    f"({_bytes_text(needed)}), more than its {file_bytes}-byte file can hold (compressed data "
                    f"expands at most {ratio}-fold)")
    memory = voxels * (dtype.itemsize + 4)  # the file's voxels and their float32 copy, together while converting
    limit = memory_limit_bytes()
    if memory > limit:
        return (f"{role} needs about {_bytes_text(memory)} of memory to read, more than the {_bytes_text(limit)} "
                "this container may use")
    return None


def read_image(path: str, role: str = "image", fixed: bool = False) -> LoadedImage:
    """Read a 3-D scalar image (.nii, .nii.gz, .mha, .nrrd) and validate it; raise InputError on any problem.
    fixed: the iUS, gated as one (interfaces/gates.py: a fan to register on); else gated as an MR."""
    problem = _open_problem(path, role)
    if problem:
        raise InputError(problem)
    nifti = path.lower().endswith((".nii", ".nii.gz"))
    reader = _read_header(path, role)
    grid = _header_grid(reader, path, role, nifti)  # the geometry is checked before any voxel is read
    problem = _size_problem(reader, path, role, grid, nifti)  # and the size, before any voxel is allocated
    if problem:
        raise InputError(f"{_name(path)}: {problem}")
    array, image = _read_voxels(reader, path, role, grid, nifti)
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(f"{_name(path)}: {role} contains {int(bad.sum())} NaN/Inf voxels")
    if fixed:
        array, image = _zero_background(array, image, path, role)
    problem = gates.ius_problem(array, grid.spacing) if fixed else gates.mr_problem(array)
    if problem:
        raise InputError(f"{_name(path)}: {role} {problem}")
    return LoadedImage(path, array, grid, image)


def _zero_background(array: np.ndarray, image, path: str, role: str):
    """An iUS whose constant background is not 0 (shifted intensities) shifted back, with a WARNING: the fan is
    the voxels above the background (interfaces/conventions.py fan_background), and the model's fan is > 0."""
    background = cv.fan_background(array)
    if background == 0.0:
        return array, image
    log.warning("%s: the %s's background is %.4g, not 0 (the challenge's iUS is 0 outside its fan, "
                "docs/CONVENTIONS.md §2): its intensities are read shifted by %.4g", _name(path), role,
                background, -background)
    return array - np.float32(background), None


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
        raise InputError(f"{_name(path)}: cannot read {role} voxels ({_voxel_problem(detail)})") from None


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
    problem = gates.swapped_problem(fixed.array, array, fixed.grid.spacing)
    if problem:
        raise InputError(f"{_name(fixed.path)}: the iUS {problem} ({role} {_name(moving.path)})")
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
