"""QC pictures without matplotlib: the iUS (green) with the MR (magenta) before and after registration,
mid slices along the three index axes, written by a tiny numpy PNG writer."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from interfaces.conventions import warp_with_voxel_field


def write_png(path: str, rgb: np.ndarray) -> None:
    """8-bit RGB (H, W, 3) uint8 -> PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    with open(path, "wb") as out:
        out.write(png)


def _normalise(array: np.ndarray) -> np.ndarray:
    positive = array[array > 0]
    top = np.percentile(positive, 99.5) if positive.size else 1.0
    return np.clip(array / (top or 1.0), 0, 1)


def overlay(fixed_slice: np.ndarray, moving_slice: np.ndarray) -> np.ndarray:
    rgb = np.stack([moving_slice, fixed_slice, moving_slice], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def qc_image(fixed: np.ndarray, moving: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Rows: before, after; columns: mid slices across index axes i, j, k (displayed so rows = first
    remaining axis). Fixed and moving on the fixed grid, index order."""
    f, m = _normalise(fixed), _normalise(moving)
    rows = []
    for warped in (False, True):
        tiles = []
        for axis in range(3):
            index = fixed.shape[axis] // 2
            fs = np.take(f, index, axis=axis)
            ms = warp_with_voxel_field(m, field, slice_axis=axis, slice_index=index) if warped else np.take(m, index, axis=axis)
            tiles.append(overlay(fs, ms))
        height = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 2), (0, 0))) for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def write_qc(path: str, fixed: np.ndarray, moving: np.ndarray, field: np.ndarray) -> None:
    image = qc_image(fixed, moving, field)
    scale = max(1, int(np.ceil(384 / max(image.shape[:2]))))  # small test volumes: enlarge to be visible
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    write_png(path, image)
