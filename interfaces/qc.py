"""QC pictures: the iUS (fixed, green) with the MR (moving, magenta) before and after registration, mid slices
across the three index axes, drawn with Pillow and labelled (rows before / after, columns the slice, a legend
saying which colour is which image; white where both are bright).

Pillow is in requirements.txt: the official PyTorch image already has it (a torchvision dependency), and it
is a few MB where it is not. The text uses Pillow's built-in scalable font (Pillow >= 10.1 with FreeType);
where that is missing, the built-in bitmap font, so a picture is always written.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from interfaces.conventions import warp_with_voxel_field

FIXED_RGB = (0, 255, 0)      # iUS: green channel
MOVING_RGB = (255, 0, 255)   # MR: red + blue channels (magenta)
MIN_TILE = 256               # pixels along a tile's longer side: small volumes are enlarged to be readable
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
AXES = "ijk"


def _normalise(array: np.ndarray) -> np.ndarray:
    positive = array[array > 0]
    top = np.percentile(positive, 99.5) if positive.size else 1.0
    return np.clip(array / (top or 1.0), 0, 1)


def overlay(fixed_slice: np.ndarray, moving_slice: np.ndarray) -> np.ndarray:
    """(H, W) fixed and moving in [0, 1] -> (H, W, 3) uint8: fixed green, moving magenta, both white."""
    rgb = np.stack([moving_slice, fixed_slice, moving_slice], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def slices(fixed: np.ndarray, moving: np.ndarray, field: np.ndarray):
    """[(row label, [(column label, (H, W, 3) uint8 tile) x 3]) for before and after]: mid slices across index
    axes i, j, k (displayed so rows = first remaining axis). Fixed and moving on the fixed grid, index order."""
    f, m = _normalise(fixed), _normalise(moving)
    rows = []
    for warped in (False, True):
        tiles = []
        for axis in range(3):
            index = fixed.shape[axis] // 2
            fs = np.take(f, index, axis=axis)
            ms = (warp_with_voxel_field(m, field, slice_axis=axis, slice_index=index) if warped
                  else np.take(m, index, axis=axis))
            rest = "".join(a for a in AXES if a != AXES[axis])
            tiles.append((f"{AXES[axis]} = {index} ({rest} plane)", overlay(fs, ms)))
        rows.append(("after" if warped else "before", tiles))
    return rows


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()           # bitmap, fixed size


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


class _Layout(NamedTuple):
    """Sizes of a QC picture, in pixels."""
    scale: int          # tiles are enlarged by this whole factor (small volumes readable)
    pad: int
    line_h: int         # one line of text
    label_w: int        # the row labels' column ("before", "after")
    col_w: list[int]    # each slice column: its tile or its label, whichever is wider
    tile_h: list[int]   # each row's tallest tile
    header: int         # title + legend, then a line of column labels
    width: int
    height: int


LEGEND = [("iUS (fixed)", FIXED_RGB), ("MR (moving)", MOVING_RGB), ("both", (255, 255, 255))]
LEGEND_NOTE = "rows: before / after registration"


def render(fixed: np.ndarray, moving: np.ndarray, field: np.ndarray, title: str = "") -> Image.Image:
    """The labelled QC picture as an RGB PIL image."""
    rows = slices(fixed, moving, field)
    font, small = _font(22), _font(17)
    size = _layout(rows, title, font, small)
    canvas = Image.new("RGB", (size.width, size.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_legend(draw, size, title, font, small)
    _draw_tiles(canvas, draw, rows, size, font, small)
    return canvas


def _layout(rows, title: str, font, small) -> _Layout:
    """Every size of the picture, from the tiles and the text measured with the fonts."""
    longest = max(max(tile.shape[:2]) for _, tiles in rows for _, tile in tiles)
    scale = max(1, int(np.ceil(MIN_TILE / longest)))
    tile_w = [max(t.shape[1] for _, ts in rows for t in [ts[c][1]]) * scale for c in range(3)]
    tile_h = [max(ts[c][1].shape[0] for c in range(3)) * scale for _, ts in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(_text_size(probe, "Ag", font)[1], _text_size(probe, "Ag", small)[1]) + 10
    pad, label_w = 8, max(_text_size(probe, word, font)[0] for word in ("before", "after")) + 3 * 8
    # a column is as wide as its tile or its label, whichever is wider (labels never overlap)
    col_w = [max(tile_w[c], _text_size(probe, rows[0][1][c][0], small)[0] + pad) for c in range(3)]
    header = 2 * line_h + pad              # title + legend, then a line of column labels
    legend_w = (sum(20 + _text_size(probe, text, small)[0] + 24 for text, _ in LEGEND)
                + _text_size(probe, LEGEND_NOTE, small)[0])
    width = max(label_w + sum(col_w) + pad * (len(col_w) + 1), pad * 2 + legend_w,
                pad * 2 + _text_size(probe, title or "QC", font)[0])
    height = header + line_h + sum(tile_h) + pad * (len(tile_h) + 1)
    return _Layout(scale, pad, line_h, label_w, col_w, tile_h, header, width, height)


def _draw_legend(draw: ImageDraw.ImageDraw, size: _Layout, title: str, font, small) -> None:
    """The title, then the legend: a colour swatch and its name per image, and which row is which."""
    pad, line_h = size.pad, size.line_h
    draw.text((pad, pad), title or "QC", fill=TEXT, font=font)
    x = pad
    for text, colour in LEGEND:
        draw.rectangle([x, pad + line_h + 4, x + 14, pad + line_h + 18], fill=colour)
        draw.text((x + 20, pad + line_h), text, fill=colour, font=small)
        x += 20 + _text_size(draw, text, small)[0] + 24
    draw.text((x, pad + line_h), LEGEND_NOTE, fill=TEXT, font=small)


def _draw_tiles(canvas: Image.Image, draw: ImageDraw.ImageDraw, rows, size: _Layout, font, small) -> None:
    """The column labels, then per row its label and its tiles, enlarged by the layout's scale."""
    pad, line_h = size.pad, size.line_h
    y = size.header
    x = size.label_w + pad
    for column, (text, _) in enumerate(rows[0][1]):
        draw.text((x, y), text, fill=TEXT, font=small)
        x += size.col_w[column] + pad
    y += line_h
    for row, (name, tiles) in enumerate(rows):
        draw.text((pad, y + size.tile_h[row] // 2 - line_h // 2), name, fill=TEXT, font=font)
        x = size.label_w + pad
        for column, (_, tile) in enumerate(tiles):
            picture = Image.fromarray(tile, "RGB")
            picture = picture.resize((tile.shape[1] * size.scale, tile.shape[0] * size.scale), Image.NEAREST)
            canvas.paste(picture, (x, y))
            x += size.col_w[column] + pad
        y += size.tile_h[row] + pad


def write_qc(path: str, fixed: np.ndarray, moving: np.ndarray, field: np.ndarray) -> None:
    """QC PNG for one pair at `path` (process.py --qc, make demo): the title is the file's name."""
    name = os.path.splitext(os.path.basename(path))[0]          # process.py names it CASE_000M
    case, _, modality = name.partition("_")
    sequence = {"0001": "ceT1", "0002": "T2"}.get(modality)
    title = f"case {case}: iUS <- {sequence}" if sequence else name
    render(fixed, moving, field, title=title).save(path, format="PNG")
