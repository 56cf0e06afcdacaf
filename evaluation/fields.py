"""Read and validate one displacement field; every failure is a one-line `FieldError` naming pair and file.

Organisers' files (`disp_XXXX_0000_XXXX_000M.nii.gz|.npz`) hold the voxel field directly (docs/CONVENTIONS.md
§3). Grand Challenge `.mha` files hold the DSPF physical field and are converted with
`interfaces.conventions.physical_to_voxel_field` (the project's one definition of that convention).

Dtype note (agreement with the organisers' code): the ReMIND2Reg evaluation (ReubenDo/ReMIND2Reg,
evaluation/utils.py `load_disp`) reads `.nii.gz` with nibabel `get_fdata()` and casts `.npz` to float64, so
its TRE sampling is float64 for both (the Learn2Reg main repository casts `.npz` to float32 instead; the
`sample_dtype=float32` option of metrics.sample_displacement mirrors that). We keep float32 files as float32
(the values are identical, half the memory) and sample landmarks in float64.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from interfaces.conventions import Grid, check_voxel_field, physical_to_voxel_field
from interfaces.logs import one_line


class FieldError(ValueError):
    """A displacement field that cannot be evaluated; str() is one line naming pair and file."""


@dataclass
class LoadedField:
    field: np.ndarray            # (i, j, k, 3) voxel field, float32 (float64 when stored as float64)
    sample_dtype: type           # dtype of the organisers' landmark sampling for this file type
    grid: Grid | None = None     # geometry carried by a DSPF .mha (None for .nii.gz/.npz: affine ignored)


def _gunzip(path: str) -> bytes:
    """Whole-file gzip decompression in one zlib call per member (faster than streaming); multi-member safe."""
    import zlib

    with open(path, "rb") as handle:
        data = handle.read()
    chunks = []
    while data:
        inflater = zlib.decompressobj(31)
        chunks.append(inflater.decompress(data))
        if not inflater.eof:
            raise EOFError("truncated gzip stream")
        data = inflater.unused_data.lstrip(b"\0")
    return b"".join(chunks)


def _read_nifti(path: str) -> tuple[np.ndarray, type]:
    """Values exactly as the organisers' nibabel `get_fdata()`; float32 data without scaling stays float32."""
    import nibabel as nib

    raw = _gunzip(path) if path.endswith(".gz") else open(path, "rb").read()
    try:
        image = nib.Nifti1Image.from_bytes(raw)
    except Exception:
        image = nib.Nifti2Image.from_bytes(raw)
    slope, inter = image.dataobj.slope, image.dataobj.inter
    if image.get_data_dtype() == np.float32 and slope == 1 and inter == 0:
        data = np.asanyarray(image.dataobj)  # a view of the decompressed bytes (Fortran order), no copy
    else:
        data = image.get_fdata()
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector intent form (X, Y, Z, 1, 3)
        data = data[:, :, :, 0, :]
    return data, np.float64


def _read_npz(path: str) -> tuple[np.ndarray, type]:
    if not zipfile.is_zipfile(path):
        raise ValueError("not a valid .npz (zip) archive: unreadable or truncated file")
    with np.load(path, allow_pickle=False) as archive:
        if "arr_0" not in archive.files:
            raise ValueError(f"npz has no key 'arr_0' (keys: {', '.join(archive.files) or 'none'})")
        data = archive["arr_0"]
    if data.dtype not in (np.float32, np.float64):  # float16 and small ints are exact in float32
        data = data.astype(np.float64 if data.dtype.itemsize > 2 and data.dtype.kind in "iu" else np.float32)
    return data, np.float64  # ReMIND2Reg's load_disp: astype(float64), sampled in float64


def _read_dspf(path: str) -> tuple[np.ndarray, Grid]:
    import SimpleITK as sitk

    return physical_to_voxel_field(sitk.ReadImage(path))


def load_field(path: str, expected_shape: tuple[int, int, int] | None, pair: str) -> LoadedField:
    """Read `path` and check it is a finite (expected_shape) + (3,) channel-last voxel field."""
    name = os.path.basename(path)

    def fail(reason: str) -> FieldError:
        return FieldError(f"{pair}: {name}: {reason}")

    if not os.path.isfile(path):
        raise fail("missing displacement field")
    grid = None
    try:
        if name.endswith((".nii.gz", ".nii")):
            field, sample_dtype = _read_nifti(path)
        elif name.endswith(".npz"):
            field, sample_dtype = _read_npz(path)
        elif name.endswith((".mha", ".mhd", ".nrrd")):
            field, grid = _read_dspf(path)
            sample_dtype = np.float64
        else:
            raise fail("unsupported file type (expected .nii.gz, .npz or a Grand Challenge .mha)")
    except FieldError:
        raise
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise fail(f"unreadable or truncated file ({type(exc).__name__}: {_one_line(exc)})") from None
    except Exception as exc:  # nibabel/SimpleITK/zlib raise many types for broken files
        raise fail(f"cannot read displacement field ({type(exc).__name__}: {_one_line(exc)})") from None
    if expected_shape is None:
        expected_shape = field.shape[:3]
    if field.ndim == 4 and field.shape[0] == 3 and field.shape[1:] == tuple(expected_shape):
        raise fail(f"shape {field.shape} is channel-first; the organisers' format is channel-last "
                   f"{tuple(expected_shape) + (3,)}")
    try:
        check_voxel_field(field, tuple(expected_shape))
    except ValueError as exc:
        raise fail(_one_line(exc)) from None
    return LoadedField(field, sample_dtype, grid)


def implausible_magnitude(field: np.ndarray, spacing) -> str | None:
    """Why the field's size cannot be right for its grid, or None. A displacement longer than the grid's own
    diagonal takes its voxel out of the image wherever that voxel lies, so no landmark there can be matched:
    when 1% of the voxels move that far (the 99th percentile of |u| in mm, on every 2nd voxel of a large
    field), the field is most likely on the wrong scale (mm for voxels, metres, x1000). Scored all the same:
    the TRE says how wrong it is; the WARNING says why it may be."""
    shape = np.asarray(field.shape[:3], dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    diagonal = float(np.linalg.norm(shape * spacing))
    step = 2 if field[..., 0].size > 2_000_000 else 1
    sample = np.asarray(field[::step, ::step, ::step], dtype=np.float64).reshape(-1, 3) * spacing
    p99 = float(np.percentile(np.linalg.norm(sample, axis=1), 99))
    if not p99 > diagonal:
        return None
    return (f"implausible field magnitude for its grid: 1% of the voxels move by {p99:.4g} mm or more, longer "
            f"than the grid's whole diagonal ({diagonal:.4g} mm: "
            f"{'x'.join(str(int(n)) for n in shape)} voxels at {'x'.join(f'{s:.3g}' for s in spacing)} mm), "
            "which takes them out of the image wherever they lie; a scale or unit error (mm for voxels, x1000)?")


def _one_line(exc: BaseException) -> str:
    return one_line(exc)[:300]  # a field reader's error can quote a whole header
