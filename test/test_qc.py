"""interfaces.qc: a valid, readable, labelled PNG (Pillow), the legend colours, the bitmap-font fallback, and
the after row equal to the before row for a zero field."""
import numpy as np
import pytest
from PIL import Image, ImageFont

from interfaces import qc


def volumes(shape=(30, 24, 18), shift=3):
    rng = np.random.default_rng(0)
    fixed = np.zeros(shape, np.float32)
    fixed[5:-5, 4:-4, 3:-3] = 1 + rng.random((shape[0] - 10, shape[1] - 8, shape[2] - 6))
    moving = np.roll(fixed, shift, axis=0)
    field = np.zeros(shape + (3,), np.float32)
    field[..., 0] = shift  # fixed x -> moving x + 3 along i: the exact registration
    return fixed, moving, field


def test_write_qc_writes_a_readable_png(tmp_path):
    path = tmp_path / "0001_0001.png"
    qc.write_qc(str(path), *volumes())
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 3_000_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        width, height = image.size
    # small volumes are enlarged (one scale for all tiles) until the longest slice side has MIN_TILE pixels
    assert height >= 2 * qc.MIN_TILE and width >= 3 * 18 * (-(-qc.MIN_TILE // 30))


def test_labels_and_legend_are_drawn(tmp_path):
    picture = np.asarray(qc.render(*volumes(), title="case 0001: iUS <- ceT1"))
    header = picture[:60]
    text = (np.abs(header.astype(int) - qc.TEXT).sum(-1) < 30).sum()
    assert text > 200, "title text missing"
    for colour in (qc.FIXED_RGB, qc.MOVING_RGB):  # legend swatches and coloured legend words
        assert (np.abs(header.astype(int) - colour).sum(-1) == 0).sum() > 100, colour
    left_band = picture[100:, :60]  # row labels 'before' / 'after' in the left margin
    assert (np.abs(left_band.astype(int) - qc.TEXT).sum(-1) < 30).sum() > 100


def test_title_names_the_case_and_sequence(tmp_path, monkeypatch):
    titles = []
    real = qc.render
    monkeypatch.setattr(qc, "render", lambda *a, title="": titles.append(title) or real(*a, title=title))
    qc.write_qc(str(tmp_path / "0007_0002.png"), *volumes())
    qc.write_qc(str(tmp_path / "other.png"), *volumes())
    assert titles == ["case 0007: iUS <- T2", "other"]


def test_bitmap_font_fallback(tmp_path, monkeypatch):
    """Without a scalable font (old Pillow, no FreeType) the labels use the bitmap font; a PNG is still made."""
    bitmap = ImageFont.load_default

    def no_size(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap()

    monkeypatch.setattr(qc.ImageFont, "load_default", no_size)
    path = tmp_path / "0001_0001.png"
    qc.write_qc(str(path), *volumes())
    with Image.open(path) as image:
        assert image.size[1] >= 2 * qc.MIN_TILE


def test_before_and_after_rows():
    fixed, moving, field = volumes()
    rows = qc.slices(fixed, moving, field)
    assert [name for name, _ in rows] == ["before", "after"]
    assert [label for label, _ in rows[0][1]] == ["i = 15 (jk plane)", "j = 12 (ik plane)", "k = 9 (ij plane)"]
    before, after = rows[0][1][1][1], rows[1][1][1][1]
    # the exact field aligns the MR: after, red (MR) matches green (iUS) inside the volume; before, it does not
    assert np.abs(after[..., 0].astype(int) - after[..., 1]).mean() < np.abs(before[..., 0].astype(int) - before[..., 1]).mean() / 3
    zero = qc.slices(fixed, moving, np.zeros_like(field))
    for (_, a), (_, b) in zip(zero[0][1], zero[1][1]):
        assert np.array_equal(a, b)  # identity: after == before


@pytest.mark.parametrize("shape", [(40, 40, 40), (64, 16, 8)])
def test_tiles_fit_any_shape(shape):
    picture = qc.render(*volumes(shape, shift=2))
    assert picture.size[1] >= 2 * qc.MIN_TILE and picture.size[0] > qc.MIN_TILE
