"""A field write stopped half-way leaves nothing under the field's name (issue 30).

`docker stop` sends SIGTERM, which process.py turns into an exception raised wherever Python is: possibly in
the middle of writing a field. Fields are written under a temporary name and renamed when whole
(interfaces/images.py, atomic_path), so a stopped write leaves neither a truncated file under the final name
(the scorer would read it as the answer, or fail on it) nor the temporary one. test_process.py's SIGTERM test
stops the run between writes and only looks for files named `*partial*`; here the stop is raised from inside
the writer, after some bytes are on disk, in both layouts and with the write in line or behind."""
import gzip
import os

import pytest
import SimpleITK as sitk

import process
from interfaces import grand_challenge as gc
from interfaces import images
from test_process import FakeShift, make_case, make_gc_input

STOP = process._Terminated  # what the SIGTERM handler raises (a SystemExit: no `except Exception` takes it)


class StoppedGzip(gzip.GzipFile):
    """A gzip stream whose second write (the first voxel plane, after the NIfTI header) is a SIGTERM."""

    def write(self, data):
        self.writes = getattr(self, "writes", 0) + 1
        if self.writes == 2:
            raise STOP(143)
        return super().write(data)


def stopped_sitk_write(image, path, *args, **kwargs):
    """SimpleITK's write stopped after part of the file is on disk."""
    with open(path, "wb") as out:
        out.write(b"ObjectType = Image\nNDims = 4\n")
    raise STOP(143)


def every_file(folder):
    return sorted(os.path.relpath(os.path.join(root, n), folder) for root, _, names in os.walk(folder)
                  for n in names)


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_a_field_write_stopped_half_way_leaves_no_file(tmp_path, monkeypatch, overlap):
    make_case(tmp_path / "in", shift=(1, 0, 0), modalities=(1,))
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", overlap)
    monkeypatch.setattr(images.gzip, "GzipFile", StoppedGzip)
    with pytest.raises(STOP):
        process.run(str(tmp_path / "in"), str(tmp_path / "out"), registration=FakeShift(), write_timings=False)
    assert every_file(tmp_path / "out") == []  # neither disp_0001_0000_0001_0001.nii.gz nor a temporary file


def test_a_grand_challenge_field_write_stopped_half_way_leaves_no_file(tmp_path, monkeypatch):
    make_case(tmp_path / "org", shift=(1, 0, 0))
    make_gc_input(tmp_path / "gc", tmp_path / "org")
    monkeypatch.setattr(sitk, "WriteImage", stopped_sitk_write)
    with pytest.raises(STOP):
        process.run(str(tmp_path / "gc"), str(tmp_path / "out"), registration=FakeShift())
    assert every_file(tmp_path / "out") == []
    assert not os.path.exists(tmp_path / "out" / "images" / gc.SLUG_DISPLACEMENT / gc.OUTPUT_FILENAME)


def test_the_stopped_gzip_stream_does_write_bytes_first(tmp_path):
    # the stop must come after bytes reached the file, or the tests above would not see a direct write
    path = tmp_path / "field.gz"
    with pytest.raises(STOP):
        with open(path, "wb") as raw, StoppedGzip(filename="", mode="wb", fileobj=raw) as out:
            out.write(b"header")
            out.write(b"plane")
    assert path.stat().st_size > 0
